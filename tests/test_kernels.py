"""The compiled kernels against the independent NumPy reference, over every valid
combination of activation, loss, reduction, bias, l2 and dtype, on random
architectures (widths 1 and up, L = 1..4), through both the serial and the
parallel drivers."""

import numpy as np
import pytest
from cases import HIDDEN_ACTIVATIONS as HIDDEN
from cases import OUTPUT_PAIRS as PAIRS
from cases import RTOL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastbp import Network, reference


def targets(rng, loss, N, n_out, labels):
    if loss == "cross_entropy":
        if labels:
            return rng.integers(0, n_out, N)
        P = rng.random((N, n_out)) + 0.1
        return P / P.sum(axis=1, keepdims=True)
    if loss == "bce":
        return rng.random((N, n_out))
    if loss == "poisson":
        return rng.poisson(1.5, size=(N, n_out)).astype(np.float64)
    return rng.normal(size=(N, n_out))


def assert_close(actual, desired, rtol, what, scale=0.0):
    """Elementwise rtol, with an absolute floor of rtol x the problem's scale (the
    largest of this array, ``scale``): entries that are tiny only by cancellation,
    or exactly zero by symmetry, are judged against the whole."""
    desired = np.asarray(desired, dtype=np.float64)
    scale = max(np.abs(desired).max(initial=0.0), scale, 1e-300)
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), desired, rtol=rtol,
                               atol=rtol * scale, err_msg=what)


@st.composite
def problems(draw):
    L = draw(st.integers(1, 4))
    sizes = [draw(st.integers(1, 7)) for _ in range(L + 1)]
    out_act, loss = draw(st.sampled_from(PAIRS))
    hidden = [draw(st.sampled_from(HIDDEN)) for _ in range(L - 1)]
    bias = draw(st.sampled_from(["all", "none", "mixed"]))
    bias = {"all": True, "none": False,
            "mixed": [bool(k % 2) for k in range(L)]}[bias]
    return dict(
        sizes=sizes, activations=hidden + [out_act], loss=loss, bias=bias,
        reduction=draw(st.sampled_from(["mean", "sum"])),
        l2=draw(st.sampled_from([0.0, 0.05])),
        N=draw(st.sampled_from([1, 2, 5, 17, 40])),
        labels=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


def check(problem, dtype, input_grad=True, path=None, weighted=False):
    pr = problem
    net = Network(pr["sizes"], pr["activations"], pr["loss"], reduction=pr["reduction"],
                  l2=pr["l2"], bias=pr["bias"], dtype=dtype)
    rng = np.random.default_rng(pr["seed"])
    # weights at the scale of an initialized network (std 1/sqrt(n_in)); saturated
    # units are exercised by test_large_pre_activations_stay_finite_and_match
    params = net.params_from(
        [rng.normal(size=(m, n)) / np.sqrt(n) for n, m in zip(pr["sizes"][:-1], pr["sizes"][1:])],
        [rng.normal(size=m) if b else None for m, b in zip(pr["sizes"][1:], net.bias)])
    X = rng.normal(size=(pr["N"], pr["sizes"][0])).astype(dtype)
    Y = targets(rng, pr["loss"], pr["N"], pr["sizes"][-1], pr["labels"])
    if Y.dtype.kind == "f":
        Y = Y.astype(dtype)
    net64 = Network(pr["sizes"], pr["activations"], pr["loss"], reduction=pr["reduction"],
                    l2=pr["l2"], bias=pr["bias"])
    p64 = params.astype(np.float64)

    w = rng.uniform(0.0, 3.0, pr["N"]).astype(dtype) if weighted else None
    J, g, dX = net.loss_and_grad(params, X, Y, input_grad=True, sample_weight=w)
    if path is not None:  # the driver the test asked for is the one that ran
        assert net.plan.last_driver == path
    J_ref, g_ref, dX_ref = reference.loss_and_grad(net64, p64, X.astype(np.float64), Y,
                                                   input_grad=True, sample_weight=w)
    rtol = RTOL[dtype]
    assert g.dtype == dX.dtype == np.dtype(dtype)
    assert_close(J, J_ref, rtol, "loss")
    scale = max(np.abs(g_ref.flat).max(), abs(J_ref))
    for l in range(1, net.n_layers + 1):
        assert_close(g.W[l], g_ref.W[l], rtol, f"dJ/dW[{l}]", scale)
        if net.bias[l - 1]:
            assert_close(g.b[l], g_ref.b[l], rtol, f"dJ/db[{l}]", scale)
    assert_close(dX, dX_ref, rtol, "dJ/dX", scale)
    assert_close(net.forward(params, X), reference.forward(net64, p64, X.astype(np.float64)),
                 rtol, "forward")
    assert_close(net.loss(params, X, Y, sample_weight=w), J_ref, rtol, "loss()")


@pytest.fixture(params=["serial", "parallel"])
def path(request, monkeypatch):
    from fastbp._core import plan as core_plan

    monkeypatch.setattr(core_plan, "POLICY", "threshold")  # the driver asked for, always
    monkeypatch.setattr(core_plan, "SERIAL_BELOW", 10**18 if request.param == "serial" else 0)
    return request.param


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=problems())
def test_kernels_match_reference(problem, dtype, path):
    check(problem, dtype, path=path)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("out_act, loss", PAIRS)
