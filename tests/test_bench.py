"""The workload table, the ``fastbp bench`` command and the asv suite's shape.

No timing is asserted (speed is what the command measures, not what tests
check); these tests check that the table is consistent, that every contender
is checked against the reference, and that missing peers are reported, not fatal.
"""

import dataclasses
import importlib
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastbp import bench
from fastbp.bench import BY_NAME, WORKLOADS
from fastbp.bench import peers as _peers

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
PEER_MODULES = ("torch", "jax", "sklearn")
ENV["FASTBP_SMALL"] = "never"  # the command's subprocesses: no compile of specialized code


@pytest.fixture(autouse=True)
def _generic_kernels(monkeypatch):
    """The generic kernels only: a small network's specialized code is tested in
    test_small.py, and waiting for it here (``peers._settle``) would cost seconds."""
    from fastbp._core import plan

    monkeypatch.setattr(plan, "SMALL_POLICY", "never")


def test_settle_waits_for_the_specialized_code(monkeypatch):
    from fastbp._core import plan

    monkeypatch.setattr(plan, "SMALL_POLICY", "always")
    w = _small("C2", steps=3)
    net, params, X, Y, labels = bench.make_data(w)
    prep = _peers.FastbpContender().gradient(w, net, params, X, Y, labels)
    assert net.plan.last_driver == "small"
    assert prep.result()[0] == bench.make_data(w)[0].loss(params, X, Y)


def test_settle_does_not_wait_for_code_the_policy_will_never_make(monkeypatch):
    """A plan made while the policy allowed specialized code (plans are shared by
    architecture) and then run under "never" has nothing to wait for: each
    benchmark that met one spent its 30 s limit calling the generic drivers."""
    from fastbp._core import plan

    from fastbp import Network

    monkeypatch.setattr(plan, "SMALL_POLICY", "auto")
    net = Network([3, 7, 2], ["tanh", "sigmoid"], "bce")  # an architecture no other test makes
    assert not net.plan.settled
    monkeypatch.setattr(plan, "SMALL_POLICY", "never")
    assert net.plan.settled
    calls = []
    _peers._settle(net, lambda: calls.append(1))
    assert calls == []


# ------------------------------------------------------------------ the table


def test_workload_names_are_unique_and_cover_the_groups():
    names = [w.name for w in WORKLOADS]
    assert len(names) == len(set(names))
    assert {w.group for w in WORKLOADS} == {"C1", "C2", "C3", "C4", "C5", "C6"}
    assert all(w.name.startswith(w.group) for w in WORKLOADS)


@pytest.mark.parametrize("w", WORKLOADS, ids=lambda w: w.name)
def test_every_workload_builds_its_network(w):
    net = w.network()
    assert net.sizes == w.sizes
    assert net.activations == w.activations
    assert net.loss_name == w.loss and net.reduction == w.reduction and net.l2 == w.l2
    assert net.dtype == np.dtype(w.dtype)
    assert w.n_weights == sum(w.sizes[l] * w.sizes[l + 1] for l in range(len(w.sizes) - 1))
    assert w.flops == 6 * w.N * w.n_weights
    assert (w.steps is None) == (w.lr is None)


def test_the_table_matches_the_issue():
    c1, c2 = BY_NAME["C1"], BY_NAME["C2"]
    assert (c1.sizes, c1.loss, c1.reduction, c1.N, c1.dtype) == ((4, 8, 3), "bce", "mean", 150,
                                                                 "float64")
    assert (c1.steps, c1.lr) == (1000, 0.5)
    assert (c2.sizes, c2.loss, c2.N, c2.bias) == ((3, 2, 1), "sse", 1, False)
    assert (c2.steps, c2.lr) == (10_000, 0.5)
    c3 = bench.select(["C3"])
    assert {(w.N, w.dtype) for w in c3} == {(1000, "float64"), (10_000, "float64"),
                                            (1000, "float32"), (10_000, "float32")}
    assert all(w.l2 == 1e-4 and w.activations == ("tanh", "softmax") for w in c3)
    assert {w.N for w in bench.select(["c4"])} == {256, 4096}
    assert BY_NAME["C5"].sizes == (1024, 1024, 1024, 1024, 10)
    c6 = BY_NAME["C6"]
    assert (c6.sizes, c6.activations, c6.loss, c6.N, c6.dtype) == (
        (64, 64, 10), ("relu", "softmax"), "cross_entropy", 1797, "float32")
    assert (c6.optimizer, c6.batch_size, c6.steps) == ("adam", 32, 5)
    assert c6.updates == 5 * 57 and c6.batches()[-1] == (1792, 1797)
    assert c1.updates == 1000 and c1.batches() == [(0, 150)]
    assert [w.name for w in bench.TRAINING] == ["C1", "C2", "C6"]


