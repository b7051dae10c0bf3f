"""Every use of numba's private interfaces, in one place.

numba documents none of the names below; they are what let the compiled core
skip costs that its public interface cannot.  Each one is tested through the
behaviour it gives (tests/test_core.py), and pyproject.toml caps numba at the
versions this module is tested with, so an upgrade that changes one of them is
a decision, not a surprise.

- ``NO_REFCOUNT``: the ``_nrt=False`` option of ``njit``.  An entry point that
  allocates nothing, compiled without numba's reference counting, takes each
  array from Python without allocating the record numba counts references on,
  and the views it hands down carry none: ~30% of a training step of 003's
  network and 0.35 us of each gradient call (``config.py``).
- ``function_at``: a first-class function value built from a bare address, so
  the training loop calls a driver through a pointer (``train_kernels``).
- ``compiled_address``: the address of a dispatcher's compiled code for one
  signature.
- ``is_cache_error`` and ``purge_cache``: numba's cache files read as they are
  found; a truncated or garbled one makes every call fail until it is deleted.
- ``compiler_locks``: numba's compiler lock and llvmlite's lock on LLVM, which
  a fork must not copy while another thread holds them (``hold_across_fork``).
"""

from __future__ import annotations

import glob
import os
import sysconfig
import threading
import warnings

import llvmlite.binding.ffi
from numba import types
from numba.core import caching, cgutils
from numba.core.compiler_lock import global_compiler_lock
from numba.extending import intrinsic

# njit(**NO_REFCOUNT): reference counting off; such a function must never allocate.
NO_REFCOUNT = {"_nrt": False}


def function_at(ftype_of):
    """An intrinsic ``fn(addr, like)``: the compiled function at address ``addr``
    (from ``compiled_address``) as a first-class function of type
    ``ftype_of(like)``, for any numba value ``like`` whose type picks the
    function type (the parameters' array, say: one type per dtype).

    The value holds only the address of the function in numba's own calling
    convention (``jit_addr``), so calls through it go straight there; its C
    wrapper and Python object are left empty, as nothing calls them."""

    @intrinsic
    def at(typingctx, addr, like):
        ftype = ftype_of(like)

        def codegen(context, builder, signature, args):
            fn = cgutils.create_struct_proxy(ftype)(context, builder)
            null = cgutils.voidptr_t(None)
            fn.c_addr = null
            fn.py_addr = null
            fn.jit_addr = builder.inttoptr(args[0], cgutils.voidptr_t)
            return fn._getvalue()

        return ftype(types.int64, like), codegen

    return at


def compiled_address(dispatcher, signature) -> int:
    """The address of ``dispatcher``'s code for ``signature`` in numba's calling
    convention (compiling it, or loading it from the cache, when needed).  It
    stays valid while the dispatcher lives: for the life of the process."""
    cres = dispatcher.get_compile_result(signature)
    return cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)


# Where the frame that raised a cache error may lie: numba's code or the
# standard library's (pickle, importlib), whose folder holds site-packages.
_NUMBA = os.path.dirname(os.path.dirname(caching.__file__)) + os.sep
_STDLIB = sysconfig.get_paths()["stdlib"] + os.sep
_PACKAGES = tuple({sysconfig.get_paths()[k] + os.sep for k in ("purelib", "platlib")})


def _numba_or_stdlib(path: str) -> bool:
    return path.startswith((_NUMBA, "<frozen ")) or (path.startswith(_STDLIB)
                                                    and not path.startswith(_PACKAGES))


def is_cache_error(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while numba read one of its cache files:
    numba's caching code is on its traceback, and the frame that raised it
    is numba's or the standard library's.  Not one of a signal handler that
    ran meanwhile: a SIGALRM timeout raising TimeoutError while the first
    call loaded the core had the whole cache deleted and the call made again
    (compiling for seconds past the timeout)."""
    tb = exc.__traceback__
    through = False
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        through = through or last == caching.__file__
        tb = tb.tb_next
    return through and _numba_or_stdlib(last)


_purge_lock = threading.Lock()
_warned = False


def _after_fork_in_child():
    # a lock another thread held at the fork would stay held in the child
    global _purge_lock
    _purge_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def purge_cache(dispatchers, exc: BaseException) -> None:
    """Delete every cache file of the modules of ``dispatchers`` (the compiled
    core's: a corrupt file of a worker fails its driver's call too), so the
    next call compiles afresh and writes them again, and warn once per process
    that this happened and why."""
    global _warned
    with _purge_lock:
        for d in dispatchers:
            cache = getattr(d, "_cache", None)
            path = getattr(cache, "_cache_path", None)
            if path is None:
                continue
            module = d.py_func.__module__.rsplit(".", 1)[-1]
            for name in glob.glob(os.path.join(path, f"{module}.*.nb[ic]")):
                try:
                    os.remove(name)
                except OSError:
                    pass  # another process removed it first
        if not _warned:
            _warned = True
            warnings.warn(f"fastbp: numba's cache of the compiled core could not be read "
                          f"({type(exc).__name__}: {exc}); deleted it and compiling again",
                          RuntimeWarning, stacklevel=4)


def compiler_locks() -> tuple:
    """numba's compiler lock and llvmlite's lock on the LLVM library, in the
    order numba takes them (the compiler lock first)."""
    return (global_compiler_lock._lock, llvmlite.binding.ffi.lib._lock._lock)


def hold_across_fork() -> None:
    """Make every ``os.fork`` wait until no other thread compiles or loads code
    (both locks free), and hold the locks while it forks.

    A child forked while another thread held either lock (compiling a kernel,
    loading one from the cache, looking up a compiled address) inherits it held
    by a thread that does not exist in the child, and its first compilation or
    address lookup then waits for ever.  Holding the locks across the fork
    hands the child free ones."""
    locks = compiler_locks()

    def before():
        for lock in locks:
            lock.acquire()

    def after():
        for lock in reversed(locks):
            lock.release()

    os.register_at_fork(before=before, after_in_parent=after, after_in_child=after)
