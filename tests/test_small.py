"""The specialized code of small networks (``fastbp._core.small``): the same bits
as the generic drivers for every activation, output pair, bias setting, L2,
reduction and dtype, in gradients, forward passes and training runs; the policy
that picks it; its cache across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from functools import partial

import numpy as np
import pytest
from cases import OUTPUT_PAIRS, random_problem

import fastbp
from fastbp import Network
from fastbp._core import plan as core_plan
from fastbp._core import small


@pytest.fixture
def always(monkeypatch):
    """Specialized code from the first call; ``generic(True/False)`` switches a
    call to the generic drivers and back."""
    monkeypatch.setattr(core_plan, "SMALL_POLICY", "always")

    def generic(on):
        monkeypatch.setattr(core_plan, "SMALL_ROWS", 0 if on else None)

    return generic


def both(generic, net, fn):
    """fn() with the specialized code, then with the generic drivers: both
    results, and the drivers that ran."""
    generic(False)
    a = fn()
    da = net.plan.last_driver
    generic(True)
    b = fn()
    db = net.plan.last_driver
    generic(False)
    assert (da, db) == ("small", "serial")
    return a, b


def same_bits(a, b):
    return np.asarray(a).tobytes() == np.asarray(b).tobytes()


# One module per (sizes, hidden activations, bias, output activation, loss): every
# output pair on 003's network, whose modules compile fastest, two or three on the
# others.
NETWORKS = (
    # (sizes, hidden activations, bias, l2, reduction, dtypes, output pairs)
    ((3, 2, 1), ("sigmoid",), False, 0.0, "sum", ("float64",), OUTPUT_PAIRS),  # 003's
    ((4, 8, 3), ("sigmoid",), True, 0.0, "mean", ("float64",),
     (("sigmoid", "bce"), ("softmax", "cross_entropy"))),
    ((4, 8, 3), ("sigmoid",), True, 0.0, "mean", ("float32",), (("sigmoid", "bce"),)),
    ((5, 6, 7, 4), ("relu", "identity"), (True, False, True), 0.1, "mean", ("float64",),
     (("softmax", "sse"),)),
    ((6, 2), (), True, 0.03, "mean", ("float64",),                     # one layer
     (("softmax", "cross_entropy"), ("exp", "poisson"), ("tanh", "sse"))),
)
# the module of 003's network, shared by the policy tests below
SHARED = {"sizes": (3, 2, 1), "activations": ["sigmoid", "sigmoid"], "bias": False}


@pytest.mark.parametrize("sizes,hidden,bias,l2,reduction,dtypes,pairs", NETWORKS)
def test_gradients_forward_and_loss_have_the_generic_bits(always, sizes, hidden, bias, l2,
                                                          reduction, dtypes, pairs):
    for dtype in dtypes:
        for out, loss in pairs:
            if sizes[-1] == 1 and out == "softmax":
                continue
            net = Network(sizes, list(hidden) + [out], loss, bias=bias, l2=l2,
                          reduction=reduction, dtype=dtype)
            for N, seed in ((1, 0), (5, 1), (64, 2)):
                params, X, Y = random_problem(net, seed, N=N)
                (Ja, ga, dXa), (Jb, gb, dXb) = both(
                    always, net, partial(net.loss_and_grad, params, X, Y, input_grad=True))
                case = (dtype, out, loss, N)
                assert Ja == Jb and np.isfinite(Ja), case
                assert same_bits(ga.flat, gb.flat) and same_bits(dXa, dXb), case
                # the call without dJ/dX takes quick_loss_grad: the same bits
                (Jq, gq), (Jg, gg) = both(always, net, partial(net.loss_and_grad, params, X, Y))
                assert Jq == Jg == Ja and same_bits(gq.flat, gg.flat), case
                assert same_bits(gq.flat, ga.flat), case
                fa, fb = both(always, net, partial(net.forward, params, X))
                assert same_bits(fa, fb), case
                la, lb = both(always, net, partial(net.loss, params, X, Y))
                assert la == lb == Ja, case
                # weighted examples (sample_weight): the same bits too
                w = np.random.default_rng(seed).uniform(0.1, 2.0, N)
                (Jwa, gwa), (Jwb, gwb) = both(
                    always, net, partial(net.loss_and_grad, params, X, Y, sample_weight=w))
                assert Jwa == Jwb and same_bits(gwa.flat, gwb.flat), case
                lwa, lwb = both(always, net, partial(net.loss, params, X, Y, sample_weight=w))
                assert lwa == lwb == Jwa, case
                # and the values are the gradient's (against the reference elsewhere)
                ref_J, ref_g = fastbp.reference.loss_and_grad(net, params, X, Y)
                np.testing.assert_allclose(Ja, ref_J, rtol=1e-10 if dtype == "float64" else 1e-4)
                tol = 1e-10 if dtype == "float64" else 1e-3
                np.testing.assert_allclose(ga.flat, ref_g.flat, rtol=tol, atol=tol)


@pytest.mark.parametrize("optimizer,batch_size,validation", [
    ("sgd", None, None),
    ("sgd", 1, None),           # batches of one example: loss_grad1
    ("adam", 7, None),          # a partial last batch of 2
    ("momentum", 8, 0.2),       # validation split, its forward pass on the small code
])
def test_training_runs_have_the_generic_bits(always, optimizer, batch_size, validation):
    net = Network([4, 8, 3], ["tanh", "softmax"], "cross_entropy", l2=0.01)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 4))
    Y = rng.integers(0, 3, 30)
    p = net.init(3)

    def run():
        h = fastbp.train(net, p, X, Y, optimizer=optimizer, lr=0.05, epochs=40,
                         batch_size=batch_size, seed=1, validation=validation)
        return h

    a, b = both(always, net, run)
    assert same_bits(a.params.flat, b.params.flat)
    assert same_bits(a.loss, b.loss)
    if validation is not None:
        assert same_bits(a.val_loss, b.val_loss) and same_bits(a.val_accuracy, b.val_accuracy)
    assert not np.array_equal(a.params.flat, p.flat)  # it trained


def _cost(monkeypatch, seconds):
    """Making a module costs ``seconds`` in the plan's accounts (compiled or loaded)."""
    monkeypatch.setattr(small, "LOAD_S", seconds)
    monkeypatch.setattr(small, "compile_seconds", lambda n_params: seconds)


