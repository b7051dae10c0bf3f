"""Network: description, init, params_from, and every bad input rejected with a
message that names the argument, before any work."""

import numpy as np
import pytest

from fastbp import Network


@pytest.fixture(scope="module")
def net():
    return Network([4, 5, 3], ["tanh", "softmax"], "cross_entropy")


@pytest.fixture(scope="module")
def params(net):
    return net.init(0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 4)), rng.integers(0, 3, size=6)


# ----------------------------------------------------------------- description


def test_description_is_normalized_and_immutable(net):
    assert net.sizes == (4, 5, 3)
    assert net.activations == ("tanh", "softmax")
    assert net.loss_name == "cross_entropy" and net.reduction == "mean"
    assert net.bias == (True, True) and net.dtype == np.float64 and net.l2 == 0.0
    assert net.n_layers == 2 and net.n_params == 5 * 4 + 5 + 3 * 5 + 3
    with pytest.raises(AttributeError, match="immutable"):
        net.l2 = 1.0
    same = Network((4, 5, 3), ("tanh", "softmax"), "cross_entropy")
    assert same == net and hash(same) == hash(net)
    assert Network.from_dict(net.to_dict()) == net
    assert repr(net) == "Network([4, 5, 3], ['tanh', 'softmax'], 'cross_entropy')"


def test_pickle_and_copy_round_trip(net):
    import copy
    import pickle

    odd = Network([3, 2, 2], ["relu", "sigmoid"], "bce", reduction="sum", l2=0.5,
                  bias=[False, True], dtype="float32")
    for n in (net, odd):
        back = pickle.loads(pickle.dumps(n))
        assert back == n and back.dtype == n.dtype and back.bias == n.bias
        assert copy.deepcopy(n) == n
    p = odd.init(0)
    assert pickle.loads(pickle.dumps(p)) == p


def test_init_schemes_and_seed():
    net = Network([50, 40, 30, 1], ["relu", "sigmoid", "identity"], "sse")
    p = net.init(seed=3)
    assert p == net.init(seed=3) and p != net.init(seed=4)
    # He normal for relu: std sqrt(2/50) = 0.2
    assert abs(p.W[1].std() - 0.2) < 0.02
    # Glorot uniform, x4 for sigmoid: bound 4*sqrt(6/70)
    assert np.abs(p.W[2]).max() <= 4 * np.sqrt(6 / 70)
    assert np.abs(p.W[2]).max() > 0.9 * 4 * np.sqrt(6 / 70)
    assert np.abs(p.W[3]).max() <= np.sqrt(6 / 31)
    assert all(np.all(b == 0) for b in p.b)
    p32 = Network([50, 40, 30, 1], ["relu", "sigmoid", "identity"], "sse",
                  dtype="float32").init(seed=3)
    assert p32.dtype == np.float32
    np.testing.assert_array_equal(p32.flat, p.flat.astype(np.float32))


def test_params_from_three_layouts_agree():
    net = Network([3, 2, 1], "sigmoid", "sse")
    rng = np.random.default_rng(1)
    W1, b1, W2, b2 = rng.normal(size=(2, 3)), rng.normal(size=2), rng.normal(size=(1, 2)), \
        rng.normal(size=1)
    p = net.params_from([W1, W2], [b1, b2])
    q = net.params_from([W1.T, W2.T], [b1, b2], layout="in_out")
    r = net.params_from([np.column_stack([b1, W1]), np.column_stack([b2, W2])],
                        layout="bias_column")
    assert p == q == r
    np.testing.assert_array_equal(p.W[1], W1)
    W1[0, 0] = 99.0  # copied, not aliased
    assert p.W[1][0, 0] != 99.0


def test_params_from_no_bias_network():
    net = Network([3, 2, 1], "sigmoid", "sse", bias=False)
    p = net.params_from([np.ones((3, 2)), np.ones((2, 1))], layout="in_out")
    assert p.flat.size == 8 and p.b[1] is None


