"""fastbp.train: the compiled updates against their NumPy transcription, batching,
validation and early stopping, determinism, and the documents' training examples.

Every network here is float64 with the same argument types, so the training
kernels compile once for the whole module.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import training
from fastbp._core import kernels
from fastbp._core import plan as core_plan
from fastbp._core import train_kernels as tk
from fastbp.datasets import load_iris
from fastbp.training import STOCHASTIC, History

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(N=10, n_0=3, n_L=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, n_0))
    Y = (rng.random((N, n_L)) > 0.5).astype(float)
    return X, Y


NET = fastbp.Network([3, 4, 2], ["tanh", "sigmoid"], "bce")


def _batches(N, B, epochs, seed, shuffle):
    """The row order of every step: the compiled generator, replayed from the seed."""
    order = np.arange(N, dtype=np.int64)
    state = np.random.SeedSequence(seed).spawn(2)[1].generate_state(1, np.uint64)
    for _ in range(epochs):
        if shuffle and B < N:
            tk.shuffle(order, state)
        for b0 in range(0, N, B):
            yield order[b0:b0 + B].copy()


def _numpy_training(net, params, X, Y, *, optimizer, lr, epochs, B, seed, shuffle=True,
                    momentum=0.9, betas=(0.9, 0.999), eps=1e-8):
    """The four updates written out in NumPy, on fastbp's mini-batch gradients."""
    theta = params.flat.copy()
    v = np.zeros_like(theta)
    m = np.zeros_like(theta)
    b1, b2 = betas
    for t, rows in enumerate(_batches(X.shape[0], B, epochs, seed, shuffle), 1):
        p = fastbp.Params(net.sizes, net.bias, theta)
        _, g = net.loss_and_grad(p, X[rows], Y[rows])
        g = g.flat
        if optimizer == "sgd":
            theta = theta - lr * g
        elif optimizer == "momentum":
            v = momentum * v + g
            theta = theta - lr * v
        elif optimizer == "nesterov":
            v = momentum * v + g
            theta = theta - lr * (g + momentum * v)
        else:
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat = m / (1 - b1**t)
            v_hat = v / (1 - b2**t)
            theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


@pytest.mark.parametrize("optimizer", list(STOCHASTIC))
@pytest.mark.parametrize("B", [None, 4, 10], ids=["full", "B4-partial", "B10"])
def test_each_optimizer_matches_numpy(optimizer, B):
    X, Y = _data(N=10)
    p = NET.init(seed=1)
    lr = 0.05 if optimizer != "adam" else 0.01
    h = fastbp.train(NET, p, X, Y, optimizer=optimizer, lr=lr, epochs=3, batch_size=B, seed=7)
    expected = _numpy_training(NET, p, X, Y, optimizer=optimizer, lr=lr, epochs=3,
                               B=10 if B is None else B, seed=7)
    np.testing.assert_allclose(h.params.flat, expected, rtol=1e-10, atol=1e-14)
    assert h.steps == 3 * (1 if B in (None, 10) else 3)
    assert not np.array_equal(h.params.flat, p.flat)


def test_unshuffled_minibatches_run_in_order():
    X, Y = _data(N=10)
    p = NET.init(seed=2)
    h = fastbp.train(NET, p, X, Y, optimizer="momentum", lr=0.1, epochs=2, batch_size=3,
                     shuffle=False)
    expected = _numpy_training(NET, p, X, Y, optimizer="momentum", lr=0.1, epochs=2, B=3,
                               seed=0, shuffle=False)
    np.testing.assert_allclose(h.params.flat, expected, rtol=1e-10, atol=1e-14)


def test_nesterov_flag_is_the_nesterov_optimizer():
    X, Y = _data()
    p = NET.init(seed=3)
    a = fastbp.train(NET, p, X, Y, optimizer="momentum", nesterov=True, lr=0.1, epochs=4)
    b = fastbp.train(NET, p, X, Y, optimizer="nesterov", lr=0.1, epochs=4)
    assert a.params == b.params


