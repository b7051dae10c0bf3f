"""fastbp.sklearn: scikit-learn's estimator checks, step-for-step agreement with
scikit-learn's own MLP, test accuracy on iris/digits/diabetes against it, and
the estimator's contract (attributes, stopping, warm start, partial_fit, pickling,
bad parameters).

scikit-learn is an optional extra (``pip install ".[sklearn]"``); without it this
module is skipped.  Every network is float64 except in ``test_float32``, so the
training kernels compile once per dtype for the whole module; the data sets are
small enough that every fit takes the serial kernels.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip(
    "sklearn", reason="scikit-learn (the 'sklearn' extra) is not installed: pip install '.[sklearn]'"
)

from sklearn import neural_network as sk
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_digits, load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastbp
from fastbp import reference
from fastbp.sklearn import MLPClassifier, MLPRegressor

SKLEARN_VERSION = tuple(int(p) for p in sklearn.__version__.split(".")[:2])

# --------------------------------------------------------------- estimator checks

# Instances given to scikit-learn's checks: small networks and few epochs keep the
# ~110 checks per instance to seconds.  The early-stopping instances run the
# validation split, the per-epoch score and the restoring of the best epoch.
CHECKED = [
    MLPClassifier(hidden_layer_sizes=(16,), max_iter=50, learning_rate_init=0.01),
    MLPRegressor(hidden_layer_sizes=(16,), max_iter=50, learning_rate_init=0.01),
    MLPClassifier(hidden_layer_sizes=(16,), solver="sgd", max_iter=50, learning_rate_init=0.05,
                  early_stopping=True, n_iter_no_change=5),
    MLPRegressor(hidden_layer_sizes=(8, 4), activation="tanh", solver="sgd", max_iter=50,
                 learning_rate_init=0.01, early_stopping=True),
]

# Checks that cannot apply, by instance, with the reason.  Both estimators pass
# every check with early_stopping=False.  With early_stopping=True they behave as
# scikit-learn's MLP does, which these checks do not allow for:
_PARTIAL_FIT = ("partial_fit rejects early_stopping=True, as scikit-learn's MLP does: one "
                "partial_fit epoch has no validation set to stop on")
_TINY = ("the check fits on 10 examples or fewer: validation_fraction=0.1 holds out one "
         "example, too few for a validation score, and fit raises ValueError (as "
         "scikit-learn's MLP does)")
_WEIGHTS_SPLIT = ("the check compares weights with repeated rows; with early_stopping=True "
                  "the validation split draws different rows from the two data sets (as "
                  "scikit-learn's MLP does), so the fits differ")
EXPECTED_FAILED = {
    "classifier, early_stopping": {
        "check_sample_weight_equivalence_on_dense_data": _WEIGHTS_SPLIT,
        "check_sample_weight_equivalence_on_sparse_data": _WEIGHTS_SPLIT,
        "check_fit_score_takes_y": _PARTIAL_FIT,
        "check_n_features_in_after_fitting": _PARTIAL_FIT,
        "check_estimators_nan_inf": _PARTIAL_FIT,
        "check_estimators_partial_fit_n_features": _PARTIAL_FIT,
        "check_classifiers_one_label": _TINY,
        "check_fit2d_1feature": _TINY,
    },
    "regressor, early_stopping": {
        "check_sample_weight_equivalence_on_dense_data": _WEIGHTS_SPLIT,
        "check_sample_weight_equivalence_on_sparse_data": _WEIGHTS_SPLIT,
        "check_fit_score_takes_y": _PARTIAL_FIT,
        "check_n_features_in_after_fitting": _PARTIAL_FIT,
        "check_estimators_nan_inf": _PARTIAL_FIT,
        "check_estimators_partial_fit_n_features": _PARTIAL_FIT,
        "check_regressors_no_decision_function": _TINY,
        "check_fit2d_1feature": _TINY,
    },
}
# Checks scikit-learn itself skips here, each with its own message in the pytest
# report: the pandas checks (pandas is not a dependency), the array-API checks
# (SCIPY_ARRAY_API unset), check_decision_proba_consistency (no decision_function).


def _expected_failed(estimator):
    if not estimator.early_stopping:
        return {}
    kind = "classifier" if isinstance(estimator, MLPClassifier) else "regressor"
    return EXPECTED_FAILED[f"{kind}, early_stopping"]


if SKLEARN_VERSION >= (1, 6):
    _check_params = dict(expected_failed_checks=_expected_failed)
else:  # older scikit-learn reads expected failures from the class's _xfail_checks tag

    class _TaggedClassifier(MLPClassifier):
        def _more_tags(self):
            return {"_xfail_checks": _expected_failed(self)}

    class _TaggedRegressor(MLPRegressor):
        def _more_tags(self):
            return {"_xfail_checks": _expected_failed(self)}

    CHECKED = [(_TaggedClassifier if isinstance(est, MLPClassifier) else _TaggedRegressor)(
        **est.get_params()) for est in CHECKED]
    _check_params = {}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(CHECKED, **_check_params)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --------------------------------------------------------------- helpers


def _iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _regression(n_outputs):
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X[:120])
    y = y[:120] / 100.0
    Y = np.column_stack([y, np.sin(X[:, 0]) + X[:, 1]])
    return X, (Y[:, 0] if n_outputs == 1 else Y)


def _assert_same_fit(ours, theirs, rtol=1e-10, atol=1e-12, loss=True):
    assert len(ours.coefs_) == len(theirs.coefs_)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    if loss:
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol, atol=atol)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_


# Targets of every head: multiclass (softmax + CE), binary (one sigmoid + BCE),
# multi-label indicators (sigmoid + BCE per label).
_X_IRIS, _Y_IRIS = _iris()
HEADS = {
    "multiclass": (_Y_IRIS, "softmax", 3),
    "binary": (np.where(_Y_IRIS == 1, "versicolor", "other"), "logistic", 1),
    "multilabel": (np.column_stack([_Y_IRIS == 1, _Y_IRIS == 2]).astype(int), "logistic", 2),
}
SGD_KINDS = {
    "plain": dict(solver="sgd", momentum=0.0),
    "momentum": dict(solver="sgd", momentum=0.9, nesterovs_momentum=False),
    "nesterov": dict(solver="sgd", momentum=0.9, nesterovs_momentum=True),
}
COMMON = dict(hidden_layer_sizes=(7, 5), alpha=0.01, batch_size=30, shuffle=False,
              learning_rate_init=0.01, random_state=1)


# --------------------------------------------------------------- step for step


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("kind", SGD_KINDS)
def test_classifier_matches_sklearn_step_for_step(head, activation, kind):
    """Same random_state -> same initial weights; without shuffling and with
    batches that divide N, every SGD step is scikit-learn's: same parameters and
    loss curve to rounding.  This pins the in x out orientation, the heads, the
    alpha / batch_size conversion and the momentum forms."""
    y, out_activation, n_outputs = HEADS[head]
    kw = dict(COMMON, activation=activation, max_iter=12, tol=0.0, n_iter_no_change=100,
              **SGD_KINDS[kind])
    ours = MLPClassifier(**kw).fit(_X_IRIS, y)
    theirs = sk.MLPClassifier(**kw).fit(_X_IRIS, y)
    _assert_same_fit(ours, theirs)
    assert ours.out_activation_ == theirs.out_activation_ == out_activation
    assert ours.n_outputs_ == theirs.n_outputs_ == n_outputs
    assert ours.n_layers_ == theirs.n_layers_ == 4
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    np.testing.assert_array_equal(ours.predict(_X_IRIS), theirs.predict(_X_IRIS))
    np.testing.assert_allclose(ours.predict_proba(_X_IRIS), theirs.predict_proba(_X_IRIS),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("n_outputs", [1, 2])
@pytest.mark.parametrize("kind", SGD_KINDS)
def test_regressor_matches_sklearn_step_for_step(n_outputs, kind):
    """Identity output + sse has scikit-learn's gradient exactly.  Its reported
    loss divides by the number of outputs K; with alpha = 0 (no L2 part) the loss
    curves agree too."""
    X, y = _regression(n_outputs)
    for alpha in (0.01, 0.0):
        kw = dict(COMMON, alpha=alpha, activation="tanh", max_iter=12, tol=0.0,
                  n_iter_no_change=100, **SGD_KINDS[kind])
        ours = MLPRegressor(**kw).fit(X, y)
        theirs = sk.MLPRegressor(**kw).fit(X, y)
        _assert_same_fit(ours, theirs, loss=alpha == 0 or n_outputs == 1)
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-10, atol=1e-12)
        assert ours.predict(X).shape == y.shape


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_adam_close_to_sklearn():
    """Adam differs only in where eps enters (sqrt(v_hat) + eps here, sqrt(v) + eps
    in scikit-learn): the same trajectory to a relative 1e-3 on a smooth network."""
    kw = dict(COMMON, activation="tanh", solver="adam", max_iter=12, tol=0.0,
              n_iter_no_change=100)
    ours = MLPClassifier(**kw).fit(_X_IRIS, _Y_IRIS)
    theirs = sk.MLPClassifier(**kw).fit(_X_IRIS, _Y_IRIS)
    _assert_same_fit(ours, theirs, rtol=1e-3, atol=1e-4)


def test_one_epoch_is_fastbp_gradient_step_with_alpha_over_n():
    """Independent of scikit-learn's MLP: a full-batch SGD epoch moves the parameters
    by -lr * grad of mean loss + alpha / (2 N) ||W||^2, the gradient from fastbp's
    NumPy reference (004 section 9 with lambda = alpha / N), and reports that J."""
    X, y = _X_IRIS, _Y_IRIS
    est = MLPClassifier(hidden_layer_sizes=(6,), activation="tanh", solver="sgd", momentum=0.0,
                        alpha=0.3, batch_size=X.shape[0], learning_rate_init=0.1, max_iter=1,
                        random_state=3, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
        net = fastbp.Network([4, 6, 3], ["tanh", "softmax"], "cross_entropy",
                             l2=0.3 / X.shape[0])
        p1 = net.params_from(est.coefs_, est.intercepts_, layout="in_out")
        est.fit(X, y)  # warm start: one more epoch from p1
    loss, grad = reference.loss_and_grad(net, p1, X, np.eye(3)[y])
    got = net.params_from(est.coefs_, est.intercepts_, layout="in_out").flat
    np.testing.assert_allclose(got, p1.flat - 0.1 * grad.flat, rtol=1e-12, atol=1e-14)
    assert est.loss_curve_[1] == pytest.approx(loss, rel=1e-12)


# --------------------------------------------------------------- stopping rules


@pytest.mark.parametrize("Est, SK, data", [
    (MLPClassifier, sk.MLPClassifier, (_X_IRIS, _Y_IRIS)),
    (MLPRegressor, sk.MLPRegressor, _regression(1)),
])
def test_tol_stopping_matches_sklearn(Est, SK, data):
    """tol / n_iter_no_change on the training loss: the same stopping epoch,
    best_loss_ and final parameters as scikit-learn (the run goes past the stop
    inside a compiled chunk; the parameters of the stopping epoch are recovered)."""
    X, y = data
    kw = dict(COMMON, activation="relu", max_iter=400, tol=1e-3, n_iter_no_change=3,
              **SGD_KINDS["nesterov"])
    ours = Est(**kw).fit(X, y)
    theirs = SK(**kw).fit(X, y)
    assert 5 < theirs.n_iter_ < 400
    _assert_same_fit(ours, theirs)
    assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-10)
    assert ours.validation_scores_ is None and ours.best_validation_score_ is None


@pytest.mark.parametrize("Est, SK, data", [
    (MLPClassifier, sk.MLPClassifier, (_X_IRIS, _Y_IRIS)),
    (MLPClassifier, sk.MLPClassifier, (_X_IRIS, HEADS["binary"][0])),
    (MLPRegressor, sk.MLPRegressor, _regression(1)),
])
def test_early_stopping_matches_sklearn(Est, SK, data):
    """early_stopping: scikit-learn's validation split, its per-epoch score
    (accuracy; R^2 for one output and alpha = 0), the same stopping epoch, and the
    best epoch's parameters restored."""
    X, y = data
    kw = dict(COMMON, alpha=0.0, activation="tanh", max_iter=400, early_stopping=True,
              validation_fraction=0.2, n_iter_no_change=4, **SGD_KINDS["momentum"])
    ours = Est(**kw).fit(X, y)
    theirs = SK(**kw).fit(X, y)
    assert theirs.n_iter_ < 400
    _assert_same_fit(ours, theirs)
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_,
                               rtol=1e-9, atol=1e-12)
    assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_,
                                                        rel=1e-9)
    assert ours.best_loss_ is None


