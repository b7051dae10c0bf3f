"""Resource limits and divergence: sizes beyond what the machine holds are
refused before anything is allocated, counts beyond int64 are refused, and a
diverging run never returns NaN parameters."""

import math
import os
import tracemalloc

import numpy as np
import pytest

import fastbp
from fastbp import Network, cli
from fastbp._core import memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IRIS = os.path.join(ROOT, "fastbp", "datasets", "iris.csv")
GiB = 1 << 30


@pytest.fixture
def one_gib(monkeypatch):
    """A machine with 1 GiB of memory available."""
    monkeypatch.setattr(memory, "available_memory", lambda: GiB)


def test_a_network_larger_than_any_array_is_refused_at_once():
    with pytest.raises(ValueError, match=r"sizes: \[1000000000000, 1000000000000\] has 1e\+24 "
                                         r"parameters"):
        Network([10**12, 10**12], "tanh", "sse")


def test_activations_none_names_the_argument():
    with pytest.raises(TypeError, match="activations: expected a name or a sequence of 1 names"):
        Network([3, 4], None, "sse")


def test_init_beyond_the_memory_available_names_the_size(one_gib):
    net = Network([10**8, 2], "tanh", "sse")  # accepted: a description allocates nothing
    with pytest.raises(MemoryError, match=r"init: needs 1\.5 GiB, more than the 1\.0 GiB"):
        net.init(0)
    with pytest.raises(MemoryError, match="Params.zeros: needs 1.5 GiB"):
        fastbp.Params.zeros(net.sizes, net.bias)


def test_a_batch_beyond_the_memory_available_is_refused_before_its_buffers(one_gib):
    net = Network([2, 20_000, 2], "tanh", "sse")
    p = net.init(0)
    X = np.zeros((5_000, 2))  # buffers of 5,000 x 20,000 units: ~2.2 GiB
    with pytest.raises(MemoryError, match="a batch of 5000 examples: needs"):
        net.loss_and_grad(p, X, np.zeros((5_000, 2)))
    with pytest.raises(MemoryError, match="a batch of 5000 examples"):
        fastbp.train(net, p, X, np.zeros((5_000, 2)), epochs=1)


def test_command_line_reports_a_network_too_large_in_one_line(one_gib, capsys):
    code = cli.main(["train", IRIS, "--target", "species", "--hidden", "100000000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "init: needs 6.0 GiB, more than the 1.0 GiB" in err[0]


def test_init_allocates_its_vector_once():
    net = Network([200_000, 20], "tanh", "sse", dtype="float32")
    net.init(0)  # warm: first-use allocations of the generator
    tracemalloc.start()
    try:
        p = net.init(0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.2 * p.flat.nbytes  # the vector, plus float64 pieces of 512 KiB


def test_init_values_do_not_depend_on_the_dtype_or_the_pieces():
    net64 = Network([1500, 1000, 3], ["relu", "sigmoid"], "bce")  # 1.5M weights: many pieces
    net32 = Network([1500, 1000, 3], ["relu", "sigmoid"], "bce", dtype="float32")
    p64, p32 = net64.init(7), net32.init(7)
    assert np.array_equal(p64.flat.astype(np.float32), p32.flat)
    rng = np.random.default_rng(7)  # one draw per layer, as written in the docstring
    W1 = rng.normal(0.0, np.sqrt(2.0 / 1500), size=1000 * 1500)
    assert np.array_equal(p64.W[1].ravel(), W1)


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 10**20}, r"epochs: expected an integer >= 1 \(at most 2\*\*63 - 1\)"),
    ({"batch_size": 2**63}, "batch_size: expected None or an integer|batch_size: expected an"),
    ({"early_stopping": 2**64, "validation": 0.5}, "early_stopping"),
])
def test_counts_beyond_int64_are_refused(kwargs, match):
    net = Network([3, 2], "tanh", "sse")
    with pytest.raises(ValueError, match=match):
        fastbp.train(net, net.init(0), np.zeros((4, 3)), np.zeros((4, 2)), **kwargs)


def test_command_line_refuses_epochs_beyond_int64(capsys):
    code = cli.main(["train", IRIS, "--target", "species", "--epochs", str(10**20)])
    assert code == 2
    assert "--epochs: expected an integer >= 1 (at most 2**63 - 1)" in capsys.readouterr().err


def _diverging():
    net = Network([3, 8, 1], "identity", "sse")
    rng = np.random.default_rng(0)
    return net, net.init(0), rng.random((30, 3)) * 100, rng.random(30) * 1e4


def test_a_diverging_run_returns_the_last_finite_parameters():
    net, p, X, Y = _diverging()
    with pytest.warns(RuntimeWarning, match=r"returned those of epoch (\d+), the last finite"):
        h = fastbp.train(net, p, X, Y, lr=1.0, epochs=500)
    assert h.stop_reason == "diverged" and h.epochs < 500
    assert np.isfinite(h.params.flat).all()
    # they are the parameters after epoch h.epochs - 2: rerun exactly that far
    again = fastbp.train(net, p, X, Y, lr=1.0, epochs=h.epochs - 1)
    assert again.stop_reason == "completed" and again.params == h.params
    assert math.isnan(h.loss[-1]) or math.isinf(h.loss[-1])