def test_policy_auto_specializes_once_the_generic_time_reaches_the_cost(monkeypatch):
    monkeypatch.setattr(core_plan, "SMALL_POLICY", "auto")
    _cost(monkeypatch, 1.0)
    plan = core_plan.Plan((3, 2, 1), [1, 1], (False, False), 0, True, 0.2, np.float64, 1e-6)
    assert plan.specialized(0.5) is None and plan.specialized(0.25) is None
    assert plan.specialized(0.25) is not None  # 1.0 s spent: made
    # calls: the generic drivers' time counted until it reaches the cost (here 2 ms)
    _cost(monkeypatch, 2e-3)
    net = Network(loss="sse", l2=0.2, **SHARED)
    params, X, Y = random_problem(net, 3, N=4)
    drivers, bits = [], set()
    for _ in range(100_000):
        J, g = net.loss_and_grad(params, X, Y)
        drivers.append(net.plan.last_driver)
        bits.add((J, g.flat.tobytes()))
        if drivers[-1] == "small":
            break
    assert drivers[0] == "serial" and drivers[-1] == "small" and len(drivers) > 2
    assert net.plan._spent >= 2e-3 and len(bits) == 1
    # a batch the generic drivers run in parallel keeps them (the threshold at 0:
    # every batch is such a batch), and its time does not count
    monkeypatch.setattr(core_plan, "SERIAL_BELOW", 0)
    monkeypatch.setattr(core_plan, "SMALL_BELOW", 0)
    fresh = core_plan.Plan(net.sizes, [1, 1], net.bias, 0, True, 0.2, net.dtype, 1e-6)
    assert fresh._small_rows() < 1 and not fresh._counting(1)


def test_policy_auto_specializes_a_long_training_run_at_its_start(monkeypatch):
    monkeypatch.setattr(core_plan, "SMALL_POLICY", "auto")
    _cost(monkeypatch, 3600.0)  # more than any run below
    net = Network(loss="bce", l2=0.1, **SHARED)
    params, X, Y = random_problem(net, 6, N=10)
    fastbp.train(net, params, X, Y, epochs=50, lr=0.1)
    assert net.plan.last_driver == "serial" and 0 < net.plan._spent < 1.0
    _cost(monkeypatch, 1e-9)
    net = Network(loss="bce", l2=0.15, **SHARED)  # another plan: its cost found anew
    fastbp.train(net, params, X, Y, epochs=50, lr=0.1)  # its own steps pay for it
    assert net.plan.last_driver == "small"