def test_convergence_warning_and_verbose(capsys):
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0, verbose=True)
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(3\)"):
        est.fit(_X_IRIS, _Y_IRIS)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"Iteration {k + 1}, loss = {est.loss_curve_[k]:.8f}" for k in range(3)]


# --------------------------------------------------------------- warm start, partial_fit


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_warm_start_matches_sklearn():
    """A warm-started fit continues from coefs_ with a fresh optimizer (as in
    scikit-learn, for momentum too): two fits of 5 epochs are scikit-learn's."""
    kw = dict(COMMON, activation="tanh", max_iter=5, tol=0.0, n_iter_no_change=100,
              warm_start=True, **SGD_KINDS["nesterov"])
    ours, theirs = MLPClassifier(**kw), sk.MLPClassifier(**kw)
    for _ in range(2):
        ours.fit(_X_IRIS, _Y_IRIS)
        theirs.fit(_X_IRIS, _Y_IRIS)
    _assert_same_fit(ours, theirs)
    assert len(ours.loss_curve_) == 10 and ours.n_iter_ == 5 and ours.t_ == 10 * 150
    with pytest.raises(ValueError, match="warm_start"):
        ours.fit(_X_IRIS[_Y_IRIS < 2], _Y_IRIS[_Y_IRIS < 2])
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        ours.set_params(hidden_layer_sizes=(3,)).fit(_X_IRIS, _Y_IRIS)


