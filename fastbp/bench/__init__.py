"""``fastbp bench``: fastbp against the reference and the peers, side by side.

The workloads are defined ONCE, in ``WORKLOADS``; this command and the asv suite
(``asv_bench/benchmarks``) both read that table.  For each workload, every
contender (fastbp, ``fastbp.reference``, and whichever of NumPy, PyTorch, JAX and
scikit-learn are installed) computes the same gradient (or training run) on the
same seeded inputs; each result is checked against the reference before anything
is timed, then the contenders are timed round-robin in this one process and the
median of each is reported with its ratio to the fastest peer, its GFLOP/s and
the share of the machine's NumPy matmul peak (timed in the same rounds) that
represents.

Flop count: a gradient is one forward pass (2 N n_w multiply-adds counted as
flops) and one backward pass (deltas and weight gradients, 4 N n_w), so
6 N n_w flops with n_w the number of weights (biases and activations ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import peers as _peers

# ---------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """One row of the workload table.

    ``name`` is the workload's id (used by ``--workload``, asv parameters, notes);
    ``group`` is the issue's label (C1..C6): ``--workload C3`` selects the group.
    ``steps`` and ``lr``: the training run, None when the workload has none:
    ``steps`` epochs over the N examples in order (no shuffling) with
    ``optimizer`` ("sgd": theta <- theta - lr dJ/dtheta; "adam": Kingma and
    Ba's algorithm 1, beta = (0.9, 0.999), eps = 1e-8) at rate ``lr``, one
    update per batch of ``batch_size`` examples (the last batch may be
    smaller; None: the full batch, one update per epoch).
    """

    name: str
    group: str
    sizes: tuple
    activations: tuple
    loss: str
    reduction: str
    l2: float
    N: int
    dtype: str
    bias: bool
    source: str
    steps: int | None = None
    lr: float | None = None
    optimizer: str = "sgd"
    batch_size: int | None = None

    @property
    def updates(self) -> int | None:
        """Optimizer steps of the training run."""
        if not self.steps:
            return None
        B = self.batch_size or self.N
        return self.steps * -(-self.N // B)

    def batches(self):
        """(start, stop) of each batch of an epoch, in order."""
        B = self.batch_size or self.N
        return [(b, min(b + B, self.N)) for b in range(0, self.N, B)]

    @property
    def n_weights(self) -> int:
        return sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def flops(self) -> int:
        """Flops of one gradient: 6 N n_w (forward 2 N n_w, backward 4 N n_w)."""
        return 6 * self.N * self.n_weights

    @property
    def label(self) -> str:
        arch = "-".join(str(n) for n in self.sizes)
        return f"{arch} N={self.N} {self.dtype}"

    def network(self):
        from ..network import Network

        return Network(self.sizes, list(self.activations), self.loss, reduction=self.reduction,
                       l2=self.l2, bias=self.bias, dtype=self.dtype)


def _c3(N, dtype):
    return Workload(f"C3-{N}-f{dtype[-2:]}", "C3", (150, 100, 5), ("tanh", "softmax"),
                    "cross_entropy", "mean", 1e-4, N, dtype, True, "004")


WORKLOADS = (
    Workload("C1", "C1", (4, 8, 3), ("sigmoid", "sigmoid"), "bce", "mean", 0.0, 150,
             "float64", True, "000 (iris-sized)", steps=1000, lr=0.5),
    Workload("C2", "C2", (3, 2, 1), ("sigmoid", "sigmoid"), "sse", "sum", 0.0, 1,
             "float64", False, "003", steps=10_000, lr=0.5),
    _c3(1000, "float64"),
    _c3(10_000, "float64"),
    _c3(1000, "float32"),
    _c3(10_000, "float32"),
    Workload("C4-256", "C4", (784, 256, 256, 10), ("relu", "relu", "softmax"),
             "cross_entropy", "mean", 0.0, 256, "float32", True, "002 (MNIST-sized)"),
    Workload("C4-4096", "C4", (784, 256, 256, 10), ("relu", "relu", "softmax"),
             "cross_entropy", "mean", 0.0, 4096, "float32", True, "002 (MNIST-sized)"),
    Workload("C5", "C5", (1024, 1024, 1024, 1024, 10), ("relu", "relu", "relu", "softmax"),
             "cross_entropy", "mean", 0.0, 1024, "float32", True, "wide"),
    # digits-sized (8 x 8 images, 10 classes, 1797 examples): 5 epochs of Adam on
    # mini-batches of 32
    Workload("C6", "C6", (64, 64, 10), ("relu", "softmax"), "cross_entropy", "mean", 0.0,
             1797, "float32", True, "digits-sized", steps=5, lr=1e-3, optimizer="adam",
             batch_size=32),
)
BY_NAME = {w.name: w for w in WORKLOADS}
TRAINING = tuple(w for w in WORKLOADS if w.steps)


def select(names) -> list[Workload]:
    """Workloads by id or group (case-insensitive), in table order; ValueError if unknown."""
    if not names:
        return list(WORKLOADS)
    wanted = set()
    for n in names:
        for part in str(n).split(","):
            key = part.strip().upper()
            hits = [w.name for w in WORKLOADS if key in (w.name.upper(), w.group)]
            if not hits:
                raise ValueError(f"--workload: unknown workload {part.strip()!r}; expected one "
                                 f"of {', '.join(w.name for w in WORKLOADS)} or a group C1..C6")
            wanted.update(hits)
    return [w for w in WORKLOADS if w.name in wanted]


def make_data(w: Workload, seed: int = 0):
    """Seeded inputs of workload ``w``: ``(net, params, X, Y, labels)``.

    X ~ N(0, 1) of shape (N, n_0) in the workload's dtype; for cross_entropy the
    targets are one-hot rows Y of random class ``labels``; for bce, random 0/1
    rows; for sse, uniform values in (0, 1).  ``params`` is ``net.init(seed)``.
    """
    net = w.network()
    rng = np.random.default_rng(seed)
    n_0, n_L = w.sizes[0], w.sizes[-1]
    X = rng.standard_normal((w.N, n_0)).astype(w.dtype)
    labels = None
    if w.loss == "cross_entropy":
        labels = rng.integers(0, n_L, size=w.N)
        Y = np.zeros((w.N, n_L), dtype=w.dtype)
        Y[np.arange(w.N), labels] = 1
    elif w.loss == "bce":
        Y = rng.integers(0, 2, size=(w.N, n_L)).astype(w.dtype)
    else:
        Y = rng.uniform(0.05, 0.95, size=(w.N, n_L)).astype(w.dtype)
    return net, net.init(seed), X, Y, labels


# ------------------------------------------------------------------------ machine


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Threads:
    """Set every library's thread count to ``n`` (numba, BLAS via threadpoolctl,
    torch when it is built); ``notes`` lists what could not be honoured."""

    def __init__(self, n: int):
        import numba

        self.n = n
        self.notes = []
        cap = numba.config.NUMBA_NUM_THREADS
        if n > cap:
            raise ValueError(f"--threads: numba was started with {cap} threads; "
                             f"set NUMBA_NUM_THREADS={n} to use {n}")
        numba.set_num_threads(n)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            self._limits = None
            if n != usable_cores():
                self.notes.append("threadpoolctl not installed: NumPy's BLAS threads not limited")
        else:
            self._limits = threadpool_limits(limits=n)


PEAK_N = 1024  # the matmul that measures the machine: PEAK_N^3 multiply-adds
# Pause before each timed sample (seconds), longer than OpenBLAS's ~0.1 s of
# spinning after a call: see ``interleaved``.
SETTLE = 0.25


def matmul(dtype, n: int = PEAK_N):
    """A callable computing one n x n x n NumPy (BLAS) product of ``dtype``."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n)).astype(dtype)
    B = rng.standard_normal((n, n)).astype(dtype)
    C = np.empty((n, n), dtype=dtype)
    return lambda: np.matmul(A, B, out=C)


