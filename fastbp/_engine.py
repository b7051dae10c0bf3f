"""Calls into the compiled kernels: buffers, the serial/parallel choice and the
threading layer.  Inputs arrive validated and converted (``network.py``).

A call from Python into a compiled driver pays for every argument (numba
unboxes each array, and a NumPy scalar argument costs more to type than a
Python float): for a network as small as 003's that is most of the time of a
gradient.  So the callers here pass Python floats where the dtype allows it
(float64), reuse their scratch buffers across calls (``Workspaces``), and make
one driver call per gradient.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from . import _kernels
from ._config import SERIAL_BELOW

# Concurrent calls from several Python threads are safe with the 'omp' and 'tbb'
# layers; 'workqueue' aborts the process.  Unless the user chose a layer, ask
# numba for a thread-safe one; if none can be loaded, run the serial kernels.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "threadsafe"

_parallel_ok = numba.config.THREADING_LAYER != "workqueue"
_probe_lock = threading.Lock()
_probed = False


def _run(parallel_fn, serial_fn, work, *args):
    """Call the parallel kernel when the work repays a launch and a thread-safe
    layer is available, else its serial twin (same workers, same bits)."""
    global _parallel_ok, _probed
    if work < SERIAL_BELOW or not _parallel_ok:
        return serial_fn(*args)
    if not _probed:
        with _probe_lock:  # the first launch loads the layer: do it once, alone
            if not _probed:
                try:
                    out = parallel_fn(*args)
                except ValueError:  # "No threading layer could be loaded"
                    _parallel_ok = False
                    out = serial_fn(*args)
                _parallel_ok = _parallel_ok and numba.threading_layer() != "workqueue"
                _probed = True
                return out
    return parallel_fn(*args)


def _buffers(layout, N, dtype):
    """One (N, S) buffer for a^(0..L) (or delta^(0..L)) side by side, S = n_0 + ... + n_L:
    a^(L) starts at column C_OUT of the last layer."""
    S = int(layout[-1, _kernels.C_OUT] + layout[-1, _kernels.N_OUT])
    return np.empty((N, S), dtype=dtype)


def _panels(layout, N, dtype):
    """The gradient drivers' scratch for a batch of up to N examples: a^(l) and
    delta^(l) transposed for the weight-gradient sums (``_kernels.panel_rows``)."""
    return np.empty(N * _kernels.panel_rows(layout), dtype=dtype)


class Workspaces:
    """Scratch buffers (acts, deltas, losses, panels) of one network, reused across calls.

    ``take(N)`` hands out a set for a batch of N examples that no other caller
    holds until it comes back with ``give``: the kept one when there is one, else
    a new one.  ``dict.pop`` and item assignment are atomic, so concurrent calls
    from Python threads never share a set (a second concurrent caller simply gets
    a new one).  Sets are kept one per batch size for at most ``SIZES`` batch
    sizes, of which at most one larger than ``SMALL`` (and none larger than
    ``MAX_BYTES``), so a network never holds on to much memory.  A small set
    saves the allocation, a visible part of a small call; a large one saves the
    page faults of touching fresh memory: C4-4096 (72 MB of buffers), 2
    threads, 137 ms per gradient through ``loss_and_grad`` with a fresh set per
    call against 74 ms with kept buffers.
    """

    SMALL = 1 << 20
    MAX_BYTES = 1 << 28
    SIZES = 4

    __slots__ = ("_P", "_S", "_dtype", "_free")

    def __init__(self, layout, dtype):
        self._dtype = np.dtype(dtype)
        self._S = int(layout[-1, _kernels.C_OUT] + layout[-1, _kernels.N_OUT])
        self._P = _kernels.panel_rows(layout)
        self._free = {}

    def take(self, N: int):
        ws = self._free.pop(N, None)
        if ws is None:
            shape = (N, self._S)
            dt = self._dtype
            ws = (np.empty(shape, dt), np.empty(shape, dt), np.empty(N, dt),
                  np.empty(N * self._P, dt))
        return ws

    def give(self, N: int, ws) -> None:
        free = self._free
        nbytes = _set_bytes(ws)
        if N in free or nbytes > self.MAX_BYTES:
            return
        if len(free) >= self.SIZES:
            free.clear()  # a new mix of batch sizes: start over
        if nbytes > self.SMALL:  # replaces the kept large set, if any
            for k, kept in list(free.items()):
                if _set_bytes(kept) > self.SMALL:
                    free.pop(k, None)
        free[N] = ws


def _set_bytes(ws) -> int:
    return 2 * ws[0].nbytes + ws[3].nbytes


def loss_grad(theta, layout, X, Y, loss_code, scale, l2, input_grad, acts, deltas, losses,
              grad, panels):
    """J from the serial or the parallel gradient driver (same arguments, same
    bits), by the work of the call: N * (number of parameters + n_0)."""
    N, n_0 = X.shape
    work = N * (theta.shape[0] + n_0)
    if work < SERIAL_BELOW or not _parallel_ok:
        return _kernels.loss_grad_serial(theta, layout, X, Y, loss_code, scale, l2, input_grad,
                                         acts, deltas, losses, grad, panels)
    if _probed:
        return _kernels.loss_grad_parallel(theta, layout, X, Y, loss_code, scale, l2,
                                           input_grad, acts, deltas, losses, grad, panels)
    return _run(_kernels.loss_grad_parallel, _kernels.loss_grad_serial, work, theta, layout,
                X, Y, loss_code, scale, l2, input_grad, acts, deltas, losses, grad, panels)


def forward(theta, layout, X, Y=None, loss_code=0, workspaces=None):
    """Output activations (N, n_L), and per-example losses when Y is given (then a
    new array; the activations are always a new array)."""
    N, n_0 = X.shape
    if workspaces is None:
        acts = _buffers(layout, N, theta.dtype)
        ws = (acts, None, np.empty(N, dtype=theta.dtype), None)
    else:
        ws = workspaces.take(N)
    acts, losses = ws[0], ws[2]
    want_loss = Y is not None
    if Y is None:
        Y = np.empty((0, int(layout[-1, _kernels.N_OUT])), dtype=theta.dtype)
    work = N * (theta.shape[0] + n_0)
    _run(_kernels.forward_parallel, _kernels.forward_serial, work,
         theta, layout, X, Y, loss_code, want_loss, acts, losses)
    c_L = int(layout[-1, _kernels.C_OUT])
    out = acts[:, c_L:].copy()
    if want_loss:
        losses = losses.copy()
    if workspaces is not None:
        workspaces.give(N, ws)
    return out, losses