def test_partial_fit_matches_sklearn_for_plain_sgd():
    """partial_fit is one epoch; plain SGD has no optimizer state, so a sequence of
    calls on chunks of a stream is scikit-learn's sequence."""
    kw = dict(COMMON, activation="relu", **SGD_KINDS["plain"])
    ours, theirs = MLPClassifier(**kw), sk.MLPClassifier(**kw)
    classes = np.unique(_Y_IRIS)
    order = np.random.default_rng(0).permutation(150)
    for chunk in np.array_split(order, 5):
        ours.partial_fit(_X_IRIS[chunk], _Y_IRIS[chunk], classes=classes)
        theirs.partial_fit(_X_IRIS[chunk], _Y_IRIS[chunk], classes=classes)
    _assert_same_fit(ours, theirs)
    assert ours.n_iter_ == 1 and len(ours.loss_curve_) == 5

    X, y = _regression(2)
    ours, theirs = MLPRegressor(**kw), sk.MLPRegressor(**kw)
    for chunk in np.array_split(np.arange(120), 4):
        ours.partial_fit(X[chunk], y[chunk])
        theirs.partial_fit(X[chunk], y[chunk])
    _assert_same_fit(ours, theirs, loss=False)


def test_partial_fit_errors():
    with pytest.raises(ValueError, match="classes: must be passed on the first call"):
        MLPClassifier().partial_fit(_X_IRIS, _Y_IRIS)
    est = MLPClassifier(hidden_layer_sizes=(3,), random_state=0)
    est.partial_fit(_X_IRIS, _Y_IRIS, classes=[0, 1, 2, 3])
    assert est.predict_proba(_X_IRIS).shape == (150, 4)
    with pytest.raises(ValueError, match="classes"):
        est.partial_fit(_X_IRIS, _Y_IRIS, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="classes not in classes_"):
        est.partial_fit(_X_IRIS, _Y_IRIS + 5)
    with pytest.raises(ValueError, match="early_stopping"):
        MLPRegressor(early_stopping=True).partial_fit(*_regression(1))


