"""The parallel drivers' task queue (fastbp/_core/sync.py) and the OpenMP wait
policy the library loads its runtime with."""

import sys

import numba
import numpy as np
import pytest
from interpreter import run_script
from numba import njit, prange

from fastbp import Network
from fastbp._core import kernels, sync


@njit(parallel=True)
def _take_all(scratch, order, iterations, per_iteration):
    # every iteration takes per_iteration numbers and marks each number's slot
    for _ in prange(iterations):
        for _k in range(per_iteration):
            t = sync.take(scratch, sync.TAKEN)
            order[t] += 1
            sync.take(scratch, sync.DONE)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_threads_take_every_number_once(dtype):
    """Concurrent takes hand out 0, 1, 2, ... each to exactly one taker, and the
    counters read as integers of the scratch's width (float32: int32)."""
    scratch = np.full(16, np.nan, dtype)
    _reset(scratch)
    order = np.zeros(64 * 250, np.int64)
    _take_all(scratch, order, 64, 250)
    assert (order == 1).all()
    assert _counts(scratch) == (64 * 250, 64 * 250)
    width = np.dtype(dtype).itemsize
    as_int = scratch.view(np.int64 if width == 8 else np.int32)
    assert as_int[sync.TAKEN] == 64 * 250


@njit
def _reset(scratch):
    sync.reset(scratch, sync.TAKEN)
    sync.reset(scratch, sync.DONE)


@njit
def _counts(scratch):
    return sync.count(scratch, sync.TAKEN), sync.count(scratch, sync.DONE)


@njit
def _wait(scratch, target):
    sync.wait_for(scratch, sync.DONE, target)
    return sync.count(scratch, sync.DONE)


def test_a_wait_for_a_count_reached_returns():
    scratch = np.zeros(16)
    _reset(scratch)
    assert _wait(scratch, 0) == 0
    _take_all(scratch, np.zeros(12, np.int64), 3, 4)
    assert _wait(scratch, 12) == 12


def _driver_results(net, p, X, Y, fn, threads, input_grad):
    plan = net.plan
    theta = np.ascontiguousarray(p.flat)
    N = X.shape[0]
    acts, deltas, losses, scratch = plan._workspaces.take(N)
    grad = np.full(plan.n_params, np.nan, plan.dtype)
    scale = plan.dtype.type(1.0 / N)
    fns = kernels.worker_table(plan.dtype, threads)
    args = (theta, plan.layout, X, Y, plan.no_weights, plan.loss_code, scale, plan._l2_arg)
    if fn == "grad":
        driver = kernels.loss_grad_serial if threads == 0 else kernels.loss_grad_parallel
        J = driver(*args, input_grad, acts, deltas, losses, grad, scratch, fns)
        return (np.float64(J).tobytes(), grad.tobytes(),
                deltas[:, :X.shape[1]].tobytes() if input_grad else b"", scratch[0])
    driver = kernels.forward_serial if threads == 0 else kernels.forward_parallel
    J = driver(*args[:6], True, *args[6:], acts, losses, scratch, fns)
    return np.float64(J).tobytes(), acts.tobytes()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sizes, N", [
    ([13, 37, 19, 5], 203),  # packed as one task
    ([400, 300, 7], 150),  # more than kernels.PACK_PARALLEL weights: a task per matrix
])
def test_any_number_of_queue_takers_gives_the_serial_bits(sizes, N, dtype):
    """A parallel driver run with 1, 2, 3 or 8 loop iterations (more than there are
    threads: some run after others on one thread, finding the queue empty)
    gives the serial twin's bits: loss, gradient, dJ/dx, finite flag, forward."""
    assert (sizes[0] * sizes[1] > kernels.PACK_PARALLEL) == (sizes[0] == 400)
    net = Network(sizes, ["tanh"] * (len(sizes) - 2) + ["softmax"], "cross_entropy", l2=1e-3,
                  dtype=dtype)
    p = net.init(3)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(N, sizes[0])).astype(dtype)
    Y = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], N)]
    for fn, input_grad in (("grad", True), ("grad", False), ("forward", False)):
        serial = _driver_results(net, p, X, Y, fn, 0, input_grad)
        for threads in (1, 2, 3, 8):
            assert _driver_results(net, p, X, Y, fn, threads, input_grad) == serial, (fn, threads)


POLICY = """
    import os, numpy as np, fastbp
    from fastbp._core import plan
    net = fastbp.Network([60, 200, 4], ["tanh", "softmax"], "cross_entropy")
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(2000, 60)), rng.integers(0, 4, 2000)
    net.loss_and_grad(net.init(0), X, Y)
    gomp = {line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line}
    print(plan._openmp is not None, os.environ.get("OMP_WAIT_POLICY"), len(gomp),
          net.plan.last_driver)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="GNU OpenMP; reads /proc/self/maps")
@pytest.mark.parametrize("env, loaded, policy", [
    ({}, "True", "None"),  # loaded passive, the environment as it was
    ({"OMP_WAIT_POLICY": "active"}, "False", "active"),  # the user's choice kept
    ({"GOMP_SPINCOUNT": "1000"}, "False", "None"),
    ({"NUMBA_THREADING_LAYER": "workqueue"}, "False", "None"),
])
def test_openmp_is_loaded_with_threads_that_sleep_unless_told_otherwise(env, loaded, policy):
    code, out, err = run_script(POLICY, timeout=300, **env)
    assert code == 0, err
    got_loaded, got_policy, n_gomp, driver = out.split()
    assert (got_loaded, got_policy) == (loaded, policy)
    if env.get("NUMBA_THREADING_LAYER") != "workqueue":
        # numba's layer runs on the one runtime loaded (not a second copy)
        assert (n_gomp, driver) == ("1", "parallel") or numba.config.THREADING_LAYER == "tbb"