def test_a_module_made_once_counts_as_generated(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTBP_CACHE_DIR", str(tmp_path))
    key = ((2, 2, 1), (1,), (False, True), 0, 0)  # made nowhere else (imported, not compiled)
    assert not small.generated(*key)
    small.module_for(*key)
    assert small.generated(*key)
    small._modules.pop(key)  # as another process sees it: the file in the folder
    assert small.generated(*key)
    assert small.compile_seconds(67) > small.compile_seconds(8) > small.LOAD_S


def test_policy_never(monkeypatch):
    monkeypatch.setattr(core_plan, "SMALL_POLICY", "never")
    net = Network(loss="sse", l2=0.3, **SHARED)
    params, X, Y = random_problem(net, 7, N=3)
    for _ in range(3):
        net.loss_and_grad(params, X, Y)
        assert net.plan.last_driver == "serial"
    assert net.plan.specialized(10**9) is None


def test_eligible_bounds():
    assert small.eligible((3, 2, 1), (False, False))
    assert small.eligible((4, 8, 3), (True, True))
    assert not small.eligible((small.MAX_WIDTH + 1, 1), (False,))
    assert not small.eligible((8, 16, 4), (True, True))  # 212 parameters
    assert small.eligible((10, 12, 3), (True, True))     # 171


def test_source_is_straight_line_code_of_the_network():
    text = small.source((3, 2, 1), (1,), (False, False), 1, 1)  # sigmoid output, bce
    grad = text[text.index("def _grad("):text.index("def _grad1(")]
    one = text[text.index("def _grad1("):text.index("def loss_grad")]
    # every weight loaded once, by its flat index; the layer-1 chain in order from 0
    # (units 0-2: the inputs, 3-4: layer 1, 5: the output, one view of the scratch each)
    for k in range(8):
        assert grad.count(f"= theta[{k}]") == 1
    assert "a_3[e] = sigmoid(fma(w1_0_2, a_2[e], fma(w1_0_1, a_1[e], fma(w1_0_0, a_0[e], zero))))" in grad
    assert "d_3[e] = times_derivative(1, fma(w2_0_0, d_5[e], zero), a_3[e])" in grad
    assert "gw1_1_2 = fma(a_2[e], d, gw1_1_2)" in grad
    # the output layer written out for its activation and loss
    assert "a = sigmoid(z)" in grad and "losses[e] = add_kept(zero, bce_term(z, y))" in grad
    assert "d_5[e] = output_delta(1, False, scale, a_5[e], Y[e, 0], zero)" in grad
    assert "_output_delta" not in text
    # the batch of one: the same lines without the loops, on local values
    assert "a_3 = sigmoid(fma(w1_0_2, a_2, fma(w1_0_1, a_1, fma(w1_0_0, a_0, zero))))" in one
    assert "for e in range" not in one and "[e]" not in one
    with pytest.raises(ValueError, match="softmax"):
        small.source((3, 2, 1), (4,), (True, True), 1, 1)
    with pytest.raises(ValueError, match="loss code"):
        small.source((3, 2, 1), (1,), (True, True), 1, 7)


CACHED = """
    import json, numpy as np, fastbp
    from fastbp._core import plan as core_plan
    core_plan.SMALL_POLICY = "always"
    net = fastbp.Network([3, 2, 1], ["sigmoid", "sigmoid"], "bce", bias=False)
    p = net.init(0)
    X = np.linspace(-1, 1, 12).reshape(4, 3)
    Y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    J, g = net.loss_and_grad(p, X, Y)
    mod = net.plan.specialized()
    stats = mod.loss_grad.stats
    print(json.dumps([net.plan.last_driver, float(J), g.flat.tolist(),
                      len(stats.cache_hits), len(stats.cache_misses),
                      str(mod.__file__)]))
"""


def test_specialized_code_is_cached_across_processes(tmp_path):
    # a new folder of generated modules (numba's cache of the generic kernels is kept)
    env = dict(os.environ, FASTBP_CACHE_DIR=str(tmp_path / "fastbp"))

    def child():
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(CACHED)], env=env,
                             capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = child(), child()
    assert first[0] == second[0] == "small"
    assert first[1:3] == second[1:3]
    assert (first[3], first[4]) == (0, 1)      # compiled, then
    assert (second[3], second[4]) == (1, 0)    # loaded from numba's cache
    assert first[5] == second[5] and first[5].startswith(str(tmp_path / "fastbp"))


