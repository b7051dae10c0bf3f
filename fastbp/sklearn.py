"""scikit-learn estimators backed by fastbp: ``MLPClassifier`` and ``MLPRegressor``.

Drop-in counterparts of ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor``
for the stochastic solvers ("sgd", "adam"): same parameters where the meaning is
the same, same fitted attributes, same initial weights for the same
``random_state``; the training itself is ``fastbp.train`` (every epoch, mini-batch
and optimizer step in compiled code) on a ``fastbp.Network``.

This is the only module of fastbp that imports scikit-learn (the optional
``sklearn`` extra: ``pip install "fastbp[sklearn]"``).

Conventions, and how scikit-learn's are met
--------------------------------------------
Orientation
    scikit-learn stores ``coefs_[i]`` in x out, shape (n_{l-1}, n_l), for layer
    l = i + 1 (``a @ W + b``); fastbp's ``Params.W[l]`` is its transpose, out x in.
    ``coefs_[i] = W[i + 1].T`` and ``intercepts_[i] = b[i + 1]``.
Heads (001's and 000's networks)
    binary classes: one sigmoid unit + binary cross-entropy; more than two
    classes: softmax + cross-entropy; multi-label indicator targets: one sigmoid
    unit per label + binary cross-entropy summed over the labels; regression:
    identity output + ``sse`` (1/2 sum of squares).  Each loss is the mean over
    the mini-batch, as in scikit-learn.
L2 (``alpha``)
    scikit-learn's mini-batch objective is mean loss + alpha / (2 n_b) ||W||^2,
    n_b the size of the mini-batch, so its gradient is mean gradient
    + (alpha / n_b) W.  fastbp's network adds l2 / 2 ||W||^2 (004 section 9), so
    the estimator trains with ``l2 = alpha / batch_size``: identical objectives and
    gradients for every full batch; only a last, partial batch of n_b < batch_size
    examples gets the weaker alpha / batch_size instead of alpha / n_b.
Squared error
    scikit-learn's gradient is that of 1/2 sum over outputs of (a - y)^2, mean over
    the batch: fastbp's ``sse`` with ``reduction="mean"``, exactly.  Its *reported*
    loss divides the data term by the number of outputs K as well, so ``loss_``
    and ``loss_curve_`` of the regressor are fastbp's training loss / K (for K > 1
    the small L2 part of the reported loss is divided by K too).
Optimizers
    "sgd" with ``momentum=0`` is plain SGD; otherwise classical or Nesterov
    momentum, which with a constant learning rate take exactly scikit-learn's
    steps.  "adam" is Adam with eps added to sqrt(v_hat) (Kingma and Ba);
    scikit-learn adds it to sqrt(v), which differs by the factor sqrt(1 - beta_2^t)
    on eps alone.
Stopping
    ``tol`` / ``n_iter_no_change`` on the training loss, or with
    ``early_stopping=True`` on the validation score (accuracy for the classifier,
    R^2 for the regressor) with the best epoch's parameters restored: the rule of
    scikit-learn, epoch by epoch.  The validation split is scikit-learn's
    ``train_test_split`` with the same random state (stratified for a single
    output).  For the regressor the validation R^2 is computed from the validation
    loss: 1 - sum of squared residuals / total sum of squares, pooled over the
    outputs (scikit-learn averages per-output R^2 values; the two agree for one
    output), with the L2 term of the validation loss included (negligible for
    small ``alpha``).

Not supported: ``solver="lbfgs"``, learning-rate schedules other than constant
(``learning_rate``, ``power_t``), ``sample_weight``, sparse inputs, the Poisson loss.
"""

from __future__ import annotations

import numbers
import warnings
from itertools import pairwise

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "fastbp.sklearn needs scikit-learn; install it with: pip install 'fastbp[sklearn]'"
    ) from e
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d

try:
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # scikit-learn < 1.6: the same function was a method

    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)