def test_select_by_id_group_and_list():
    assert [w.name for w in bench.select(["C2", "c4-256"])] == ["C2", "C4-256"]
    assert [w.name for w in bench.select(["C5,C1"])] == ["C1", "C5"]  # table order
    assert bench.select(None) == list(WORKLOADS)
    with pytest.raises(ValueError, match="unknown workload 'C9'"):
        bench.select(["C9"])


def test_make_data_is_seeded_and_typed():
    w = BY_NAME["C3-1000-f32"]
    _, params, X, Y, labels = bench.make_data(w)
    _, params2, X2, _, _ = bench.make_data(w)
    assert X.dtype == Y.dtype == params.dtype == np.float32
    assert X.shape == (1000, 150) and Y.shape == (1000, 5)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(params.flat, params2.flat)
    np.testing.assert_array_equal(Y.argmax(axis=1), labels)
    np.testing.assert_array_equal(Y.sum(axis=1), 1)


# ------------------------------------------------------------- the contenders


def _small(name, **changes):
    return dataclasses.replace(BY_NAME[name], **changes)


def _rows(w, kind, names, repeat=2):
    contenders, skipped = bench.load_contenders(names, 1)
    ref = getattr(contenders.get("reference"), "ref", None)
    return bench.bench_workload(w, kind, contenders, skipped, repeat, ref)


def test_numpy_peer_gradient_matches_fastbp():
    w = _small("C3-1000-f64", N=7)
    net, params, X, Y, labels = bench.make_data(w)
    J, g = net.loss_and_grad(params, X, Y)
    prep = _peers.NumpyContender().gradient(w, net, params, X, Y, labels)
    J_np, g_np = prep.result()
    assert J_np == pytest.approx(J, rel=1e-12)
    np.testing.assert_allclose(g_np, g.flat, rtol=1e-9, atol=1e-13)


def test_bench_rows_are_checked_and_timed():
    rows = _rows(_small("C1", N=10), "gradient", ["fastbp", "reference", "numpy"])
    by = {r.contender: r for r in rows}
    assert set(by) == {"fastbp", "reference", "numpy"}
    assert all(r.status == "ok" and r.median_s > 0 and r.error <= 1e-8 for r in rows)
    assert by["numpy"].ratio_to_best_peer == 1.0  # the only peer is the fastest
    assert by["fastbp"].ratio_to_best_peer == pytest.approx(
        by["fastbp"].median_s / by["numpy"].median_s)


def test_training_rows_skip_a_missing_fastbp_train_and_check_the_others(monkeypatch):
    import fastbp

    monkeypatch.delattr(fastbp, "train", raising=False)
    rows = _rows(_small("C2", steps=20), "train", ["fastbp", "reference", "numpy"])
    by = {r.contender: r for r in rows}
    assert by["fastbp"].status == "skipped" and "not available" in by["fastbp"].reason
    assert by["numpy"].status == by["reference"].status == "ok"
    assert by["numpy"].error <= 1e-12


def test_mini_batch_adam_rows_agree():
    """C6's training (Adam on mini-batches, a partial last batch): fastbp, the
    reference loop and NumPy's end at the same parameters, and so do PyTorch's
    and JAX's loops when they are installed."""
    names = ["fastbp", "reference", "numpy"]
    for peer in ("torch", "jax"):
        try:
            __import__(peer)
        except ImportError:
            continue
        names.append(peer)
    w = _small("C6", N=70, steps=2, batch_size=32)  # batches 32, 32, 6
    rows = _rows(w, "train", names)
    by = {r.contender: r for r in rows}
    assert set(by) == set(names)
    assert all(r.status == "ok" and r.error <= 1e-3 for r in rows), rows
    assert by["numpy"].error <= 1e-5 and by["fastbp"].error <= 1e-5


def test_a_wrong_gradient_fails_loudly(monkeypatch):
    real = _peers.numpy_loss_and_grad

    def off_by_a_bit(*args):
        J, gW, gb = real(*args)
        gW[0] = gW[0] * 1.001
        return J, gW, gb

    monkeypatch.setattr(_peers, "numpy_loss_and_grad", off_by_a_bit)
    def fastbp_oracle(w, net, params, X, Y, labels, ref):
        J, g = net.loss_and_grad(params, X, Y)
        return J, g.flat.astype(np.float64)

    monkeypatch.setattr(bench, "_oracle", fastbp_oracle)
    with pytest.raises(bench.CheckError, match="numpy: gradient on C1 differ"):
        _rows(_small("C1", N=10), "gradient", ["fastbp", "numpy"])