def matmul_peak(dtype, n: int = PEAK_N, repeat: int = 7) -> float:
    """GFLOP/s of NumPy's n x n x n matmul: the best of ``repeat`` runs."""
    run = matmul(dtype, n)
    run()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def versions() -> dict:
    import numba

    from .. import __version__

    out = {"python": platform.python_version(), "fastbp": __version__,
           "numpy": np.__version__, "numba": numba.__version__}
    for mod in ("torch", "jax", "sklearn"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------- timing


def interleaved(runs: dict, repeat: int, sample_time: float = 0.005,
                budget: float = 20.0, settle: float = 0.0) -> dict:
    """Median seconds per call of each callable, timed round-robin.

    Each callable is first calibrated to ``number`` calls per sample (so that a
    sample lasts about ``sample_time``); then ``repeat`` rounds each take one
    sample of every callable, the order rotating from round to round so that no
    contender always follows the same one.  A contender that has already spent
    ``budget`` seconds (and has at least 3 samples) sits out the remaining rounds,
    so one slow peer cannot make the run last hours.  The garbage collector is
    off while timing, as in ``timeit``.

    ``settle`` seconds of sleep precede every sample, so that the worker threads
    of the callable timed just before have gone to sleep: OpenBLAS's threads
    spin for ~0.1 s after each call (2^28 cycles by default), and on a machine
    with as many cores as threads a spinning pool takes the cores from the next
    contender's threads.  Measured on the 2-core machine (fastbp's C3-1000-f32
    gradient, 2 threads, median of 30, each call after a 1024^3 float32 NumPy
    matmul and a pause): 2.0 ms with no pause, 10-13 ms after 1-50 ms, 2.4 ms
    after 200 ms; 1.6 ms alone.  After the pause one untimed call wakes the
    contender's own threads and brings its data back into the caches (C4-256
    right after a 0.25 s pause: 7.2 ms, back to back 5.5 ms).

    Returns ``{name: (median seconds per call, calls per sample, samples,
    fastest sample's seconds per call, 90th percentile)}``.
    """
    number = {}
    for name, fn in runs.items():
        t0 = time.perf_counter()
        fn()
        t = time.perf_counter() - t0
        number[name] = max(1, min(10_000, int(sample_time / max(t, 1e-7))))
    samples = {name: [] for name in runs}
    spent = dict.fromkeys(runs, 0.0)
    with _gc_off():
        for name in _round_robin(list(runs), repeat):
            if spent[name] > budget and len(samples[name]) >= 3:
                continue
            fn, n = runs[name], number[name]
            if settle:
                time.sleep(settle)
                fn()  # untimed: wakes its threads and warms its caches again
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            dt = time.perf_counter() - t0
            spent[name] += dt
            samples[name].append(dt / n)
    return {name: (statistics.median(s), number[name], len(s), min(s), _p90(s))
            for name, s in samples.items()}


# How programs call a library, besides back to back (``interleaved``): after
# idle time, and between pieces of NumPy work.
SCENARIOS = ("steady", "idle", "mixed")
IDLE_S = 0.05  # the sleep before each call of the idle scenario
SCENARIO_SAMPLES = 30  # at least this many single calls per contender and scenario


def mixed_matmul(w, dtype=None):
    """The NumPy work done before each call of the mixed scenario: a square
    matmul of about the workload's gradient flops (n between 32 and 1024)."""
    n = int(min(1024, max(32, round((w.flops / 2) ** (1 / 3)))))
    rng = np.random.default_rng(1)
    A = rng.random((n, n)).astype(dtype or w.dtype)
    B = rng.random((n, n)).astype(dtype or w.dtype)
    return lambda: A @ B


def single_calls(runs: dict, scenario: str, samples: int, before=None) -> dict:
    """Seconds of single calls of each callable, the way programs make them,
    round-robin: ``"idle"``, each call after ``IDLE_S`` of sleep; ``"mixed"``,
    each call right after ``before()`` (NumPy work).  No warm-up call before a
    sample: whatever waking a thread pool or refilling the caches costs is in
    the time.

    Returns ``{name: (median, calls per sample (1), samples, fastest, p90)}``.
    """
    times = {name: [] for name in runs}
    with _gc_off():
        for name in _round_robin(list(runs), samples):
            if scenario == "idle":
                time.sleep(IDLE_S)
            else:
                before()
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t), 1, len(t), min(t), _p90(t))
            for name, t in times.items()}