def test_shuffle_visits_every_example_once_per_epoch():
    order = np.arange(50, dtype=np.int64)
    state = np.array([12345], dtype=np.uint64)
    seen = []
    for _ in range(5):
        tk.shuffle(order, state)
        assert np.array_equal(np.sort(order), np.arange(50))
        seen.append(order.copy())
    assert len({s.tobytes() for s in seen}) == 5


def test_full_batch_history_loss_is_J_before_each_step():
    X, Y = _data(N=12)
    p = NET.init(seed=4)
    h = fastbp.train(NET, p, X, Y, lr=0.5, epochs=3)
    theta = p.flat.copy()
    for e in range(3):
        J, g = NET.loss_and_grad(fastbp.Params(NET.sizes, NET.bias, theta), X, Y)
        assert h.loss[e] == pytest.approx(J, rel=1e-12)
        theta = theta - 0.5 * g.flat
    np.testing.assert_allclose(h.params.flat, theta, rtol=1e-10)


def test_l2_and_sum_reduction_follow_the_network():
    net = fastbp.Network([3, 4, 2], ["tanh", "sigmoid"], "bce", reduction="sum", l2=0.1)
    X, Y = _data(N=10)
    p = net.init(seed=5)
    h = fastbp.train(net, p, X, Y, optimizer="adam", lr=0.01, epochs=2, batch_size=4, seed=3)
    expected = _numpy_training(net, p, X, Y, optimizer="adam", lr=0.01, epochs=2, B=4, seed=3)
    np.testing.assert_allclose(h.params.flat, expected, rtol=1e-10, atol=1e-14)
    h = fastbp.train(net, p, X, Y, lr=0.01, epochs=1)
    assert h.loss[0] == pytest.approx(net.loss(p, X, Y), rel=1e-12)


def test_params_untouched_unless_inplace():
    X, Y = _data()
    p = NET.init(seed=6)
    before = p.flat.copy()
    X0, Y0 = X.copy(), Y.copy()
    h = fastbp.train(NET, p, X, Y, lr=0.1, epochs=3)
    assert np.array_equal(p.flat, before)
    assert np.array_equal(X, X0) and np.array_equal(Y, Y0)
    assert h.params is not p
    h2 = fastbp.train(NET, p, X, Y, lr=0.1, epochs=3, inplace=True)
    assert h2.params is p
    assert np.array_equal(p.flat, h.params.flat)


def test_validation_set_loss_and_accuracy():
    X, Y = _data(N=30)
    Xv, Yv = _data(N=9, seed=11)
    p = NET.init(seed=7)
    h = fastbp.train(NET, p, X, Y, optimizer="adam", lr=0.05, epochs=5, batch_size=8, seed=1,
                     validation=(Xv, Yv))
    assert h.val_loss.shape == h.val_accuracy.shape == (5,)
    assert h.val_loss[-1] == pytest.approx(NET.loss(h.params, Xv, Yv), rel=1e-12)
    right = ((NET.forward(h.params, Xv) > 0.5) == (Yv > 0.5)).all(axis=1).mean()
    assert h.val_accuracy[-1] == right
    assert h.best_epoch == int(np.argmin(h.val_loss))


def test_validation_fraction_holds_out_rows():
    X, Y = _data(N=20)
    p = NET.init(seed=8)
    h = fastbp.train(NET, p, X, Y, lr=0.1, epochs=2, validation=0.25, seed=4)
    held = np.zeros(20, dtype=bool)
    held[np.random.default_rng(np.random.SeedSequence(4).spawn(2)[0]).permutation(20)[:5]] = 1
    J0 = NET.loss(p, X[~held], Y[~held])
    assert h.loss[0] == pytest.approx(J0, rel=1e-12)


