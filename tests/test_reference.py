"""The NumPy reference against finite differences and a scalar-loop loss.

Finite differences (``fastbp.gradcheck``) check the reference gradient against the
reference loss; ``naive_loss`` below checks the loss itself, one example and one
unit at a time with ``math`` functions, straight from the documents' definitions.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from cases import HIDDEN_ACTIVATIONS, OUTPUT_PAIRS, random_problem, spec
from hypothesis import given, settings
from hypothesis import strategies as st

from fastbp import reference
from fastbp.gradcheck import gradcheck
from fastbp.params import Params

# A correct gradient gives ~1e-9 (the differences' rounding noise); a wrong one
# gives 1e-3 or more.
GRADCHECK_TOL = 1e-6


def naive_loss(net, params, X, Y):
    """J from its definition: per example, per unit, in Python floats.

    bce: 000 eq. (1); cross_entropy: 002 eq. (29); sse: 002 eq. (5); poisson:
    a - y ln a; L2: 004 section 9 (with the squares).  Y must be an (N, n_L) matrix.
    """
    f = {
        "identity": lambda z: z,
        "sigmoid": lambda z: 1 / (1 + math.exp(-z)),
        "tanh": math.tanh,
        "relu": lambda z: max(z, 0.0),
        "exp": math.exp,
    }
    total = 0.0
    for e in range(X.shape[0]):
        a = [float(v) for v in X[e]]
        for l in range(1, net.n_layers + 1):
            W, b = params.W[l], params.b[l]
            z = [
                sum(float(W[i, j]) * a[j] for j in range(len(a)))
                + (float(b[i]) if b is not None else 0.0)
                for i in range(W.shape[0])
            ]
            name = net.activations[l - 1]
            if name == "softmax":
                m = max(z)
                s = sum(math.exp(zi - m) for zi in z)
                a = [math.exp(zi - m) / s for zi in z]
            else:
                a = [f[name](zi) for zi in z]
        y = [float(v) for v in Y[e]]
        if net.loss_name == "bce":
            total -= sum(yk * math.log(ak) + (1 - yk) * math.log(1 - ak) for yk, ak in zip(y, a))
        elif net.loss_name == "cross_entropy":
            total -= sum(yk * math.log(ak) for yk, ak in zip(y, a))
        elif net.loss_name == "poisson":
            # the negative log-likelihood of Poisson means a, less sum ln y!
            total += sum(ak - yk * math.log(ak) for yk, ak in zip(y, a))
        else:
            total += 0.5 * sum((ak - yk) ** 2 for yk, ak in zip(y, a))
    if net.reduction == "mean":
        total /= X.shape[0]
    return total + net.l2 / 2 * sum(float(np.sum(W.astype(np.float64) ** 2)) for W in params.W)


def one_hot(net, Y):
    Y = np.asarray(Y)
    if Y.ndim == 1 and net.loss_name == "cross_entropy":
        return np.eye(net.sizes[-1])[Y]
    return Y.reshape(Y.shape[0], -1)


BIASES = {"bias": True, "no-bias": False, "mixed": (False, True, False)}


@pytest.mark.parametrize("l2", [0.0, 0.3], ids=["l2=0", "l2=0.3"])
@pytest.mark.parametrize("bias", list(BIASES), ids=list(BIASES))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("output,loss", OUTPUT_PAIRS, ids=[f"{o}+{lo}" for o, lo in OUTPUT_PAIRS])
@pytest.mark.parametrize("hidden", HIDDEN_ACTIVATIONS)
def test_grid_against_finite_differences(hidden, output, loss, reduction, bias, l2):
    net = spec(
        (3, 4, 3, 3),
        (hidden, hidden, output),
        loss,
        reduction=reduction,
        l2=l2,
        bias=BIASES[bias],
    )
    seed = zlib.crc32(repr((hidden, output, loss, reduction, bias, l2)).encode())
    params, X, Y = random_problem(net, seed, N=4)
    assert gradcheck(net, params, X, Y, input_grad=True) < GRADCHECK_TOL
    J = reference.loss(net, params, X, Y)
    np.testing.assert_allclose(J, naive_loss(net, params, X, one_hot(net, Y)), rtol=1e-12)
    J2, grads, dX = reference.loss_and_grad(net, params, X, Y, input_grad=True)
    assert J2 == J
    assert isinstance(grads, Params)
    assert grads.sizes == params.sizes and grads.bias == params.bias
    assert dX.shape == X.shape
    np.testing.assert_allclose(reference.forward(net, params, X).shape, (4, 3))


@settings(max_examples=40, deadline=None)
@given(
    L=st.integers(1, 4),
    widths=st.lists(st.integers(1, 4), min_size=5, max_size=5),
    hidden=st.lists(st.sampled_from(HIDDEN_ACTIVATIONS), min_size=3, max_size=3),
    pair=st.sampled_from(OUTPUT_PAIRS),
    reduction=st.sampled_from(["mean", "sum"]),
    bias=st.lists(st.booleans(), min_size=4, max_size=4),
    l2=st.sampled_from([0.0, 0.25]),
    N=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_architectures(L, widths, hidden, pair, reduction, bias, l2, N, seed):
    net = spec(
        widths[: L + 1],
        (*hidden[: L - 1], pair[0]),
        pair[1],
        reduction=reduction,
        l2=l2,
        bias=bias[:L],
    )
    params, X, Y = random_problem(net, seed, N=N)
    assert gradcheck(net, params, X, Y, input_grad=True) < GRADCHECK_TOL
    np.testing.assert_allclose(
        reference.loss(net, params, X, Y),
        naive_loss(net, params, X, one_hot(net, Y)),
        rtol=1e-12,
        atol=1e-300,
    )


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    """The check is only worth its tolerance if it fails on a gradient that is off."""
    net = spec((3, 4, 2), ("tanh", "sigmoid"), "bce")
    params, X, Y = random_problem(net, 0)
    assert gradcheck(net, params, X, Y) < GRADCHECK_TOL
    original = reference.loss_and_grad

    def off_by_a_little(*args, **kwargs):
        J, grads, *rest = original(*args, **kwargs)
        grads.W[1][0, 0] *= 1.001
        return (J, grads, *rest)

    monkeypatch.setattr(reference, "loss_and_grad", off_by_a_little)
    assert gradcheck(net, params, X, Y) > 1e-4


# ---------------------------------------------------------------------------
# numerical stability: |z| ~ 1e3
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bce_from_logits_is_finite_and_exact_for_huge_z(dtype):
    # one layer, W = I, no bias: z = x.  With z = +-1000, sigma(z) rounds to 0 or 1
    # and ln(a) or ln(1-a) would be -inf; from the logits the loss is exactly
    # max(z, 0) - y z + ln(1 + e^-|z|) = 1000 (+ e^-1000, which underflows to 0).
    net = spec((2, 2), ("sigmoid",), "bce", reduction="sum", bias=False)
    params = Params(net.sizes, net.bias, np.eye(2, dtype=dtype).reshape(-1))
    X = np.array([[1000.0, -1000.0]])
    Y = np.array([[0.0, 1.0]])
    J, grads, dX = reference.loss_and_grad(net, params, X, Y, input_grad=True)
    assert J == 2000.0
    # delta = a - y = [1, -1]; dJ/dW[i, j] = delta_i x_j
    np.testing.assert_array_equal(grads.W[1], [[1000.0, -1000.0], [-1000.0, 1000.0]])
    np.testing.assert_array_equal(dX, [[1.0, -1.0]])
    assert grads.flat.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_cross_entropy_by_log_sum_exp_for_huge_z(dtype):
    net = spec((3, 3), ("softmax",), "cross_entropy", reduction="sum", bias=False)
    params = Params(net.sizes, net.bias, np.eye(3, dtype=dtype).reshape(-1))
    X = np.array([[1000.0, -1000.0, 0.0]])
    # label 1: J = -z_1 + log sum_j exp z_j = 1000 + 1000 + ln(1 + e^-1000 + e^-2000)
    J, grads, dX = reference.loss_and_grad(net, params, X, np.array([1]), input_grad=True)
    assert J == 2000.0
    # delta = softmax(z) - y = [1, -1, 0] (e^-1000 underflows)
    np.testing.assert_array_equal(dX, [[1.0, -1.0, 0.0]])
    np.testing.assert_array_equal(grads.W[1], np.outer([1.0, -1.0, 0.0], X[0]))


# exp outputs are left out: e^z overflows for z > ~709 whatever the formula
BOUNDED_PAIRS = [p for p in OUTPUT_PAIRS if p[0] != "exp"]


@pytest.mark.parametrize("hidden", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("output,loss", BOUNDED_PAIRS, ids=[f"{o}+{lo}" for o, lo in BOUNDED_PAIRS])
def test_saturated_units_give_finite_loss_and_gradients(hidden, output, loss):
    net = spec((3, 4, 3), (hidden, output), loss, l2=0.1)
    params, X, Y = random_problem(net, 7)
    params.flat[...] *= 400.0  # |z| up to ~1e3 in both layers
    X = X * 2
    J, grads, dX = reference.loss_and_grad(net, params, X, Y, input_grad=True)
    assert np.isfinite(J)
    assert np.all(np.isfinite(grads.flat)) and np.all(np.isfinite(dX))
    assert np.all(np.isfinite(reference.forward(net, params, X)))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("output,loss", OUTPUT_PAIRS, ids=[f"{o}+{lo}" for o, lo in OUTPUT_PAIRS])
def test_sample_weight_against_finite_differences_and_repeated_rows(output, loss, reduction):
    """J = sum_e w_e J(e) / sum_e w_e (mean) or sum_e w_e J(e) (sum): its gradient
    against finite differences, and integer weights equal to repeating each row
    w_e times (a weight 0 drops the row)."""
    net = spec((3, 4, 3), ("tanh", output), loss, reduction=reduction, l2=0.1)
    params, X, Y = random_problem(net, zlib.crc32(repr((output, loss)).encode()), N=5)
    w = np.array([2.0, 0.0, 1.0, 3.0, 1.0])
    assert gradcheck(net, params, X, Y, input_grad=True, sample_weight=w) < GRADCHECK_TOL
    rows = np.repeat(np.arange(5), w.astype(int))
    J, g = reference.loss_and_grad(net, params, X, Y, sample_weight=w)
    J_rep, g_rep = reference.loss_and_grad(net, params, X[rows], np.asarray(Y)[rows])
    np.testing.assert_allclose(J, J_rep, rtol=1e-12)
    np.testing.assert_allclose(g.flat, g_rep.flat, rtol=1e-10, atol=1e-13)
    assert reference.loss(net, params, X, Y, sample_weight=w) == J
    J1 = reference.loss(net, params, X, Y, sample_weight=np.ones(5))
    assert J1 == pytest.approx(reference.loss(net, params, X, Y), rel=1e-15)


def test_poisson_is_the_negative_log_likelihood():
    """poisson's J(e) = sum_k a_k - y_k z_k is the Poisson negative
    log-likelihood of the counts y with means a = e^z, less sum_k ln y_k!;
    its delta is a - y."""
    net = spec((2, 3, 2), ("tanh", "exp"), "poisson", reduction="sum")
    params, X, Y = random_problem(net, 3, N=4)
    a = reference.forward(net, params, X)
    nll = sum(-math.log(math.exp(-ak) * ak ** yk / math.factorial(int(yk)))
              for ak, yk in zip(a.ravel(), Y.ravel()))
    log_fact = sum(math.lgamma(yk + 1) for yk in Y.ravel())
    np.testing.assert_allclose(reference.loss(net, params, X, Y), nll - log_fact, rtol=1e-12)


# ---------------------------------------------------------------------------
# targets, dtypes, validation
# ---------------------------------------------------------------------------


def test_integer_labels_equal_one_hot_targets():
    net = spec((3, 5, 4), ("relu", "softmax"), "cross_entropy")
    params, X, labels = random_problem(net, 3, N=6)
    J1, g1, dX1 = reference.loss_and_grad(net, params, X, labels, input_grad=True)
    J2, g2, dX2 = reference.loss_and_grad(net, params, X, np.eye(4)[labels], input_grad=True)
    assert J1 == J2
    np.testing.assert_array_equal(g1.flat, g2.flat)
    np.testing.assert_array_equal(dX1, dX2)


def test_single_output_accepts_a_vector_of_targets():
    net = spec((3, 2, 1), ("tanh", "sigmoid"), "bce")
    params, X, Y = random_problem(net, 4, N=6)
    J1, g1 = reference.loss_and_grad(net, params, X, Y)
    J2, g2 = reference.loss_and_grad(net, params, X, Y[:, 0])
    assert J1 == J2
    np.testing.assert_array_equal(g1.flat, g2.flat)


def test_cross_entropy_delta_is_a_minus_y_for_probability_targets():
    # 002 eq. (31)-(32): with rows of y summing to 1, dJ/dz^(L) = a - y.  With one
    # layer and X = I (no bias), dJ/dW = delta^T X = delta^T.
    net = spec((3, 3), ("softmax",), "cross_entropy", reduction="sum", bias=False)
    rng = np.random.default_rng(5)
    params = Params(net.sizes, net.bias, rng.normal(size=9))
    Y = rng.dirichlet(np.ones(3), size=3)
    _, grads = reference.loss_and_grad(net, params, np.eye(3), Y)
    a = reference.forward(net, params, np.eye(3))
    np.testing.assert_allclose(grads.W[1], (a - Y).T, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("output,loss", OUTPUT_PAIRS, ids=[f"{o}+{lo}" for o, lo in OUTPUT_PAIRS])
def test_float32_follows_float64(output, loss):
    net = spec((4, 6, 3), ("tanh", output), loss, l2=0.05)
    params, X, Y = random_problem(net, 11, N=8)
    J64, g64, dX64 = reference.loss_and_grad(net, params, X, Y, input_grad=True)
    p32 = params.astype(np.float32)
    J32, g32, dX32 = reference.loss_and_grad(net, p32, X.astype(np.float32), Y, input_grad=True)
    assert g32.flat.dtype == np.float32 and dX32.dtype == np.float32
    assert reference.forward(net, p32, X).dtype == np.float32
    np.testing.assert_allclose(J32, J64, rtol=1e-5)
    scale = np.abs(g64.flat).max()
    np.testing.assert_allclose(g32.flat, g64.flat, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(dX32, dX64, rtol=1e-4, atol=1e-5 * np.abs(dX64).max())


def test_l2_is_added_once_and_not_to_biases():
    net0 = spec((2, 3, 2), ("tanh", "identity"), "sse", reduction="mean")
    net1 = spec((2, 3, 2), ("tanh", "identity"), "sse", reduction="mean", l2=0.5)
    params, X, Y = random_problem(net0, 2, N=7)
    J0, g0 = reference.loss_and_grad(net0, params, X, Y)
    J1, g1 = reference.loss_and_grad(net1, params, X, Y)
    sum_w2 = np.sum(params.W[1] ** 2) + np.sum(params.W[2] ** 2)
    np.testing.assert_allclose(J1 - J0, 0.25 * sum_w2, rtol=1e-12)
    for l in (1, 2):
        np.testing.assert_allclose(g1.W[l] - g0.W[l], 0.5 * params.W[l], rtol=1e-12)
        np.testing.assert_array_equal(g1.b[l], g0.b[l])


def test_mean_is_sum_over_n():
    net_sum = spec((3, 4, 2), ("sigmoid", "sigmoid"), "bce", reduction="sum")
    net_mean = spec((3, 4, 2), ("sigmoid", "sigmoid"), "bce", reduction="mean")
    params, X, Y = random_problem(net_sum, 9, N=6)
    Js, gs, dXs = reference.loss_and_grad(net_sum, params, X, Y, input_grad=True)
    Jm, gm, dXm = reference.loss_and_grad(net_mean, params, X, Y, input_grad=True)
    np.testing.assert_allclose(Jm, Js / 6, rtol=1e-14)
    np.testing.assert_allclose(gm.flat, gs.flat / 6, rtol=1e-14)
    np.testing.assert_allclose(dXm, dXs / 6, rtol=1e-14)


def test_relu_derivative_at_zero_is_zero():
    # z = 0 exactly in the hidden unit: relu'(0) = 0 by convention, so nothing
    # flows back through it.
    net = spec((1, 1, 1), ("relu", "identity"), "sse", reduction="sum", bias=False)
    params = Params(net.sizes, net.bias, np.array([1.0, 2.0]))
    _, grads, dX = reference.loss_and_grad(
        net, params, np.zeros((1, 1)), np.ones(1), input_grad=True
    )
    assert grads.W[1][0, 0] == 0.0 and dX[0, 0] == 0.0


def test_invalid_inputs_are_rejected():
    net = spec((3, 2), ("identity",), "bce")
    params = Params.zeros((3, 2), (True,))
    with pytest.raises(ValueError, match="sigmoid"):
        reference.loss(net, params, np.zeros((1, 3)), np.zeros((1, 2)))
    net = spec((3, 2), ("sigmoid",), "bce")
    with pytest.raises(ValueError, match="layout"):
        reference.loss(net, Params.zeros((3, 2), (False,)), np.zeros((1, 3)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="X"):
        reference.loss(net, params, np.zeros((1, 4)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="Y"):
        reference.loss(net, params, np.zeros((2, 3)), np.zeros((1, 2)))
    net = spec((3, 2), ("softmax",), "cross_entropy")
    with pytest.raises(ValueError, match="labels"):
        reference.loss(net, params, np.zeros((1, 3)), np.array([2]))


def test_reads_a_real_network_and_a_plain_description_alike():
    from types import SimpleNamespace

    import fastbp

    net = fastbp.Network((3, 4, 2), ("tanh", "sigmoid"), "bce", l2=0.1, dtype="float32")
    plain = SimpleNamespace(
        sizes=net.sizes,
        n_layers=2,
        activations=net.activations,
        loss="bce",
        reduction="mean",
        l2=0.1,
        bias=net.bias,
    )
    params, X, Y = random_problem(spec((3, 4, 2), ("tanh", "sigmoid"), "bce", l2=0.1), 1)
    J1, g1 = reference.loss_and_grad(net, params, X, Y)
    J2, g2 = reference.loss_and_grad(plain, params, X, Y)
    assert J1 == J2 and g1 == g2
    # gradcheck ignores the network's float32: it works in float64 throughout
    assert gradcheck(net, params.astype(np.float32), X, Y, input_grad=True) < GRADCHECK_TOL