def _round_robin(names, rounds):
    """Each name once per round, the order rotating from round to round so that
    no contender always follows the same one."""
    for r in range(rounds):
        k = r % len(names)
        yield from names[k:] + names[:k]


@contextlib.contextmanager
def _gc_off():
    """The garbage collector off while timing, as in ``timeit``."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _p90(samples) -> float:
    return float(np.percentile(samples, 90))


# ------------------------------------------------------------------------ checking

# Gradients are compared as max |g - g_ref| / max |g_ref| against a float64 oracle.
# The loss is compared the same way, except for contenders whose loss value is
# defined slightly differently while their gradient is not (``loss_exact = False``).
TOLERANCE = {"float64": 1e-8, "float32": 1e-4}
TRAIN_TOLERANCE = {"float64": 1e-6, "float32": 1e-3}


class CheckError(RuntimeError):
    pass


def rel_error(value: np.ndarray, expected: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(expected))), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(value - expected))) / scale


def _oracle(w, net, params, X, Y, labels, ref):
    """(loss, flat gradient) of workload ``w`` computed in float64 from the same
    values, by ``fastbp.reference`` (or, when it is absent, the NumPy peer)."""
    net64 = _as64(w).network()
    p64, X64, Y64 = params.astype(np.float64), X.astype(np.float64), Y.astype(np.float64)
    if ref is not None:
        J, g = ref.loss_and_grad(net64, p64, X64, Y64)
        return float(J), g.flat.astype(np.float64)
    Ws, bs = _peers._weights(p64)
    J, gW, gb = _peers.numpy_loss_and_grad(net64, Ws, bs, X64, Y64)
    return J, _peers.flatten(net64, gW, gb)


def _as64(w):
    return dataclasses.replace(w, dtype="float64")


# ---------------------------------------------------------------------------- run


@dataclass
class Row:
    workload: str
    kind: str  # "gradient" or "train"
    contender: str
    status: str  # "ok" or "skipped"
    reason: str = ""
    scenario: str = "steady"
    median_s: float | None = None
    p90_s: float | None = None
    calls_per_sample: int | None = None
    samples: int | None = None
    ratio_to_best_peer: float | None = None
    gflops: float | None = None
    peak_pct: float | None = None
    matmul_gflops: float | None = None
    error: float | None = None


CONTENDERS = ("fastbp", "reference") + _peers.PEERS


def load_contenders(names, threads: int):
    """Instances of the contenders that import, and (name, reason) for the others."""
    loaded, skipped = {}, []
    for name in names:
        try:
            loaded[name] = _peers.make_contender(name, threads)
        except ImportError as e:
            mod = getattr(e, "name", None) or name
            skipped.append((name, f"not installed ({mod} cannot be imported)"))
    return loaded, skipped


def bench_workload(w, kind, contenders, skipped, repeat, ref, settle=0.0,
                   scenarios=("steady",)):
    """Check then time every contender on workload ``w`` in each of ``scenarios``
    (``SCENARIOS``); returns the rows.

    A NumPy matmul of the workload's dtype is timed in the same rounds as the
    contenders, and its fastest sample is the peak: on a shared machine whose
    load changes during the run, "% of peak" is then relative to the peak
    reached under the same conditions.
    """
    net, params, X, Y, labels = make_data(w)
    flops = w.flops * (w.steps if kind == "train" else 1)
    rows = [Row(w.name, kind, name, "skipped", reason) for name, reason in skipped]
    if kind == "gradient":
        J_ref, g_ref = _oracle(w, net, params, X, Y, labels, ref)
    else:
        g_ref = None
    prepared = {}
    for name, c in contenders.items():
        try:
            prep = (c.gradient if kind == "gradient" else c.training)(
                w, net, params, X, Y, labels)
            J, value = prep.result()  # also the warm-up (JIT compiles happen here)
        except _peers.Unsupported as e:
            rows.append(Row(w.name, kind, name, "skipped", str(e)))
            continue
        if kind == "train" and g_ref is None:
            g_ref = _train_oracle(w, net, params, X, Y, contenders)
        tol = (TOLERANCE if kind == "gradient" else TRAIN_TOLERANCE)[w.dtype]
        err = rel_error(value, g_ref)
        if kind == "gradient" and getattr(c, "loss_exact", True):
            err = max(err, abs(J - J_ref) / max(abs(J_ref), 1e-300))
        if not err <= tol:
            what = "gradient" if kind == "gradient" else "trained parameters"
            raise CheckError(f"{name}: {what} on {w.name} differ from the reference: max "
                             f"relative error {err:.3g} > {tol:g}")
        prepared[name] = (prep.run, err)
    runs = {n: p[0] for n, p in prepared.items()}
    peak = None
    for scenario in scenarios:
        if scenario == "steady":
            timed = interleaved({**runs, " matmul": matmul(w.dtype)} if runs else runs, repeat,
                                settle=settle)
            # the peak is the matmul's best sample: the machine's reach in these rounds
            peak = 2 * PEAK_N**3 / timed.pop(" matmul")[3] / 1e9 if runs else None
        else:
            timed = single_calls(runs, scenario, max(repeat, SCENARIO_SAMPLES),
                                 before=mixed_matmul(w))
            if peak is None and runs:
                peak = matmul_peak(w.dtype)
        peer_times = [timed[n][0] for n in timed if contenders[n].is_peer]
        best = min(peer_times) if peer_times else None
        for name, (t, number, n_samples, _, p90) in timed.items():
            gf = flops / t / 1e9
            rows.append(Row(w.name, kind, name, "ok", scenario=scenario, median_s=t,
                            p90_s=p90, calls_per_sample=number, samples=n_samples,
                            ratio_to_best_peer=None if best is None else t / best,
                            gflops=gf, peak_pct=100 * gf / peak, matmul_gflops=peak,
                            error=prepared[name][1]))
    order = {n: i for i, n in enumerate(CONTENDERS)}
    rows.sort(key=lambda r: (r.status != "ok", SCENARIOS.index(r.scenario),
                             order.get(r.contender, 99)))
    return rows


def _train_oracle(w, net, params, X, Y, contenders):
    """Final parameters of workload ``w``'s training run computed in float64 with
    the reference gradient (or the NumPy peer's when the reference is absent)."""
    ref = contenders.get("reference")
    p64 = params.astype(np.float64)
    net64 = _as64(w).network()
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    if ref is not None:
        return ref.training(w, net64, p64, X64, Y64, None).result()[1]
    return _peers.NumpyContender().training(w, net64, p64, X64, Y64, None).result()[1]


def pin_cores(threads: int, cores: int) -> str | None:
    """With fewer threads than usable cores, keep the whole process on that many
    cores, so that every contender gets the same CPUs: XLA (jax) has no exact
    thread setting and, measured on this 2-core machine with its one-thread
    flags, still ran a 1024^3 matmul on both cores (CPU time twice the wall
    time).  Returns a note, or None when nothing was pinned."""
    if threads >= cores or not hasattr(os, "sched_setaffinity"):
        return None
    keep = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, keep)
    return f"process pinned to {threads} of {cores} cores (CPUs {keep}) for every contender"