def test_early_stopping_restores_the_best_epoch():
    X, Y = _data(N=20)
    Xv, Yv = _data(N=20, seed=5)
    p = NET.init(seed=9)
    # a large step on noise: the validation loss soon stops improving
    h = fastbp.train(NET, p, X, Y, optimizer="adam", lr=0.2, epochs=300, batch_size=5,
                     seed=2, validation=(Xv, Yv), early_stopping=5)
    assert h.stop_reason == "early_stopping"
    assert h.epochs == h.best_epoch + 6
    assert h.epochs < 300
    assert NET.loss(h.params, Xv, Yv) == pytest.approx(h.val_loss[h.best_epoch], rel=1e-12)
    assert np.all(h.val_loss[h.best_epoch + 1:] >= h.val_loss[h.best_epoch])


def test_callback_sees_progress_and_can_stop():
    X, Y = _data()
    p = NET.init(seed=10)
    calls = []

    def stop_early(hist):
        calls.append(hist.epochs)
        return hist.epochs >= 1

    h = fastbp.train(NET, p, X, Y, lr=0.1, epochs=10**7, callback=stop_early)
    assert h.stop_reason == "callback"
    assert h.epochs < 10**7
    assert calls[-1] == h.epochs and isinstance(h, History)


def test_chunking_does_not_change_the_result(monkeypatch):
    X, Y = _data(N=10)
    p = NET.init(seed=11)
    kw = {"optimizer": "adam", "lr": 0.02, "epochs": 40, "batch_size": 3, "seed": 5,
          "validation": 0.3, "early_stopping": 50}
    a = fastbp.train(NET, p, X, Y, **kw)
    compiled = tk.compiled_train_chunk
    monkeypatch.setattr(tk, "compiled_train_chunk",
                        lambda records: _one_epoch_at_a_time(compiled(records)))
    b = fastbp.train(NET, p, X, Y, **kw)
    assert a.params == b.params
    assert np.array_equal(a.loss, b.loss) and np.array_equal(a.val_loss, b.val_loss)


def _one_epoch_at_a_time(fn):
    def run(*args):
        *rest, ep0, n = args
        done = 0
        while done < n:
            k, outcome = fn(*rest, ep0 + done, 1)
            done += k
            if outcome != tk.RUNNING:
                break
        return done, outcome

    return run


def _calls_and_result(monkeypatch, net, p, X, Y, first_chunk=None, **kw):
    """(number of compiled calls, History) of one run, with the first chunk's
    size forced to ``first_chunk`` epochs when given."""
    real = tk.compiled_train_chunk
    calls = []

    def counted(records):
        fn = real(records)
        return lambda *args: calls.append(args[-1]) or fn(*args)

    with monkeypatch.context() as m:
        m.setattr(tk, "compiled_train_chunk", counted)
        if first_chunk is not None:
            m.setattr(training, "_first_chunk", lambda *args: first_chunk)
        h = fastbp.train(net, p, X, Y, **kw)
    return calls, h


@pytest.mark.parametrize("case", ["003", "000"])
def test_small_run_is_one_compiled_call_with_the_same_bits(monkeypatch, case):
    """A short run on a small network fits in one compiled call (no timing call
    of one epoch first), and gives the bits of the same run cut into chunks."""
    if case == "003":
        net = fastbp.Network([3, 2, 1], "sigmoid", "sse", reduction="sum", bias=False)
        X, Y = np.array([[0.5, 0.1, -0.3]]), np.array([[0.7]])
        epochs = 2000
    else:
        net = fastbp.Network([4, 8, 3], "sigmoid", "bce")
        X, Y = _data(N=150, n_0=4, n_L=3)
        Y = (Y > Y.mean()).astype(float)
        epochs = 60
    p = net.init(seed=16)
    kw = {"optimizer": "sgd", "lr": 0.5, "epochs": epochs}
    calls, whole = _calls_and_result(monkeypatch, net, p, X, Y, **kw)
    assert calls == [epochs]
    calls, cut = _calls_and_result(monkeypatch, net, p, X, Y, first_chunk=1, **kw)
    assert calls[0] == 1 and sum(calls) == epochs
    assert whole.params == cut.params
    assert np.array_equal(whole.loss, cut.loss)


