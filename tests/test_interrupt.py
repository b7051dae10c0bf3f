"""Ctrl-C during training: a long compiled chunk stops within a mini-batch,
not at the end of its epoch, and the caller's parameters are left as they were."""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import os, signal, threading, time
    import numpy as np
    import fastbp

    net = fastbp.Network([64, 128, 10], ["tanh", "softmax"], "cross_entropy")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60000, 64))
    Y = rng.integers(0, 10, 60000)
    p = net.init(seed=0)
    before = p.flat.copy()
    fastbp.train(net, p, X[:64], Y[:64], optimizer="adam", epochs=1, batch_size=8)  # compile
    t0 = time.perf_counter()
    fastbp.train(net, p, X, Y, optimizer="adam", epochs=1, batch_size=8, seed=0)
    epoch = time.perf_counter() - t0

    # Ctrl-C a third of an epoch into a long run
    def interrupt():
        time.sleep(epoch / 3)
        global sent
        sent = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt).start()
    try:
        fastbp.train(net, p, X, Y, optimizer="adam", epochs=1000, batch_size=8, seed=0)
        print("NOT INTERRUPTED")
    except KeyboardInterrupt:
        waited = time.perf_counter() - sent
        print(f"waited {waited:.6f} epoch {epoch:.6f}")
    print("unchanged", np.array_equal(p.flat, before))
""")


def test_ctrl_c_stops_training_within_a_batch():
    try:
        res = subprocess.run([sys.executable, "-c", SCRIPT], env=dict(os.environ, PYTHONPATH=ROOT),
                             cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the interrupted run did not stop")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split("\n")
    assert lines[0].startswith("waited "), res.stdout
    waited, epoch = float(lines[0].split()[1]), float(lines[0].split()[3])
    # a batch of 8 is ~1/7500 of the epoch: waiting for the epoch's end (as
    # before) would take two thirds of it
    assert waited < epoch / 10, (waited, epoch)
    assert lines[1] == "unchanged True"