def collect(workloads, kinds, names, threads, repeat, on_rows=None, settle=0.0,
            scenarios=("steady",)) -> dict:
    """Run the comparison; returns the JSON-able report.

    ``on_rows(report, rows)``, when given, is called after each workload with the
    report so far and that workload's rows (for output as the run goes).
    """
    cores = usable_cores()
    notes = []
    pinned = pin_cores(threads, cores)
    if pinned:
        notes.append(pinned)
    if "jax" in names:
        note = _peers.configure_jax_threads(threads, usable_cores())
        if note:
            notes.append(note)
    th = Threads(threads)
    notes += th.notes
    contenders, skipped = load_contenders(names, threads)
    ref_mod = getattr(contenders.get("reference"), "ref", None)
    if "reference" in names and ref_mod is None:
        notes.append("fastbp.reference not available: the NumPy peer is the oracle")
    peak = {dt: matmul_peak(dt) for dt in ("float32", "float64")}
    report = {
        "machine": {"cpu": cpu_name(), "cores": cores, "threads": threads,
                    "matmul_peak_gflops": peak, "platform": platform.platform()},
        "versions": versions(),
        "repeat": repeat,
        "settle_s": settle,
        "scenarios": list(scenarios),
        "idle_s": IDLE_S,
        "notes": notes,
        "workloads": {w.name: {**asdict(w), "label": w.label, "n_weights": w.n_weights,
                               "flops_per_gradient": w.flops} for w in workloads},
        "results": [],
    }
    for w in workloads:
        for kind in kinds:
            if kind == "train" and not w.steps:
                continue
            rows = [asdict(r) for r in
                    bench_workload(w, kind, contenders, skipped, repeat, ref_mod, settle,
                                   scenarios)]
            report["results"] += rows
            if on_rows is not None:
                on_rows(report, rows)
    return report


