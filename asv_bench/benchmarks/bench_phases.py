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
    """One thread, the workers called chunk by chunk of examples as the drivers
    call them (``kernels._chunking``), each phase's time summed over the
    chunks, on weights packed beforehand: ``forward`` (phase 1 without the gradient: z = W a, the
    activations, the loss), ``backward`` (phase 1 with the gradient, less the
    forward: the deltas and the panels), ``weight_gradient`` (phase 2: dJ/dW and
    dJ/db).  Minimum of 7 runs each (the backward is a difference of two, which
    medians left too noisy).  GFLOP/s counts 2 N n_weights per phase (the
    backward pass: 2 N times the weights of layers 2..L)."""

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
        theta = np.ascontiguousarray(params.flat)
        X = np.ascontiguousarray(X, dtype=plan.dtype)
        Y = np.ascontiguousarray(Y, dtype=plan.dtype)  # dense targets
        N = X.shape[0]
        layout = plan.layout
        acts, deltas, losses, scratch = plan._workspaces.take(N)
        grad = np.empty(plan.n_params, plan.dtype)
        scale = plan.dtype.type(1.0 / N)
        zero = scale * 0
        kernels._pack_weights(theta, layout, scratch, True, False, -1)
        chunk = int(layout[0, kernels.CHUNK])
        rows = min(512, chunk)
        n_tasks = int(kernels._weight_grad_tasks(layout, scratch))

        def phases(want_grad):
            # chunk by chunk, as the drivers run them (a chunk's weight-gradient
            # tasks read the panels its blocks wrote): (phase 1, phase 2) seconds
            seconds = [0.0, 0.0]
            for c0 in range(0, N, chunk):
                c1 = min(N, c0 + chunk)
                t0 = common.timer()
                for e0 in range(c0, c1, rows):
                    kernels._example_block(theta, layout, X, Y, plan.no_weights,
                                           plan.loss_code, scale, True, want_grad, False, acts,
                                           deltas, losses, scratch, e0, min(c1, e0 + rows))
                t1 = common.timer()
                if want_grad:
                    for t in range(n_tasks):
                        kernels._weight_grad_task(theta, layout, scratch, deltas, N, grad, zero,
                                                  c0 // chunk * n_tasks + t)
                seconds[0] += t1 - t0
                seconds[1] += common.timer() - t1
            return seconds

        self.runs = {"forward": lambda: phases(False)[0], "phase1": lambda: phases(True)[0],
                     "weight_gradient": lambda: phases(True)[1]}
        phases(True)
        weights = [a * b for a, b in zip(net.sizes[:-1], net.sizes[1:])]
        self.flops = {"forward": 2 * N * sum(weights), "backward": 2 * N * sum(weights[1:]),
                      "weight_gradient": 2 * N * sum(weights)}

    def _min(self, name):
        return min(self.runs[name]() for _ in range(7))

    def track_gflops(self, workload, phase):
        if phase == "backward":
            t = self._min("phase1") - self._min("forward")
        else:
            t = self._min(phase)
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