@pytest.mark.parametrize("call, exc, message", [
    (lambda: Network([4, 3], "swish", "sse"), ValueError, "activations: unknown activation 'swish'"),
    (lambda: Network([4, 3], "tanh", "hinge"), ValueError, "loss: unknown loss 'hinge'"),
    (lambda: Network([4, 3, 2], ["softmax", "softmax"], "cross_entropy"), ValueError,
     "activations: 'softmax' may only be the last layer's activation, got it for layer 1"),
    (lambda: Network([4, 3], "tanh", "bce"), ValueError, "loss: 'bce' needs a sigmoid output"),
    (lambda: Network([4, 3], "sigmoid", "cross_entropy"), ValueError,
     "loss: 'cross_entropy' needs a softmax output"),
    (lambda: Network([4, 0, 3], "tanh", "sse"), ValueError, "sizes: widths must be >= 1"),
    (lambda: Network([4], "tanh", "sse"), ValueError, r"sizes: need at least 2 widths"),
    (lambda: Network([4, 2.5], "tanh", "sse"), TypeError, "sizes: widths must be integers"),
    (lambda: Network([4, 3, 2], ["tanh"], "sse"), ValueError, "activations: expected one name or 2"),
    (lambda: Network([4, 3], "tanh", "sse", reduction="max"), ValueError, "reduction: expected one of"),
    (lambda: Network([4, 3], "tanh", "sse", l2=-1.0), ValueError, "l2: expected a finite number >= 0"),
    (lambda: Network([4, 3], "tanh", "sse", l2=float("nan")), ValueError, "l2: expected a finite"),
    (lambda: Network([4, 3], "tanh", "sse", bias=[True, False]), ValueError, "bias: expected a bool or 1"),
    (lambda: Network([4, 3], "tanh", "sse", dtype="int32"), TypeError,
     "dtype: must be float32 or float64, got int32"),
    (lambda: Network([4, 3], "tanh", "sse", dtype="float16"), TypeError, "dtype: must be float32"),
])
def test_bad_network_description(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


def test_bad_params_from():
    net = Network([3, 2, 1], "sigmoid", "sse")
    W = [np.ones((2, 3)), np.ones((1, 2))]
    b = [np.ones(2), np.ones(1)]
    with pytest.raises(ValueError, match=r"weights\[0\]: expected shape \(2, 3\) for layout='out_in', got \(3, 2\)"):
        net.params_from([W[0].T, W[1]], b)
    with pytest.raises(ValueError, match=r"biases: required for layers \[1, 2\]"):
        net.params_from(W)
    with pytest.raises(ValueError, match=r"biases\[1\]: expected shape \(1,\), got \(2,\)"):
        net.params_from(W, [b[0], np.ones(2)])
    with pytest.raises(ValueError, match="weights: expected 2 entries"):
        net.params_from(W[:1], b)
    with pytest.raises(ValueError, match="layout: expected one of"):
        net.params_from(W, b, layout="row_major")
    with pytest.raises(ValueError, match="weights/biases: contains NaN or inf"):
        net.params_from([np.full((2, 3), np.nan), W[1]], b)
    nb = Network([3, 2, 1], "sigmoid", "sse", bias=False)
    with pytest.raises(ValueError, match="'bias_column' needs a bias in every layer"):
        nb.params_from([np.ones((2, 4)), np.ones((1, 3))], layout="bias_column")
    with pytest.raises(ValueError, match=r"biases\[0\]: layer 1 has no bias; pass None"):
        nb.params_from(W, b)


def test_bad_X(net, params, data):
    X, y = data
    cases = [
        (X[:, :3], ValueError, r"X: expected 4 columns, got shape \(6, 3\)"),
        (X[0], ValueError, r"X: expected a 2-D array .* for one example use X.reshape\(1, -1\)"),
        (X[:0], ValueError, r"X: no examples \(N = 0\)"),
        (X.astype(int), TypeError, "X: dtype must be a floating type, got int64"),
        (np.where(np.arange(24).reshape(6, 4) == 9, np.nan, X), ValueError,
         r"X: contains NaN or inf \(first at \[2, 1\]\)"),
        (np.where(np.arange(24).reshape(6, 4) == 0, np.inf, X), ValueError, "X: contains NaN or inf"),
    ]
    for bad, exc, message in cases:
        for call in (lambda: net.loss_and_grad(params, bad, y), lambda: net.loss(params, bad, y)):
            with pytest.raises(exc, match=message):
                call()
    with pytest.raises(ValueError, match="X: expected 4 columns"):
        net.forward(params, X[:, :3])


def test_bad_Y(net, params, data):
    X, y = data
    onehot = np.eye(3)[y]
    cases = [
        (y[:5], ValueError, "Y: expected 6 labels"),
        (np.where(np.arange(6) == 2, 3, y), ValueError,
         r"Y: class label 3 out of range: labels must be in 0..2"),
        (np.where(np.arange(6) == 2, -1, y), ValueError, "Y: class label -1 out of range"),
        (onehot[:, :2], ValueError, r"Y: expected shape \(6, 3\), got \(6, 2\)"),
        (onehot * 0.5, ValueError, "Y: cross_entropy target rows must sum to 1; row 0 sums to 0.5"),
        (onehot * 2 - 0.5 * onehot, ValueError, "must sum to 1"),
        (np.where(onehot == 1, 1.5, -0.25), ValueError, "no negative entries"),
        (np.where(onehot == 1, np.nan, 0.0), ValueError, r"Y: contains NaN or inf"),
        (y.astype(str), TypeError, "Y: dtype must be floating"),
        (y.reshape(6, 1), ValueError, r"Y: integer class labels must be 1-D"),
    ]
    for bad, exc, message in cases:
        with pytest.raises(exc, match=message):
            net.loss_and_grad(params, X, bad)


def test_bce_targets_outside_unit_interval():
    net = Network([2, 2], "sigmoid", "bce")
    p = net.init(0)
    X = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"Y: bce targets must lie in \[0, 1\]"):
        net.loss_and_grad(p, X, np.full((3, 2), 1.5))
    with pytest.raises(TypeError, match="Y: dtype must be floating"):
        net.loss_and_grad(p, X, np.ones((3, 2), dtype=int))


