"""What runs on a worker, and the combination rule: one chunk's sums, the
binary tree that adds them in chunk order, and the final mean and L2 term.

Both the distributed calls (``fastbp.dask.loss_and_grad``, ``train``) and the
single-machine ``chunked_loss_and_grad`` build their result from these
functions, in the same tree, so that the same chunking gives the same bits.

A chunk's partial result is a ``Partial``: its loss SUM, gradient SUM (or
None for a loss alone), the number of examples it counts (the sum of its
weights when weighted) and, for validation, the examples it classified
right.  Partials are only ever combined by ``add``, which returns a new one:
a worker lost after a partial was computed may be asked for it again, and an
input changed in place would be counted twice.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from typing import NamedTuple

import numpy as np

from ..network import Network
from ..params import Params

__all__ = ["Partial", "add", "chunk_loss", "chunk_loss_and_grad", "finish", "sum_network",
           "tree"]


class Partial(NamedTuple):
    """The sums of one chunk, or of consecutive chunks once added."""

    loss: float          # sum over the examples of w_e J(e) (float64)
    grad: np.ndarray | None   # sum of w_e dJ(e)/dtheta, network dtype, or None
    count: float         # sum of w_e (the number of examples unweighted), float64
    right: int = 0       # validation: examples classified right


def sum_network(net: Network) -> Network:
    """``net`` with ``reduction="sum"`` and no L2 term: what each chunk runs
    (the mean divides once and the L2 term is added once, in ``finish``)."""
    d = net.to_dict()
    d["reduction"] = "sum"
    d["l2"] = 0.0
    return Network.from_dict(d)


def add(a: Partial, b: Partial) -> Partial:
    """a + b, a new Partial (the inputs are never modified).  Float64 loss and
    count; the gradients added elementwise in the network's dtype."""
    grad = None if a.grad is None else np.add(a.grad, b.grad)
    return Partial(a.loss + b.loss, grad, a.count + b.count, a.right + b.right)


