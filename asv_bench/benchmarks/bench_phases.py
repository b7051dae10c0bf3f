"""GFLOP/s of each phase of a gradient on one thread, and of the micro-kernel's
GEMM alone, each against NumPy's matmul of the same sizes, so that a
regression shows which part moved (``fastbp._core.kernels`` for the phases)."""

import numpy as np

from fastbp._core import kernels
from fastbp._core import microkernel as mk

from . import common

PHASE_WORKLOADS = ["C4-4096", "C5"]


def _once(f):
    t0 = common.timer()
    f()
    return common.timer() - t0


def _median(f, repeat=5):
    return float(np.median([_once(f) for _ in range(repeat)]))


class Phases:
    """One thread, the serial drivers' workers called one phase at a time:
    ``forward`` (packing W, z = W a and the activations, the loss),
    ``backward`` (the rest of phase 1: the deltas, with packing W^T and the
    panels), ``weight_gradient`` (phase 2: dJ/dW and dJ/db).  GFLOP/s counts
    2 N n_weights per phase (the backward pass: 2 N times the weights of layers
    2..L)."""

    params = (PHASE_WORKLOADS, ["forward", "backward", "weight_gradient"])
    param_names = ("workload", "phase")
    timer = common.timer
    timeout = 300
    number = 1
    repeat = 1

    def setup(self, workload, phase):
        common.set_threads(1)
        net, params, X, Y, _ = common.data(workload)
        plan = net.plan
        self.theta = np.ascontiguousarray(params.flat)
        X = np.ascontiguousarray(X, dtype=plan.dtype)
        Yd = np.ascontiguousarray(Y, dtype=plan.dtype)  # dense targets
        N = X.shape[0]
        acts, deltas, losses, scratch = plan._workspaces.take(N)
        grad = np.empty(plan.n_params, plan.dtype)
        fns = plan.fns
        scale = plan.dtype.type(1.0 / N)
        self.grad_args = (self.theta, plan.layout, X, Yd, plan.loss_code, scale, scale * 0,
                          False, acts, deltas, losses, grad, scratch, fns)
        self.fwd_args = (self.theta, plan.layout, X, Yd, plan.loss_code, True, scale, scale * 0,
                         acts, losses, scratch, fns)
        kernels.loss_grad_serial(*self.grad_args)
        self.n_tasks = int(kernels._weight_grad_tasks(plan.layout, scratch))
        self.task_args = (self.theta, plan.layout, scratch, deltas, N, grad, scale * 0)
        weights = [a * b for a, b in zip(net.sizes[:-1], net.sizes[1:])]
        self.flops = {"forward": 2 * N * sum(weights), "backward": 2 * N * sum(weights[1:]),
                      "weight_gradient": 2 * N * sum(weights)}

    def _weight_gradient(self):
        for t in range(self.n_tasks):
            kernels._weight_grad_task(*self.task_args, t)

    def track_gflops(self, workload, phase):
        t_fwd = _median(lambda: kernels.forward_serial(*self.fwd_args))
        if phase == "forward":
            t = t_fwd
        else:
            t_wg = _median(self._weight_gradient)
            if phase == "weight_gradient":
                t = t_wg
            else:
                t = _median(lambda: kernels.loss_grad_serial(*self.grad_args)) - t_fwd - t_wg
        return self.flops[phase] / t / 1e9

    track_gflops.unit = "GFLOP/s"


class MicroKernel:
    """``microkernel.matmul`` (the micro-kernel's GEMM) on one thread at C5's
    product size, 1024^3, against NumPy's matmul (BLAS) on the same inputs:
    GFLOP/s and the ratio of NumPy's time to ours (> 1: faster than BLAS)."""

    params = (["float32", "float64"],)
    param_names = ("dtype",)
    timer = common.timer
    timeout = 300
    number = 1
    repeat = 1

    def setup(self, dtype):
        common.set_threads(1)
        rng = np.random.default_rng(0)
        self.X = rng.normal(size=(1024, 1024)).astype(dtype)
        self.Y = rng.normal(size=(1024, 1024)).astype(dtype)
        self.out = np.empty((1024, 1024), dtype)
        self.work = mk.workspace(1024, dtype)
        mk.matmul(self.X, self.Y, self.out, work=self.work)

    def _ours(self):
        mk.matmul(self.X, self.Y, self.out, work=self.work)

    def _numpy(self):
        np.matmul(self.X, self.Y, out=self.out)

    def track_gflops(self, dtype):
        return 2 * 1024**3 / _median(self._ours) / 1e9

    track_gflops.unit = "GFLOP/s"

    def track_speedup_over_numpy(self, dtype):
        t = common.median_seconds({"ours": self._ours, "numpy": self._numpy})
        return t["numpy"] / t["ours"]

    track_speedup_over_numpy.unit = "x"