def test_unwritable_cache_folder_still_works(tmp_path, monkeypatch, always):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("FASTBP_CACHE_DIR", str(blocked))
    monkeypatch.setattr(small, "_modules", {})
    net = Network(loss="sse", l2=0.4, **SHARED)
    params, X, Y = random_problem(net, 8, N=2)
    (Ja, ga), (Jb, gb) = both(always, net, lambda: net.loss_and_grad(params, X, Y))
    assert Ja == Jb and same_bits(ga.flat, gb.flat)
    assert not str(net.plan.specialized().__file__).startswith(str(blocked))


def test_quick_calls_check_what_they_are_given(always):
    """The quick path (no weights, no dJ/dX) checks sizes and screens the inputs
    in its compiled call; whatever it refuses gets the checked path's errors,
    and it writes nothing into its inputs."""
    net = Network(**SHARED, loss="bce")
    params, X, Y = random_problem(net, 3, N=6)
    X0, Y0, p0 = X.copy(), Y.copy(), params.flat.copy()
    J, g = net.loss_and_grad(params, X, Y)
    assert net.plan.last_driver == "small"
    assert same_bits(X, X0) and same_bits(Y, Y0) and same_bits(params.flat, p0)
    ref_J, ref_g = fastbp.reference.loss_and_grad(net, params, X, Y)
    assert J == pytest.approx(ref_J, rel=1e-12)
    np.testing.assert_allclose(g.flat, ref_g.flat, rtol=1e-10, atol=1e-12)
    # a 1-D Y for the one output, a Fortran-ordered X: same results
    J1, g1 = net.loss_and_grad(params, X, Y[:, 0])
    J2, g2 = net.loss_and_grad(params, np.asfortranarray(X), Y)
    assert J1 == J2 == J and same_bits(g1.flat, g.flat) and same_bits(g2.flat, g.flat)
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="X"):
        net.loss_and_grad(params, bad, Y)
    with pytest.raises(ValueError, match="Y"):
        net.loss_and_grad(params, X, Y + 2.0)      # bce targets outside [0, 1]
    with pytest.raises(ValueError, match="X"):
        net.loss_and_grad(params, X[:, :2].copy(), Y)
    with pytest.raises(ValueError, match="Y"):
        net.loss_and_grad(params, X, Y[:4].copy())
    other = Network([3, 2, 1], ["tanh", "sigmoid"], "bce", bias=False).init(0)
    J3, _ = net.loss_and_grad(other, X, Y)  # same sizes: a valid Params of this shape
    assert np.isfinite(J3)
    wrong = Network([2, 3, 1], ["sigmoid", "sigmoid"], "bce", bias=False).init(0)
    with pytest.raises(ValueError, match="params"):
        net.loss_and_grad(wrong, X, Y)
    tampered = params.copy()
    tampered.flat[3] = np.inf
    with pytest.raises(ValueError, match="params"):
        net.loss_and_grad(tampered, X, Y)
    # still on the specialized code after the refusals
    assert same_bits(net.loss_and_grad(params, X, Y)[1].flat, g.flat)
    assert net.plan.last_driver == "small"
    # cross-entropy targets: rows that are distributions, the screen's own test
    net = Network([4, 8, 3], ["sigmoid", "softmax"], "cross_entropy")
    params, X, labels = random_problem(net, 4, N=5)
    Y = np.eye(3)[labels]  # one-hot rows: the quick path
    J, g = net.loss_and_grad(params, X, Y)
    assert net.plan.last_driver == "small"
    with pytest.raises(ValueError, match="Y"):
        net.loss_and_grad(params, X, Y * 0.9)  # rows summing to 0.9
    J4, g4 = net.loss_and_grad(params, X, labels)  # integer labels: the checked path
    assert J4 == J and same_bits(g4.flat, g.flat)