def test_every_activation_and_loss(hidden, out_act, loss, dtype):
    """The full grid once, deterministic: 2 hidden layers, awkward widths, both
    reductions and bias patterns folded into one problem each."""
    for reduction, bias in (("mean", True), ("sum", [False, True, False])):
        check(dict(sizes=[5, 7, 1, 4], activations=[hidden, hidden, out_act], loss=loss,
                   bias=bias, reduction=reduction, l2=0.01, N=33, labels=True, seed=7),
              dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("out_act, loss", PAIRS)
def test_sample_weight_matches_reference(out_act, loss, dtype, path):
    """Weighted losses and gradients (each delta^(L)(e) scaled by w_e / sum w)
    against the reference, through both drivers."""
    for reduction, bias in (("mean", True), ("sum", [False, True])):
        check(dict(sizes=[5, 9, 3], activations=["tanh", out_act], loss=loss, bias=bias,
                   reduction=reduction, l2=0.01, N=61, labels=True, seed=5), dtype,
              path=path, weighted=True)


def test_unit_weights_keep_the_bits():
    """sample_weight=None and all-ones weights are the same numbers, and None is
    what it was: an unweighted call does not take the weighted path."""
    net = Network([4, 6, 3], ["relu", "softmax"], "cross_entropy", l2=0.01)
    rng = np.random.default_rng(2)
    p = net.init(seed=1)
    X = rng.normal(size=(50, 4))
    Y = rng.integers(0, 3, 50)
    J, g = net.loss_and_grad(p, X, Y)
    J1, g1 = net.loss_and_grad(p, X, Y, sample_weight=np.ones(50))
    np.testing.assert_allclose(J1, J, rtol=1e-14)
    np.testing.assert_allclose(g1.flat, g.flat, rtol=1e-13, atol=1e-16)
    J2, g2 = net.loss_and_grad(p, X, Y, sample_weight=np.full(50, 2.0))
    assert J2 == J1 and np.array_equal(g2.flat, g1.flat)  # w / sum w: the same scale


def test_bad_sample_weight_is_refused():
    net = Network([2, 3, 1], ["tanh", "identity"], "sse")
    p = net.init(seed=0)
    X, Y = np.zeros((3, 2)), np.zeros(3)
    for w, kind, match in (([1.0, 2.0], ValueError, r"sample_weight: expected shape \(3,\)"),
                           ([1.0, -1.0, 1.0], ValueError, "must be >= 0"),
                           ([0.0, 0.0, 0.0], ValueError, "every weight is zero"),
                           ([1.0, np.nan, 1.0], ValueError, "NaN or inf"),
                           (["a", "b", "c"], TypeError, "real numbers")):
        with pytest.raises(kind, match=match):
            net.loss_and_grad(p, X, Y, sample_weight=w)
    w = np.array([1.0, 2.0, 3.0])
    net.loss_and_grad(p, X, Y, sample_weight=w)
    assert w.tolist() == [1.0, 2.0, 3.0]


def test_poisson_targets_must_be_nonnegative():
    net = Network([2, 3, 1], ["tanh", "exp"], "poisson")
    with pytest.raises(ValueError, match="poisson targets must be"):
        net.loss_and_grad(net.init(seed=0), np.zeros((2, 2)), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="exp"):
        Network([2, 3, 1], ["tanh", "identity"], "poisson")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sizes, N", [([37, 23, 19, 5], 70), ([20, 17, 3], 1100)])
def test_wide_layers_and_long_batches(sizes, N, dtype, path):
    """Widths past the random problems' (up to 7): the backward tile over W^T
    (16 or more units i) next to the short-sum form (fewer), widths that leave
    partial tiles, and a batch longer than the weight gradient's chunk of
    examples, so its partial sums are carried across chunks."""
    hidden = len(sizes) - 2
    check({"sizes": sizes, "activations": ["tanh"] * hidden + ["softmax"],
           "loss": "cross_entropy", "bias": [True] * hidden + [False], "reduction": "mean",
           "l2": 0.01, "N": N, "labels": True, "seed": 3}, dtype, path=path)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_deep_network_of_mixed_widths(dtype, path):
    """Forty layers of widths from 1 to 48, so the task -> layer search (a
    binary search over the layout's first-task column) lands on every kind of
    layer boundary, and the packed weights and panels of many layers lie side
    by side in the scratch."""
    widths = [3] + [17, 1, 33, 16, 2, 15, 48, 5] * 5
    check({"sizes": widths, "activations": ["tanh"] * (len(widths) - 2) + ["identity"],
           "loss": "sse", "bias": True, "reduction": "mean", "l2": 0.001, "N": 45,
           "labels": False, "seed": 11}, dtype, path=path)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_layout_first_task_columns(dtype):
    """Each layer's first weight-gradient task, as the kernels count them: per
    layer, blocks of at most MC inputs (a multiple of MR) times blocks of at
    most 8 micro-panels of NR outputs, of equal sizes, from layer 1."""
    from fastbp._core import kernels, microkernel

    MR, NR, KC, MC, NC = microkernel.blocks(dtype)

    def blocks(size, most, unit):  # the fewest equal blocks, rounded up to unit
        count = -(-size // most)
        step = -(-(-(-size // count)) // unit) * unit
        return -(-size // step)

    sizes = [17, 1, 3 * MC + 5, 9 * NR + 1, 16]
    layout = Network(sizes, ["tanh"] * 3 + ["identity"], "sse", dtype=dtype).plan.layout
    tasks = [blocks(n_in, MC, MR) * blocks(n_out, 8 * NR, NR)
             for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    assert tasks[2] == 4 * 2  # 3 MC + 5 inputs: 4 blocks; 9 NR + 1 outputs: 2
    assert layout[:, kernels.G_TASK0].tolist() == np.cumsum([0] + tasks[:-1]).tolist()


@pytest.mark.parametrize("out_act, loss", [p for p in PAIRS if p[0] != "exp"])  # e^1000 = inf
def test_large_pre_activations_stay_finite_and_match(out_act, loss):
    """|z| up to ~1e3: no overflow in sigmoid, softmax or the cross-entropies
    (logits, log-sum-exp), and the same numbers as the reference."""
    net = Network([3, 4, 3], ["tanh", out_act], loss, reduction="sum")
    rng = np.random.default_rng(0)
    W1 = rng.normal(size=(4, 3))
    W2 = np.array([[300.0, -200.0, 100.0, 250.0], [-300.0, 200.0, -100.0, 240.0],
                   [10.0, 20.0, -30.0, -260.0]])
    p = net.params_from([W1, W2], [np.zeros(4), np.array([100.0, -50.0, 0.0])])
    X = 5.0 * rng.normal(size=(8, 3))
    Y = targets(rng, loss, 8, 3, labels=False)
    J, g, dX = net.loss_and_grad(p, X, Y, input_grad=True)
    Z = np.tanh(X @ W1.T) @ W2.T + p.b[2]
    assert np.abs(Z).max() > 500
    assert np.isfinite(J) and np.isfinite(g.flat).all() and np.isfinite(dX).all()
    J_ref, g_ref, dX_ref = reference.loss_and_grad(net, p, X, Y, input_grad=True)
    assert_close(J, J_ref, 1e-10, "loss")
    scale = max(np.abs(g_ref.flat).max(), abs(J_ref))
    assert_close(g.flat, g_ref.flat, 1e-10, "grad", scale)
    assert_close(dX, dX_ref, 1e-10, "dX", scale)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("out_act, loss", PAIRS)
def test_sparse_first_layer_matches_reference(out_act, loss, dtype):
    """A CSR (and CSC) X: layer 1 over the nonzeros only, layers 2..L on the
    dense kernels; loss, gradient and forward pass against the reference on the
    dense X, with rows without nonzeros, explicit zeros and weights; the
    caller's matrix untouched."""
    from scipy import sparse

    rng = np.random.default_rng(4)
    for bias, hidden, weighted in (([True, True], "tanh", False), ([False, True], "relu", True)):
        net = Network([9, 6, 4], [hidden, out_act], loss, l2=0.05, bias=bias, dtype=dtype)
        net64 = Network([9, 6, 4], [hidden, out_act], loss, l2=0.05, bias=bias)
        p = net.init(seed=2)
        X = rng.normal(size=(31, 9)) * (rng.random((31, 9)) < 0.3)
        X[5] = 0.0  # an example without nonzeros
        Xs = sparse.csr_matrix(X)
        Xs.data[::7] = 0.0  # explicit zeros: stored, adding nothing
        X = Xs.toarray()
        before = (Xs.data.copy(), Xs.indices.copy(), Xs.indptr.copy())
        Y = targets(rng, loss, 31, 4, labels=True)
        if Y.dtype.kind == "f":
            Y = Y.astype(dtype)
        w = rng.uniform(0.0, 2.0, 31) if weighted else None
        J, g = net.loss_and_grad(p, Xs, Y, sample_weight=w)
        J_ref, g_ref = reference.loss_and_grad(net64, p.astype(np.float64), X, Y,
                                               sample_weight=w)
        rtol = RTOL[dtype]
        assert g.dtype == np.dtype(dtype)
        assert_close(J, J_ref, rtol, "loss")
        assert_close(g.flat, g_ref.flat, rtol, "grad", max(np.abs(g_ref.flat).max(), abs(J_ref)))
        for fmt in (sparse.csr_matrix, sparse.csc_array):
            assert_close(net.forward(p, fmt(X)), reference.forward(net64, p.astype(np.float64),
                                                                   X), rtol, "forward")
        assert_close(net.loss(p, Xs, Y, sample_weight=w), J_ref, rtol, "loss()")
        assert all(np.array_equal(a, b) for a, b in zip(before, (Xs.data, Xs.indices,
                                                                 Xs.indptr)))


def test_sparse_input_errors_and_one_layer_networks():
    from scipy import sparse

    net = Network([3, 2, 1], ["tanh", "identity"], "sse")
    p = net.init(seed=0)
    X = sparse.csr_matrix(np.eye(3))
    with pytest.raises(ValueError, match="input_grad: not available for a sparse X"):
        net.loss_and_grad(p, X, np.zeros(3), input_grad=True)
    with pytest.raises(ValueError, match="X: expected 3 columns"):
        net.forward(p, sparse.csr_matrix(np.eye(4)))
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match=r"X.data: contains NaN or inf"):
        net.forward(p, bad)
    with pytest.raises(TypeError, match="X: dtype must be a floating type"):
        net.forward(p, sparse.csr_matrix(np.eye(3, dtype=np.int64)))
    one = Network([3, 2], ["softmax"], "cross_entropy")  # its only layer is the output
    q = one.init(seed=0)
    J, g = one.loss_and_grad(q, X, [0, 1, 1])
    J_d, g_d = one.loss_and_grad(q, X.toarray(), [0, 1, 1])
    assert J == J_d and np.array_equal(g.flat, g_d.flat)