# ------------------------------------------------------------------------- output


def _fmt_time(t):
    if t is None:
        return ""
    for unit, s in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if t >= s:
            return f"{t / s:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


def format_table(report, rows=None) -> str:
    """The results (or only ``rows``) as text tables, one per workload and kind."""
    rows = report["results"] if rows is None else rows
    wl = report["workloads"]
    lines = []
    header = (f"{'scenario':<8} {'contender':<10} {'median':>10} {'p90':>10} {'ratio':>7} "
              f"{'GFLOP/s':>8} {'% peak':>7}  {'rel. err':>8}")
    seen = []
    for r in rows:
        key = (r["workload"], r["kind"])
        if key not in seen:
            seen.append(key)
    for name, kind in seen:
        w = wl[name]
        what = "gradient" if kind == "gradient" else _training_label(w)
        lines.append(f"{name}  {w['label']}  {'/'.join(w['activations'])} {w['loss']} "
                     f"{w['reduction']} l2={w['l2']:g}  ({what})")
        ok = [r for r in rows if (r["workload"], r["kind"]) == (name, kind) and r["status"] == "ok"]
        if ok:
            lines.append(f"  NumPy {PEAK_N}^3 {w['dtype']} matmul, best sample in these rounds: "
                         f"{ok[0]['matmul_gflops']:.1f} GFLOP/s (= 100% peak)")
        lines.append("  " + header)
        for r in rows:
            if (r["workload"], r["kind"]) != (name, kind):
                continue
            if r["status"] != "ok":
                lines.append(f"  {'':<8} {r['contender']:<10} skipped: {r['reason']}")
                continue
            ratio = "" if r["ratio_to_best_peer"] is None else f"{r['ratio_to_best_peer']:.2f}"
            lines.append(f"  {r['scenario']:<8} {r['contender']:<10} "
                         f"{_fmt_time(r['median_s']):>10} {_fmt_time(r['p90_s']):>10} "
                         f"{ratio:>7} {r['gflops']:>8.2f} {r['peak_pct']:>6.1f}%  "
                         f"{r['error']:>8.1e}")
        lines.append("")
    return "\n".join(lines)


