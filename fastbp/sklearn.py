"""scikit-learn estimators backed by fastbp: ``MLPClassifier`` and ``MLPRegressor``.

Drop-in counterparts of ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor``
("sgd", "adam" and "lbfgs"): same parameters, same fitted attributes, same
initial weights for the same ``random_state``; they pass scikit-learn's own MLP
test suite (``tests/test_sklearn_suite.py``).  The training itself is
``fastbp.train`` (for "sgd" and "adam" every epoch, mini-batch and optimizer
step in compiled code; "lbfgs" is scipy's L-BFGS-B on fastbp's exact full-batch
gradient) on a ``fastbp.Network``.

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
    identity output + ``sse`` (1/2 sum of squares), or with ``loss="poisson"`` an
    exp output + fastbp's ``poisson`` (sum a - y z).  Each loss is the mean over
    the mini-batch (the weighted mean with ``sample_weight``), as in scikit-learn.
L2 (``alpha``)
    scikit-learn's mini-batch objective is mean loss + alpha / (2 n_b) ||W||^2,
    n_b the size of the mini-batch, so its gradient is mean gradient
    + (alpha / n_b) W.  fastbp's network adds l2 / 2 ||W||^2 (004 section 9), so
    the estimator trains with ``l2 = alpha / batch_size``: identical objectives and
    gradients for every full batch; only a last, partial batch of n_b < batch_size
    examples gets the weaker alpha / batch_size instead of alpha / n_b.  With
    ``sample_weight`` n_b is the batch's sum of weights (scikit-learn's), taken
    here as batch_size times the mean weight.  "lbfgs" minimizes the full-batch
    objective with l2 = alpha / n (alpha / sum of the weights), as scikit-learn.
Squared error
    scikit-learn's gradient is that of 1/2 sum over outputs of (a - y)^2, mean over
    the batch: fastbp's ``sse`` with ``reduction="mean"``, exactly.  Its *reported*
    loss divides the data term by the number of outputs K as well, so ``loss_``
    and ``loss_curve_`` of the regressor are fastbp's training loss / K (for K > 1
    the small L2 part of the reported loss is divided by K too).  Poisson: its
    reported loss is scikit-learn's half deviance, fastbp's loss plus the
    constant mean_e sum_k (y ln y - y).
Optimizers
    "sgd" with ``momentum=0`` is plain SGD; otherwise classical or Nesterov
    momentum, which with a constant learning rate take exactly scikit-learn's
    steps (with "invscaling" or "adaptive" rates fastbp's velocity is a sum of
    gradients, scaled by the current rate, where scikit-learn's sums steps
    already scaled by the rates they were taken with).  ``learning_rate`` and
    ``power_t`` are the schedules of ``fastbp.train`` ("sgd" only, as in
    scikit-learn).  "adam" is Adam with eps added to sqrt(v_hat) (Kingma and Ba);
    scikit-learn adds it to sqrt(v), which differs by the factor sqrt(1 - beta_2^t)
    on eps alone.  The optimizer's state (``_optimizer``: velocities, moments,
    step count, current rate, shuffling) carries from one ``partial_fit`` call to
    the next and through pickling, so that ``partial_fit`` continues where the
    last call stopped.
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
    small ``alpha``); for ``loss="poisson"`` the score is minus the validation
    loss.  The validation rows are unweighted.
Divergence
    A run whose loss or parameters become NaN or infinite stops there.  With
    early stopping the best epoch's parameters are kept and the diverged epoch's
    validation score is NaN (scikit-learn runs on to ``max_iter`` recording
    NaN); without, fit raises scikit-learn's "Solver produced non-finite
    parameter weights" error.
Dtype
    float32 inputs train a float32 network (``coefs_``, ``intercepts_`` and
    predictions in float32), float64 ones a float64 network, unless ``dtype``
    names one.
Sparse inputs
    CSR/CSC matrices are accepted.  Prediction and "lbfgs" run the first layer
    over the nonzeros only (``fastbp._core.sparse``); "sgd" and "adam" densify
    X (their compiled loop gathers dense rows).
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
from scipy import sparse as _sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d

try:
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # scikit-learn < 1.6: the same function was a method

    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)


from . import train as _train  # the function fastbp.train (see fastbp/__init__.py)
from ._checks import (
    Bool,
    Integer,
    OneOf,
    Real,
    as_float_dtype,
    as_sample_weight,
    check,
    checked_copy,
    dense_copy,
    is_bool,
    widths,
)
from ._core import check_memory
from .network import Network
from .params import Params
from .targets import HEADS, head
from .training import EarlyStopping, OptimizerState

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names -> fastbp's
# n_iter_no_change is at most this many epochs (np.inf: never stop early)
_NEVER = 2**62

ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
SOLVERS = ("sgd", "adam", "lbfgs")
STOCHASTIC_SOLVERS = ("sgd", "adam")
LEARNING_RATES = ("constant", "invscaling", "adaptive")


class _Optimizer:
    """The optimizer of a fitted estimator (scikit-learn's ``_optimizer``): its
    ``fastbp.OptimizerState``, carried from one ``partial_fit`` to the next."""

    def __init__(self, state: OptimizerState):
        self.state = state

    @property
    def learning_rate(self) -> float:
        """The current learning rate."""
        return self.state.lr


def _stochastic(estimator) -> bool:
    # partial_fit exists for the stochastic solvers only, as in scikit-learn
    if estimator.solver not in STOCHASTIC_SOLVERS:
        raise AttributeError(f"partial_fit is only available for stochastic optimizers; "
                             f"{estimator.solver!r} is not stochastic")
    return True


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
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
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
        max_fun=15000,
        dtype=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
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
        self.max_fun = max_fun
        self.dtype = dtype

    # ------------------------------------------------------------------ parameters

    def _check_params(self) -> tuple[list[int], np.dtype | None]:
        """Validate every constructor parameter (``_PARAMETERS``, with fastbp's
        checks: the same exception and message for a mistake as ``fastbp.train``);
        return (hidden widths, dtype or None: the data's)."""
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, numbers.Integral) and not is_bool(hidden):
            hidden = [hidden]
        hidden = widths("hidden_layer_sizes", hidden, at_least=0)
        check(_PARAMETERS, **{name: getattr(self, name) for name in _PARAMETERS})
        n = self.n_iter_no_change
        if not (isinstance(n, numbers.Real) and not is_bool(n) and n == np.inf):
            Integer(1)("n_iter_no_change", n)  # an int >= 1, or np.inf: never
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            Integer(1)("batch_size", self.batch_size)
        if not is_bool(self.verbose):
            Integer(0)("verbose", self.verbose)
        if self.early_stopping and self.validation_fraction == 0:
            raise ValueError("validation_fraction: must be > 0 with early_stopping=True")
        return list(hidden), None if self.dtype is None else as_float_dtype(self.dtype)

    # ------------------------------------------------------------------ network

    def _network(self, l2=0.0) -> Network:
        """The fitted architecture as a fastbp Network (built on demand: estimators
        keep only plain arrays, so they pickle and clone like scikit-learn's)."""
        sizes = [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]
        acts = [ACTIVATIONS[self.activation]] * (len(sizes) - 2)
        out = head(self._target_kind(), sizes[-1])
        acts.append(out.activation)
        return Network(sizes, acts, out.loss, l2=l2, dtype=self.coefs_[0].dtype)

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
        if hasattr(self, "_optimizer"):
            del self._optimizer  # a new network: a new optimizer
        factor = 2.0 if self.activation == "logistic" else 6.0
        # checked before the draws: the weights, their best copies and the
        # network's parameter vector in dtype, each layer drawn in float64 first
        pairs = list(pairwise(layer_units))
        n = sum(a * b + b for a, b in pairs)
        check_memory(f"hidden_layer_sizes: a network of layer sizes {list(layer_units)} "
                     f"({n:.4g} parameters)",
                     3 * n * np.dtype(dtype).itemsize + 8 * max(a * b for a, b in pairs))
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

    def fit(self, X, y, sample_weight=None):
        """Fit the network to (X, y).

        Parameters
        ----------
        X : array_like or sparse matrix of shape (n_samples, n_features)
        y : array_like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classifier; a 2-D 0/1 indicator matrix for multi-label)
            or real targets (regressor).
        sample_weight : array_like of shape (n_samples,), optional
            Weights >= 0 of the examples: each batch's loss is their weighted mean.

        Returns
        -------
        self
        """
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    def _fit(self, X, y, incremental, sample_weight=None):
        hidden, dtype = self._check_params()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        if self.early_stopping and incremental:
            raise ValueError("early_stopping: partial_fit does not support "
                             "early_stopping=True")
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        if not first_pass:
            dtype = self.coefs_[0].dtype  # a warm start continues in the fitted dtype
        elif dtype is None:
            dtype = X.dtype  # scikit-learn's: float32 data, a float32 network
        X = X.astype(dtype) if _sparse.issparse(X) else np.ascontiguousarray(X, dtype=dtype)
        sw = None
        if sample_weight is not None:
            sw = as_sample_weight(sample_weight, X.shape[0], np.dtype(np.float64))
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
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, Y, sw)
        else:
            self._fit_stochastic(X, Y, sw, incremental, rs)
        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError(_NON_FINITE)
        return self

    def _lbfgs_l2(self, n, sw) -> float:
        """scikit-learn's full-batch L2: alpha / n, n the sum of the weights."""
        total = n if sw is None else float(sw.sum())
        return self.alpha / total

    def _fit_lbfgs(self, X, Y, sw):
        """scikit-learn's "lbfgs": scipy's L-BFGS-B on the full-batch objective,
        here ``fastbp.train(optimizer="lbfgs")`` (the exact gradient of the
        kernels), with max_iter, max_fun and tol (scipy's gtol)."""
        net = self._network(l2=self._lbfgs_l2(X.shape[0], sw))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # non-finite: raised by _fit
            history = _train(net, self._params(net), X, Y, optimizer="lbfgs",
                             epochs=int(self.max_iter), max_fun=int(self.max_fun),
                             gtol=float(self.tol), sample_weight=sw)
        self._set_params_from(history.params)
        self.n_iter_ = min(history.epochs, self.max_iter)
        reported = self._reported_scale()
        offset = self._loss_offset(Y, sw)
        J = (history.loss[-1] if history.epochs
             else net.loss(history.params, X, Y, sample_weight=sw))
        self.loss_ = float(J) * reported + offset
        self.loss_curve_.extend(float(v) * reported + offset for v in history.loss)
        if history.stop_reason in ("completed", "max_fun"):
            limit = ("max_iter", self.max_iter) if history.stop_reason == "completed" \
                else ("max_fun", self.max_fun)
            warnings.warn(f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                          f"({limit[0]}={limit[1]} reached). Increase the number of "
                          "iterations (max_iter) or scale the data.",
                          ConvergenceWarning, stacklevel=3)

    def _loss_grad_lbfgs(self, packed_coef_inter, X, y, sample_weight, activations=None,
                         deltas=None, coef_grads=None, intercept_grads=None):
        """scikit-learn's objective of "lbfgs" and its gradient, on its packed
        vector (every ``coefs_[i].ravel()``, in x out, then every
        ``intercepts_[i]``): (J, dJ/dtheta in the same packing).  The four last
        arguments are scikit-learn's work buffers, unused here."""
        sizes = [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]
        theta = np.asarray(packed_coef_inter, dtype=np.float64)
        coefs, intercepts, pos = [], [], 0
        for n_in, n_out in pairwise(sizes):
            coefs.append(theta[pos:pos + n_in * n_out].reshape(n_in, n_out))
            pos += n_in * n_out
        for n_out in sizes[1:]:
            intercepts.append(theta[pos:pos + n_out])
            pos += n_out
        Y = np.asarray(y, dtype=np.float64)
        Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y
        n = X.shape[0]
        sw = None if sample_weight is None else as_sample_weight(
            sample_weight, n, np.dtype(np.float64))
        net = self._network(l2=self._lbfgs_l2(n, sw))
        params = net.params_from(coefs, intercepts, layout="in_out")
        J, g = net.loss_and_grad(params, X, Y, sample_weight=sw)
        L = len(sizes) - 1
        grad = np.concatenate([g.W[l].T.ravel() for l in range(1, L + 1)]
                              + [g.b[l] for l in range(1, L + 1)])
        return J, grad.astype(np.float64)

    def _reported_scale(self) -> float:
        """scikit-learn's reported regression loss divides by the outputs."""
        return 1.0 / self.n_outputs_ if not self._is_classifier() else 1.0

    def _loss_offset(self, Y, sw) -> float:  # see MLPRegressor
        return 0.0

    def _fit_stochastic(self, X, Y, sw, incremental, rs):
        early_stopping = self.early_stopping and not incremental
        if early_stopping:
            stratify = (Y > 0.5) if self._is_classifier() and self.n_outputs_ == 1 else None
            arrays = (X, Y) if sw is None else (X, Y, sw)
            split = train_test_split(*arrays, random_state=rs,
                                     test_size=self.validation_fraction, stratify=stratify)
            X, Xv, Y, Yv = split[:4]
            if sw is not None:
                sw = split[4]
            if Xv.shape[0] < 2:
                raise ValueError("validation_fraction: The validation set is too small "
                                 f"({Xv.shape[0]} example). Increase validation_fraction "
                                 "or the size of the data set")
        n = X.shape[0]
        if self.batch_size == "auto":
            B = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(f"batch_size: {self.batch_size} is larger than the number "
                              f"of training examples ({n}); clipped to {n}", stacklevel=3)
            B = min(int(self.batch_size), n)

        # scikit-learn's alpha / n_b, n_b the batch's sum of weights (on average)
        mean_w = 1.0 if sw is None else float(sw.mean())
        net = self._network(l2=self.alpha / (B * mean_w) if mean_w > 0 else 0.0)
        params = self._params(net)
        if self.solver == "adam":
            optimizer = "adam"
        elif self.momentum == 0:
            optimizer = "sgd"
        else:
            optimizer = "nesterov" if self.nesterovs_momentum else "momentum"
        # partial_fit continues the optimizer of the last call; fit (and the first
        # partial_fit) starts a new one, at the examples seen so far (invscaling's t)
        state = None
        if incremental and hasattr(self, "_optimizer") \
                and self._optimizer.state.optimizer == optimizer \
                and self._optimizer.state.m.shape[0] == net.n_params:
            state = self._optimizer.state
        elif self.t_:
            zeros = np.zeros(net.n_params, dtype=net.dtype)
            state = OptimizerState(optimizer, 0, zeros, zeros.copy(),
                                   float(self.learning_rate_init), int(self.t_))
        options = dict(
            optimizer=optimizer, lr=float(self.learning_rate_init), batch_size=B,
            shuffle=bool(self.shuffle), seed=int(rs.randint(np.iinfo(np.int32).max)),
            momentum=float(self.momentum), betas=(float(self.beta_1), float(self.beta_2)),
            eps=float(self.epsilon), validation=(Xv, Yv) if early_stopping else None,
            lr_schedule=self.learning_rate if self.solver == "sgd" else "constant",
            power_t=float(self.power_t), state=state, sample_weight=sw,
        )
        if early_stopping and self.validation_scores_ is None:  # warm start, switched on
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
        if not early_stopping and self.best_loss_ is None:
            self.best_loss_ = np.inf
        val_score = self._validation_score_from_loss(Yv, net.dtype) if early_stopping else None
        reported = self._reported_scale()
        offset = self._loss_offset(Y, sw)
        # scikit-learn's rule, evaluated by fastbp.train at the end of every epoch:
        # stop once more than n_iter_no_change epochs in a row did not improve the
        # training loss (reported units) by tol, or with early stopping the
        # validation score, whose best epoch's parameters are kept.  Its state
        # (best value, count) carries over between fit calls with warm_start and
        # between partial_fit calls, as in scikit-learn.
        if early_stopping:
            monitor = ("val_accuracy" if self._is_classifier()
                       else "val_loss" if net.loss_name == "poisson" else "val_r2")
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
            loss = h.loss * reported + offset
            if not early_stopping:
                return loss, None
            if h.val_accuracy is not None:
                return loss, h.val_accuracy
            if net.loss_name == "poisson":
                return loss, -h.val_loss
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
            warnings.simplefilter("ignore", RuntimeWarning)  # divergence: handled below
            history = _train(net, params, X, Y, epochs=epochs, early_stopping=rule,
                             callback=report if self.verbose else None, **options)
        diverged = history.stop_reason == "diverged"
        if diverged and not early_stopping:
            raise ValueError(_NON_FINITE)
        self._optimizer = _Optimizer(history.optimizer_state)
        loss, score = epoch_values(history)
        if diverged:  # the diverged epoch's score, as scikit-learn records it
            score = np.asarray(score, dtype=np.float64).copy()
            score[-1] = np.nan
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
        """Output activations a^(L), shape (n_samples, n_outputs), in the fitted dtype."""
        check_is_fitted(self)
        X = _check_structure(X)
        X = _validate_data(self, X, reset=False, dtype=(np.float64, np.float32),
                           accept_sparse=["csr", "csc"])
        net = self._network()
        if not _sparse.issparse(X):  # a sparse X runs layer 1 over its nonzeros
            X = np.ascontiguousarray(X, dtype=net.dtype)
        return net.forward(self._params(net), X)

    def _dense_unless_lbfgs(self, X):
        """"lbfgs" runs layer 1 over a sparse X's nonzeros; the stochastic
        solvers' compiled loop gathers dense rows, so X is densified for them."""
        return X if self.solver == "lbfgs" else _dense(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by fastbp (scikit-learn interface).

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        Widths of the hidden layers, n_1 .. n_{L-1}.
    activation : {"identity", "logistic", "tanh", "relu"}, default "relu"
        Hidden-layer activation ("logistic" is fastbp's "sigmoid").
    solver : {"adam", "sgd", "lbfgs"}, default "adam"
        "lbfgs": full-batch L-BFGS (scipy's L-BFGS-B on fastbp's exact gradient).
    alpha : float, default 1e-4
        L2 strength in scikit-learn's convention: the mini-batch objective is
        mean loss + alpha / (2 n_b) ||W||^2 (see the module docstring).
    batch_size : int or "auto", default "auto"
        "auto" is min(200, n_samples).
    learning_rate : {"constant", "invscaling", "adaptive"}, default "constant"
        The schedule of "sgd": learning_rate_init throughout; after each epoch
        learning_rate_init / (t + 1)^power_t, t the examples seen; or divided by 5
        each time ``n_iter_no_change`` epochs in a row fail to improve, until at
        most 1e-6 (then the fit stops).
    learning_rate_init : float, default 1e-3
        The (initial) learning rate.
    power_t : float, default 0.5
        Exponent of "invscaling".
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
    n_iter_no_change : int or np.inf, default 10
        np.inf: never stop early.
    max_fun : int, default 15000
        "lbfgs": the most evaluations of the loss and its gradient.
    dtype : {None, "float64", "float32"}, default None
        Dtype of the parameters and of the computation; None: float32 for float32
        data, else float64 (scikit-learn's rule).

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

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), starting from the current parameters.

        Parameters
        ----------
        X : array_like or sparse matrix of shape (n_samples, n_features)
        y : array_like of shape (n_samples,) or (n_samples, n_labels)
        sample_weight : array_like of shape (n_samples,), optional
        classes : array_like of shape (n_classes,), optional
            Every class of the whole data stream: required on the first call.

        Returns
        -------
        self

        Notes
        -----
        Each call is one ``fastbp.train`` epoch continuing the optimizer of the
        last call (its velocities or moments, step count, learning rate and
        shuffling): n calls take the steps of one n-epoch fit on the same data
        (``solver`` "sgd" or "adam" only, as in scikit-learn).
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
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def _is_classifier(self) -> bool:
        return True

    def _target_kind(self) -> str:
        return _KIND[self._label_binarizer.y_type_]

    def _validate_input(self, X, y, incremental, reset):
        X = _check_structure(X)
        X, y = _validate_data(self, X, y, multi_output=True, dtype=(np.float64, np.float32),
                              reset=reset, accept_sparse=["csr", "csc"])
        X = self._dense_unless_lbfgs(X)
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
                    raise ValueError(f"y: warm_start can only be used where `y` has the same "
                                     f"classes as in the previous call to fit. Previously "
                                     f"got {self.classes_}, `y` has {classes}")
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

    ``loss="squared_error"``: identity output layer, loss 1/2 sum of squares
    averaged over the mini-batch (fastbp's ``sse``); ``loss="poisson"``: exp output
    layer (the mean of a Poisson count), fastbp's ``poisson`` loss sum_k a_k - y_k z_k
    (reported as scikit-learn's half deviance).  Other parameters and attributes as
    for ``MLPClassifier`` (without ``classes_``); ``validation_scores_`` hold R^2
    values (minus the validation loss for "poisson") and ``out_activation_`` is
    "identity" or "exp".  ``predict`` returns shape (n_samples,) for
    one output and (n_samples, n_outputs) for several.
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, dtype=dtype)
        self.loss = loss

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), starting from the current parameters and
        continuing the optimizer of the last call (see
        ``MLPClassifier.partial_fit``)."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def _check_params(self):
        OneOf(REGRESSION_LOSSES)("loss", self.loss)
        return super()._check_params()

    def _loss_offset(self, Y, sw) -> float:
        """Poisson: scikit-learn reports the half deviance, fastbp's loss plus
        mean_e sum_k (y ln y - y) (0 ln 0 = 0), per output as the squared error."""
        if self.loss != "poisson":
            return 0.0
        Y = np.asarray(Y, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1.0)), 0.0) - Y
        per_example = c.sum(axis=1)
        mean = per_example.mean() if sw is None else np.average(per_example, weights=sw)
        return float(mean) * self._reported_scale()

    def _is_classifier(self) -> bool:
        return False

    def _target_kind(self) -> str:
        return "counts" if self.loss == "poisson" else "values"

    def _validate_input(self, X, y, incremental, reset):
        X = _check_structure(X)
        X, y = _validate_data(self, X, y, multi_output=True, y_numeric=True,
                              dtype=(np.float64, np.float32), reset=reset,
                              accept_sparse=["csr", "csc"])
        X = self._dense_unless_lbfgs(X)
        if self.loss == "poisson" and np.min(y) < 0:
            raise ValueError("y: loss='poisson' needs targets >= 0 (counts or rates)")
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
_SKLEARN_ACTIVATION = {"sigmoid": "logistic", "softmax": "softmax", "identity": "identity",
                       "exp": "exp"}
