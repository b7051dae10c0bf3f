"""The boundary into the compiled core: what may cross it, the launch policy
(threads, threading layers, fork), and the plan's bookkeeping.

Cases that could crash the interpreter before the fixes they test run in a
subprocess, so a regression fails the test instead of ending the test run.
"""

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import fastbp
from fastbp import Network, Params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(script, timeout=300, **env):
    env.setdefault("FASTBP_LAUNCH", "threshold")  # the drivers the tests expect
    """(returncode, stdout, stderr) of ``script`` in a fresh interpreter (run from
    a file, so that spawned children can import its functions)."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(textwrap.dedent(script))
    try:
        return _run(f.name, timeout, env)
    finally:
        os.unlink(f.name)


def _run(path, timeout, env):
    res = subprocess.run([sys.executable, path],
                         env=dict(os.environ, PYTHONPATH=ROOT, **env), cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout, check=False)
    return res.returncode, res.stdout, res.stderr


# ---------------------------------------------------------------- what crosses


@pytest.mark.parametrize("value, exc, message", [
    (np.ones(5), ValueError, "flat: expected 14 parameters, got 5"),
    (np.ones(14, dtype=np.int64), TypeError, "flat: dtype must be float32 or float64"),
    (np.ones((2, 7)), ValueError, r"flat: expected a 1-D vector of 14 parameters"),
    (np.ones(28)[::2], ValueError, "flat: expected a C-contiguous vector"),
    ([0.0] * 14, TypeError, "flat: expected a NumPy array, got list"),
])
def test_params_refuse_a_flat_vector_that_does_not_fit(value, exc, message):
    p = Network([3, 2, 2], "tanh", "sse").init(0)
    before = p.flat.copy()
    with pytest.raises(exc, match=message):
        p.flat = value
    assert np.array_equal(p.flat, before)


def test_params_accept_a_fitting_vector_as_it_is():
    p = Network([3, 2, 2], "tanh", "sse").init(0)
    v = np.arange(14, dtype=np.float32)
    p.flat = v
    assert p.flat is v and p.W[1][0, 1] == 1.0  # views rebuilt over the new vector


def test_every_entry_point_checks_a_vector_that_bypassed_params():
    """A Params whose private vector was swapped for a shorter one (past the
    checked attribute): every entry point that would hand it to compiled code
    refuses it before any work, in a process of its own (it used to read out
    of bounds, abort or segfault)."""
    code, out, err = _python("""
        import numpy as np, fastbp, tempfile, os
        net = fastbp.Network([3, 4, 2], "tanh", "sse")
        q = net.init(0)
        q._flat = np.ones(5)
        X, Y = np.ones((6, 3)), np.ones((6, 2))
        calls = {
            "loss_and_grad": lambda: net.loss_and_grad(q, X, Y),
            "loss": lambda: net.loss(q, X, Y),
            "forward": lambda: net.forward(q, X),
            "predict": lambda: net.predict(q, X),
            "train": lambda: fastbp.train(net, q, X, Y, epochs=2),
            "train inplace": lambda: fastbp.train(net, q, X, Y, epochs=2, inplace=True),
            "save": lambda: fastbp.save(os.path.join(tempfile.mkdtemp(), "m.npz"), net, q),
        }
        for name, call in calls.items():
            try:
                call()
            except ValueError as e:
                assert "params.flat: expected 26 parameters, got 5" in str(e), (name, e)
            else:
                raise AssertionError(name + " accepted a short vector")
        print("ok")
    """)
    assert code == 0, err
    assert out.strip() == "ok"


# ---------------------------------------------------------------- launch policy


def test_plans_are_shared_by_equal_descriptions():
    a = Network([3, 4, 2], "tanh", "sse", l2=0.1)
    b = Network([3, 4, 2], "tanh", "sse", l2=0.1)
    c = Network([3, 4, 2], "tanh", "sse", l2=0.2)
    assert a.plan is b.plan and a.plan is not c.plan
    assert a.plan.n_params == a.n_params == 26


def test_plan_reports_the_driver_that_ran(monkeypatch):
    from fastbp._core import plan as core_plan

    monkeypatch.setattr(core_plan, "POLICY", "threshold")
    net = Network([13, 37, 19, 5], ["tanh", "relu", "softmax"], "cross_entropy")
    p = net.init(1)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(601, 13)), rng.integers(0, 5, 601)
    bits = {}
    for threshold, driver in ((10**18, "serial"), (0, "parallel")):
        monkeypatch.setattr(core_plan, "SERIAL_BELOW", threshold)
        for call in ("loss_and_grad", "loss", "forward"):
            out = getattr(net, call)(p, X, *(() if call == "forward" else (Y,)))
            assert net.plan.last_driver == driver, call
            bits.setdefault(call, set()).add(
                (out[0], out[1].flat.tobytes()) if call == "loss_and_grad" else
                np.asarray(out).tobytes())
    assert all(len(v) == 1 for v in bits.values())  # same bits either way


BARRIER = """
    import threading, numpy as np, numba, fastbp
    {setup}
    net = fastbp.Network([40, 64, 8], ["tanh", "softmax"], "cross_entropy")
    p = net.init(1)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(600, 40)), rng.integers(0, 8, 600)
    barrier = threading.Barrier(8)
    out, errors = [None] * 8, []

    def first_call(k):
        try:
            barrier.wait()
            J, g = net.loss_and_grad(p, X, Y)
            out[k] = g.flat.tobytes()
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=first_call, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(set(out)) == 1
    try:
        layer = numba.threading_layer()
    except ValueError:  # never launched: the layer the configuration names
        layer = numba.config.THREADING_LAYER
    print(layer, net.plan.last_driver)
