"""Calls into the compiled kernels: buffer allocation, the serial/parallel choice
and the threading layer.  Inputs arrive validated and converted (``network.py``)."""

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


def loss_and_grad(theta, layout, X, Y, loss_code, scale, l2, input_grad):
    """Return (J, grad, dX or None) for validated, converted inputs."""
    N, n_0 = X.shape
    dt = theta.dtype.type
    acts = _buffers(layout, N, theta.dtype)
    deltas = np.empty(acts.shape, dtype=theta.dtype)
    losses = np.empty(N, dtype=theta.dtype)
    grad = np.empty(theta.shape, dtype=theta.dtype)
    work = N * (theta.size + n_0)
    J = _run(_kernels.loss_grad_parallel, _kernels.loss_grad_serial, work,
             theta, layout, X, Y, loss_code, dt(scale), dt(l2), input_grad,
             acts, deltas, losses, grad)
    dX = deltas[:, :n_0].copy() if input_grad else None
    return J, grad, dX


def forward(theta, layout, X, Y=None, loss_code=0):
    """Output activations (N, n_L), and per-example losses when Y is given."""
    N, n_0 = X.shape
    acts = _buffers(layout, N, theta.dtype)
    losses = np.empty(N, dtype=theta.dtype)
    want_loss = Y is not None
    if Y is None:
        Y = np.empty((0, int(layout[-1, _kernels.N_OUT])), dtype=theta.dtype)
    work = N * (theta.size + n_0)
    _run(_kernels.forward_parallel, _kernels.forward_serial, work,
         theta, layout, X, Y, loss_code, want_loss, acts, losses)
    c_L = int(layout[-1, _kernels.C_OUT])
    return acts[:, c_L:].copy(), losses