REGRESSION_LOSSES = ("squared_error", "poisson")

# scikit-learn's message, which its tests match; fastbp's reason follows it
_NON_FINITE = ("Solver produced non-finite parameter weights. The input data may contain large "
               "values and need to be preprocessed (the loss became NaN or infinite; "
               "learning_rate_init may also be too large).")


def _check_structure(X):
    """X, or for a sparse X the copy whose index arrays were checked
    (``checked_copy``), which scikit-learn's validation then converts (its
    conversion of a matrix whose indices lie outside its shape writes outside
    the arrays: scikit-learn's own estimators segfault)."""
    return checked_copy("X", X) if _sparse.issparse(X) else X


def _dense(X):
    """A sparse X as the dense array the stochastic solvers take (same values),
    after checking that it fits in memory."""
    return dense_copy("X", X) if _sparse.issparse(X) else X


# The constructor parameters with a constraint of their own (batch_size,
# verbose and hidden_layer_sizes take two forms: checked in ``_check_params``).
_PARAMETERS = {
    "activation": OneOf(sorted(ACTIVATIONS)),
    "solver": OneOf(SOLVERS),
    "alpha": Real(0.0),
    "learning_rate": OneOf(LEARNING_RATES),
    "learning_rate_init": Real(0.0, open_ends=("low",)),
    "power_t": Real(0.0),
    "max_fun": Integer(1),
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
}
