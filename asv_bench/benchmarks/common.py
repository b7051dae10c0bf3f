"""Shared helpers of the fastbp asv suite.

The workloads come from the one table in ``fastbp.bench`` (the ``fastbp bench``
command reads the same table), and the timed calls are the ones that command
times: ``fastbp.bench.peers``' fastbp and reference contenders.
"""

import functools
import timeit

import numba

from fastbp.bench import BY_NAME, TRAINING, WORKLOADS, interleaved, make_data
from fastbp.bench import peers as _peers

GRADIENT = [w.name for w in WORKLOADS]
TRAIN = [w.name for w in TRAINING]
THREADS = [1, 2]

# Wall clock: CPU time would add up the threads instead of showing their speedup.
timer = timeit.default_timer

_limits = []


@functools.cache
def data(name):
    """(net, params, X, Y, labels) of workload ``name``, seeded, built once per process."""
    return make_data(BY_NAME[name])


def set_threads(n):
    """Use ``n`` threads in numba (fastbp) and in NumPy's BLAS (the reference).

    Raises NotImplementedError, which asv reports as "skipped", on a machine with
    fewer than ``n`` threads available to numba.
    """
    if n > numba.config.NUMBA_NUM_THREADS:
        raise NotImplementedError(f"{n} threads: numba has {numba.config.NUMBA_NUM_THREADS}")
    numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _limits[:] = [threadpool_limits(limits=n)]


def prepare(contender, kind, name):
    """The contender's timed callable for workload ``name`` (warmed: JIT compiled)."""
    w = BY_NAME[name]
    net, params, X, Y, labels = data(name)
    try:
        prep = (contender.gradient if kind == "gradient" else contender.training)(
            w, net, params, X, Y, labels)
    except _peers.Unsupported as e:
        raise NotImplementedError(str(e)) from None
    prep.run()
    return prep.run


def reference_contender():
    try:
        return _peers.ReferenceContender()
    except ImportError:
        raise NotImplementedError("fastbp.reference is not in this version") from None


def median_seconds(runs, repeat=7):
    """{name: median seconds per call}, the callables timed round-robin."""
    return {k: v[0] for k, v in interleaved(runs, repeat, budget=10.0).items()}