# --------------------------------------------------------------- accuracy against scikit-learn


def _scores(load, Est, SK, kw, regression=False, splits=(0, 1, 2)):
    """Mean test score of fastbp's and scikit-learn's estimator over a few splits,
    same architecture, solver, learning rate, batch size, epochs and seeds."""
    X, y = load(return_X_y=True)
    ours, theirs = [], []
    for s in splits:
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=s,
                                              stratify=None if regression else y)
        scaler = StandardScaler().fit(Xtr)
        Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
        if regression:
            mean, sd = ytr.mean(), ytr.std()
            ytr, yte = (ytr - mean) / sd, (yte - mean) / sd
        # n_iter_no_change beyond max_iter: both run exactly max_iter epochs
        args = dict(kw, random_state=s, n_iter_no_change=kw["max_iter"] + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ours.append(Est(**args).fit(Xtr, ytr).score(Xte, yte))
            theirs.append(SK(**args).fit(Xtr, ytr).score(Xte, yte))
    return np.mean(ours), np.mean(theirs)


@pytest.mark.parametrize("load, kw", [
    (load_iris, dict(hidden_layer_sizes=(16,), solver="adam", learning_rate_init=0.01,
                     batch_size=16, max_iter=100)),
    (load_iris, dict(hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=0.05,
                     batch_size=16, max_iter=100)),
    (load_digits, dict(hidden_layer_sizes=(16,), solver="adam", learning_rate_init=0.003,
                       batch_size=32, max_iter=20)),
    (load_digits, dict(hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=0.03,
                       batch_size=32, max_iter=20)),
], ids=["iris-adam", "iris-sgd", "digits-adam", "digits-sgd"])
def test_test_accuracy_within_1_5_points_of_sklearn(load, kw):
    ours, theirs = _scores(load, MLPClassifier, sk.MLPClassifier, kw)
    assert ours > 0.9
    assert abs(ours - theirs) <= 0.015, (ours, theirs)


@pytest.mark.parametrize("solver, lr", [("adam", 0.01), ("sgd", 0.01)])
def test_regression_r2_within_0_015_of_sklearn(solver, lr):
    kw = dict(hidden_layer_sizes=(16,), solver=solver, learning_rate_init=lr, batch_size=32,
              max_iter=50)
    ours, theirs = _scores(load_diabetes, MLPRegressor, sk.MLPRegressor, kw, regression=True)
    assert ours > 0.25
    assert abs(ours - theirs) <= 0.015, (ours, theirs)


# --------------------------------------------------------------- attributes and methods


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fitted_attributes_are_fastbp_params_transposed():
    est = MLPClassifier(hidden_layer_sizes=(5, 4), max_iter=5, random_state=0)
    est.fit(_X_IRIS, _Y_IRIS)
    assert [c.shape for c in est.coefs_] == [(4, 5), (5, 4), (4, 3)]  # in x out
    assert [b.shape for b in est.intercepts_] == [(5,), (4,), (3,)]
    assert est.n_features_in_ == 4 and est.n_layers_ == 4 and est.n_outputs_ == 3
    assert est.loss_ == est.loss_curve_[-1] and len(est.loss_curve_) == est.n_iter_ == 5
    net = fastbp.Network([4, 5, 4, 3], ["relu", "relu", "softmax"], "cross_entropy")
    p = net.params_from(est.coefs_, est.intercepts_, layout="in_out")
    for l in (1, 2, 3):
        np.testing.assert_array_equal(p.W[l], est.coefs_[l - 1].T)  # W[l] is out x in
    proba = est.predict_proba(_X_IRIS)
    np.testing.assert_array_equal(proba, net.forward(p, _X_IRIS))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(est.predict(_X_IRIS), est.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(est.predict_log_proba(_X_IRIS), np.log(proba), rtol=1e-12)
    assert est.score(_X_IRIS, _Y_IRIS) == np.mean(est.predict(_X_IRIS) == _Y_IRIS)


def test_binary_and_multilabel_heads():
    y_bin = HEADS["binary"][0]
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0,
                        learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(_X_IRIS, y_bin)
    assert est.coefs_[-1].shape == (8, 1) and est.out_activation_ == "logistic"
    proba = est.predict_proba(_X_IRIS)
    assert proba.shape == (150, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(est.predict(_X_IRIS),
                                  np.where(proba[:, 1] > 0.5, "versicolor", "other"))

    Y = HEADS["multilabel"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(_X_IRIS, Y)
    assert est.coefs_[-1].shape == (8, 2) and est.out_activation_ == "logistic"
    proba = est.predict_proba(_X_IRIS)
    assert proba.shape == (150, 2) and not np.allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(est.predict(_X_IRIS), (proba > 0.5).astype(int))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("Est, data", [(MLPClassifier, (_X_IRIS, _Y_IRIS)),
                                       (MLPRegressor, _regression(2))])
def test_pickle_and_clone(Est, data):
    X, y = data
    est = Est(hidden_layer_sizes=(6,), max_iter=10, random_state=0).fit(X, y)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    assert back.loss_curve_ == est.loss_curve_
    refit = clone(est).fit(X, y)  # same random_state: the same fit, bit for bit
    for a, b in zip(refit.coefs_ + refit.intercepts_, est.coefs_ + est.intercepts_):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_float32():
    kw = dict(hidden_layer_sizes=(6,), max_iter=20, random_state=0, learning_rate_init=0.01)
    est32 = MLPClassifier(dtype="float32", **kw).fit(_X_IRIS, _Y_IRIS)
    est64 = MLPClassifier(**kw).fit(_X_IRIS, _Y_IRIS)
    assert all(c.dtype == np.float32 for c in est32.coefs_ + est32.intercepts_)
    assert est32.predict_proba(_X_IRIS).dtype == np.float32
    for a, b in zip(est32.coefs_, est64.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_user_assigned_coefs_are_used():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPRegressor(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
        est.fit(*_regression(1))
    est.coefs_ = [np.zeros_like(c) for c in est.coefs_]
    est.intercepts_ = [np.full_like(b, 2.5) for b in est.intercepts_]
    np.testing.assert_array_equal(est.predict(_X_IRIS[:, :1].repeat(10, 1)[:5]), 2.5)


def test_divergence_raises():
    X, y = _regression(1)
    est = MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", momentum=0.0,
                       learning_rate_init=1e3, max_iter=50, random_state=0)
    with pytest.raises(ValueError, match="non-finite"):
        est.fit(X, y * 1e6)


# --------------------------------------------------------------- bad parameters


@pytest.mark.parametrize("param, value, error", [
    ("hidden_layer_sizes", (4, 0), ValueError),
    ("hidden_layer_sizes", (4, 2.5), TypeError),
    ("hidden_layer_sizes", "4", TypeError),
    ("activation", "softmax", ValueError),
    ("solver", "rmsprop", ValueError),
    ("learning_rate", "cyclic", ValueError),
    ("power_t", -0.5, ValueError),
    ("max_fun", 0, ValueError),
    ("n_iter_no_change", -np.inf, TypeError),
    ("alpha", -1.0, ValueError),
    ("batch_size", 0, ValueError),
    ("batch_size", "big", TypeError),
    ("learning_rate_init", 0.0, ValueError),
    ("max_iter", 0, ValueError),
    ("max_iter", 2.0, TypeError),
    ("shuffle", "yes", TypeError),
    ("tol", -1e-4, ValueError),
    ("verbose", -1, ValueError),
    ("warm_start", 1, TypeError),
    ("momentum", 1.0, ValueError),
    ("nesterovs_momentum", None, TypeError),
    ("early_stopping", "no", TypeError),
    ("validation_fraction", 1.0, ValueError),
    ("beta_1", 1.0, ValueError),
    ("beta_2", -0.1, ValueError),
    ("epsilon", 0.0, ValueError),
    ("n_iter_no_change", 0, ValueError),
    ("dtype", "int32", TypeError),
    ("dtype", "float128x", TypeError),
])
def test_bad_parameters_name_themselves(param, value, error):
    est = MLPClassifier(**{param: value})  # accepted as given, checked by fit
    with pytest.raises(error, match=param):
        est.fit(_X_IRIS, _Y_IRIS)
    assert not hasattr(est, "coefs_")


# --------------------------------------------------------------- lbfgs, schedules, state,
# sample weights, poisson, sparse and float32 inputs


def _sk_loss_grad(est_sk, theta, X, Y, sw):
    """scikit-learn's own objective and gradient of "lbfgs" at theta (its packing)."""
    sizes = [X.shape[1]] + [c.shape[1] for c in est_sk.coefs_]
    acts = [X] + [np.empty((X.shape[0], n)) for n in sizes[1:]]
    deltas = [np.empty_like(a) for a in acts[1:]]
    cg = [np.empty((a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
    ig = [np.empty(b) for b in sizes[1:]]
    return est_sk._loss_grad_lbfgs(theta, X, Y, sw, acts, deltas, cg, ig)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression", "poisson"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_lbfgs_objective_and_gradient_are_scikit_learns(kind, weighted):
    """``_loss_grad_lbfgs`` (fastbp's kernels) against scikit-learn's own, on its
    packed vector: the same J (poisson: up to scikit-learn's constant, its half
    deviance's y ln y - y) and the same gradient, with and without weights."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4))
    if kind == "binary":
        y, Est, SkEst, kw = (X[:, 0] > 0).astype(int), MLPClassifier, sk.MLPClassifier, {}
    elif kind == "multiclass":
        y, Est, SkEst, kw = rng.integers(0, 3, 40), MLPClassifier, sk.MLPClassifier, {}
    elif kind == "regression":
        y, Est, SkEst, kw = X[:, :1] @ [[1.0, -2.0]] + 0.1, MLPRegressor, sk.MLPRegressor, {}
    else:
        y, Est, SkEst = rng.poisson(2.0, 40).astype(float), MLPRegressor, sk.MLPRegressor
        kw = {"loss": "poisson"}
    sw = rng.uniform(0.2, 2.0, 40) if weighted else None
    common = dict(hidden_layer_sizes=(5,), activation="tanh", solver="lbfgs", alpha=0.3,
                  max_iter=1, random_state=0, **kw)
    ours = Est(**common).fit(X, y)
    theirs = SkEst(**common).fit(X, y)
    theta = np.hstack([c.ravel() for c in theirs.coefs_ + theirs.intercepts_])
    if kind in ("binary", "multiclass"):
        Y = theirs._label_binarizer.transform(y).astype(float)
    else:
        Y = np.asarray(y, dtype=float).reshape(40, -1)
    J, g = ours._loss_grad_lbfgs(theta, X, Y, sw)
    J_sk, g_sk = _sk_loss_grad(theirs, theta, X, Y, sw)
    scale = np.abs(g_sk).max()
    if kind == "regression":
        # scikit-learn reports its squared error over the outputs (K = 2) while its
        # gradient is that of the sum: fastbp's J is the sum's
        J_sk = J_sk * 2 - 0.5 * 0.3 * sum((c ** 2).sum() for c in theirs.coefs_) / (
            40 if sw is None else sw.sum())
    if kind == "poisson":
        c = np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1)), 0) - Y
        J = J + np.average(c.sum(axis=1), weights=sw)
    np.testing.assert_allclose(J, J_sk, rtol=1e-12)
    np.testing.assert_allclose(g, g_sk, rtol=1e-9, atol=1e-12 * scale)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_lbfgs_follows_scikit_learns_iterates():
    """Same start, same objective, the same L-BFGS-B: after 15 iterations the
    same parameters as scikit-learn's "lbfgs", and its limits honoured."""
    kw = dict(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=15, random_state=0)
    ours = MLPClassifier(**kw).fit(_X_IRIS, _Y_IRIS)
    theirs = sk.MLPClassifier(**kw).fit(_X_IRIS, _Y_IRIS)
    _assert_same_fit(ours, theirs, rtol=1e-6, atol=1e-8, loss=False)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        short = MLPClassifier(**{**kw, "max_iter": 500, "max_fun": 10}).fit(_X_IRIS, _Y_IRIS)
    assert short.n_iter_ <= 10
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")
    assert hasattr(MLPRegressor(solver="sgd"), "partial_fit")


@pytest.mark.parametrize("solver, momentum", [("sgd", 0.9), ("sgd", 0.0), ("adam", 0.9)])
def test_partial_fit_continues_exactly_where_it_stopped(solver, momentum):
    """n partial_fit calls, pickled half way, take the steps of fit(max_iter=n):
    the optimizer (velocity or moments, step, rate, shuffling) carries over."""
    kw = dict(hidden_layer_sizes=(6,), solver=solver, momentum=momentum, batch_size=32,
              learning_rate_init=0.05 if solver == "sgd" else 0.01, random_state=3,
              tol=0.0, n_iter_no_change=10**6, learning_rate="invscaling", power_t=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        whole = MLPClassifier(max_iter=6, **kw).fit(_X_IRIS, _Y_IRIS)
    est = MLPClassifier(**kw)
    for k in range(6):
        est.partial_fit(_X_IRIS, _Y_IRIS, classes=[0, 1, 2])
        if k == 2:
            est = pickle.loads(pickle.dumps(est))
    for a, b in zip(est.coefs_ + est.intercepts_, whole.coefs_ + whole.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert est.loss_curve_ == whole.loss_curve_ and est.t_ == whole.t_ == 900
    assert est._optimizer.learning_rate == whole._optimizer.learning_rate


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_learning_rate_schedules_as_scikit_learn():
    """invscaling: lr / (t + 1)^power_t after each epoch; adaptive: lr / 5 where
    the rule would stop, until lr <= 1e-6; with momentum=0 (same update rule)
    the parameters follow scikit-learn's step for step."""
    kw = dict(hidden_layer_sizes=(6,), solver="sgd", momentum=0.0, batch_size=150,
              learning_rate_init=0.2, max_iter=8, random_state=0, shuffle=False)
    for schedule in ("invscaling", "adaptive"):
        extra = {"tol": 1e3, "n_iter_no_change": 1} if schedule == "adaptive" else {}
        ours = MLPClassifier(learning_rate=schedule, power_t=0.3, **kw, **extra)
        theirs = sk.MLPClassifier(learning_rate=schedule, power_t=0.3, **kw, **extra)
        ours.fit(_X_IRIS, _Y_IRIS)
        theirs.fit(_X_IRIS, _Y_IRIS)
        _assert_same_fit(ours, theirs, rtol=1e-9, atol=1e-12)
        assert ours._optimizer.learning_rate == pytest.approx(
            theirs._optimizer.learning_rate, rel=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sample_weight_and_poisson_fit_like_scikit_learn():
    """Full-batch SGD with sample weights, and the Poisson regressor, against
    scikit-learn step for step; zero weights are rows left out."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3))
    y = rng.poisson(np.exp(0.5 * X[:, 0])).astype(float)
    sw = rng.uniform(0.0, 2.0, 60)
    kw = dict(hidden_layer_sizes=(4,), activation="tanh", solver="sgd", momentum=0.0,
              batch_size=60, learning_rate_init=0.05, max_iter=5, random_state=0,
              alpha=1e-3)
    for loss in ("squared_error", "poisson"):
        ours = MLPRegressor(loss=loss, **kw).fit(X, y, sample_weight=sw)
        theirs = sk.MLPRegressor(loss=loss, **kw).fit(X, y, sample_weight=sw)
        _assert_same_fit(ours, theirs, rtol=1e-9, atol=1e-12, loss=False)
        assert ours.out_activation_ == theirs.out_activation_
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9)
    w = np.ones(60)
    w[::3] = 0.0
    a = MLPRegressor(**kw).fit(X, y, sample_weight=w)
    b = MLPRegressor(**{**kw, "batch_size": 40}).fit(X[w > 0], y[w > 0])
    for p, q in zip(a.coefs_, b.coefs_):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="sample_weight: weights must be >= 0"):
        MLPRegressor(**kw).fit(X, y, sample_weight=-w)
    with pytest.raises(ValueError, match="y: loss='poisson' needs targets >= 0"):
        MLPRegressor(loss="poisson", **kw).fit(X, -y - 1)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sparse_and_float32_inputs():
    """CSR and CSC inputs: "adam" (densified) fits exactly as on the dense array,
    "lbfgs" and prediction run layer 1 over the nonzeros and agree with the
    dense results to rounding; float32 inputs give a float32 network and
    predictions, float64 ones float64."""
    from scipy import sparse

    X = np.where(np.abs(_X_IRIS) > 0.8, _X_IRIS, 0.0)
    kw = dict(hidden_layer_sizes=(5,), max_iter=10, random_state=0)
    dense = MLPClassifier(**kw).fit(X, _Y_IRIS)
    dense_lbfgs = MLPClassifier(solver="lbfgs", **kw).fit(X, _Y_IRIS)
    for fmt in (sparse.csr_matrix, sparse.csc_array):
        est = MLPClassifier(**kw).fit(fmt(X), _Y_IRIS)
        for a, b in zip(est.coefs_, dense.coefs_):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(est.predict_proba(fmt(X)), dense.predict_proba(X),
                                   rtol=1e-13, atol=1e-15)
        est = MLPClassifier(solver="lbfgs", **kw).fit(fmt(X), _Y_IRIS)
        for a, b in zip(est.coefs_, dense_lbfgs.coefs_):
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
        np.testing.assert_array_equal(est.predict(fmt(X)), dense_lbfgs.predict(X))
    reg = MLPRegressor(**kw).fit(_X_IRIS.astype(np.float32), _Y_IRIS.astype(float))
    assert all(c.dtype == np.float32 for c in reg.coefs_ + reg.intercepts_)
    assert reg.predict(_X_IRIS.astype(np.float32)).dtype == np.float32
    reg64 = MLPRegressor(**kw).fit(_X_IRIS, _Y_IRIS.astype(float))
    assert reg64.predict(_X_IRIS).dtype == np.float64
