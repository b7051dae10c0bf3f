"""Bit-identical results for any thread count, and safe concurrent calls."""

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numba
import numpy as np
import pytest
from cases import DETERMINISM_CASES as CASES

import fastbp
from fastbp import Network

SCRIPT = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    from fastbp import Network
    from fastbp._core import plan as core_plan
    assert hasattr(core_plan, "SERIAL_BELOW")
    core_plan.SERIAL_BELOW = 0  # always the parallel kernels: they are what is tested
    core_plan.POLICY = "threshold"
    h = hashlib.sha256()
    for sizes, acts, loss, N in {cases}:
        for dtype in ("float64", "float32"):
            net = Network(sizes, acts, loss, l2=1e-3, dtype=dtype)
            p = net.init(1)
            rng = np.random.default_rng(2)
            X = rng.normal(size=(N, sizes[0]))
            Y = rng.random((N, sizes[-1]))
            if loss == "cross_entropy":
                Y = rng.integers(0, sizes[-1], N)
            J, g, dX = net.loss_and_grad(p, X, Y, input_grad=True)
            assert net.plan.last_driver == "parallel", net.plan.last_driver
            h.update(np.float64(J).tobytes()); h.update(g.flat.tobytes()); h.update(dX.tobytes())
            h.update(net.forward(p, X).tobytes()); h.update(np.float64(net.loss(p, X, Y)).tobytes())
            w = rng.uniform(0.0, 2.0, N)  # the weighted path: sample weights
            Jw, gw = net.loss_and_grad(p, X, Y, sample_weight=w)
            h.update(np.float64(Jw).tobytes()); h.update(gw.flat.tobytes())
    import numba
    print(numba.get_num_threads(), h.hexdigest())
""")


def _run(threads: int) -> str:
    cases = "[" + ", ".join(f"({s}, {a}, {l!r}, {n})" for s, a, l, n in CASES) + "]"
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads),
               PYTHONPATH=str(Path(fastbp.__file__).parent.parent))
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(cases=cases)], env=env,
                         capture_output=True, text=True, check=True, timeout=600)
    n, digest = out.stdout.split()
    assert int(n) == threads
    return digest


def test_bit_identical_for_1_and_2_threads_in_fresh_processes():
    assert _run(1) == _run(2)


def _digest(net, p, X, Y):
    J, g, dX = net.loss_and_grad(p, X, Y, input_grad=True)
    h = hashlib.sha256()
    for a in (np.float64(J), g.flat, dX):
        h.update(a.tobytes())
    return h.hexdigest()


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_bit_identical_under_set_num_threads():
    net = Network([13, 37, 19, 5], ["tanh", "relu", "softmax"], "cross_entropy", l2=1e-3)
    p = net.init(1)
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(601, 13)), rng.integers(0, 5, 601)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _digest(net, p, X, y)
        numba.set_num_threads(2)
        two = _digest(net, p, X, y)
    finally:
        numba.set_num_threads(before)
    assert one == two == _digest(net, p, X, y)


def test_serial_twin_gives_the_same_bits(monkeypatch):
    from fastbp._core import plan as core_plan

    monkeypatch.setattr(core_plan, "POLICY", "threshold")
    for sizes, acts, loss, N in [([13, 37, 19, 5], ["tanh", "relu", "softmax"], "cross_entropy",
                                  601), ([3, 2, 1], "sigmoid", "sse", 1)]:
        for dtype in ("float64", "float32"):
            net = Network(sizes, acts, loss, l2=1e-3, dtype=dtype)
            p = net.init(1)
            rng = np.random.default_rng(2)
            X, Y = rng.normal(size=(N, sizes[0])), rng.random((N, sizes[-1]))
            if loss == "cross_entropy":
                Y = rng.integers(0, sizes[-1], N)
            digests = []
            for threshold in (0, 10**18):  # parallel, then serial
                monkeypatch.setattr(core_plan, "SERIAL_BELOW", threshold)
                w = np.linspace(2.0, 0.0, N)  # N = 1: the weight 2
                Jw, gw = net.loss_and_grad(p, X, Y, sample_weight=w)
                digests.append((_digest(net, p, X, Y), net.forward(p, X).tobytes(),
                                np.float64(Jw).tobytes(), gw.flat.tobytes()))
                assert net.plan.last_driver == ("parallel" if threshold == 0 else "serial")
            assert digests[0] == digests[1]


def test_concurrent_calls_from_python_threads(monkeypatch):
    from fastbp._core import plan as core_plan

    monkeypatch.setattr(core_plan, "POLICY", "threshold")  # the parallel path, every call
    # the generic kernels (a plan of its own, made after the policy is set): the
    # specialized code of 4-8-3 would start once its calls had taken as long as
    # loading it, and these threads make many
    monkeypatch.setattr(core_plan, "SMALL_POLICY", "never")
    nets = [
        Network([13, 37, 19, 5], ["tanh", "relu", "softmax"], "cross_entropy"),  # parallel path
        Network([4, 8, 3], "sigmoid", "bce", l2=1e-3),  # serial path
    ]
    rng = np.random.default_rng(3)
    jobs = []
    for net in nets:
        p = net.init(0)
        X = rng.normal(size=(601, net.sizes[0]))
        Y = rng.integers(0, 5, 601) if net.loss_name == "cross_entropy" else \
            (rng.random((601, 3)) > 0.5).astype(float)
        jobs.append((net, p, X, Y, _digest(net, p, X, Y)))
    assert [net.plan.last_driver for net in nets] == ["parallel", "serial"]
    errors, results = [], []

    def worker(k):
        try:
            for _ in range(15):
                net, p, X, Y, expected = jobs[k % 2]
                results.append(_digest(net, p, X, Y) == expected)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 60 and all(results)