def test_bad_params(net, params, data):
    X, y = data
    other = Network([4, 6, 3], ["tanh", "softmax"], "cross_entropy").init(0)
    with pytest.raises(ValueError, match=r"params: built for another network \(sizes \[4, 6, 3\]"):
        net.loss_and_grad(other, X, y)
    with pytest.raises(TypeError, match="params: expected fastbp.Params, got ndarray"):
        net.loss_and_grad(params.flat, X, y)
    bad = params.copy()
    bad.flat[3] = np.inf
    with pytest.raises(ValueError, match="params: contains NaN or inf"):
        net.loss_and_grad(bad, X, y)


def test_inputs_are_never_modified(net, params, data):
    X, y = data
    Xf, yf, pf = X.copy(), y.copy(), params.copy()
    Xnc = np.asfortranarray(X)
    net.loss_and_grad(params, Xnc, y, input_grad=True)
    net.loss(params, X, y)
    net.forward(params, X)
    np.testing.assert_array_equal(X, Xf)
    np.testing.assert_array_equal(Xnc, Xf)
    np.testing.assert_array_equal(y, yf)
    assert params == pf


def test_other_float_dtypes_and_layouts_are_converted(net, params, data):
    X, y = data
    J, g = net.loss_and_grad(params, X, y)
    for X2 in (np.asfortranarray(X), np.hstack([X, X])[:, :4], X[:, ::-1][:, ::-1]):
        J2, g2 = net.loss_and_grad(params, X2, y)
        assert J2 == J and g2 == g
    J16, g16 = net.loss_and_grad(params, X.astype(np.float16), y)
    assert g16.dtype == np.float64 and np.isfinite(J16)
    # float32 params given to a float64 network are converted, not rejected
    J32, _ = net.loss_and_grad(params.astype(np.float32), X, y)
    assert np.isclose(J32, J, rtol=1e-6)


def test_returned_arrays_have_the_network_dtype(data):
    X, y = data
    net = Network([4, 5, 3], ["tanh", "softmax"], "cross_entropy", dtype="float32")
    p = net.init(0)
    J, g, dX = net.loss_and_grad(p, X, y, input_grad=True)
    assert isinstance(J, float)
    assert g.dtype == np.float32 and dX.dtype == np.float32 and dX.shape == X.shape
    assert net.forward(p, X).dtype == np.float32


def test_labels_onehot_and_1d_targets_agree(net, params, data):
    X, y = data
    J1, g1 = net.loss_and_grad(params, X, y)
    J2, g2 = net.loss_and_grad(params, X, np.eye(3)[y])
    assert J1 == J2 and g1 == g2
    one = Network([4, 3, 1], ["tanh", "sigmoid"], "bce")
    p = one.init(0)
    t = (y > 0).astype(float)
    Ja, ga = one.loss_and_grad(p, X, t)
    Jb, gb = one.loss_and_grad(p, X, t.reshape(-1, 1))
    assert Ja == Jb and ga == gb