def tree(items: list, add_fn=add):
    """The binary tree of ``add_fn`` over ``items`` in their order.

    Level by level: neighbours (0, 1), (2, 3), ... are added, an odd last one
    moves up unchanged, until one is left.  ``items`` may be values (one
    machine) or delayed objects (``add_fn`` then a delayed ``add``): the same
    code builds both trees, so they add the same pairs in the same order
    whatever the order in which the chunks finish.
    """
    if not items:
        raise ValueError("tree: no chunks to combine")
    level = list(items)
    while len(level) > 1:
        nxt = [add_fn(level[k], level[k + 1]) for k in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def finish(net: Network, theta: np.ndarray, total: Partial):
    """(J, grad or None) of ``net`` from the tree's total: the mean divides the
    sums once by the count (the sum of the weights), then the L2 term is
    added once (004 section 9): J += l2/2 sum W^2, dJ/dW += l2 W.

    The division runs in float64 and is rounded once to the network's dtype;
    the L2 sum is NumPy's float64 sum of the squared weights, layer by layer.
    """
    dt = net.dtype
    J = float(total.loss)
    grad = total.grad
    if net.reduction == "mean":
        J = J / total.count
        if grad is not None:
            grad = (grad.astype(np.float64) / total.count).astype(dt)
    elif grad is not None:
        grad = grad.copy()
    if net.l2:
        W = Params.wrap(net.sizes, net.bias, theta).W
        J += l2_term(net, theta)
        if grad is not None:
            g = Params.wrap(net.sizes, net.bias, grad).W
            lam = dt.type(net.l2)
            for l in range(1, net.n_layers + 1):
                g[l][...] = g[l] + lam * W[l]
    return J, grad


def l2_term(net: Network, theta) -> float:
    """l2/2 sum of W^2 over every weight (not the biases): NumPy's float64 sum
    of the squares, layer by layer, the layers' sums added in order."""
    if not net.l2:
        return 0.0
    W = Params.wrap(net.sizes, net.bias, theta).W
    total = 0.0
    for l in range(1, net.n_layers + 1):
        total += float(np.sum(np.square(W[l], dtype=np.float64)))
    return 0.5 * net.l2 * total


# ---------------------------------------------------------------------- worker side


def chunk_loss_and_grad(net: Network, theta, X, Y, w=None, threads=None) -> Partial:
    """One chunk's Partial: fastbp's compiled ``loss_and_grad`` with
    ``reduction="sum"`` on rows X (n, n_0), Y, weights w (n,) or None.

    ``net`` is already the chunk's network (``sum_network``).  ``threads``:
    numba's thread count for this call (numba's count belongs to the calling
    thread, so it is set in the task), or None to leave it.
    """
    X, Y, w = np.asarray(X), np.asarray(Y), None if w is None else np.asarray(w)
    with _first_call(net, X.shape[0]), _threads(threads):
        J, g = net.loss_and_grad(Params.wrap(net.sizes, net.bias, theta), X, Y,
                                 sample_weight=w)
    count = float(X.shape[0]) if w is None else float(np.sum(w, dtype=np.float64))
    return Partial(float(J), g.flat, count)


def chunk_loss(net: Network, theta, X, Y, threads=None) -> Partial:
    """One chunk's loss sum and, for a classifier, its examples classified
    right (argmax of a softmax against argmax of Y, first on ties; every
    sigmoid unit's a > 1/2 against y > 1/2), as ``fastbp.train`` counts them."""
    X, Y = np.asarray(X), np.asarray(Y)
    params = Params.wrap(net.sizes, net.bias, theta)
    with _first_call(net, X.shape[0]), _threads(threads):
        J = net.loss(params, X, Y)
        right = 0
        if net.loss_name != "sse" and net.loss_name != "poisson":
            A = net.forward(params, X)
            if net.loss_name == "cross_entropy":
                truth = Y if Y.ndim == 1 else np.argmax(Y, axis=1)
                right = int(np.count_nonzero(np.argmax(A, axis=1) == truth))
            else:
                Yb = Y.reshape(A.shape) > 0.5
                right = int(np.count_nonzero(np.all((A > 0.5) == Yb, axis=1)))
    return Partial(float(J), None, float(X.shape[0]), right)


@contextlib.contextmanager
def _threads(n):
    """numba's thread count set to ``n`` (at most numba's maximum) for the
    block, then restored.  Tasks of a worker with several threads each run in
    their own thread, whose count this sets; the results never depend on it."""
    if isinstance(n, dict):  # per worker (``_workers.threads_per_task``)
        n = n.get(_worker_address(), 1) if n else None
    if n is None:
        yield
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _worker_address():
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):  # not in a worker: numba's own count
        return None


# The first call of a (network, rows) in a process may compile kernels or load
# them from numba's cache.  Worker processes of one host share that cache
# folder, and two of them compiling the same function into it at once can leave
# a file the other reads half written (numba#4807, numba#10128).  So a process's
# first call of each kind holds a lock file in the cache folder: the first
# worker compiles and writes, the others wait and then load.  Threads of one
# process are serialized by numba's own compiler lock.
_seen: set = set()
_seen_lock = threading.Lock()


def lock_path() -> str:
    """The host-wide lock file of first calls: in numba's cache folder when one
    is set (the folder the workers share), else the system's temporary one."""
    folder = os.environ.get("NUMBA_CACHE_DIR") or tempfile.gettempdir()
    return os.path.join(folder, "fastbp-first-call.lock")


@contextlib.contextmanager
def _first_call(net, n):
    key = (hash(net), net.sizes, n)
    with _seen_lock:
        first = key not in _seen
    if not first:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): numba's lock only
        fcntl = None
    path = lock_path()
    fd = None
    if fcntl is not None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # a folder that cannot be written: numba's lock only
            fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
        with _seen_lock:
            _seen.add(key)
    finally:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