def _training_label(w: dict) -> str:
    """How a workload (as a dict, ``asdict``) trains, in words."""
    if not w.get("batch_size"):
        return f"training, {w['steps']} full-batch {w.get('optimizer', 'sgd')} steps lr {w['lr']}"
    return (f"training, {w['steps']} epochs of {w['optimizer']} on batches of "
            f"{w['batch_size']}, lr {w['lr']}")


def format_header(report) -> str:
    m, v = report["machine"], report["versions"]
    peak = m["matmul_peak_gflops"]
    vs = ", ".join(f"{k} {val}" for k, val in v.items())
    out = [
        f"machine: {m['cpu']}, {m['cores']} cores; threads {m['threads']}",
        (f"matmul peak at start (NumPy {PEAK_N}^3, best of 7): {peak['float32']:.1f} GFLOP/s "
         f"float32, {peak['float64']:.1f} GFLOP/s float64; '% peak' below is relative to the "
         "same matmul's best sample in each workload's rounds"),
        f"versions: {vs}",
        (f"steady: median of up to {report['repeat']} interleaved samples of back-to-back "
         f"calls, each after a {report['settle_s']:g} s pause and an untimed call; idle: single "
         f"calls, each after {report['idle_s'] * 1e3:g} ms of sleep; mixed: single calls, each "
         "right after a NumPy matmul of about the gradient's flops"),
        (f"ratio = time / fastest peer's time in the same scenario (peers: "
         f"{', '.join(_peers.PEERS)}); GFLOP/s from 6 N n_weights per gradient"),
    ]
    out += [f"note: {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- CLI


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``bench`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "bench",
        help="time fastbp against the reference and the installed peers",
        description=(
            "Time fastbp's gradient (and training) against fastbp.reference and the installed "
            "peers (NumPy, PyTorch, JAX, scikit-learn) on the workloads "
            + ", ".join(w.name for w in WORKLOADS)
            + ". Every result is checked against the reference before timing; contenders are "
            "timed round-robin in one process and the median is reported."
        ),
    )
    p.add_argument("--workload", action="append", metavar="NAME",
                   help="a workload id or group (C1..C6); repeat or comma-separate for several "
                        "(default: all)")
    p.add_argument("--kind", choices=("gradient", "train", "all"), default="all",
                   help="time gradients, training runs, or both (default: all)")
    p.add_argument("--peers", default=",".join(_peers.PEERS), metavar="LIST",
                   help="comma-separated peers to try (default: %(default)s); 'none' for none")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every library (default: all usable cores)")
    p.add_argument("--repeat", type=int, default=15,
                   help="interleaved samples per contender (default: %(default)s)")
    p.add_argument("--settle", type=float, default=SETTLE, metavar="SECONDS",
                   help="pause before every sample, so that the thread pool of the library "
                        "timed before it has gone idle (default: %(default)s)")
    p.add_argument("--scenario", action="append", metavar="NAME",
                   help="steady (back to back), idle (each call after 50 ms of sleep) or "
                        "mixed (each call after NumPy work); repeat or comma-separate "
                        "(default: all three)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the traceback of an error")
    p.set_defaults(func=run)
    return p


def _usage(msg: str) -> int:
    print(f"fastbp bench: error: {msg}", file=sys.stderr)
    return 2


def run(args) -> int:
    """Run ``fastbp bench`` with parsed ``args``; returns the exit code."""
    if args.list:
        for w in WORKLOADS:
            train = f"; {_training_label(asdict(w))}" if w.steps else ""
            print(f"{w.name:<14} {w.label:<38} {'/'.join(w.activations)} {w.loss} "
                  f"{w.reduction} l2={w.l2:g} bias={w.bias} ({w.source}){train}")
        return 0
    try:
        workloads = select(args.workload)
    except ValueError as e:
        return _usage(str(e))
    if args.repeat < 1:
        return _usage(f"--repeat: expected an integer >= 1, got {args.repeat}")
    if not 0 <= args.settle <= 10:
        return _usage(f"--settle: expected seconds between 0 and 10, got {args.settle}")
    threads = usable_cores() if args.threads is None else args.threads
    if threads < 1:
        return _usage(f"--threads: expected an integer >= 1, got {threads}")
    peers = [] if args.peers.strip().lower() == "none" else \
        [s.strip() for s in args.peers.split(",") if s.strip()]
    bad = [p for p in peers if p not in _peers.PEERS]
    if bad:
        return _usage(f"--peers: unknown peer {bad[0]!r}; expected some of "
                      f"{', '.join(_peers.PEERS)} or 'none'")
    kinds = ("gradient", "train") if args.kind == "all" else (args.kind,)
    scenarios = [x.strip() for arg in (args.scenario or [",".join(SCENARIOS)])
                 for x in arg.split(",") if x.strip()]
    bad = [x for x in scenarios if x not in SCENARIOS]
    if bad or not scenarios:
        return _usage(f"--scenario: expected some of {', '.join(SCENARIOS)}, got "
                      f"{bad[0] if bad else args.scenario!r}")
    scenarios = [x for x in SCENARIOS if x in scenarios]
    started = []

    def show(report, rows):  # the table mode prints each workload as it finishes
        if not started:
            print(format_header(report), flush=True)
            started.append(True)
        print(format_table(report, rows), flush=True)

    try:
        report = collect(workloads, kinds, ["fastbp", "reference", *peers], threads,
                         args.repeat, on_rows=None if args.json else show,
                         settle=args.settle, scenarios=scenarios)
    except (CheckError, ValueError, RuntimeError, OSError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"fastbp bench: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=1))
    return 0