def test_a_run_diverging_at_once_returns_its_start():
    net, p, X, Y = _diverging()
    with pytest.warns(RuntimeWarning, match="returned the starting parameters"):
        h = fastbp.train(net, p, X * 1e150, Y, lr=1e10, epochs=5)
    assert h.epochs == 1 and h.params == p and h.params is not p


def test_a_diverging_run_with_early_stopping_returns_the_best_epoch():
    net, p, X, Y = _diverging()
    with pytest.warns(RuntimeWarning, match=r"returned the best epoch's \((\d+)\)"):
        h = fastbp.train(net, p, X, Y, lr=1.0, epochs=500, validation=0.2, seed=0,
                         early_stopping=50)
    assert h.stop_reason == "diverged" and np.isfinite(h.params.flat).all()
    assert net.loss(h.params, X, Y) < 1e30


# ---------------------------------------------------------------- overflow


def test_a_value_the_conversion_takes_out_of_range_is_named():
    net = Network([3, 2], "identity", "sse", dtype="float32")
    p = net.init(0)
    X = np.ones((4, 3))
    X[2, 1] = 1e39
    with pytest.raises(ValueError, match=r"X: 1e\+39 at \[2, 1\] is beyond the range of float32"):
        net.loss_and_grad(p, X, np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"Y: -1e\+39 at \[0, 0\] is beyond the range of float32"):
        net.loss(p, np.ones((4, 3)), np.full((4, 2), -1e39))
    big = fastbp.Params(p.sizes, p.bias, p.flat.astype(np.float64) * 1e39)
    with pytest.raises(ValueError, match="params: .* is beyond the range of float32"):
        net.forward(big, np.ones((4, 3)))


def test_results_that_overflow_from_finite_inputs_warn():
    net = Network([3, 4, 2], "identity", "sse")
    p = net.init(0)
    X, Y = np.ones((5, 3)) * 1e300, np.ones((5, 2))
    with pytest.warns(RuntimeWarning, match="loss_and_grad: the loss overflowed"):
        net.loss_and_grad(p, X, Y)
    with pytest.warns(RuntimeWarning, match="loss: the loss overflowed"):
        net.loss(p, X, Y)
    huge = fastbp.Params(p.sizes, p.bias, p.flat * 1e200)
    with pytest.warns(RuntimeWarning, match="forward: the output overflowed"):
        net.predict(huge, X)


def test_a_gradient_that_overflows_under_a_finite_loss_warns():
    """Tiny inputs keep z, and so J, finite while the backward products of huge
    weights overflow: delta^(1) = W^(2)T W^(3)T delta^(3) ~ 1e310."""
    net = Network([2, 3, 3, 1], ["identity", "identity", "sigmoid"], "bce", bias=False)
    p = net.init(0)
    p.W[2][:] *= 1e10
    p.W[3][:] *= 1e300
    X, Y = np.full((4, 2), 1e-300), np.array([0.0, 1.0, 0.0, 1.0])
    with pytest.warns(RuntimeWarning, match="loss_and_grad: the gradient overflowed"):
        J, g = net.loss_and_grad(p, X, Y)
    assert np.isfinite(J) and not np.isfinite(g.flat).all()


def test_finite_inputs_and_results_do_not_warn():
    import warnings

    net = Network([3, 4, 2], "tanh", "sse")
    p = net.init(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.loss_and_grad(p, np.ones((5, 3)), np.ones((5, 2)))
        net.predict(p, np.ones((5, 3)))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"eps": -1}, ValueError, r"eps: expected a finite number in \(0.0, 0.1\]"),
    ({"eps": float("nan")}, ValueError, "eps"),
    ({"input_grad": 1}, TypeError, "input_grad: expected a bool"),
])
def test_gradcheck_checks_its_arguments(kwargs, exc, match):
    net = Network([3, 2], "tanh", "sse")
    with pytest.raises(exc, match=match):
        fastbp.gradcheck(net, net.init(0), np.ones((4, 3)), np.ones((4, 2)), **kwargs)


def test_gradcheck_refuses_nan_inputs():
    net = Network([3, 2], "tanh", "sse")
    p = net.init(0)
    X = np.ones((4, 3))
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"X: contains NaN or inf \(first at \[1, 2\]\)"):
        fastbp.gradcheck(net, p, X, np.ones((4, 2)))
    bad = p.copy()
    bad.flat[0] = np.inf
    with pytest.raises(ValueError, match="params: contains NaN or inf"):
        fastbp.gradcheck(net, bad, np.ones((4, 3)), np.ones((4, 2)))
