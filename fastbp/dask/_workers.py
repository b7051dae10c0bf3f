"""Threads on the workers: how many numba threads each task may use.

A Dask worker runs ``nthreads`` tasks at once, and a host may run several
worker processes; each task's compiled call would by default start numba's
full thread count (every core), so a host would run cores x tasks threads.
Each task instead runs max(1, cores of its host // task slots on that host)
threads (``_chunks._threads`` sets it in the task's own thread: numba's
count is per calling thread).  The count never changes a result.

Calls from several threads of one worker are safe: fastbp asks numba for a
thread-safe layer (``omp`` or ``tbb``) and, where only ``workqueue`` can be had
(it aborts the process on concurrent parallel calls, numba#8563), runs the
serial kernels (same bits).  BLAS is not called by the kernels, so its threads
need no pinning here.
"""

from __future__ import annotations

import os
import threading

__all__ = ["host_cores", "threads_per_task"]

_cache: dict = {}
_cache_lock = threading.Lock()


def host_cores() -> int:
    """The cores this process may run on (its affinity mask where the system
    has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads_per_task(client) -> dict:
    """{worker address: numba threads per task} for the client's workers now,
    remembered per client and set of workers (a worker that joins later, or
    one restarted after it was lost, runs its tasks on one thread)."""
    workers = client.scheduler_info(n_workers=-1)["workers"] if _takes_n(client) else \
        client.scheduler_info()["workers"]
    key = (id(client), tuple(sorted(workers)))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    cores = client.run(host_cores)
    slots: dict = {}
    for info in workers.values():
        slots[info["host"]] = slots.get(info["host"], 0) + info["nthreads"]
    out = {addr: max(1, cores.get(addr, 1) // max(1, slots[info["host"]]))
           for addr, info in workers.items()}
    with _cache_lock:
        if len(_cache) > 64:
            _cache.clear()
        _cache[key] = out
    return out


def _takes_n(client) -> bool:
    # newer distributed lists only the first few workers unless asked for all
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False
