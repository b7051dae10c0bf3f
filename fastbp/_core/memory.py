"""The memory an allocation may take: checked before large allocations, so a
request beyond what the machine has is a clear error instead of the process
being killed by the system."""

from __future__ import annotations

# Allocations below this size are not checked against the memory available (the
# check reads /proc and costs more than a small call).
_CHECKED_BYTES = 1 << 26


# The limit and the usage of this process's memory cgroup, as (limit file,
# usage file): cgroup v2's, then v1's (whose "no limit" is a huge number rather
# than "max").  Under v1, MemAvailable is the whole machine's, so a container
# limited to a few GiB on a large host was allowed allocations that the
# system's OOM killer then ended.
CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                 "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping, as far as the
    system says (MemAvailable, the room below its memory cgroup's limit,
    cgroup v2 or v1, and below its address-space and data limits, when they
    are set); None where none of them can be read."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    for limit_file, usage_file in CGROUP_FILES:
        try:
            with open(limit_file, encoding="ascii") as f:
                limit = f.read().strip()
            with open(usage_file, encoding="ascii") as f:
                used = int(f.read())
            if limit != "max":
                room = max(int(limit) - used, 0)
                avail = room if avail is None else min(avail, room)
        except (OSError, ValueError):
            pass
    room = _rlimit_room()
    if room is not None:
        avail = room if avail is None else min(avail, room)
    return avail


def _rlimit_room() -> int | None:
    """Bytes left below the process's address-space and data limits
    (``ulimit -v``, ``ulimit -d``) when one is set: beyond them an allocation
    fails with NumPy's "Unable to allocate", which names no argument."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on every platform
        return None
    limits = [(resource.getrlimit(r)[0], field) for r, field in
              ((resource.RLIMIT_AS, "VmSize:"), (resource.RLIMIT_DATA, "VmData:"))]
    limits = [(soft, field) for soft, field in limits if soft != resource.RLIM_INFINITY]
    if not limits:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            status = f.read()
        return min(max(soft - int(status.split(field)[1].split()[0]) * 1024, 0)
                   for soft, field in limits)
    except (OSError, ValueError, IndexError):
        return None


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError  # pragma: no cover


def check_memory(what: str, nbytes: int) -> None:
    """Raise MemoryError naming ``what`` and the sizes when ``nbytes`` (about to
    be allocated) exceed the memory available: before the allocation, so the
    process is never killed by the system for it."""
    if nbytes < _CHECKED_BYTES:
        return
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise MemoryError(f"{what}: needs {_size(nbytes)}, more than the {_size(avail)} of "
                          "memory available")