def test_missing_peers_are_skipped_not_fatal(monkeypatch):
    # "import mod" (and of any submodule already loaded) now raises ImportError
    for name in list(sys.modules):
        if name.split(".")[0] in PEER_MODULES:
            monkeypatch.setitem(sys.modules, name, None)
    for mod in PEER_MODULES:
        monkeypatch.setitem(sys.modules, mod, None)
    contenders, skipped = bench.load_contenders(["fastbp", "numpy", *PEER_MODULES], 1)
    assert set(contenders) == {"fastbp", "numpy"}
    assert [name for name, _ in skipped] == list(PEER_MODULES)
    assert all("not installed" in reason for _, reason in skipped)


def test_sklearn_is_skipped_where_its_loss_differs():
    pytest.importorskip("sklearn")
    w = BY_NAME["C2"]
    net, params, X, Y, labels = bench.make_data(w)
    with pytest.raises(_peers.Unsupported, match="sse"):
        _peers.SklearnContender().gradient(w, net, params, X, Y, labels)


# ------------------------------------------------------------------ the command

BLOCKED = ("import sys\n"
           f"for m in {PEER_MODULES!r}: sys.modules[m] = None\n"
           "from fastbp.cli import main\n"
           "sys.exit(main(sys.argv[1:]))\n")


def _bench(*args, block_peers=False):
    cmd = [sys.executable, "-c", BLOCKED] if block_peers else [sys.executable, "-m", "fastbp"]
    return subprocess.run([*cmd, "bench", *args], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=300, check=False)