def test_first_chunk_from_the_size_of_an_epoch():
    # one step of 003's network: a run of up to 0.05 s / (2 us + 11 x 10 ns) epochs
    assert training._first_chunk(1, 1, 0, 3 * 2 + 2 + 3, True) == 23696
    # a big batch or validation set, or a parallel driver, starts with one epoch
    # (timed, then sized)
    assert training._first_chunk(10_000, 10_000, 0, 100_000, True) == 1
    assert training._first_chunk(1, 1, 10**7, 11, True) == 1
    assert training._first_chunk(1, 1, 0, 11, False) == 1


def test_history_to_dict_is_plain_data():
    X, Y = _data()
    h = fastbp.train(NET, NET.init(seed=12), X, Y, lr=0.1, epochs=3, validation=(X, Y))
    d = h.to_dict()
    assert d["epochs"] == 3 and d["stop_reason"] == "completed"
    assert d["loss"] == h.loss.tolist() and d["val_loss"] == h.val_loss.tolist()
    assert all(isinstance(x, float) for x in d["time"])
    assert sorted(d) == sorted(["loss", "val_loss", "val_accuracy", "time", "best_epoch",
                                "epochs", "steps", "stop_reason", "seed"])
    assert np.all(np.diff(h.time) >= 0)


def test_seed_none_is_reported_and_repeatable():
    X, Y = _data(N=10)
    p = NET.init(seed=13)
    a = fastbp.train(NET, p, X, Y, lr=0.1, epochs=3, batch_size=3)
    b = fastbp.train(NET, p, X, Y, lr=0.1, epochs=3, batch_size=3, seed=a.seed)
    assert a.params == b.params


def test_divergence_stops_with_a_warning():
    net = fastbp.Network([3, 4, 2], "identity", "sse")
    X, Y = _data()
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        h = fastbp.train(net, net.init(seed=0), X * 1e3, Y, lr=1e3, epochs=1000)
    assert h.stop_reason == "diverged" and h.epochs < 1000


def test_progress_bar_without_tqdm(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    X, Y = _data()
    fastbp.train(NET, NET.init(seed=14), X, Y, lr=0.1, epochs=20, progress=True)
    err = capsys.readouterr().err
    assert "20/20 epochs" in err and "loss" in err and err.endswith("\n")


def test_progress_bar_with_tqdm(monkeypatch):
    updates = []

    class FakeTqdm:
        def __init__(self, total, **kw):
            self.total = total

        def set_postfix(self, post, refresh=True):
            updates.append(dict(post))

        def update(self, k):
            updates.append(k)

        def close(self):
            updates.append("closed")

    fake = type(sys)("tqdm.auto")
    fake.tqdm = FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake)
    monkeypatch.setitem(sys.modules, "tqdm", type(sys)("tqdm"))
    X, Y = _data()
    fastbp.train(NET, NET.init(seed=15), X, Y, lr=0.1, epochs=7, progress=True)
    assert sum(u for u in updates if isinstance(u, int)) == 7
    assert updates[-1] == "closed" and "loss" in updates[0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"lr": 0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"momentum": 1.0}, "momentum"),
        ({"betas": (0.9,)}, "betas"),
        ({"betas": (0.9, 1.0)}, r"betas\[1\]"),
        ({"eps": 0}, "eps"),
        ({"early_stopping": 3}, "early_stopping"),
        ({"validation": 1.5}, "validation"),
        ({"validation": 0.01}, "validation"),
        ({"optimizer": "adam", "nesterov": True}, "nesterov"),
    ],
)
def test_bad_arguments_raise_before_work(kwargs, match):
    X, Y = _data()
    with pytest.raises(ValueError, match=match):
        fastbp.train(NET, NET.init(seed=0), X, Y, **kwargs)


