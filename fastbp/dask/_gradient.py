"""The loss and gradient of a network over row-chunked data: on a Dask
cluster (``loss_and_grad``) and on one machine (``chunked_loss_and_grad``),
by the same rule.

The rule that makes the result exact: the same chunking gives the same bits.
Chunk k (rows ``X.chunks[0][k]``) is summed by fastbp's compiled kernels
(``reduction="sum"``, deterministic for any thread count), the chunks' sums
are added by a binary tree fixed by their order (``_chunks.tree``), never by
the order in which workers finish, and the mean and the L2 term are applied
once at the end (``_chunks.finish``).  Which worker ran a chunk, how many
workers there were, and whether a chunk was computed twice after a worker was
lost change nothing.  (The workers must run the same compiled code: machines
of one CPU family, the core's vector width being the host's.)
"""

from __future__ import annotations

import numbers

import numpy as np

from ..network import Network
from ..params import Params
from . import _chunks

__all__ = ["DaskData", "chunked_loss_and_grad", "loss_and_grad"]


def _dask_array():
    try:
        import dask.array as da
    except ImportError as e:  # pragma: no cover - the extra is missing
        raise ImportError("fastbp.dask needs dask[array] and distributed: "
                          "pip install 'fastbp[dask]'") from e
    return da


class DaskData:
    """X, Y and the weights as row-aligned dask arrays, checked once: their
    per-chunk pieces (``parts``) are what the tasks read.

    Raises ``TypeError`` for anything that is not a dask array (a NumPy array
    included: it names the single-machine calls) and ``ValueError`` for
    unknown chunk sizes, columns split over chunks, rows not aligned with X's,
    or no rows.
    """

    __slots__ = ("N", "W", "X", "Y", "chunks")

    def __init__(self, net: Network, X, Y, sample_weight=None, name="X"):
        da = _dask_array()
        # the targets' name: "Y", or "validation[1]" beside "validation[0]"
        yname = f"{name[:-3]}[1]" if name.endswith("[0]") else "Y"
        wname = "sample_weight"
        _is_dask(name, X, da)
        _is_dask(yname, Y, da)
        if sample_weight is not None:
            _is_dask(wname, sample_weight, da)
        if X.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D dask array (N, {net.sizes[0]}), "
                             f"got {X.ndim} dimensions")
        _known(name, X)
        if X.shape[1] != net.sizes[0]:
            raise ValueError(f"{name}: expected {net.sizes[0]} columns (the network's n_0), "
                             f"got {X.shape[1]}")
        if len(X.chunks[1]) != 1:
            raise ValueError(f"{name}: chunked along its columns ({X.chunks[1]}); each chunk "
                             f"must hold whole rows: {name}.rechunk({{1: -1}})")
        if X.dtype.kind != "f":
            raise TypeError(f"{name}: expected floating values, got dtype {X.dtype}")
        if X.shape[0] == 0:
            raise ValueError(f"{name}: no rows")
        if Y.ndim not in (1, 2):
            raise ValueError(f"{yname}: expected a 1-D or 2-D dask array, got {Y.ndim} "
                             "dimensions")
        _known(yname, Y)
        if Y.ndim == 2 and len(Y.chunks[1]) != 1:
            raise ValueError(f"{yname}: chunked along its columns ({Y.chunks[1]}); "
                             f"{yname}.rechunk({{1: -1}})")
        for what, A in ((yname, Y), (wname, sample_weight)):
            if A is None:
                continue
            if A.shape[0] != X.shape[0]:
                raise ValueError(f"{what}: {A.shape[0]} rows, {name} has {X.shape[0]}")
            if A.chunks[0] != X.chunks[0]:
                raise ValueError(
                    f"{what}: row chunks {_short(A.chunks[0])} are not {name}'s "
                    f"{_short(X.chunks[0])}; rechunk it as {name}: "
                    f"{what}.rechunk({{0: {name}.chunks[0]}})")
        if sample_weight is not None and sample_weight.ndim != 1:
            raise ValueError(f"{wname}: expected a 1-D dask array, got {sample_weight.ndim} "
                             "dimensions")
        self.X, self.Y, self.W = X, Y, sample_weight
        self.chunks = X.chunks[0]
        self.N = X.shape[0]

    def parts(self, chunks=None):
        """(X pieces, Y pieces, weight pieces or Nones) of the row chunks
        ``chunks`` (indices in order; None: all), as delayed objects (a
        persisted array's pieces stay where they are)."""
        xs = self.X.to_delayed(optimize_graph=False)[:, 0]
        ys = self.Y.to_delayed(optimize_graph=False)
        ys = ys[:, 0] if ys.ndim == 2 else ys
        ws = None if self.W is None else self.W.to_delayed(optimize_graph=False)
        take = range(len(xs)) if chunks is None else chunks
        return ([xs[k] for k in take], [ys[k] for k in take],
                [None if ws is None else ws[k] for k in take])

    def persist(self, client=None) -> DaskData:
        """The same data loaded into the workers' memory (``client.persist``,
        or dask's ``persist`` without a client)."""
        import dask

        arrays = [self.X, self.Y] + ([] if self.W is None else [self.W])
        done = client.persist(arrays) if client is not None else dask.persist(*arrays)
        new = object.__new__(DaskData)
        new.X, new.Y = done[0], done[1]
        new.W = done[2] if self.W is not None else None
        new.chunks, new.N = self.chunks, self.N
        return new


