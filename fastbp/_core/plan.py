"""``Plan``: the compiled core of one network description and dtype, and the
one boundary between Python and compiled code.

A plan owns what the kernels need besides the data: the layout table, the loss
code and the scalars in the kernels' types, the scratch buffers
(``Workspaces``), the serial/parallel launch policy and the compiled entry
points.  Everything above the core (``Network``, ``train``, io, the estimators,
the command line) calls a plan's methods with inputs already validated and
converted by the front end, and never a kernel.

A call from Python into a compiled driver pays for every argument (numba
unboxes each array, and a NumPy scalar argument costs more to type than a
Python float): for a network as small as 003's that is most of the time of a
gradient.  So a plan passes Python floats where the dtype allows it (float64),
reuses its scratch buffers across calls, and makes one driver call per
gradient, forward pass or loss.

Launch policy (``launch``): the serial twin of a driver below ``SERIAL_BELOW``
multiply-adds, when no thread-safe threading layer could be loaded, and in a
child process forked after the parent launched GNU OpenMP threads (which
cannot be used there); the parallel driver otherwise.  Both give the same bits.
Above the threshold the plan can also time its calls (``_Timings``, policy
"adaptive", opt-in: ``POLICY``): a parallel call that waits for a worker thread (one
woken after idle time, or sharing its core with another process or another
library's spinning pool) can take many times the serial driver's time, so each
entry point and batch size runs whichever driver its recent calls found
faster, and now and then the other one again, in case conditions changed.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
import weakref
from typing import NamedTuple

import numba
import numpy as np

from . import kernels, microkernel, small, sparse
from . import train_kernels as tk
from .config import EXAMPLE_WORK, SERIAL_BELOW, SMALL_BELOW
from .functions import activate
from .memory import check_memory
from .numba_private import hold_across_fork, is_cache_error, purge_cache
from .screen import inputs_clean

__all__ = ["Plan", "Workspaces", "launch", "layer_offsets", "n_params", "plan_for"]

SERIAL, PARALLEL, SMALL = "serial", "parallel", "small"

# "threshold" (the default): always the parallel driver above SERIAL_BELOW;
# "adaptive": there, the driver recent calls found faster (see _Timings).
# FASTBP_LAUNCH sets it.  Adaptive is not the default yet: measured with
# fastbp bench (2 threads, NumPy interleaved, this 2-core machine), it ran the
# C3-10000-f32 gradient at 28-29 ms against 21-23 ms always-parallel (a noisy
# parallel driver loses some of its trials to a steady serial one), while with
# another process holding a core it took a 600 x 40-64-8 gradient from 12-15 ms
# to 0.8 ms.


def _setting(name, choices):
    """The environment variable ``name``, one of ``choices`` (the first is the
    default, taken when it is unset or empty); any other value (a typo,
    "ALWAYS") had been taken silently as none of them: it is named in a
    warning and the default used."""
    value = os.environ.get(name, "").strip()
    if not value:
        return choices[0]
    if value.lower() in choices:
        return value.lower()
    warnings.warn(f"{name}={value!r} is not one of {', '.join(choices)}; using "
                  f"{choices[0]!r}", RuntimeWarning, stacklevel=2)
    return choices[0]


POLICY = _setting("FASTBP_LAUNCH", ("threshold", "adaptive"))
# Every REPROBE-th call of an entry point and batch size runs the driver that
# is losing, so its time stays current.
REPROBE = 16

# The specialized code of a small network (``small``): "auto" (the default)
# makes it once the plan has spent, in the generic drivers on batches the
# specialized code would run, as much time as making it costs (``Plan._tier_cost``:
# loading what an earlier process compiled, else compiling it), and uses it
# for batches of at most SMALL_ROWS examples (None: the batches the generic
# drivers would run serially, and at least those of fewer than SMALL_BELOW
# multiply-adds, ``Plan._small_rows``); "always" makes it at the
# first call; "never" keeps to the generic drivers.  FASTBP_SMALL sets it.
# The rule of renting skis until the rent paid equals the price: a network
# that never gets hot never pays for a compile, one that does spends at most
# about twice what the best choice in hindsight would have.  A training run
# counts the time it will take (its steps times a timed step) at its start.
# The results are the generic drivers' bits, so when the specialized code
# starts changes nothing but the time.
SMALL_POLICY = _setting("FASTBP_SMALL", ("auto", "always", "never"))
SMALL_ROWS = None  # None: ``Plan._small_limit``

# Concurrent calls from several Python threads are safe with the 'omp' and 'tbb'
# layers; 'workqueue' aborts the process.  Unless the user chose a layer, ask
# numba for a thread-safe one; if none can be loaded, run the serial kernels.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "threadsafe"

_parallel_ok = numba.config.THREADING_LAYER != "workqueue"


# GNU OpenMP's waiting threads, by default, spin for a while before they sleep.
# A spinning worker competes for its core with whatever else runs there, and
# loses its claim to run at once when woken: right after a NumPy call, whose
# OpenBLAS threads spin too, a C3-1000 gradient took 13.7 ms against 2.2
# back to back; with threads that sleep at once ("passive"), 2.6 ms
# (docs/benchmarks.md, "Threads").  The price: every parallel call wakes a
# sleeping thread, 0.1-0.2 ms on this virtual machine, which moves the
# measured serial/parallel crossover of back-to-back calls up (SERIAL_BELOW
# is set from it).  A short spin (GOMP_SPINCOUNT=3000) was
# slower than both on back-to-back calls of 16-256 examples.  The policy is read once, from the
# environment, when the library is loaded: unless the user set one, it is
# loaded here with "passive", the environment then restored.
_OPENMP = {"posix": "libgomp.so.1"}.get(os.name)


def _passive_openmp():
    """Load GNU OpenMP (the 'omp' layer's runtime) with OMP_WAIT_POLICY=passive,
    unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT, chose a layer other
    than 'omp', or the library is absent or already loaded (its policy is then
    the one it was loaded with).  Returns the loaded library (kept: it stays
    loaded for numba's layer), or None."""
    if (_OPENMP is None or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
            or numba.config.THREADING_LAYER not in ("threadsafe", "omp")):
        return None
    import ctypes

    try:
        ctypes.CDLL(_OPENMP, mode=getattr(os, "RTLD_NOLOAD", 4))
        return None  # already loaded: its policy is set
    except OSError:
        pass
    os.environ["OMP_WAIT_POLICY"] = "passive"
    try:
        return ctypes.CDLL(_OPENMP)
    except OSError:  # not installed: numba falls back to another layer or none
        return None
    finally:
        del os.environ["OMP_WAIT_POLICY"]


_openmp = _passive_openmp()
_probe_lock = threading.Lock()
_probed = False


def _after_fork_in_child():
    # GNU OpenMP's threads do not survive a fork: numba's 'omp' layer ends a
    # child that launches a parallel region after its parent did.  Such a child
    # runs the serial twins (same bits).  A parent that never launched one
    # leaves the child free to load the layer itself.
    #
    # A lock held at the fork by another thread of the parent stays held in the
    # child for ever (that thread does not exist there), so the child's first
    # call that takes it would wait for ever: the locks are made anew.  A probe
    # lock held means the parent's first launch was under way, and may have
    # started the layer's threads: the child runs the serial twins.
    global _parallel_ok, _probed, _probe_lock, _plans_lock
    probing = _probe_lock.locked()
    _probe_lock = threading.Lock()
    _plans_lock = threading.RLock()
    if probing:
        _probed, _parallel_ok = True, False
    elif _probed and _parallel_ok and numba.threading_layer() == "omp":
        _parallel_ok = False


os.register_at_fork(after_in_child=_after_fork_in_child)
# a fork waits for any other thread's compilation, so the child's locks are free
hold_across_fork()


def threads() -> int:
    """numba's thread count for the calling thread; 1 when parallel drivers may
    not run here.  Asking numba starts its threading layer: a layer the user
    named that cannot be loaded (``NUMBA_THREADING_LAYER=tbb`` without TBB, or
    an unknown name) raises there, and made every call fail, the serial ones
    too: the process then runs the serial twins, with one warning."""
    global _parallel_ok, _probed
    if not _parallel_ok:
        return 1
    try:
        return numba.get_num_threads()
    except ValueError as e:  # "No threading layer could be loaded", "... unknown to Numba"
        _parallel_ok, _probed = False, True
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        warnings.warn(f"fastbp: numba's threading layer {numba.config.THREADING_LAYER!r} "
                      f"could not be started ({first}); running the serial kernels",
                      RuntimeWarning, stacklevel=2)
        return 1


def parallel_available() -> bool:
    """Whether parallel drivers may run in this process now (before or after
    the first launch)."""
    return _parallel_ok


def launch(parallel_fn, serial_fn, work, args):
    """``(result, driver)``: the parallel driver's result when the work (number
    of multiply-adds of one forward pass) repays a launch and parallel drivers
    may run here, else its serial twin's; ``driver`` says which ran.  ``args``
    ends with the drivers' ``fns`` (``kernels.worker_table``), whose thread
    count is set here before a parallel call."""
    global _parallel_ok, _probed
    if work < SERIAL_BELOW or not _parallel_ok:
        return serial_fn(*args), SERIAL
    # the driver's fns: the thread count it cuts its blocks for (numba's count
    # is per calling thread; a race between two callers changes only the cut,
    # never the bits)
    args[-1][kernels.THREADS] = threads()
    if not _parallel_ok:  # the layer could not be started (``threads``)
        return serial_fn(*args), SERIAL
    if not _probed:
        with _probe_lock:  # the first launch loads the layer: done once, alone
            if not _probed:
                try:
                    out = parallel_fn(*args)
                except ValueError:  # "No threading layer could be loaded"
                    _parallel_ok = False
                    out = None
                if _parallel_ok and numba.threading_layer() == "workqueue":
                    _parallel_ok = False  # not thread-safe: serial from now on
                _probed = True
                if out is not None:
                    return out, PARALLEL
        # a thread that waited on the probe follows its verdict
        if not _parallel_ok:
            return serial_fn(*args), SERIAL
    return parallel_fn(*args), PARALLEL


# The compiled core's modules whose cache files a call may read
# (one per module: purge_cache deletes the files of their modules)
_DISPATCHERS = (kernels.loss_grad_serial, inputs_clean, tk.no_forward, activate,
                sparse.first_layer_forward, small.sigmoid)


def _heal(exc, module=None):
    """After a failed call: when numba could not read one of the core's cache
    files (or those of the specialized ``module``), delete them (the call is
    then made again, compiling afresh); any other error goes on as it was."""
    if not is_cache_error(exc):
        raise exc
    extra = () if module is None else (module.loss_grad, module.forward)
    purge_cache(_DISPATCHERS + extra, exc)


def _overflow_warning(call, what):
    # the inputs were checked finite before the call: the arithmetic overflowed
    warnings.warn(f"{call}: {what} overflowed to inf or NaN although every input is "
                  f"finite: the inputs or parameters are too large for this dtype",
                  RuntimeWarning, stacklevel=4)


class _Timings:
    """Recent seconds per call of the serial and the parallel driver of one
    entry point and batch size, and the choice they give: the first two calls
    run the parallel driver, the next two the serial one (the first call of
    each is not counted: it may compile, load the threading layer or fault in
    fresh buffers); from then on the faster by the fastest of their last three
    calls (noise and a one-off wake only ever add time; a driver whose last
    three calls all stalled is slow for now), except that every
    ``REPROBE``-th call runs the other (results are the same bits either way)."""

    __slots__ = ("calls", "parallel", "serial", "warm")

    def __init__(self):
        self.calls = 0
        self.parallel = []
        self.serial = []
        self.warm = set()

    def parallel_next(self) -> bool:
        self.calls += 1
        if not self.parallel:
            return True
        if not self.serial:
            return False
        faster = min(self.parallel) < min(self.serial)
        return faster if self.calls % REPROBE else not faster

    def record(self, driver, seconds) -> None:
        if driver not in self.warm:
            self.warm.add(driver)
            return
        times = self.parallel if driver == PARALLEL else self.serial
        times.append(seconds)
        del times[:-3]


class Workspaces:
    """Scratch buffers (acts, deltas, losses, scratch) of one plan, reused across calls.

    ``take(N)`` hands out a set for a batch of N examples that no other caller
    holds until it comes back with ``give``: the kept one when there is one, else
    a new one.  ``dict.pop`` and item assignment are atomic, so concurrent calls
    from Python threads never share a set (a second concurrent caller simply gets
    a new one).  Sets are kept one per batch size for at most ``SIZES`` batch
    sizes, of which at most one larger than ``SMALL`` (and none larger than
    ``MAX_BYTES``), so a plan never holds on to much memory.  A small set
    saves the allocation, a visible part of a small call; a large one saves the
    page faults of touching fresh memory: C4-4096 (72 MB of buffers), 2
    threads, 137 ms per gradient with a fresh set per call against 74 ms with
    kept buffers.
    """

    SMALL = 1 << 20
    MAX_BYTES = 1 << 28
    SIZES = 4

    __slots__ = ("_S", "_dtype", "_free", "_layout", "_row_bytes", "_small")

    def __init__(self, layout, dtype, small_sizes=None, small_rows=0):
        # the network's sizes when it may run ``small``'s code, on batches of up to
        # small_rows examples
        self._small = (small_sizes, small_rows) if small_sizes is not None else None
        self._dtype = np.dtype(dtype)
        self._S = int(layout[-1, kernels.C_OUT] + layout[-1, kernels.N_OUT])
        self._layout = layout
        # bytes of a set per example (about): acts, deltas and the drivers' scratch
        per_example = int(layout[0, kernels.P_ROWS])
        self._row_bytes = self._dtype.itemsize * (2 * self._S + per_example)
        self._free = {}

    def take(self, N: int):
        ws = self._free.pop(N, None)
        if ws is None:
            shape = (N, self._S)
            dt = self._dtype
            n_scratch = scratch_values(self._layout, N, True, *(self._small or (None, 0)))
            check_memory(f"a batch of {N} examples",
                         dt.itemsize * (N * (2 * self._S + 1) + n_scratch))
            ws = (np.empty(shape, dt), np.empty(shape, dt), np.empty(N, dt),
                  np.empty(n_scratch, dt))
        return ws

    def give(self, N: int, ws) -> None:
        free = self._free
        nbytes = N * self._row_bytes
        if N in free or nbytes > self.MAX_BYTES:
            return
        if len(free) >= self.SIZES:
            free.clear()  # a new mix of batch sizes: start over
        if nbytes > self.SMALL:  # replaces the kept large set, if any
            for k in list(free):
                if k * self._row_bytes > self.SMALL:
                    free.pop(k, None)
        free[N] = ws


class Drivers(NamedTuple):
    """The compiled drivers of a training run: the addresses of its gradient and
    forward drivers (``train_kernels.driver_address``); when the gradient driver
    is the parallel one, the serial driver's time per step (seconds) it beat in
    the trial, else 0; and whether either driver is a parallel one."""

    loss_grad: int
    forward: int
    serial_step: float
    parallel: bool


class Plan:
    """The compiled core of one network description and dtype.

    Parameters
    ----------
    sizes : tuple of int
        ``(n_0, ..., n_L)``.
    activation_codes : tuple of int
        f_l's code (``ACTIVATIONS``) for l = 1..L.
    bias : tuple of bool
    loss_code : int
        ``LOSSES`` code.
    mean : bool
        Mean (True) or sum over the examples.
    l2 : float
        lambda of the L2 term.
    dtype : numpy.dtype
        float32 or float64.

    Every method takes arrays in the kernels' form, as the front end makes
    them: ``theta`` 1-D of ``n_params`` values, X (N, n_0) and Y (N, n_L),
    C-contiguous, of ``dtype``, N >= 1.  ``last_driver`` names the driver
    ("serial" or "parallel") of the last call that ran one.
    """

    __slots__ = ("__weakref__", "_cost", "_fns", "_l2_arg", "_one", "_quick", "_rest",
                 "_row_sum_tol", "_scalar", "_serial_rows", "_small", "_small_limit", "_small_ok",
                 "_spent", "_timings", "_workspaces", "activation_codes", "bias", "dtype",
                 "l2", "last_driver",
                 "layout", "loss_code", "mean", "n_params", "no_targets", "no_weights",
                 "quick", "sizes")

    def __init__(self, sizes, activation_codes, bias, loss_code, mean, l2, dtype, row_sum_tol):
        self.sizes = tuple(sizes)
        self.activation_codes = tuple(int(c) for c in activation_codes)
        self.bias = tuple(bool(b) for b in bias)
        self.dtype = np.dtype(dtype)
        self.layout = layout_table(self.sizes, activation_codes, bias, self.dtype)
        self.n_params = n_params(self.sizes, bias)
        self.loss_code = int(loss_code)
        self.mean = bool(mean)
        self.l2 = float(l2)
        # Scalars handed to the kernels: Python floats for float64 (numba types them
        # faster than NumPy scalars, and as the same float64), np.float32 otherwise.
        self._scalar = float if self.dtype == np.float64 else self.dtype.type
        self._l2_arg = self._scalar(l2)
        self._one = self._scalar(1.0)
        # batches of fewer examples than this are below SERIAL_BELOW (``_work``)
        self._serial_rows = -(-SERIAL_BELOW // (self.n_params + self.sizes[0] + EXAMPLE_WORK))
        # the specialized code's largest batch by default (``SMALL_BELOW``)
        self._small_limit = max(self._serial_rows,
                                -(-SMALL_BELOW // (self.n_params + self.sizes[0]))) - 1
        self._row_sum_tol = float(row_sum_tol) * self.sizes[-1]
        self._small_ok = SMALL_POLICY != "never" and small.eligible(self.sizes, bias)
        self._workspaces = Workspaces(self.layout, self.dtype,
                                      self.sizes if self._small_ok else None,
                                      self._small_limit)
        # Y of a call without targets (no rows, so nothing can write into it)
        self.no_targets = np.empty((0, self.sizes[-1]), dtype=self.dtype)
        # the weights of a call without them (the kernels: every example counts once)
        self.no_weights = np.empty(0, dtype=self.dtype)
        self.last_driver = None
        self._timings = {}
        self._fns = None
        self._small = None
        self._spent = 0.0  # seconds in the generic drivers that the specialized code would save
        self._cost = None  # ``_tier_cost``, found on first use
        self._rest = None
        self._quick = {}  # quick_loss_and_grad's scratch, one per batch size
        # whether quick_loss_and_grad may apply (the specialized code is made): the
        # front end's one test before it tries, so other networks pay nothing
        self.quick = False

    @property
    def fns(self) -> np.ndarray:
        """The drivers' ``fns`` (``kernels.worker_table``: the workers' addresses,
        compiled or loaded from the cache at the first call that needs them,
        and the thread count, which ``launch`` sets before a parallel call)."""
        fns = self._fns
        if fns is None:
            fns = self._fns = self.worker_table()
        return fns

    def worker_table(self) -> np.ndarray:
        """A new ``fns`` for the threads of the calling thread (a training run
        takes its own)."""
        try:
            return kernels.worker_table(self.dtype, threads())
        except Exception as e:  # a worker's cache file could not be read
            _heal(e)
            return kernels.worker_table(self.dtype, threads())

    def _small_rows(self) -> int:
        """The largest batch the specialized code runs (``SMALL_ROWS``)."""
        return self._small_limit if SMALL_ROWS is None else SMALL_ROWS

    def _small_key(self) -> tuple:
        """The specialized module's key (``small.module_for``'s arguments)."""
        lay = self.layout
        return (self.sizes, tuple(int(c) for c in lay[:-1, kernels.ACT]),
                tuple(bool(b >= 0) for b in lay[:, kernels.B_OFF]), int(lay[-1, kernels.ACT]),
                self.loss_code)

    def _tier_cost(self) -> float:
        """Seconds that making the specialized module is expected to cost:
        ``small.LOAD_S`` when an earlier process generated it (and so compiled
        it into numba's cache), else ``small.compile_seconds``."""
        cost = self._cost
        if cost is None:
            cost = self._cost = (small.LOAD_S if small.generated(*self._small_key())
                                 else small.compile_seconds(self.n_params))
        return cost

    def specialized(self, seconds: float = 0.0):
        """The network's specialized module (``small.module_for``) when the
        plan takes it (``SMALL_POLICY``), counting ``seconds`` more spent in
        the generic drivers towards its cost (``_tier_cost``); else None."""
        mod = self._small
        if mod is None and self._small_ok:
            self._spent += seconds
            if SMALL_POLICY == "always" or (SMALL_POLICY == "auto"
                                            and self._spent >= self._tier_cost()):
                try:
                    mod = self._small = small.module_for(*self._small_key())
                    self.quick = True
                except Exception as e:  # e.g. no usable folder or source: generic from now on
                    self._small_failed(e)
        return mod

    @property
    def settled(self) -> bool:
        """Whether the driver of this plan's small calls is final: its specialized
        code is made, or it never will be (not eligible, failed, or
        ``SMALL_POLICY`` "never").  A benchmark's steady state starts there."""
        return self._small is not None or not self._small_ok or SMALL_POLICY == "never"

    def _counting(self, N) -> bool:
        """Whether a generic call on N rows counts towards the specialized code's
        cost (``specialized``): it has not been made, and would run them."""
        return self._small is None and self._small_ok and N <= self._small_rows()

    def _small_failed(self, exc):
        self._small_ok = False
        self._small = None
        self.quick = False
        warnings.warn(f"fastbp: the specialized code of this network failed "
                      f"({type(exc).__name__}: {exc}); using the generic kernels",
                      RuntimeWarning, stacklevel=4)

    def _small_try(self, fn, *args):
        """``fn(*args)`` (a use of the specialized module); a cache file numba
        could not read is deleted and the call made again once.  None when it
        failed (then the generic drivers take over for good)."""
        for retry in (True, False):
            try:
                return fn(*args)
            except Exception as e:
                if retry and is_cache_error(e):
                    _heal(e, self._small)
                    continue
                self._small_failed(e)
                return None

    def _small_call(self, name, args):
        """``name`` of the specialized module on ``args``; None when it failed
        (then the generic drivers take over for good)."""
        out = self._small_try(lambda: getattr(self._small, name)(*args))
        if out is not None:
            self.last_driver = SMALL
        return out

    # ------------------------------------------------------------------ inputs

    def screen(self, theta, X, Y) -> bool:
        """One compiled pass: theta, X and Y finite, Y valid targets for the loss
        (Y may be ``no_targets``).  False means: run the front end's checks."""
        try:
            return inputs_clean(theta, X, Y, self.loss_code, self._row_sum_tol)
        except Exception as e:
            _heal(e)
            return inputs_clean(theta, X, Y, self.loss_code, self._row_sum_tol)

    def _work(self, N) -> int:
        """The work of a batch of N examples as ``SERIAL_BELOW`` counts it:
        multiply-adds of a forward pass plus ``EXAMPLE_WORK`` per example."""
        return N * (self.n_params + self.sizes[0] + EXAMPLE_WORK)

    def _launch(self, entry, N, parallel_fn, serial_fn, args):
        """One driver call by the launch policy (``POLICY``); sets ``last_driver``."""
        work = self._work(N)
        if work < SERIAL_BELOW or POLICY != "adaptive" or not _parallel_ok:
            out, self.last_driver = launch(parallel_fn, serial_fn, work, args)
            return out
        timings = self._timings.get((entry, N))
        if timings is None:
            if len(self._timings) >= 64:  # a new mix of batch sizes: start over
                self._timings.clear()
            timings = self._timings[(entry, N)] = _Timings()
        t0 = time.perf_counter()
        if timings.parallel_next():
            out, driver = launch(parallel_fn, serial_fn, work, args)
        else:
            out, driver = serial_fn(*args), SERIAL
        timings.record(driver, time.perf_counter() - t0)
        self.last_driver = driver
        return out

    # ------------------------------------------------------------------ entry points

    def _weights_scale(self, N, weights):
        """(weights as the kernels take them, scale): no weights is an empty
        array; the mean's scale is 1 / N, or 1 / sum_e w_e with weights."""
        if weights is None:
            return self.no_weights, self._scalar(1.0 / N) if self.mean else self._one
        total = float(weights.sum(dtype=np.float64))
        return weights, self._scalar(1.0 / total) if self.mean else self._one

    def loss_and_grad(self, theta, X, Y, input_grad=False, weights=None):
        """(J, dJ/dtheta, dJ/dX or None): one gradient driver call.  ``weights``:
        the examples' weights (N values of ``dtype``, sum > 0) or None."""
        N = X.shape[0]
        weights, scale = self._weights_scale(N, weights)
        workspaces = self._workspaces
        acts, deltas, losses, scratch = ws = workspaces.take(N)
        grad = np.empty(self.n_params, self.dtype)
        args = (theta, self.layout, X, Y, weights, self.loss_code, scale, self._l2_arg,
                input_grad, acts, deltas, losses, grad, scratch, self.fns)
        J = None
        if N <= self._small_rows() and self.specialized() is not None:
            # one example: the module's code for one (loops unrolled to values)
            J = self._small_call("loss_grad1" if N == 1 else "loss_grad", args)
        if J is None:
            counting = self._counting(N)
            t0 = time.perf_counter() if counting else 0.0
            J = self._generic_grad(N, args)
            if counting:
                self._spent += time.perf_counter() - t0
        if not (J - J == 0 and scratch[0] == 1):
            _overflow_warning("loss_and_grad", "the loss" if J - J != 0 else "the gradient")
        dX = deltas[:, :self.sizes[0]].copy() if input_grad else None
        workspaces.give(N, ws)
        return float(J), grad, dX

    def quick_loss_and_grad(self, theta, X, Y):
        """(J, dJ/dtheta) from the specialized code's ``quick_loss_grad`` when
        the plan has it and the batch is one it runs (``_small_rows``), for
        arrays of the plan's dtype that have NOT been checked: sizes are
        checked and the inputs screened in the same compiled call.  None when
        it does not apply or the inputs need the front end's checks (which
        then name what is wrong).  No weights, no dJ/dX: the common call of a
        training loop written in Python, at a few arguments' cost."""
        mod = self._small
        N = X.shape[0]
        # no rows: the checked path names X; a view that is not C-contiguous
        # would make numba compile the module's code again for its layout
        if (mod is None or not 0 < N <= self._small_rows() or not X.flags.c_contiguous
                or not Y.flags.c_contiguous):
            return None
        scratch = self._quick.pop(N, None)
        if scratch is None:
            scratch = np.empty(small.quick_scratch_need(self.sizes, N), self.dtype)
        grad = np.empty(self.n_params, self.dtype)
        quick = mod.quick_loss_grad1 if N == 1 else mod.quick_loss_grad
        J = self._small_try(quick, theta, self.layout, X, Y, grad, scratch,
                            self._scalar(1.0 / N) if self.mean else self._one,
                            self._l2_arg, self._row_sum_tol)
        if J is None:  # it failed: the checked path, on the generic drivers from now on
            return None
        flag = scratch[0]
        if len(self._quick) < Workspaces.SIZES:
            self._quick[N] = scratch
        if flag == 2:
            return None
        self.last_driver = SMALL
        if not (J - J == 0 and flag == 1):
            _overflow_warning("loss_and_grad", "the loss" if J - J != 0 else "the gradient")
        return float(J), grad

    def _generic_grad(self, N, args):
        """J from the generic gradient drivers (serial below ``_serial_rows``)."""
        try:
            if N < self._serial_rows:
                J = kernels.loss_grad_serial(*args)
                self.last_driver = SERIAL
                return J
            return self._launch("grad", N, kernels.loss_grad_parallel,
                                kernels.loss_grad_serial, args)
        except Exception as e:
            _heal(e)
            J, self.last_driver = launch(kernels.loss_grad_parallel, kernels.loss_grad_serial,
                                         self._work(N), args)
            return J

    def _forward(self, theta, X, Y, want_loss, weights=None):
        N = X.shape[0]
        ws = self._workspaces.take(N)
        acts, losses = ws[0], ws[2]
        weights, scale = self._weights_scale(N, weights)
        args = (theta, self.layout, X, Y, weights, self.loss_code, want_loss, scale,
                self._l2_arg, acts, losses, ws[3], self.fns)
        J = None
        if N <= self._small_rows() and self.specialized() is not None:
            J = self._small_call("forward", args)
        counting = J is None and self._counting(N)
        t0 = time.perf_counter() if counting else 0.0
        if J is None:
            try:
                J = self._launch("loss" if want_loss else "forward", N,
                                 kernels.forward_parallel, kernels.forward_serial, args)
            except Exception as e:
                _heal(e)
                J, self.last_driver = launch(kernels.forward_parallel, kernels.forward_serial,
                                             self._work(N), args)
            if counting:
                self._spent += time.perf_counter() - t0
        out = None if want_loss else acts[:, int(self.layout[-1, kernels.C_OUT]):].copy()
        self._workspaces.give(N, ws)
        if want_loss and J - J != 0:
            _overflow_warning("loss", "the loss")
        elif not want_loss and not math.isfinite(out.sum()) and not np.isfinite(out).all():
            _overflow_warning("forward", "the output")
        return float(J), out

    def forward(self, theta, X) -> np.ndarray:
        """The output activations a^(L), a new (N, n_L) array: one forward driver call."""
        return self._forward(theta, X, self.no_targets, False)[1]

    def loss(self, theta, X, Y, weights=None) -> float:
        """J without the backward pass (the same value as ``loss_and_grad``'s): one
        forward driver call."""
        return self._forward(theta, X, Y, True, weights)[0]

    # ------------------------------------------------------------------ sparse inputs
    # X a ``sparse.SparseInput`` (CSR), the network at least two layers deep:
    # layer 1 over the nonzeros, layers 2..L on the plan of the rest (``sparse``)

    def _rest_plan(self):
        rest = self._rest
        if rest is None:
            rest = self._rest = sparse.rest_plan(self)
        return rest

    def _sparse_call(self, fn, *args):
        """``fn`` of ``sparse`` on this plan, the plan of its layers 2..L and
        ``args``; made again once after a cache file numba could not read was
        deleted (``_heal``)."""
        try:
            return fn(self, self._rest_plan(), *args)
        except Exception as e:
            _heal(e)  # a cache file of the sparse loops could not be read
            return fn(self, self._rest_plan(), *args)

    def sparse_loss_and_grad(self, theta, X, Y, weights=None):
        """(J, dJ/dtheta) for a sparse X."""
        return self._sparse_call(sparse.loss_and_grad, theta, X, Y, weights)

    def sparse_loss(self, theta, X, Y, weights=None) -> float:
        """J for a sparse X."""
        return self._sparse_call(sparse.loss, theta, X, Y, weights)

    def sparse_forward(self, theta, X) -> np.ndarray:
        """a^(L) for a sparse X."""
        return self._sparse_call(sparse.forward, theta, X)

    # ------------------------------------------------------------------ training

    def buffers(self, N):
        """A new (acts, deltas, losses) set for a batch of N examples (N may be 0)."""
        S = int(self.layout[-1, kernels.C_OUT] + self.layout[-1, kernels.N_OUT])
        dt = self.dtype
        check_memory(f"a batch of {N} examples", dt.itemsize * N * (2 * S + 1))
        return np.empty((N, S), dt), np.empty((N, S), dt), np.empty(N, dt)

    def scratch(self, N, grad=True):
        """A new scratch buffer of the drivers (the forward ones: not ``grad``) for
        batches of up to N examples."""
        n = scratch_values(self.layout, N, grad, self.sizes if self._small_ok else None,
                           self._small_limit)
        check_memory(f"the gradient scratch of a batch of {N} examples", n * self.dtype.itemsize)
        return np.empty(n, self.dtype)

    def training_drivers(self, theta, X, Y, B, Nv, steps=0) -> Drivers:
        """The drivers of a training run from ``theta`` on (X, Y) in batches of B
        rows with Nv validation rows and about ``steps`` gradient steps
        (``Drivers``).

        Batches of at most ``_small_rows()`` rows of a network with specialized
        code (``specialized``) run that code, as its validation pass does.

        The parallel gradient driver is taken only when one step's work could
        repay a launch (``launch``'s rule) AND it wins a timed trial on the
        run's first batch: a run makes thousands of launches back to back, and
        on a busy machine each can wait for a descheduled thread far longer
        than the step itself takes.  The validation forward pass (one launch
        per epoch) is chosen by its work.  Both kinds give the same bits."""
        try:
            return self._training_drivers(theta, X, Y, B, Nv, steps)
        except Exception as e:
            _heal(e)
            return self._training_drivers(theta, X, Y, B, Nv, steps)

    def _training_drivers(self, theta, X, Y, B, Nv, steps) -> Drivers:
        dt = self.dtype
        if B <= self._small_rows() and self.specialized(self._run_seconds(theta, X, Y, B, steps)
                                                         ) is not None:
            drivers = self._small_drivers(B, Nv)
            if drivers is not None:
                return drivers
        serial_step = 0.0
        loss_grad = kernels.loss_grad_serial
        if self._may_run_parallel(theta, self._work(B), X, Y, B):
            serial_step = self._parallel_wins(theta, X, Y, B)
            if serial_step:
                loss_grad = kernels.loss_grad_parallel
        forward = self._validation_forward(Nv, None)
        self.last_driver = PARALLEL if loss_grad is kernels.loss_grad_parallel else SERIAL
        return Drivers(tk.driver_address(loss_grad, dt, 0), tk.driver_address(forward, dt, 1),
                       serial_step, self.last_driver == PARALLEL
                       or forward is kernels.forward_parallel)

    def _run_seconds(self, theta, X, Y, B, steps) -> float:
        """The generic drivers' expected time for a run of ``steps`` gradient steps
        on batches of B rows (0 when it would not count towards the specialized
        code, ``_counting``): the steps times a timed serial gradient of the
        first batch (its second call: the first may load the kernels)."""
        if not steps or SMALL_POLICY != "auto" or not self._counting(B):
            return 0.0
        args = self._batch_args(theta, X, Y, B)
        kernels.loss_grad_serial(*args)
        t0 = time.perf_counter()
        kernels.loss_grad_serial(*args)
        return steps * (time.perf_counter() - t0)

    def _small_drivers(self, B, Nv):
        """The specialized code's ``Drivers`` (None when it failed to compile)."""
        dt = self.dtype

        def drivers():
            # batches of one row (every batch then has one): the code for one example
            mod = self._small
            loss_grad = tk.driver_address(mod.loss_grad1 if B == 1 else mod.loss_grad, dt, 0)
            forward = self._validation_forward(Nv, self._small)
            return Drivers(loss_grad, tk.driver_address(forward, dt, 1), 0.0,
                           forward is kernels.forward_parallel)

        out = self._small_try(drivers)
        if out is not None:
            self.last_driver = SMALL
        return out

    def _validation_forward(self, Nv, mod):
        """The forward driver of a run's validation pass over Nv rows (one launch
        per epoch, chosen by its work): none without rows, the parallel driver
        when the work repays a launch, else the specialized module ``mod``'s
        forward when given and the rows are few enough, else the serial one."""
        if not Nv:
            return tk.no_forward
        if self._work(Nv) >= SERIAL_BELOW and _parallel_ok:
            return kernels.forward_parallel
        if mod is not None and Nv <= self._small_rows():
            return mod.forward
        return kernels.forward_serial

    def serial_driver(self) -> int:
        """The address of the serial gradient driver, for a run that falls back to it."""
        self.last_driver = SERIAL
        return tk.driver_address(kernels.loss_grad_serial, self.dtype, 0)

    def chunk_function(self, records):
        """The compiled training loop (``train_kernels.train_chunk``) for these records."""
        try:
            return tk.compiled_train_chunk(records)
        except Exception as e:
            _heal(e)
            return tk.compiled_train_chunk(records)

    def _batch_args(self, theta, X, Y, B):
        Xb = np.ascontiguousarray(X[:B])
        Yb = np.ascontiguousarray(Y[:B])
        acts, deltas, losses = self.buffers(B)
        dt = self.dtype.type
        return (theta, self.layout, Xb, Yb, self.no_weights, self.loss_code, dt(1.0 / B),
                dt(self.l2), False, acts, deltas, losses, np.empty(self.n_params, self.dtype),
                self.scratch(B), self.fns)

    def _may_run_parallel(self, theta, work, X, Y, B) -> bool:
        """Whether one batch's work repays a launch and the parallel layer loads
        (the process's first parallel launch is made here, through ``launch``)."""
        if work < SERIAL_BELOW or not _parallel_ok:
            return False
        if not _probed:
            launch(kernels.loss_grad_parallel, kernels.loss_grad_serial, work,
                   self._batch_args(theta, X, Y, B))
        return _parallel_ok

    def _parallel_wins(self, theta, X, Y, B, rounds=3) -> float:
        """Whether the parallel gradient driver beats the serial one on a batch of
        B rows, timed here and now: the lower of ``rounds`` alternating calls of
        each (a minimum, since noise only ever adds time).  A parallel call more
        than four times slower than the serial one ends the trial at once: on a
        machine busy enough for that, each launch can cost milliseconds.

        Returns the serial driver's time per call (seconds) when the parallel
        one wins, else 0.0."""
        args = self._batch_args(theta, X, Y, B)
        best = {}
        serial, parallel = kernels.loss_grad_serial, kernels.loss_grad_parallel
        for _ in range(rounds):
            for fn in (serial, parallel):
                t0 = time.perf_counter()
                fn(*args)
                best[fn] = min(best.get(fn, math.inf), time.perf_counter() - t0)
            if best[parallel] > 4 * best[serial]:
                return 0.0
        return best[serial] if best[parallel] < best[serial] else 0.0


def scratch_values(layout, N, grad, small_sizes, small_rows) -> int:
    """Values of a drivers' scratch for batches of up to N examples: the generic
    drivers' (``kernels.scratch_size``), and ``small``'s specialized code's when
    the network may run it (``small_sizes``: its sizes) on batches of up to
    ``small_rows`` (or ``SMALL_ROWS``) examples."""
    n = kernels.scratch_size(layout, N, grad)
    if small_sizes is not None:
        rows = small_rows if SMALL_ROWS is None else SMALL_ROWS
        n = max(n, small.scratch_need(small_sizes, min(N, rows)))
    return n


def layer_offsets(sizes, bias) -> list[tuple[int, int, int]]:
    """Offsets of W^(l) and b^(l) inside the flat vector.

    Returns
    -------
    list of (w_offset, b_offset, end)
        One entry per layer l = 1..L; ``b_offset`` is -1 for a layer without bias.
    """
    offsets = []
    pos = 0
    for l in range(1, len(sizes)):
        n_out, n_in = sizes[l], sizes[l - 1]
        w_off = pos
        pos += n_out * n_in
        b_off = -1
        if bias[l - 1]:
            b_off = pos
            pos += n_out
        offsets.append((w_off, b_off, pos))
    return offsets


def n_params(sizes, bias) -> int:
    """Total number of scalars in the flat parameter vector."""
    return layer_offsets(sizes, bias)[-1][2]


def layout_table(sizes, activation_codes, bias, dtype) -> np.ndarray:
    """The kernels' int64 layout table (``kernels``' columns) for parameters of
    ``dtype``, read-only: per layer n_in, n_out, the offsets of
    ``layer_offsets``, the activation code, the columns of a^(l-1) and a^(l) in
    the batch buffers, the layer's first weight-gradient task (counted from
    layer 1), and where its packed weights and panels lie in the drivers' scratch (in blocks of
    the micro-kernel's sizes for ``dtype`` on this host), and the examples per
    chunk of the weight gradients (``kernels._chunking``)."""
    MR, NR, KC, MC, _ = microkernel.blocks(dtype)
    even_step = microkernel._even_step.py_func
    L = len(sizes) - 1
    table = np.zeros((L, kernels.LAYOUT_COLUMNS), dtype=np.int64)

    def up(x, unit):
        return -(-x // unit) * unit

    col = g_task = 0
    pack = 16  # scratch[0] is the gradient drivers' finite flag; a line of 64 bytes
    pa_row, pd_row = 0, sum(up(n, MR) for n in sizes[:-1])
    for l, (w_off, b_off, _) in enumerate(layer_offsets(sizes, bias), 1):
        n_in, n_out = sizes[l - 1], sizes[l]
        pack_w = pack
        pack_t = pack_w + up(up(n_out, MR) * n_in, 16)
        pack = pack_t + up(up(n_in, MR) * n_out, 16)
        table[l - 1] = (n_in, n_out, w_off, b_off, activation_codes[l - 1], col, col + n_in,
                        g_task, pack_w, pack_t, pa_row, pd_row, 0, 0, 0)
        col += n_in
        # the kernels' weight-gradient tasks (kernels._grad_blocks)
        rows = even_step(n_in, MC, MR)
        cols = even_step(n_out, kernels.GCOLS * NR, NR)
        g_task += -(-n_in // rows) * -(-n_out // cols)
        pa_row += up(n_in, MR)
        pd_row += up(n_out, NR)
    table[:, kernels.P0] = pack
    table[:, kernels.P_ROWS] = pd_row
    # whole KC blocks of examples whose panels take about CHUNK_BYTES, at least one
    per_block = pd_row * np.dtype(dtype).itemsize * KC
    table[:, kernels.CHUNK] = max(1, kernels.CHUNK_BYTES // per_block) * KC
    table.setflags(write=False)
    return table


# Plans shared by equal descriptions, kept while a network refers to them.
_plans = weakref.WeakValueDictionary()
# Re-entrant: a signal handler that builds a network runs in the thread it
# interrupts, which may be inside ``plan_for`` (building a plan takes a while);
# with a plain lock it waited for itself for ever.
_plans_lock = threading.RLock()


def plan_for(sizes, activation_codes, bias, loss_code, mean, l2, dtype, row_sum_tol) -> Plan:
    """The plan of this description (the one already made for an equal
    description while that one is alive)."""
    key = (tuple(sizes), tuple(activation_codes), tuple(bias), int(loss_code), bool(mean),
           float(l2), np.dtype(dtype).name, float(row_sum_tol))
    with _plans_lock:
        plan = _plans.get(key)
        if plan is None:
            plan = Plan(sizes, activation_codes, bias, loss_code, mean, l2, dtype, row_sum_tol)
            # a signal handler may have made one while this one was being made
            plan = _plans.setdefault(key, plan)
    return plan