def test_bad_types_raise():
    X, Y = _data()
    p = NET.init(seed=0)
    with pytest.raises(TypeError, match="net"):
        fastbp.train("net", p, X, Y)
    with pytest.raises(TypeError, match="params"):
        fastbp.train(NET, p.flat, X, Y)
    with pytest.raises(TypeError, match="validation"):
        fastbp.train(NET, p, X, Y, validation="x")
    with pytest.raises(TypeError, match="callback"):
        fastbp.train(NET, p, X, Y, callback=3)
    with pytest.raises(ValueError, match="X"):
        fastbp.train(NET, p, X[:, :2], Y)
    with pytest.raises(ValueError, match="inplace"):
        fastbp.train(NET, p.astype("float32"), X, Y, inplace=True)
    frozen = p.copy()
    frozen.flat.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        fastbp.train(NET, frozen, X, Y, inplace=True)
    fastbp.train(NET, frozen, X, Y, epochs=1)  # fine when not in place


def test_document_003_example_loss_below_1e_3():
    """003: the 3-2-1 sigmoid network without biases, x = [0, 0, 1], y = 0,
    1/2 (y - yhat)^2, plain gradient descent with alpha = 0.5; its weights drawn
    uniform in [0, 1) as 003's ``np.random.random`` does (W_1 is 3x2, in x out)."""
    net = fastbp.Network([3, 2, 1], "sigmoid", "sse", reduction="sum", bias=False)
    rng = np.random.default_rng(0)
    p = net.params_from([rng.random((3, 2)), rng.random((2, 1))], layout="in_out")
    X = np.array([[0.0, 0.0, 1.0]])
    Y = np.array([[0.0]])
    h = fastbp.train(net, p, X, Y, optimizer="sgd", lr=0.5, epochs=1000)
    assert net.loss(h.params, X, Y) < 1e-3
    assert np.all(np.diff(h.loss) < 0)  # gradient descent on one example never goes up


def test_document_000_iris_reaches_96_percent():
    """000: the 4-8-3 sigmoid network on iris, bce summed over outputs, mean over
    the data set, full-batch gradient descent."""
    data = load_iris()
    net = fastbp.Network([4, 8, 3], "sigmoid", "bce")
    h = fastbp.train(net, net.init(seed=1), data.X, data.Y, optimizer="sgd", lr=0.2,
                     epochs=4000)
    predicted = net.predict_proba(h.params, data.X).argmax(axis=1)
    assert np.mean(predicted == data.labels) >= 0.96
    assert np.all(np.diff(h.loss) < 0)  # a step small enough for a steady descent


DETERMINISM_SCRIPT = textwrap.dedent("""
    import math, numpy as np, fastbp, sys
    from fastbp._core import Plan
    choices = []
    choose = Plan._may_run_parallel
    Plan._may_run_parallel = lambda *args: choices.append(choose(*args)) or choices[-1]
    Plan._parallel_wins = lambda *args: math.inf  # as if the serial driver never ended
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 40))
    Y = np.eye(8)[rng.integers(0, 8, 600)]
    net = fastbp.Network([40, 64, 8], ["tanh", "softmax"], "cross_entropy")
    h = fastbp.train(net, net.init(seed=1), X, Y, optimizer="adam", lr=1e-2, epochs=3,
                     batch_size=300, seed=5, validation=0.5)
    import numba
    assert choices == [True], choices  # the parallel drivers may run (when available)
    assert net.plan.last_driver == "parallel", net.plan.last_driver
    sys.stdout.write(f"{numba.get_num_threads()} {h.params.flat.tobytes().hex()}")
""")


def test_bit_identical_for_any_thread_count():
    """A batch large enough for the parallel kernels: 1 and 2 threads agree bit for bit."""
    out = {}
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads, PYTHONPATH=ROOT)
        res = subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT], env=env, cwd=ROOT,
                             capture_output=True, text=True, check=False, timeout=900)
        assert res.returncode == 0, res.stderr
        n, digest = res.stdout.split()
        assert n == threads
        out[threads] = digest
    assert out["1"] == out["2"]