def test_command_json_end_to_end_without_peers():
    out = _bench("--workload", "C2", "--repeat", "3", "--json", "--kind", "gradient",
                 "--settle", "0.01", "--scenario", "steady", block_peers=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["scenarios"] == ["steady"]
    assert {"machine", "versions", "repeat", "notes", "workloads", "results"} <= set(report)
    assert report["settle_s"] == 0.01
    assert report["machine"]["threads"] >= 1
    assert set(report["machine"]["matmul_peak_gflops"]) == {"float32", "float64"}
    assert list(report["workloads"]) == ["C2"]
    by = {r["contender"]: r for r in report["results"]}
    assert set(by) == {"fastbp", "reference", "numpy", "torch", "jax", "sklearn"}
    for name in PEER_MODULES:
        assert by[name]["status"] == "skipped" and "not installed" in by[name]["reason"]
    for name in ("fastbp", "reference", "numpy"):
        r = by[name]
        assert r["status"] == "ok" and r["kind"] == "gradient" and r["workload"] == "C2"
        assert r["median_s"] > 0 and r["gflops"] > 0 and r["samples"] == 3
        assert r["peak_pct"] == pytest.approx(100 * r["gflops"] / r["matmul_gflops"])
        assert r["error"] <= 1e-8
    assert by["numpy"]["ratio_to_best_peer"] == 1.0


def test_command_with_installed_peers():
    out = _bench("--workload", "C2", "--repeat", "3", "--json", "--kind", "gradient",
                 "--threads", "1", "--settle", "0", "--scenario", "steady")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for r in report["results"]:
        installed = importlib.util.find_spec(r["contender"]) is not None
        if r["contender"] in PEER_MODULES and not installed:
            assert r["status"] == "skipped"
        elif r["contender"] == "sklearn":  # sse after sigmoid: not sklearn's loss
            assert r["status"] == "skipped" and "sse" in r["reason"]
        else:
            assert r["status"] == "ok", r


@pytest.mark.parametrize("args, message", [
    (("--workload", "C9"), "unknown workload 'C9'"),
    (("--repeat", "0"), "--repeat"),
    (("--settle", "-1"), "--settle"),
    (("--peers", "numpy,tensorflow"), "unknown peer 'tensorflow'"),
    (("--scenario", "busy"), "--scenario: expected some of steady, idle, mixed, got 'busy'"),
])
def test_usage_errors_exit_2_with_one_line(args, message):
    out = _bench(*args, block_peers=True)
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr


def test_interleaved_settles_and_rewarms_before_every_sample():
    calls = []

    def fn():
        calls.append(time.perf_counter())

    t0 = time.perf_counter()
    timed = bench.interleaved({"f": fn}, repeat=3, sample_time=0.0, settle=0.05)
    # calibration call, then per sample: pause, one untimed call, the timed call
    assert len(calls) == 1 + 3 * 2 and timed["f"][1:3] == (1, 3)
    assert time.perf_counter() - t0 >= 3 * 0.05
    assert all(calls[i + 1] - calls[i] < 0.05 for i in (1, 3, 5))  # warm call, then timed


def test_single_calls_sleep_or_work_before_every_timed_call():
    events = []
    t0 = time.perf_counter()
    timed = bench.single_calls({"f": lambda: events.append("call")}, "idle", samples=4)
    assert time.perf_counter() - t0 >= 4 * bench.IDLE_S
    assert events == ["call"] * 4  # no calibration, no warm-up call
    median, number, samples, fastest, p90 = timed["f"]
    assert (number, samples) == (1, 4) and fastest <= median <= p90
    events.clear()
    bench.single_calls({"f": lambda: events.append("call")}, "mixed", samples=3,
                       before=lambda: events.append("numpy"))
    assert events == ["numpy", "call"] * 3


def test_mixed_matmul_has_about_the_gradient_flops():
    w = bench.BY_NAME["C3-1000-f32"]
    A = bench.mixed_matmul(w)()
    n = A.shape[0]
    assert A.dtype == np.float32 and 32 <= n <= 1024
    assert 0.5 < 2 * n**3 / w.flops < 2


def test_command_reports_every_scenario_with_its_p90():
    out = _bench("--workload", "C2", "--repeat", "3", "--json", "--kind", "gradient",
                 "--settle", "0", "--peers", "numpy", "--scenario", "idle,mixed",
                 block_peers=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["scenarios"] == ["idle", "mixed"]
    ok = [r for r in report["results"] if r["status"] == "ok"]
    assert {(r["scenario"], r["contender"]) for r in ok} == {
        (sc, c) for sc in ("idle", "mixed") for c in ("fastbp", "reference", "numpy")}
    for r in ok:
        assert r["samples"] == bench.SCENARIO_SAMPLES and r["calls_per_sample"] == 1
        assert 0 < r["median_s"] <= r["p90_s"]
    out = _bench("--workload", "C2", "--repeat", "3", "--kind", "gradient", "--settle", "0",
                 "--peers", "none", "--scenario", "steady,idle", block_peers=True)
    assert out.returncode == 0, out.stderr
    assert "p90" in out.stdout and "  idle     fastbp" in out.stdout


def test_help_and_list():
    out = _bench("--help", block_peers=True)
    assert out.returncode == 0 and "--workload" in out.stdout and "--json" in out.stdout
    out = _bench("--list", block_peers=True)
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()] == [w.name for w in WORKLOADS]


# ------------------------------------------------------------------- asv suite

ASV_PREFIXES = ("time_", "timeraw_", "peakmem_", "mem_", "track_")
ASV_HOOKS = ("setup", "teardown", "setup_cache")


def _asv_modules():
    sys.path.insert(0, str(ROOT / "asv_bench"))
    try:
        names = sorted(p.stem for p in (ROOT / "asv_bench" / "benchmarks").glob("bench_*.py"))
        return [importlib.import_module(f"benchmarks.{n}") for n in names]
    finally:
        sys.path.remove(str(ROOT / "asv_bench"))


def test_asv_config_points_at_the_repository():
    import re

    text = (ROOT / "asv_bench" / "asv.conf.json").read_text()
    conf = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))
    assert conf["repo"] == ".." and conf["benchmark_dir"] == "benchmarks"
    ignored = (ROOT / ".gitignore").read_text().split()
    for d in ("results", "html", "env"):
        assert f"asv_bench/{conf[d + '_dir']}/" in ignored


def test_every_asv_method_is_collected():
    """A public method without an asv prefix would silently never run."""
    classes = [c for m in _asv_modules() for _, c in inspect.getmembers(m, inspect.isclass)
               if c.__module__ == m.__name__]
    assert classes
    found = set()
    for cls in classes:
        for name, _ in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_") or name in ASV_HOOKS:
                continue
            assert name.startswith(ASV_PREFIXES), f"{cls.__name__}.{name} is not a benchmark"
            found.add(name.split("_", 1)[0])
        if hasattr(cls, "params"):
            assert len(cls.params) == len(cls.param_names)
    assert found == {"time", "timeraw", "peakmem", "track"}


def test_fastbp_training_is_checked_against_the_reference_loop():
    rows = _rows(_small("C1", steps=15), "train", ["fastbp", "reference"])
    by = {r.contender: r for r in rows}
    assert by["fastbp"].status == "ok" and by["fastbp"].error <= 1e-12
    assert by["fastbp"].gflops == pytest.approx(15 * BY_NAME["C1"].flops / by["fastbp"].median_s
                                                / 1e9)
