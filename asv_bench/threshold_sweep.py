"""Where do the parallel gradient drivers start to beat the serial ones?

Times ``loss_grad_serial`` and ``loss_grad_parallel`` on the same prepared
arguments (buffers allocated once), round-robin in one process, over a grid of
widths and batch sizes, and prints for each point the work (N * (n_params + n_0),
the quantity ``fastbp._config.SERIAL_BELOW`` is compared with), the median and
the minimum time of each driver, and their ratios.  The median says what a call
costs on this machine under its current load; the minimum says what the
hardware does when every thread gets a core at once.  Run it before changing
``SERIAL_BELOW``, with the thread count you care about:

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

from fastbp import Network, _engine, _kernels

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


def main(batches=BATCHES) -> None:
    print(f"threads {numba.get_num_threads()}, layer {numba.threading_layer() or '?'}, "
          f"load {os.getloadavg()}")
    print(f"{'network':16s} {'N':>5s} {'work':>9s} {'serial med':>11s} {'par med':>10s} "
          f"{'ratio':>6s} {'serial min':>11s} {'par min':>10s} {'ratio':>6s}")
    for sizes, acts, loss in NETS:
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
            A = _engine._buffers(net._layout, N, theta.dtype)
            args = (theta, net._layout, X, Y, net._loss_code, 1.0 / N, 0.0, False, A,
                    np.empty_like(A), np.empty(N), np.empty_like(theta),
                    _engine._panels(net._layout, N, theta.dtype))
            ser, par = _samples([lambda a=args: _kernels.loss_grad_serial(*a),
                                 lambda a=args: _kernels.loss_grad_parallel(*a)])
            sm, pm = statistics.median(ser), statistics.median(par)
            s0, p0 = min(ser), min(par)
            print(f"{sizes!s:16s} {N:5d} {work:9d} {sm * 1e6:9.1f}us {pm * 1e6:8.1f}us "
                  f"{pm / sm:6.2f} {s0 * 1e6:9.1f}us {p0 * 1e6:8.1f}us {p0 / s0:6.2f}",
                  flush=True)
    print(f"load after {os.getloadavg()}")


if __name__ == "__main__":
    main([int(n) for n in sys.argv[1].split(",")] if len(sys.argv) > 1 else BATCHES)