def test_float32_network_trains():
    net = fastbp.Network([3, 4, 2], ["tanh", "sigmoid"], "bce", dtype="float32")
    X, Y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = fastbp.train(net, net.init(seed=0), X, Y, optimizer="adam", lr=0.05, epochs=50)
    assert h.params.dtype == np.float32
    assert h.loss[-1] < h.loss[0]


def test_long_runs_record_every_epoch():
    """The per-epoch records grow with the run (beyond their first 1024 slots)."""
    X, Y = _data()
    h = fastbp.train(NET, NET.init(seed=16), X, Y, lr=0.05, epochs=3000, validation=(X, Y))
    assert h.loss.shape == h.val_loss.shape == h.time.shape == (3000,)
    assert np.isfinite(h.loss).all() and np.isfinite(h.val_loss).all()
    assert np.all(np.diff(h.time) >= 0) and h.time[0] > 0


def test_parallel_driver_only_kept_when_it_wins_its_trial(monkeypatch):
    """A batch big enough for the parallel driver: it runs the steps only when the
    timed trial says so (and while its epochs keep up with the serial driver's
    steps), and every way the run gives the same bits."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 40))
    Y = np.eye(8)[rng.integers(0, 8, 600)]
    net = fastbp.Network([40, 64, 8], ["tanh", "softmax"], "cross_entropy")
    p = net.init(seed=1)
    serial_step = net.plan._parallel_wins(p.flat, X, Y, 100)
    assert serial_step == 0.0 or 0.0 < serial_step < 1.0  # 0: serial won; else its time
    monkeypatch.setattr(core_plan.Plan, "_may_run_parallel", lambda *args: True)
    real = tk.compiled_train_chunk
    used, bits = [], []
    # the trial says: serial wins; parallel wins; parallel wins, but the serial
    # steps take 1 ps, so the first parallel epoch sends the run back to serial
    for serial_step in (0.0, math.inf, 1e-12):
        monkeypatch.setattr(core_plan.Plan, "_parallel_wins", lambda *args, s=serial_step: s)
        drivers = set()

        def spy(records, drivers=drivers):
            fn = real(records)
            return lambda loss_grad, *args: drivers.add(loss_grad) or fn(loss_grad, *args)

        monkeypatch.setattr(tk, "compiled_train_chunk", spy)
        h = fastbp.train(net, p, X, Y, optimizer="adam", lr=1e-2, epochs=2, batch_size=100,
                         seed=5)
        used.append(drivers)
        bits.append(h.params.flat.tobytes())
    serial, parallel = (tk.driver_address(d, np.float64, 0)
                        for d in (kernels.loss_grad_serial, kernels.loss_grad_parallel))
    assert used == [{serial}, {parallel}, {parallel, serial}]
    assert bits[0] == bits[1] == bits[2]


# ---------------------------------------------------------------- state, schedules, weights


@pytest.mark.parametrize("optimizer", list(STOCHASTIC))
@pytest.mark.parametrize("shuffle", [False, True])
def test_runs_chained_by_their_state_are_one_run(optimizer, shuffle):
    """Two runs, the second from the first's ``optimizer_state`` (also after a
    pickle round trip), take the same steps as one run over all the epochs:
    moments, step count, learning rate, examples seen and shuffling carry over."""
    import pickle

    X, Y = _data(N=10)
    p = NET.init(seed=1)
    kw = dict(optimizer=optimizer, lr=0.05, batch_size=4, seed=3, shuffle=shuffle,
              lr_schedule="invscaling", power_t=0.3)
    whole = fastbp.train(NET, p, X, Y, epochs=5, **kw)
    first = fastbp.train(NET, p, X, Y, epochs=2, **kw)
    state = pickle.loads(pickle.dumps(first.optimizer_state))
    second = fastbp.train(NET, first.params, X, Y, epochs=3, state=state, **kw)
    assert np.array_equal(second.params.flat, whole.params.flat)
    assert second.optimizer_state.step == whole.optimizer_state.step == 15
    assert second.optimizer_state.seen == 50
    fresh = fastbp.train(NET, first.params, X, Y, epochs=3, **kw)
    assert not np.array_equal(fresh.params.flat, whole.params.flat)


def test_invscaling_rate_follows_the_examples_seen():
    """lr_t = lr / (t + 1)^power_t after each epoch, t the examples seen: the
    full-batch run against its NumPy transcription."""
    X, Y = _data(N=10)
    p = NET.init(seed=1)
    h = fastbp.train(NET, p, X, Y, optimizer="sgd", lr=0.5, epochs=4,
                     lr_schedule="invscaling", power_t=0.25)
    theta, rate = p.flat.copy(), 0.5
    for epoch in range(4):
        _, g = NET.loss_and_grad(fastbp.Params(NET.sizes, NET.bias, theta), X, Y)
        theta = theta - rate * g.flat
        rate = 0.5 / (10 * (epoch + 1) + 1) ** 0.25
    np.testing.assert_allclose(h.params.flat, theta, rtol=1e-12, atol=1e-15)
    assert h.optimizer_state.lr == rate


def test_adaptive_rate_divides_by_five_instead_of_stopping():
    """adaptive: when the rule would stop, lr / 5 and the count starts over;
    the run stops once lr is at most 1e-6."""
    X, Y = _data(N=10)
    rule = fastbp.EarlyStopping(2, tol=1e9, monitor="loss")  # no epoch improves
    h = fastbp.train(NET, NET.init(seed=1), X, Y, optimizer="sgd", lr=1.0, epochs=7,
                     lr_schedule="adaptive", early_stopping=rule)
    # epoch 0 sets the best; the count reaches 2 at epochs 2, 4, 6
    assert h.stop_reason == "completed" and h.epochs == 7
    assert h.optimizer_state.lr == pytest.approx(1.0 / 125, rel=1e-15)
    h = fastbp.train(NET, NET.init(seed=1), X, Y, optimizer="sgd", lr=1.0, epochs=1000,
                     lr_schedule="adaptive", early_stopping=rule)
    # 1 / 5^9 = 5.1e-7 <= 1e-6 after nine divisions, which took 18 epochs; the 19th stops
    assert h.stop_reason == "early_stopping" and h.epochs == 21
    assert h.optimizer_state.lr == pytest.approx(5.0 ** -9, rel=1e-14)


def test_sample_weight_trains_on_the_weighted_mean():
    """Full batch: every step is the weighted gradient of ``loss_and_grad``;
    minibatches: integer weights equal each row repeated, for unshuffled
    batches cut to match; unit weights are no weights."""
    X, Y = _data(N=10)
    p = NET.init(seed=1)
    w = np.array([0.0, 1.0, 2.0, 1.0, 3.0, 1.0, 0.5, 1.0, 2.0, 1.0])
    h = fastbp.train(NET, p, X, Y, optimizer="sgd", lr=0.3, epochs=3, sample_weight=w)
    theta = p.flat.copy()
    for _ in range(3):
        _, g = NET.loss_and_grad(fastbp.Params(NET.sizes, NET.bias, theta), X, Y,
                                 sample_weight=w)
        theta = theta - 0.3 * g.flat
    np.testing.assert_allclose(h.params.flat, theta, rtol=1e-12, atol=1e-15)
    J = NET.loss(p, X, Y, sample_weight=w)
    assert h.loss[0] == pytest.approx(J, rel=1e-12)
    ones = fastbp.train(NET, p, X, Y, optimizer="adam", batch_size=3, epochs=3, seed=2,
                        sample_weight=np.ones(10))
    plain = fastbp.train(NET, p, X, Y, optimizer="adam", batch_size=3, epochs=3, seed=2)
    np.testing.assert_allclose(ones.params.flat, plain.params.flat, rtol=1e-13, atol=1e-15)
    # batches of 2 rows with weights (1, 2) against batches of the 3 repeated rows
    wi = np.tile([1.0, 2.0], 5)
    rows = np.repeat(np.arange(10), wi.astype(int))
    a = fastbp.train(NET, p, X, Y, optimizer="sgd", lr=0.2, batch_size=2, shuffle=False,
                     epochs=2, sample_weight=wi)
    b = fastbp.train(NET, p, X[rows], Y[rows], optimizer="sgd", lr=0.2, batch_size=3,
                     shuffle=False, epochs=2)
    np.testing.assert_allclose(a.params.flat, b.params.flat, rtol=1e-12, atol=1e-15)


def test_lbfgs_is_scipys_lbfgs_on_the_exact_gradient():
    """optimizer="lbfgs": scipy's L-BFGS-B on J and the kernels' gradient reaches
    the same point as on the reference's, and respects its limits."""
    from scipy.optimize import minimize

    from fastbp import reference

    iris = load_iris()
    net = fastbp.Network([4, 5, 3], ["tanh", "softmax"], "cross_entropy", l2=1e-3)
    p = net.init(seed=0)
    h = fastbp.train(net, p, iris.X, iris.labels, optimizer="lbfgs", epochs=40)

    def fun(x):
        J, g = reference.loss_and_grad(net, fastbp.Params(net.sizes, net.bias, x), iris.X,
                                       iris.labels)
        return J, g.flat

    res = minimize(fun, p.flat.copy(), jac=True, method="L-BFGS-B",
                   options={"maxiter": 40, "gtol": 1e-5, "maxfun": 15000})
    assert h.epochs == res.nit and h.stop_reason in ("completed", "converged")
    np.testing.assert_allclose(h.params.flat, res.x, rtol=1e-5, atol=1e-7)
    assert len(h.loss) == h.epochs and h.loss[-1] == pytest.approx(res.fun, rel=1e-9)
    short = fastbp.train(net, p, iris.X, iris.labels, optimizer="lbfgs", epochs=500,
                         max_fun=10)
    assert short.stop_reason == "max_fun" and short.steps <= 11
    with pytest.raises(ValueError, match="batch_size: does not apply to optimizer='lbfgs'"):
        fastbp.train(net, p, iris.X, iris.labels, optimizer="lbfgs", batch_size=10)
    with pytest.raises(ValueError, match="state: belongs to optimizer 'sgd'"):
        fastbp.train(net, p, iris.X, iris.labels, optimizer="adam",
                     state=fastbp.train(net, p, iris.X, iris.labels, epochs=1).optimizer_state)


def test_lbfgs_on_a_sparse_input_follows_the_dense_run():
    """optimizer="lbfgs" with a CSR X (layer 1 over the nonzeros) reaches the
    dense run's point; the stochastic optimizers densify a sparse X."""
    from scipy import sparse

    iris = load_iris()
    X = np.where(iris.X > 3.0, iris.X, 0.0)
    net = fastbp.Network([4, 5, 3], ["tanh", "softmax"], "cross_entropy", l2=1e-3)
    p = net.init(seed=0)
    dense = fastbp.train(net, p, X, iris.labels, optimizer="lbfgs", epochs=20)
    sp = fastbp.train(net, p, sparse.csr_matrix(X), iris.labels, optimizer="lbfgs", epochs=20)
    assert sp.epochs == dense.epochs
    np.testing.assert_allclose(sp.params.flat, dense.params.flat, rtol=1e-6, atol=1e-8)
    a = fastbp.train(net, p, sparse.csr_matrix(X), iris.labels, epochs=3, batch_size=30, seed=1)
    b = fastbp.train(net, p, X, iris.labels, epochs=3, batch_size=30, seed=1)
    assert np.array_equal(a.params.flat, b.params.flat)