def _is_dask(name, A, da):
    if not isinstance(A, da.Array):
        hint = ""
        if isinstance(A, np.ndarray) or hasattr(A, "__array__"):
            hint = ("; for data in this process use Network.loss_and_grad or "
                    "fastbp.dask.chunked_loss_and_grad, or wrap it: "
                    "dask.array.from_array(A, chunks=(rows, -1))")
        raise TypeError(f"{name}: expected a dask.array.Array, got {type(A).__name__}{hint}")


def _known(name, A):
    if any(np.isnan(c) for cs in A.chunks for c in cs):
        raise ValueError(f"{name}: unknown chunk sizes (NaN); call {name}.compute_chunk_sizes()")


def _short(chunks) -> str:
    s = str(tuple(chunks))
    return s if len(s) < 60 else s[:57] + "...)"


# ---------------------------------------------------------------------- graphs


def gradient_graph(net: Network, theta_d, data: DaskData, threads=None, chunks=None):
    """The delayed total Partial of ``net``'s loss and gradient over ``data``
    (its row chunks ``chunks``, in order; None: all): one task per chunk, then
    the tree in chunk order."""
    from dask import delayed

    local = _chunks.sum_network(net)
    xs, ys, ws = data.parts(chunks)
    task = delayed(_chunks.chunk_loss_and_grad)
    partials = [task(local, theta_d, x, y, w, threads) for x, y, w in zip(xs, ys, ws)]
    return _chunks.tree(partials, delayed(_chunks.add))


def loss_graph(net: Network, theta_d, data: DaskData, threads=None):
    """The delayed total Partial of the loss (and examples classified right)."""
    from dask import delayed

    local = _chunks.sum_network(net)
    xs, ys, _ = data.parts()
    task = delayed(_chunks.chunk_loss)
    partials = [task(local, theta_d, x, y, threads) for x, y in zip(xs, ys)]
    return _chunks.tree(partials, delayed(_chunks.add))


def params_graph(theta):
    """``theta`` as one key of the graph: sent to each worker once, however
    many of its chunks a worker runs (passed inline, every task would carry a
    copy)."""
    import uuid

    from dask import delayed

    return delayed(theta, name=f"fastbp-theta-{uuid.uuid4().hex}")


def compute(client, *objs):
    """``dask.compute`` on ``client`` (a ``distributed.Client``) or, with None,
    on dask's current scheduler (the default client, when there is one)."""
    import dask

    if client is not None:
        return dask.compute(*objs, scheduler=client)
    return dask.compute(*objs)


def check_net(net):
    if not isinstance(net, Network):
        raise TypeError(f"net: expected fastbp.Network, got {type(net).__name__}")


def check_client(client):
    if client is None:
        return None
    try:
        from distributed import Client
    except ImportError as e:  # pragma: no cover
        raise ImportError("client: needs distributed (pip install 'fastbp[dask]')") from e
    if not isinstance(client, Client):
        raise TypeError(f"client: expected a distributed.Client or None, got "
                        f"{type(client).__name__}")
    return client


# ---------------------------------------------------------------------- public


