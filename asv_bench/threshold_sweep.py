"""Where do the parallel gradient drivers start to beat the serial ones?

Times ``Network.loss_and_grad`` with the plan's launch threshold forced to the
serial and to the parallel driver, round-robin in one process, over a grid of
widths and batch sizes, and prints for each point the multiply-adds of a forward
pass (N * (n_params + n_0); the plan adds ``EXAMPLE_WORK`` per example to them
before it compares them with ``fastbp._core.config.SERIAL_BELOW``), the median and
the minimum time of each driver, and their ratios.  The median says what a call
costs on this machine under its current load; the minimum says what the
hardware does when every thread gets a core at once.  Run it before changing
``SERIAL_BELOW`` or ``EXAMPLE_WORK``, with the thread count you care about:

    NUMBA_NUM_THREADS=2 PYTHONPATH=. python asv_bench/threshold_sweep.py
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time

import numba
import numpy as np

from fastbp import Network
from fastbp._core import plan as core_plan

NETS = [
    ([4, 8, 3], "sigmoid", "bce"),
    ([13, 37, 5], ["tanh", "softmax"], "cross_entropy"),
    ([64, 32, 10], ["relu", "softmax"], "cross_entropy"),
    ([150, 100, 5], ["tanh", "softmax"], "cross_entropy"),
]
BATCHES = [16, 64, 256, 1024, 4096]
MAX_WORK = 2e7


def _samples(fns, rounds=21, sample_time=0.005):
    """Seconds per call of each callable: ``rounds`` round-robin samples each."""
    number = []
    for fn in fns:
        t0 = time.perf_counter()
        fn()
        number.append(max(1, int(sample_time / max(time.perf_counter() - t0, 1e-7))))
    out = [[] for _ in fns]
    gc.disable()
    try:
        for r in range(rounds):
            order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
            for k in order:
                t0 = time.perf_counter()
                for _ in range(number[k]):
                    fns[k]()
                out[k].append((time.perf_counter() - t0) / number[k])
    finally:
        gc.enable()
    return out


def _with_threshold(threshold, net, params, X, Y):
    """One gradient through the plan with the launch threshold forced: the serial
    (huge threshold) or the parallel driver (0), as programs call it."""
    core_plan.SERIAL_BELOW = threshold
    net.loss_and_grad(params, X, Y)


def main(batches=BATCHES) -> None:
    print(f"threads {numba.get_num_threads()}, layer {numba.threading_layer() or '?'}, "
          f"load {os.getloadavg()}")
    print(f"{'network':16s} {'N':>5s} {'work':>9s} {'serial med':>11s} {'par med':>10s} "
          f"{'ratio':>6s} {'serial min':>11s} {'par min':>10s} {'ratio':>6s}")
    for sizes, acts, loss in NETS:
        # a plan runs batches below the threshold it was made with serially
        # (``Plan._serial_rows``): made with 0, the threshold set per call decides
        core_plan.SERIAL_BELOW = 0
        net = Network(sizes, acts, loss)
        theta = net.init(0).flat
        rng = np.random.default_rng(0)
        for N in batches:
            work = N * (theta.size + sizes[0])
            if work > MAX_WORK:
                continue
            X = rng.normal(size=(N, sizes[0]))
            if loss == "cross_entropy":
                Y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], N)]
            else:
                Y = (rng.random((N, sizes[-1])) > 0.5).astype(float)
            params = net.init(0)
            ser, par = _samples([lambda: _with_threshold(10**18, net, params, X, Y),
                                 lambda: _with_threshold(0, net, params, X, Y)])
            sm, pm = statistics.median(ser), statistics.median(par)
            s0, p0 = min(ser), min(par)
            print(f"{sizes!s:16s} {N:5d} {work:9d} {sm * 1e6:9.1f}us {pm * 1e6:8.1f}us "
                  f"{pm / sm:6.2f} {s0 * 1e6:9.1f}us {p0 * 1e6:8.1f}us {p0 / s0:6.2f}",
                  flush=True)
    print(f"load after {os.getloadavg()}")


if __name__ == "__main__":
    main([int(n) for n in sys.argv[1].split(",")] if len(sys.argv) > 1 else BATCHES)