def test_forward_loss_and_loss_and_grad_agree(net, params, data):
    X, y = data
    J, _ = net.loss_and_grad(params, X, y)
    assert net.loss(params, X, y) == J
    A = net.forward(params, X)
    np.testing.assert_allclose(A.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(J, -np.mean(np.log(A[np.arange(6), y])), rtol=1e-12)


# ----------------------------------------------------------------- the edge's fast path


def test_ready_and_converted_inputs_give_the_same_bits(net, params, data):
    """C-contiguous arrays of the network's dtype skip the conversions; any other
    layout or dtype is converted first: both must reach the same numbers."""
    X, y = data
    Y = np.eye(3)[y]
    J, g, dX = net.loss_and_grad(params, X, Y, input_grad=True)
    for Xo, Yo in [(np.asfortranarray(X), Y), (X, np.asfortranarray(Y)), (X.astype(np.float32), y),
                   (X[::1], list(Y))]:
        Jo, go, dXo = net.loss_and_grad(params, Xo, Yo, input_grad=True)
        Xo64 = np.asarray(Xo, dtype=np.float64)
        if Xo64.tobytes() == X.tobytes():
            assert Jo == J and go == g and np.array_equal(dXo, dX)
    assert net.loss(params, np.asfortranarray(X), Y) == net.loss(params, X, Y)


def test_reused_scratch_never_leaks_between_calls():
    """Results are new arrays: a later call (any batch size) leaves them alone."""
    net = Network([3, 4, 2], ["tanh", "sigmoid"], "bce")
    p = net.init(0)
    rng = np.random.default_rng(1)
    calls = []
    for N in (5, 7, 5, 5, 1, 7, 5):
        X, Y = rng.normal(size=(N, 3)), (rng.random((N, 2)) > 0.5).astype(float)
        J, g, dX = net.loss_and_grad(p, X, Y, input_grad=True)
        out = net.forward(p, X)
        calls.append((X, Y, J, g.flat.copy(), dX.copy(), out.copy(), g, dX, out))
    for X, Y, J, g0, dX0, out0, g, dX, out in calls:
        assert np.array_equal(g.flat, g0) and np.array_equal(dX, dX0)
        assert np.array_equal(out, out0)
        J2, g2, dX2 = net.loss_and_grad(p, X, Y, input_grad=True)
        assert J2 == J and np.array_equal(g2.flat, g0) and np.array_equal(dX2, dX0)


def test_borderline_targets_are_decided_by_the_full_check():
    """The compiled screen refuses rows summing to 1 within the tolerance's outer
    half; the full check then accepts them, as it always did."""
    net = Network([2, 3], "softmax", "cross_entropy")
    p = net.init(0)
    X = np.ones((2, 2))
    Y = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5 + 2e-8]])  # 2e-8 <= 1e-8 * 3
    J, _ = net.loss_and_grad(p, X, Y)
    assert np.isfinite(J)
    with pytest.raises(ValueError, match="row 1 sums to"):
        net.loss_and_grad(p, X, Y + np.array([[0, 0, 0], [0, 0, 1e-6]]))
    bce = Network([2, 1], "sigmoid", "bce")
    with pytest.raises(ValueError, match=r"Y: bce targets must lie in \[0, 1\]"):
        bce.loss_and_grad(bce.init(0), X, np.array([0.0, -1e-300]))
    with pytest.raises(ValueError, match=r"params: contains NaN or inf"):
        bad = p.copy()
        bad.flat[-1] = np.nan
        net.loss_and_grad(bad, X, Y)


def test_workspaces_keep_small_sets_and_at_most_one_large_one():
    from fastbp._core import Workspaces

    net = Network([3, 4, 2], ["tanh", "sigmoid"], "bce")
    ws = Workspaces(net.plan.layout, np.float64)
    small, big, bigger = 5, 20_000, 30_000  # sets of ~1 kB, ~5 MB, ~7 MB
    kept = {}
    for N in (small, big):
        kept[N] = ws.take(N)
        ws.give(N, kept[N])
    assert ws.take(small) is kept[small] and ws.take(big) is kept[big]
    for N in (small, big):
        ws.give(N, kept[N])
    ws.give(bigger, ws.take(bigger))  # replaces the large set, not the small one
    assert ws.take(big) is not kept[big]
    assert ws.take(small) is kept[small]