from . import train as _train  # the function fastbp.train (see fastbp/__init__.py)
from ._checks import Bool, Integer, OneOf, Real, as_float_dtype, check, is_bool, widths
from .network import Network
from .params import Params
from .targets import HEADS, head
from .training import EarlyStopping

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names -> fastbp's
# n_iter_no_change is at most this many epochs (np.inf: never stop early)
_NEVER = 2**62

ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
SOLVERS = ("sgd", "adam")
_UNSUPPORTED_SOLVERS = {"lbfgs": "it is a full-batch quasi-Newton method, not a stochastic one"}


class _BaseMLP(BaseEstimator):
    """Shared parameters, validation and the stochastic training loop."""

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        dtype="float64",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype

    # ------------------------------------------------------------------ parameters

    def _check_params(self) -> tuple[list[int], np.dtype]:
        """Validate every constructor parameter (``_PARAMETERS``, with fastbp's
        checks: the same exception and message for a mistake as ``fastbp.train``);
        return (hidden widths, dtype)."""
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, numbers.Integral) and not is_bool(hidden):
            hidden = [hidden]
        hidden = widths("hidden_layer_sizes", hidden, at_least=0)
        if self.solver in _UNSUPPORTED_SOLVERS:
            raise ValueError(f"solver: {self.solver!r} is not supported "
                             f"({_UNSUPPORTED_SOLVERS[self.solver]}); use 'adam' or 'sgd'")
        check(_PARAMETERS, **{name: getattr(self, name) for name in _PARAMETERS})
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            Integer(1)("batch_size", self.batch_size)
        if not is_bool(self.verbose):
            Integer(0)("verbose", self.verbose)
        if self.early_stopping and self.validation_fraction == 0:
            raise ValueError("validation_fraction: must be > 0 with early_stopping=True")
        return list(hidden), as_float_dtype(self.dtype)

    # ------------------------------------------------------------------ network

    def _network(self, l2=0.0) -> Network:
        """The fitted architecture as a fastbp Network (built on demand: estimators
        keep only plain arrays, so they pickle and clone like scikit-learn's)."""
        sizes = [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]
        acts = [ACTIVATIONS[self.activation]] * (len(sizes) - 2)
        out = head(self._target_kind(), sizes[-1])
        acts.append(out.activation)
        return Network(sizes, acts, out.loss, l2=l2,
                       dtype=self.coefs_[0].dtype)

    def _params(self, net: Network) -> Params:
        """``coefs_``/``intercepts_`` (in x out) as fastbp Params (out x in), copied,
        so whatever the user assigned to those attributes is what runs."""
        return net.params_from(self.coefs_, self.intercepts_, layout="in_out")

    def _set_params_from(self, params: Params) -> None:
        self.coefs_ = [np.ascontiguousarray(params.W[l].T) for l in range(1, params.n_layers + 1)]
        self.intercepts_ = [params.b[l].copy() for l in range(1, params.n_layers + 1)]

    def _initialize(self, layer_units, n_outputs, dtype, rs) -> None:
        """Fresh fitted state; weights drawn exactly as scikit-learn draws them.

        Glorot uniform, W and b ~ U(-r, r) with r = sqrt(6 / (fan_in + fan_out))
        (sqrt(2 / ...) for logistic units), drawn layer by layer from ``rs`` in
        scikit-learn's order and shapes, so the same ``random_state`` gives the
        same initial network as ``sklearn.neural_network``.
        """
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(layer_units)
        self.out_activation_ = _SKLEARN_ACTIVATION[HEADS[self._target_kind()][0]]
        factor = 2.0 if self.activation == "logistic" else 6.0
        self.coefs_, self.intercepts_ = [], []
        for fan_in, fan_out in pairwise(layer_units):
            r = np.sqrt(factor / (fan_in + fan_out))
            self.coefs_.append(rs.uniform(-r, r, (fan_in, fan_out)).astype(dtype))
            self.intercepts_.append(rs.uniform(-r, r, fan_out).astype(dtype))
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [b.copy() for b in self.intercepts_]
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y):
        """Fit the network to (X, y).

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
        y : array_like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classifier; a 2-D 0/1 indicator matrix for multi-label)
            or real targets (regressor).

        Returns
        -------
        self
        """
        return self._fit(X, y, incremental=False)

    def _fit(self, X, y, incremental):
        hidden, dtype = self._check_params()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        if self.early_stopping and incremental:
            raise ValueError("early_stopping: partial_fit does not support "
                             "early_stopping=True")
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        layer_units = [X.shape[1], *hidden, Y.shape[1]]
        rs = check_random_state(self.random_state)
        if first_pass:
            self._initialize(layer_units, Y.shape[1], dtype, rs)
        else:
            fitted = [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]
            if fitted != layer_units:
                raise ValueError(
                    f"hidden_layer_sizes/y: the fitted network has layer sizes {fitted}, "
                    f"these data and parameters need {layer_units}; refit with "
                    "warm_start=False"
                )
        self._fit_stochastic(X, Y, incremental, rs)
        return self

    def _fit_stochastic(self, X, Y, incremental, rs):
        early_stopping = self.early_stopping and not incremental
        if early_stopping:
            stratify = (Y > 0.5) if self._is_classifier() and self.n_outputs_ == 1 else None
            X, Xv, Y, Yv = train_test_split(X, Y, random_state=rs,
                                            test_size=self.validation_fraction,
                                            stratify=stratify)
            if Xv.shape[0] < 2:
                raise ValueError("validation_fraction: the validation set is too small "
                                 f"({Xv.shape[0]} example); increase validation_fraction "
                                 "or the size of the data set")
        n = X.shape[0]
        if self.batch_size == "auto":
            B = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(f"batch_size: {self.batch_size} is larger than the number "
                              f"of training examples ({n}); clipped to {n}", stacklevel=3)
            B = min(int(self.batch_size), n)

        net = self._network(l2=self.alpha / B)
        params = self._params(net)
        if self.solver == "adam":
            optimizer = "adam"
        elif self.momentum == 0:
            optimizer = "sgd"
        else:
            optimizer = "nesterov" if self.nesterovs_momentum else "momentum"
        options = dict(
            optimizer=optimizer, lr=float(self.learning_rate_init), batch_size=B,
            shuffle=bool(self.shuffle), seed=int(rs.randint(np.iinfo(np.int32).max)),
            momentum=float(self.momentum), betas=(float(self.beta_1), float(self.beta_2)),
            eps=float(self.epsilon), validation=(Xv, Yv) if early_stopping else None,
        )
        if early_stopping and self.validation_scores_ is None:  # warm start, switched on
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
        if not early_stopping and self.best_loss_ is None:
            self.best_loss_ = np.inf
        val_score = self._validation_score_from_loss(Yv, net.dtype) if early_stopping else None
        reported = 1.0 / self.n_outputs_ if not self._is_classifier() else 1.0
        # scikit-learn's rule, evaluated by fastbp.train at the end of every epoch:
        # stop once more than n_iter_no_change epochs in a row did not improve the
        # training loss (reported units) by tol, or with early stopping the
        # validation score, whose best epoch's parameters are kept.  Its state
        # (best value, count) carries over between fit calls with warm_start and
        # between partial_fit calls, as in scikit-learn.
        if early_stopping:
            monitor = "val_accuracy" if self._is_classifier() else "val_r2"
            best = self.best_validation_score_
        else:
            monitor = "loss"
            best = -self.best_loss_
        rule = EarlyStopping(int(min(self.n_iter_no_change, _NEVER)) + 1, tol=float(self.tol),
                             monitor=monitor, restore_best=early_stopping,
                             best=None if np.isinf(best) else float(best),
                             count=self._no_improvement_count,
                             scale=1.0 if early_stopping else reported)

        def epoch_values(h):
            """Per-epoch (reported training loss, validation score or None)."""
            loss = h.loss * reported
            if not early_stopping:
                return loss, None
            if h.val_accuracy is not None:
                return loss, h.val_accuracy
            return loss, val_score(h.val_loss)

        printed = [0]

        def report(h):
            if self.verbose:
                loss, score = epoch_values(h)
                for k in range(printed[0], h.epochs):
                    print(f"Iteration {self.n_iter_ + k + 1}, loss = {loss[k]:.8f}")
                    if score is not None:
                        print(f"Validation score: {score[k]:f}")
            printed[0] = h.epochs

        epochs = 1 if incremental else self.max_iter
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # divergence: raised below
            history = _train(net, params, X, Y, epochs=epochs, early_stopping=rule,
                             callback=report if self.verbose else None, **options)
        if history.stop_reason == "diverged" or not np.isfinite(history.params.flat).all():
            raise ValueError("Solver produced non-finite parameter weights (the loss became "
                             "NaN or infinite); the input data may contain large values and "
                             "need to be preprocessed, or learning_rate_init is too large")
        loss, score = epoch_values(history)
        n_run = history.epochs
        stopped = history.stop_reason == "early_stopping"
        state = history.early_stopping
        if early_stopping:
            if history.best_epoch >= 0:  # this run beat the best score carried in
                self._set_params_from(history.params)  # the best epoch's (restored)
                self._best_coefs = [c.copy() for c in self.coefs_]
                self._best_intercepts = [b.copy() for b in self.intercepts_]
            self.coefs_ = [c.copy() for c in self._best_coefs]
            self.intercepts_ = [b.copy() for b in self._best_intercepts]
            self.validation_scores_.extend(float(s) for s in score)
            self.best_validation_score_ = -np.inf if state.best is None else state.best
        else:
            self._set_params_from(history.params)
            self.best_loss_ = np.inf if state.best is None else -state.best
        self._no_improvement_count = state.count
        self.loss_curve_.extend(float(v) for v in loss)
        self.loss_ = self.loss_curve_[-1]
        self.n_iter_ = n_run
        self.t_ += n * n_run
        if self.verbose and stopped:
            what = "Validation score" if early_stopping else "Training loss"
            print(f"{what} did not improve more than tol={self.tol:f} for "
                  f"{self.n_iter_no_change} consecutive epochs. Stopping.")
        if not incremental and not stopped and n_run == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                          "reached and the optimization hasn't converged yet.",
                          ConvergenceWarning, stacklevel=3)

    # ------------------------------------------------------------------ prediction

    def _forward(self, X) -> np.ndarray:
        """Output activations a^(L), shape (n_samples, n_outputs)."""
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        net = self._network()
        return net.forward(self._params(net), X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by fastbp (scikit-learn interface).

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        Widths of the hidden layers, n_1 .. n_{L-1}.
    activation : {"identity", "logistic", "tanh", "relu"}, default "relu"
        Hidden-layer activation ("logistic" is fastbp's "sigmoid").
    solver : {"adam", "sgd"}, default "adam"
    alpha : float, default 1e-4
        L2 strength in scikit-learn's convention: the mini-batch objective is
        mean loss + alpha / (2 n_b) ||W||^2 (see the module docstring).
    batch_size : int or "auto", default "auto"
        "auto" is min(200, n_samples).
    learning_rate_init : float, default 1e-3
        The (constant) learning rate.
    max_iter : int, default 200
        Maximum number of epochs.
    shuffle : bool, default True
        Reshuffle the examples before each epoch.
    random_state : int, RandomState or None
        Initial weights (drawn as scikit-learn draws them), validation split and
        the seed of the shuffling.
    tol : float, default 1e-4
    verbose : bool or int, default False
        Print the loss (and validation score) of every epoch.
    warm_start : bool, default False
        Start ``fit`` from the current ``coefs_``/``intercepts_``.
    momentum : float in [0, 1), default 0.9
        For "sgd"; 0 gives plain SGD.
    nesterovs_momentum : bool, default True
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data, stop when the validation
        accuracy has not improved by ``tol`` for ``n_iter_no_change`` epochs, and
        keep the best epoch's parameters.
    validation_fraction : float in [0, 1), default 0.1
    beta_1, beta_2 : float in [0, 1), default 0.9, 0.999
    epsilon : float, default 1e-8
    n_iter_no_change : int, default 10
    dtype : {"float64", "float32"}, default "float64"
        Dtype of the parameters and of the computation.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coefs_ : list of ndarray of shape (n_{l-1}, n_l)
        Weights of layer l = i + 1 at index i, in x out (scikit-learn's
        orientation: fastbp's ``W[l].T``).
    intercepts_ : list of ndarray of shape (n_l,)
    loss_ : float
        Training loss of the last epoch.
    loss_curve_ : list of float
        Training loss of every epoch (over all ``fit``/``partial_fit`` calls).
    best_loss_ : float or None
        Lowest training loss (None with early stopping).
    validation_scores_ : list of float or None
        Validation accuracy of every epoch (early stopping only).
    best_validation_score_ : float or None
    n_iter_ : int
        Epochs run by the last ``fit`` (1 for ``partial_fit``).
    t_ : int
        Training examples seen, over all calls.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X had string column names.
    n_layers_ : int
        Number of layers counting the input, L + 1.
    n_outputs_ : int
    out_activation_ : {"logistic", "softmax"}
    """

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), starting from the current parameters.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
        y : array_like of shape (n_samples,) or (n_samples, n_labels)
        classes : array_like of shape (n_classes,), optional
            Every class of the whole data stream: required on the first call.

        Returns
        -------
        self

        Notes
        -----
        Each call is one ``fastbp.train`` epoch: the optimizer's state (momentum
        velocity, Adam moments) starts afresh at every call, where scikit-learn
        carries it from call to call.
        """
        first = not hasattr(self, "classes_")
        if first and classes is None:
            raise ValueError("classes: must be passed on the first call to partial_fit")
        if classes is not None:
            classes = unique_labels(classes)
            if not first and not np.array_equal(self.classes_, classes):
                raise ValueError(f"classes: {classes!r} is not the same as on the last call "
                                 f"to partial_fit, was {self.classes_!r}")
            if first:
                self._label_binarizer = LabelBinarizer()
                if type_of_target(y).startswith("multilabel"):
                    self._label_binarizer.fit(y)
                else:
                    self._label_binarizer.fit(classes)
                self.classes_ = self._label_binarizer.classes_
        return self._fit(X, y, incremental=True)

    def _is_classifier(self) -> bool:
        return True

    def _target_kind(self) -> str:
        return _KIND[self._label_binarizer.y_type_]

    def _validate_input(self, X, y, incremental, reset):
        X, y = _validate_data(self, X, y, multi_output=True, dtype=(np.float64, np.float32),
                              reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(f"y: warm_start needs the same classes as the previous "
                                     f"fit, which had {self.classes_}; y has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"y: has classes not in classes_ = {self.classes_}: "
                                 f"{np.setdiff1d(classes, self.classes_)}")
        Y = self._label_binarizer.transform(y)
        return X, np.asarray(Y, dtype=np.float64)

    def _validation_score_from_loss(self, Yv, dtype):  # the classifier reads val_accuracy
        return None

    def predict(self, X) -> np.ndarray:
        """Predicted classes, shape (n_samples,) (or (n_samples, n_labels) for
        multi-label targets)."""
        out = self._forward(X)
        if self.n_outputs_ == 1:
            out = out.ravel()
        return self._label_binarizer.inverse_transform(out)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in the order of
        ``classes_`` (for multi-label targets: each label's probability)."""
        out = self._forward(X)
        if self.n_outputs_ == 1:
            p = out[:, 0]
            return np.column_stack([1 - p, p])
        return out

    def predict_log_proba(self, X) -> np.ndarray:
        """Natural log of ``predict_proba(X)``."""
        p = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(p, out=p)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _more_tags(self):  # the same tag for scikit-learn < 1.6
        return {"multilabel": True}


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by fastbp (scikit-learn interface).

    Identity output layer, loss 1/2 sum of squares averaged over the mini-batch
    (fastbp's ``sse``).  Parameters and attributes as for ``MLPClassifier``
    (without ``classes_``); ``validation_scores_`` hold R^2 values and
    ``out_activation_`` is "identity".  ``predict`` returns shape (n_samples,) for
    one output and (n_samples, n_outputs) for several.
    """

    def partial_fit(self, X, y):
        """One epoch over (X, y), starting from the current parameters.

        The optimizer's state starts afresh at every call (see
        ``MLPClassifier.partial_fit``).
        """
        return self._fit(X, y, incremental=True)

    def _is_classifier(self) -> bool:
        return False

    def _target_kind(self) -> str:
        return "values"

    def _validate_input(self, X, y, incremental, reset):
        X, y = _validate_data(self, X, y, multi_output=True, y_numeric=True,
                              dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        Y = np.asarray(y, dtype=np.float64)
        return X, Y.reshape(-1, 1) if Y.ndim == 1 else Y

    def _validation_score_from_loss(self, Yv, dtype):
        """R^2 of each epoch from the validation loss J_v = (1/N_v) sum 1/2 ||a - y||^2
        (+ the L2 term): 1 - 2 N_v J_v / sum (y - mean y)^2, pooled over outputs,
        as ``fastbp.EarlyStopping(monitor="val_r2")`` computes it (targets in the
        network's dtype), so the scores reported are the ones the rule saw."""
        Yv = np.asarray(Yv, dtype=dtype).astype(np.float64)
        sst = float(((Yv - Yv.mean(axis=0)) ** 2).sum())
        n_v = Yv.shape[0]

        def score(val_loss):
            sse = 2.0 * n_v * np.asarray(val_loss, dtype=np.float64)
            if sst == 0.0:  # constant targets: scikit-learn's r2_score convention
                return np.where(sse == 0.0, 1.0, 0.0)
            return 1.0 - sse / sst

        return score

    def predict(self, X) -> np.ndarray:
        """Predicted targets, shape (n_samples,) or (n_samples, n_outputs)."""
        out = self._forward(X)
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # the same tag for scikit-learn < 1.6
        return {"multioutput": True}


# scikit-learn's output activation -> the kind of target of fastbp's head
# (``fastbp.targets.HEADS``): 001's binary network, softmax, 000's multi-label
# network (one sigmoid unit per label), regression
_KIND = {"binary": "binary", "multiclass": "classes", "multilabel-indicator": "labels"}
_SKLEARN_ACTIVATION = {"sigmoid": "logistic", "softmax": "softmax", "identity": "identity"}


# The constructor parameters with a constraint of their own (batch_size,
# verbose and hidden_layer_sizes take two forms: checked in ``_check_params``).
_PARAMETERS = {
    "activation": OneOf(sorted(ACTIVATIONS)),
    "solver": OneOf(SOLVERS),
    "alpha": Real(0.0),
    "learning_rate_init": Real(0.0, open_ends=("low",)),
    "max_iter": Integer(1),
    "shuffle": Bool(),
    "tol": Real(0.0),
    "warm_start": Bool(),
    "momentum": Real(0.0, 1.0, open_ends=("high",)),
    "nesterovs_momentum": Bool(),
    "early_stopping": Bool(),
    "validation_fraction": Real(0.0, 1.0, open_ends=("high",)),
    "beta_1": Real(0.0, 1.0, open_ends=("high",)),
    "beta_2": Real(0.0, 1.0, open_ends=("high",)),
    "epsilon": Real(0.0, open_ends=("low",)),
    "n_iter_no_change": Integer(1),
}