"""


@pytest.mark.parametrize("setup, env, driver", [
    ("", {}, "parallel"),  # the thread-safe layer: every thread may launch
    ("", {"NUMBA_THREADING_LAYER": "workqueue"}, "serial"),
    ("numba.config.THREADING_LAYER = 'workqueue'", {}, "serial"),  # chosen after import
])
def test_first_calls_of_eight_threads_at_once(setup, env, driver):
    """Eight threads whose first calls arrive together, on work above the serial
    threshold: threads queued behind the first launch follow its verdict (the
    workqueue layer aborts the process on concurrent parallel calls)."""
    code, out, err = _python(BARRIER.format(setup=setup), **env)
    assert code == 0, err
    layer, ran = out.split()
    assert ran == driver, (layer, ran)
    if driver == "serial":
        assert layer == "workqueue"


def test_fork_after_a_parallel_call():
    """multiprocessing with fork after the parent ran the parallel kernels: the
    children run the serial ones (GNU OpenMP's threads do not survive a fork),
    with the same bits, instead of dying."""
    code, out, err = _python("""
        import multiprocessing as mp, numpy as np, fastbp
        net = fastbp.Network([40, 64, 8], ["tanh", "softmax"], "cross_entropy")
        p = net.init(1)
        rng = np.random.default_rng(0)
        X, Y = rng.normal(size=(600, 40)), rng.integers(0, 8, 600)

        def grad(seed):
            J, g = net.loss_and_grad(p, X, Y)
            return g.flat.tobytes(), net.plan.last_driver

        parent = grad(0)
        assert parent[1] == "parallel", parent[1]
        with mp.get_context("fork").Pool(2) as pool:
            children = pool.map(grad, range(4), chunksize=1)
        assert all(c == (parent[0], "serial") for c in children), [c[1] for c in children]
        print("ok")
    """, timeout=120)
    assert code == 0, err
    assert out.strip() == "ok"
    assert "unsafe" not in err


def test_spawned_children_use_the_parallel_kernels():
    code, out, err = _python("""
        import multiprocessing as mp, numpy as np, fastbp

        def grad(seed):
            net = fastbp.Network([40, 64, 8], ["tanh", "softmax"], "cross_entropy")
            rng = np.random.default_rng(0)
            X, Y = rng.normal(size=(600, 40)), rng.integers(0, 8, 600)
            J, g = net.loss_and_grad(net.init(1), X, Y)
            return g.flat.tobytes(), net.plan.last_driver

        if __name__ == "__main__":
            parent = grad(0)
            with mp.get_context("spawn").Pool(1) as pool:
                child = pool.map(grad, [0])[0]
            assert child == parent, (child[1], parent[1])
            print(parent[1])
    """, timeout=300)
    assert code == 0, err
    assert out.strip() == "parallel"


def test_the_front_end_reaches_the_core_only_through_its_package():
    """Imports point one way: no module outside fastbp/_core names one of its
    submodules; they use what fastbp._core exports."""
    offenders = []
    package = os.path.join(ROOT, "fastbp")
    for folder, _, files in os.walk(package):
        if os.path.basename(folder) == "_core" or "__pycache__" in folder:
            continue
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    imports = [line.strip() for line in f
                               if line.lstrip().startswith(("import ", "from "))]
                offenders += [(name, line) for line in imports if "_core." in line]
    assert not offenders


def test_params_wrap_and_init_allocate_the_network_dtype():
    net = Network([3, 2, 2], "tanh", "sse", dtype="float32")
    p = net.init(0)
    assert isinstance(p, Params) and p.flat.dtype == np.float32
    assert fastbp.Params.wrap(p.sizes, p.bias, p.flat).flat is p.flat


def test_a_corrupt_cache_is_deleted_and_compiled_again(tmp_path):
    """A truncated data file and a garbled index in numba's cache: the next
    process warns once, compiles afresh and gives the same result; the one
    after it loads the new cache without a word."""
    script = """
        import warnings, numpy as np, fastbp
        net = fastbp.Network([3, 4, 2], "tanh", "sse")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            J, g = net.loss_and_grad(net.init(0), np.ones((5, 3)), np.ones((5, 2)))
        print(repr(J), sum("cache of the compiled core could not be read" in str(w.message)
                           for w in caught))
    """
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    runs = []
    for corrupt in (False, True, False):
        if corrupt:
            files = sorted(tmp_path.rglob("*"))
            data = [f for f in files if f.name.startswith(("kernels.loss_grad_serial",
                                                             "kernels._example_block"))
                    and f.suffix == ".nbc"]
            index = [f for f in files if f.name.startswith("screen.") and f.suffix == ".nbi"]
            assert len(data) == 2 and index  # a driver's file and a worker's
            for f in data:
                f.write_bytes(f.read_bytes()[:100])
            index[0].write_bytes(b"garbage\n")
        code, out, err = _python(script, timeout=600, **env)
        assert code == 0, err
        runs.append(out.split())
    assert [r[1] for r in runs] == ["0", "1", "0"]
    assert runs[0][0] == runs[1][0] == runs[2][0]


def test_adaptive_policy_runs_the_driver_recent_calls_found_faster(monkeypatch):
    """A parallel driver that stalls (as one waiting for a busy core does) loses
    to the serial one after its first calls, is tried again every REPROBE-th
    call, and wins back when it is fast again; every call gives the same bits."""
    import time

    from fastbp._core import kernels
    from fastbp._core import plan as core_plan

    net = Network([40, 64, 8], ["tanh", "softmax"], "cross_entropy", l2=0.25)
    p = net.init(1)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(600, 40)), rng.integers(0, 8, 600)
    J0, g0 = net.loss_and_grad(p, X, Y)
    real = kernels.loss_grad_parallel
    delay = [0.02]

    def parallel(*args):
        time.sleep(delay[0])
        return real(*args)

    monkeypatch.setattr(core_plan, "POLICY", "adaptive")
    monkeypatch.setattr(kernels, "loss_grad_parallel", parallel)
    net.plan._timings.clear()
    ran = []
    for _ in range(2 * core_plan.REPROBE):
        J, g = net.loss_and_grad(p, X, Y)
        assert J == J0 and g == g0
        ran.append(net.plan.last_driver[0])
    assert "".join(ran[:4]) == "ppss"
    assert set(ran[4:]) == {"s", "p"} and ran[4:].count("p") == 2  # the reprobes
    # now the serial driver is the slow one: the reprobes bring the parallel back
    delay[0] = 0.0
    real_serial = kernels.loss_grad_serial

    def serial(*args):
        time.sleep(0.02)
        return real_serial(*args)

    monkeypatch.setattr(kernels, "loss_grad_serial", serial)
    monkeypatch.setattr(core_plan, "REPROBE", 4)
    ran = []
    for _ in range(16):
        J, g = net.loss_and_grad(p, X, Y)
        assert J == J0 and g == g0
        ran.append(net.plan.last_driver[0])
    assert ran[-8:].count("p") == 6, ran  # parallel again, serial every 4th call