def loss_and_grad(net: Network, params: Params, X, Y, *, sample_weight=None, client=None):
    """Loss and exact gradient of ``net`` over dask arrays chunked by rows.

    Parameters
    ----------
    net : Network
    params : Params
        Sent once to the workers (one key of the task graph).
    X : dask.array.Array of shape (N, n_0)
        Row chunks of whole rows (one chunk along the columns).
    Y : dask.array.Array of shape (N, n_L) or (N,)
        Targets, with X's row chunks.
    sample_weight : dask.array.Array of shape (N,), optional
        Per-example weights, with X's row chunks.
    client : distributed.Client, optional
        Where to run (a ``LocalCluster``'s or ``Client("tcp://...")``); None:
        dask's current scheduler (the default client, when one exists).

    Returns
    -------
    loss : float
    grads : Params

    Notes
    -----
    Chunk k contributes S_k = sum_{e in k} w_e J(e) and G_k = sum_{e in k}
    w_e dJ(e)/dtheta (fastbp's kernels with ``reduction="sum"``); the sums are
    added by the binary tree of ``fastbp.dask.tree`` in chunk order; then J =
    S / sum_e w_e for the mean (S for the sum), dJ/dtheta likewise, plus the L2
    term once.  The result is the bits of ``chunked_loss_and_grad`` with the
    same chunks, for any number of workers; it equals
    ``Network.loss_and_grad`` on the whole data to rounding.
    """
    check_net(net)
    theta = net.check_params(params)
    client = check_client(client)
    data = DaskData(net, X, Y, sample_weight)

    theta_d = params_graph(theta)
    total, = compute(client, gradient_graph(net, theta_d, data, _threads_for(client)))
    J, g = _chunks.finish(net, theta, total)
    return J, Params.wrap(net.sizes, net.bias, g)


def chunked_loss_and_grad(net: Network, params: Params, X, Y, chunks, *, sample_weight=None):
    """On one machine, the exact result ``loss_and_grad`` gives for dask arrays
    with these row chunks: the same per-chunk sums, tree and final step.

    Parameters
    ----------
    net : Network
    params : Params
    X : array_like of shape (N, n_0)
    Y : array_like of shape (N, n_L) or (N,)
    chunks : int or sequence of int
        Rows per chunk: an int (the last chunk holds the rest, as dask's
        ``chunks=(rows, -1)``) or the chunk lengths, summing to N (as
        ``X.chunks[0]``).
    sample_weight : array_like of shape (N,), optional

    Returns
    -------
    loss : float
    grads : Params
    """
    check_net(net)
    theta = net.check_params(params)
    X = np.asarray(X)
    Y = np.asarray(Y)
    if X.ndim != 2:
        raise ValueError(f"X: expected a 2-D array, got {X.ndim} dimensions")
    N = X.shape[0]
    sizes = row_chunks(chunks, N)
    w = None if sample_weight is None else np.asarray(sample_weight)
    for name, A in (("Y", Y), ("sample_weight", w)):
        if A is not None and A.shape[:1] != (N,):
            raise ValueError(f"{name}: {A.shape[0] if A.ndim else 0} rows, X has {N}")
    local = _chunks.sum_network(net)
    partials = []
    start = 0
    for n in sizes:
        rows = slice(start, start + n)
        partials.append(_chunks.chunk_loss_and_grad(
            local, theta, X[rows], Y[rows], None if w is None else w[rows]))
        start += n
    J, g = _chunks.finish(net, theta, _chunks.tree(partials))
    return J, Params.wrap(net.sizes, net.bias, g)


def row_chunks(chunks, N) -> tuple:
    """``chunks`` (an int or a sequence of chunk lengths) as the tuple of chunk
    lengths over N rows, checked."""
    if isinstance(chunks, numbers.Integral) and not isinstance(chunks, bool):
        if chunks < 1:
            raise ValueError(f"chunks: rows per chunk must be >= 1, got {chunks}")
        if N == 0:
            raise ValueError("X: no rows")
        c = int(chunks)
        return tuple([c] * (N // c) + ([N % c] if N % c else []))
    try:
        sizes = tuple(int(c) for c in chunks)
    except TypeError:
        raise TypeError(f"chunks: expected an int or a sequence of ints, got "
                        f"{type(chunks).__name__}") from None
    if not sizes or min(sizes) < 1 or sum(sizes) != N:
        raise ValueError(f"chunks: expected chunk lengths >= 1 summing to N = {N}, got "
                         f"{_short(sizes)}")
    return sizes


def _threads_for(client):
    """numba threads per task on each worker ({address: count}), or None
    without a client (numba's own count)."""
    if client is None:
        return None
    from . import _workers

    return _workers.threads_per_task(client)
