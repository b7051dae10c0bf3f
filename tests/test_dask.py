"""fastbp.dask on LocalClusters (threads and processes): the chunked sum's bits
for any number of workers, a lost worker, the workers' numba hazards, bad
input, training over the cluster and the estimators' Dask paths."""

import os
import signal
import threading
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="the 'dask' extra (dask[array]) is not installed")
distributed = pytest.importorskip("distributed",
                                  reason="the 'dask' extra (distributed) is not installed")

import fastbp
import fastbp.dask as fd
from fastbp.dask import _chunks

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning",
                                        "ignore::DeprecationWarning")


def _cluster(**kw):
    kw.setdefault("n_workers", 2)
    kw.setdefault("threads_per_worker", 1)
    cluster = distributed.LocalCluster(dashboard_address=":0", silence_logs=40, **kw)
    return cluster, distributed.Client(cluster)


@pytest.fixture(scope="module")
def threads2():
    cluster, client = _cluster(processes=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def threads1():
    cluster, client = _cluster(processes=False, n_workers=1)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def procs2():
    cluster, client = _cluster(processes=True)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def clients(threads1, threads2, procs2):
    return {"threads-1": threads1, "threads-2": threads2, "processes-2": procs2}


def _data(N=1000, n_0=6, n_L=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, n_0)).astype(dtype)
    y = rng.integers(0, n_L, N)
    w = rng.uniform(0.5, 2.0, N).astype(dtype)
    return X, y, w


NET = fastbp.Network([6, 5, 3], ["tanh", "softmax"], "cross_entropy", l2=0.01)
CHUNKINGS = [250, (90, 200, 10, 300, 1, 399)]


def _bits(a):
    return np.asarray(a).tobytes()


# ---------------------------------------------------------------------- the tree


def test_tree_adds_neighbours_in_order():
    # a non-commutative "addition" shows the tree's shape
    assert fd.tree(list("abcde"), lambda a, b: f"({a}{b})") == "(((ab)(cd))e)"
    assert fd.tree(["x"], lambda a, b: a + b) == "x"
    with pytest.raises(ValueError, match="no chunks"):
        fd.tree([], lambda a, b: a + b)


def test_chunked_equals_one_call_to_rounding():
    X, y, w = _data()
    for weights in (None, w):
        J0, g0 = NET.loss_and_grad(NET.init(seed=0), X, y, sample_weight=weights)
        for chunks in CHUNKINGS:
            J, g = fd.chunked_loss_and_grad(NET, NET.init(seed=0), X, y, chunks,
                                            sample_weight=weights)
            assert J == pytest.approx(J0, rel=1e-13)
            np.testing.assert_allclose(g.flat, g0.flat, rtol=1e-11, atol=1e-15)


def test_sum_reduction_and_float32():
    X, y, _ = _data(dtype=np.float32)
    net = fastbp.Network([6, 5, 3], ["relu", "softmax"], "cross_entropy", reduction="sum",
                         dtype="float32", l2=0.1)
    p = net.init(seed=3)
    J0, g0 = net.loss_and_grad(p, X, y)
    J, g = fd.chunked_loss_and_grad(net, p, X, y, 128)
    assert g.flat.dtype == np.float32
    assert J == pytest.approx(J0, rel=1e-5)
    np.testing.assert_allclose(g.flat, g0.flat, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- on the cluster


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=["even", "uneven"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_cluster_gradient_is_the_chunked_bits(clients, chunks, weighted):
    X, y, w = _data()
    p = NET.init(seed=1)
    ref = fd.chunked_loss_and_grad(NET, p, X, y, chunks, sample_weight=w if weighted else None)
    Xd = da.from_array(X, chunks=(chunks, -1))
    yd = da.from_array(y, chunks=Xd.chunks[0])
    wd = da.from_array(w, chunks=Xd.chunks[0]) if weighted else None
    for name, client in clients.items():
        J, g = fd.loss_and_grad(NET, p, Xd, yd, sample_weight=wd, client=client)
        assert _bits(J) == _bits(ref[0]), name
        assert _bits(g.flat) == _bits(ref[1].flat), name
    # the default client (the last one made) answers the same
    J, g = fd.loss_and_grad(NET, p, Xd, yd, sample_weight=wd)
    assert _bits(g.flat) == _bits(ref[1].flat)
    assert p.flat.tobytes() == NET.init(seed=1).flat.tobytes()  # input untouched


def test_two_chunkings_differ_only_by_rounding(threads2):
    X, y, _ = _data()
    p = NET.init(seed=2)
    out = [fd.loss_and_grad(NET, p, da.from_array(X, chunks=(c, -1)),
                            da.from_array(y, chunks=c), client=threads2)[1].flat
           for c in (100, 333)]
    np.testing.assert_allclose(out[0], out[1], rtol=1e-12, atol=1e-16)


def _slow(block):
    time.sleep(0.25)
    return block


def test_lost_worker_changes_nothing(procs2):
    X, y, w = _data(N=800)
    p = NET.init(seed=4)
    ref = fd.chunked_loss_and_grad(NET, p, X, y, 100, sample_weight=w)
    Xd = da.from_array(X, chunks=(100, -1)).map_blocks(_slow, dtype=X.dtype)
    yd = da.from_array(y, chunks=100)
    wd = da.from_array(w, chunks=100)
    before = set(procs2.scheduler_info(n_workers=-1)["workers"])
    victim = min(before)

    nanny = next(n for n in procs2.cluster.workers.values() if n.worker_address == victim)
    pid = nanny.pid
    out = []
    run = threading.Thread(target=lambda: out.append(fd.loss_and_grad(
        NET, p, Xd, yd, sample_weight=wd, client=procs2)))
    run.start()
    # killed while it runs one of the gradient's tasks (8 chunks of 0.25 s)
    deadline = time.monotonic() + 30
    while not procs2.processing(workers=[victim]).get(victim):
        assert time.monotonic() < deadline and run.is_alive()
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    run.join(60)
    J, g = out[0]
    assert _bits(J) == _bits(ref[0]) and _bits(g.flat) == _bits(ref[1].flat)
    procs2.wait_for_workers(2, timeout=30)
    assert victim not in procs2.scheduler_info(n_workers=-1)["workers"]


# ---------------------------------------------------------------------- numba on workers


def test_threaded_worker_runs_parallel_kernels_concurrently():
    # one worker, two threads: two chunks at once, each big enough for the
    # parallel driver (numba's thread-safe layer, or fastbp's serial fallback)
    net = fastbp.Network([150, 100, 5], ["tanh", "softmax"], "cross_entropy")
    X, y, _ = _data(N=800, n_0=150, n_L=5)
    p = net.init(seed=0)
    ref = fd.chunked_loss_and_grad(net, p, X, y, 200)
    cluster, client = _cluster(processes=False, n_workers=1, threads_per_worker=2)
    with cluster, client:
        for _ in range(3):
            _J, g = fd.loss_and_grad(net, p, da.from_array(X, chunks=(200, -1)),
                                    da.from_array(y, chunks=200), client=client)
            assert _bits(g.flat) == _bits(ref[1].flat)
    import numba

    assert numba.threading_layer() in ("omp", "tbb")
    # the chunks' plan (same process: threads) ran the parallel driver
    assert _chunks.sum_network(net).plan.last_driver == "parallel"


def _layer():
    import numba

    from fastbp import _core

    return os.environ.get("NUMBA_THREADING_LAYER"), _core.parallel_available(), \
        numba.config.THREADING_LAYER


def test_workqueue_workers_run_serial_kernels_same_bits():
    net = fastbp.Network([150, 100, 5], ["tanh", "softmax"], "cross_entropy")
    X, y, _ = _data(N=800, n_0=150, n_L=5)
    p = net.init(seed=0)
    ref = fd.chunked_loss_and_grad(net, p, X, y, 200)
    cluster, client = _cluster(processes=True, n_workers=1, threads_per_worker=2,
                               env={"NUMBA_THREADING_LAYER": "workqueue"})
    with cluster, client:
        _J, g = fd.loss_and_grad(net, p, da.from_array(X, chunks=(200, -1)),
                                da.from_array(y, chunks=200), client=client)
        (layer,) = client.run(_layer).values()
    assert layer == ("workqueue", False, "workqueue")
    assert _bits(g.flat) == _bits(ref[1].flat)


def test_first_call_waits_for_the_host_lock(procs2):
    # while another process holds the first-call lock, a worker's first call
    # of a new (network, rows) waits (no two processes compile into the cache
    # at once); released, it runs and gives the chunked bits
    import fcntl

    net = fastbp.Network([6, 7, 3], ["sigmoid", "softmax"], "cross_entropy")
    X, y, _ = _data(N=91)
    p = net.init(seed=5)
    ref = fd.chunked_loss_and_grad(net, p, X, y, 91)
    fdesc = os.open(_chunks.lock_path(), os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fdesc, fcntl.LOCK_EX)
    result = []
    worker = threading.Thread(target=lambda: result.append(fd.loss_and_grad(
        net, p, da.from_array(X, chunks=(91, -1)), da.from_array(y, chunks=91),
        client=procs2)))
    try:
        worker.start()
        worker.join(1.5)
        assert worker.is_alive() and not result
    finally:
        fcntl.flock(fdesc, fcntl.LOCK_UN)
        os.close(fdesc)
    worker.join(30)
    assert _bits(result[0][1].flat) == _bits(ref[1].flat)


def test_threads_per_task_share_the_host(procs2):
    from fastbp.dask import _workers

    counts = _workers.threads_per_task(procs2)
    workers = procs2.scheduler_info(n_workers=-1)["workers"]
    assert set(counts) == set(workers)
    assert set(counts.values()) == {max(1, _workers.host_cores() // 2)}


# ---------------------------------------------------------------------- bad input


def test_bad_input_is_named_before_any_work(threads1):
    X, y, _ = _data(N=100)
    p = NET.init(seed=0)
    Xd = da.from_array(X, chunks=(50, -1))
    yd = da.from_array(y, chunks=50)
    with pytest.raises(TypeError, match=r"X: expected a dask.array.Array.*chunked_loss_and_grad"):
        fd.loss_and_grad(NET, p, X, yd, client=threads1)
    with pytest.raises(TypeError, match="Y: expected a dask.array.Array"):
        fd.loss_and_grad(NET, p, Xd, y, client=threads1)
    with pytest.raises(ValueError, match=r"Y: row chunks \(40, 60\) are not X's \(50, 50\)"):
        fd.loss_and_grad(NET, p, Xd, da.from_array(y, chunks=(40, 60)), client=threads1)
    with pytest.raises(ValueError, match="X: chunked along its columns"):
        fd.loss_and_grad(NET, p, da.from_array(X, chunks=(50, 3)), yd, client=threads1)
    with pytest.raises(ValueError, match="X: expected 6 columns"):
        fd.loss_and_grad(NET, p, Xd[:, :5], yd, client=threads1)
    with pytest.raises(ValueError, match="X: unknown chunk sizes"):
        fd.loss_and_grad(NET, p, Xd[Xd[:, 0] > 0], yd, client=threads1)
    with pytest.raises(ValueError, match="sample_weight: row chunks"):
        fd.loss_and_grad(NET, p, Xd, yd, sample_weight=da.ones(100, chunks=25),
                         client=threads1)
    with pytest.raises(TypeError, match="client: expected a distributed.Client"):
        fd.loss_and_grad(NET, p, Xd, yd, client="tcp://127.0.0.1:1")
    with pytest.raises(TypeError, match="net: expected fastbp.Network"):
        fd.loss_and_grad("net", p, Xd, yd, client=threads1)
    with pytest.raises(ValueError, match="chunks: expected chunk lengths"):
        fd.chunked_loss_and_grad(NET, p, X, y, (50, 49))
    # a value the kernels refuse is named by the worker's checks
    Xbad = X.copy()
    Xbad[70, 2] = np.nan
    with pytest.raises(ValueError, match="X"):
        fd.loss_and_grad(NET, p, da.from_array(Xbad, chunks=(50, -1)), yd, client=threads1)


# ---------------------------------------------------------------------- training


def _train_data():
    X, y, _w = _data(N=600)
    Xv, yv, _ = _data(N=200, seed=9)
    dask_args = (da.from_array(X, chunks=(150, -1)), da.from_array(y, chunks=150))
    dval = (da.from_array(Xv, chunks=(100, -1)), da.from_array(yv, chunks=100))
    return (X, y, Xv, yv), dask_args, dval


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
def test_training_follows_fastbp_train(threads2, optimizer):
    (X, y, Xv, yv), (Xd, yd), dval = _train_data()
    p = NET.init(seed=0)
    kw = {"optimizer": optimizer, "lr": 0.1, "epochs": 12}
    ref = fastbp.train(NET, p, X, y, validation=(Xv, yv), seed=0, **kw)
    h = fd.train(NET, p, Xd, yd, validation=dval, client=threads2, **kw)
    assert h.epochs == ref.epochs == 12 and h.steps == ref.steps == 12
    np.testing.assert_allclose(h.loss, ref.loss, rtol=1e-12)
    np.testing.assert_allclose(h.val_loss, ref.val_loss, rtol=1e-12)
    assert np.array_equal(h.val_accuracy, ref.val_accuracy)
    assert h.best_epoch == ref.best_epoch
    np.testing.assert_allclose(h.params.flat, ref.params.flat, rtol=1e-10, atol=1e-13)
    assert h.optimizer_state.step == 12
    assert p.flat.tobytes() == NET.init(seed=0).flat.tobytes()


def test_training_bits_for_any_worker_count(clients):
    _, (Xd, yd), dval = _train_data()
    p = NET.init(seed=1)
    runs = {}
    for name, client in [*clients.items(), ("threads-2 scatter", clients["threads-2"])]:
        runs[name] = fd.train(NET, p, Xd, yd, optimizer="adam", lr=0.05, epochs=4,
                              batch_chunks=1, seed=7, validation=dval, client=client,
                              send_params="scatter" if "scatter" in name else "graph")
    first = runs["threads-1"]
    assert first.steps == 16  # 4 chunks, one a step
    for name, h in runs.items():
        assert _bits(h.params.flat) == _bits(first.params.flat), name
        assert _bits(h.loss) == _bits(first.loss) and _bits(h.val_loss) == _bits(
            first.val_loss), name
    # a full batch takes other steps
    full = fd.train(NET, p, Xd, yd, optimizer="adam", lr=0.05, epochs=4,
                    client=clients["threads-2"])
    assert full.steps == 4 and not np.allclose(full.params.flat, first.params.flat)


def test_early_stopping_and_restore_as_fastbp_train(threads2):
    (X, y, Xv, yv), (Xd, yd), dval = _train_data()
    p = NET.init(seed=2)
    # the accuracy peaks at epoch 5 of 10: the best epoch's parameters come back
    kw = {"optimizer": "momentum", "lr": 3.0, "epochs": 60,
              "early_stopping": fastbp.EarlyStopping(4, monitor="val_accuracy")}
    ref = fastbp.train(NET, p, X, y, validation=(Xv, yv), seed=0, **kw)
    h = fd.train(NET, p, Xd, yd, validation=dval, client=threads2, **kw)
    assert ref.stop_reason == "early_stopping" and ref.best_epoch < ref.epochs - 1
    assert (h.stop_reason, h.epochs, h.best_epoch) == (ref.stop_reason, ref.epochs,
                                                       ref.best_epoch)
    assert h.early_stopping == ref.early_stopping
    np.testing.assert_allclose(h.params.flat, ref.params.flat, rtol=1e-9, atol=1e-12)


def test_callback_sees_the_history_and_stops(threads1):
    _, (Xd, yd), _ = _train_data()
    seen = []

    def callback(h):
        seen.append(h.epochs)
        return h.epochs == 3

    h = fd.train(NET, NET.init(seed=0), Xd, yd, epochs=10, callback=callback, client=threads1)
    assert h.stop_reason == "callback" and h.epochs == 3
    assert seen == [1, 2, 3, 3]  # each epoch, then the final history


def test_lbfgs_follows_fastbp_train(threads2):
    (X, y, _, _), (Xd, yd), _ = _train_data()
    p = NET.init(seed=3)
    ref = fastbp.train(NET, p, X, y, optimizer="lbfgs", epochs=15)
    h = fd.train(NET, p, Xd, yd, optimizer="lbfgs", epochs=15, client=threads2)
    assert (h.epochs, h.stop_reason) == (ref.epochs, ref.stop_reason)
    np.testing.assert_allclose(h.loss, ref.loss, rtol=1e-10)
    np.testing.assert_allclose(h.params.flat, ref.params.flat, rtol=1e-6, atol=1e-8)


def test_training_options_checked_before_any_work(threads1):
    (_X, _y, Xv, yv), (Xd, yd), _dval = _train_data()
    p = NET.init(seed=0)
    with pytest.raises(TypeError, match="validation: expected \\(Xv, Yv\\)"):
        fd.train(NET, p, Xd, yd, validation=0.2, client=threads1)
    with pytest.raises(TypeError, match="validation\\[0\\]: expected a dask.array"):
        fd.train(NET, p, Xd, yd, validation=(Xv, yv), client=threads1)
    with pytest.raises(ValueError, match="send_params: 'scatter' needs a client"):
        fd.train(NET, p, Xd, yd, send_params="scatter")
    with pytest.raises(ValueError, match="early_stopping: needs a validation set"):
        fd.train(NET, p, Xd, yd, early_stopping=2, client=threads1)
    with pytest.raises(ValueError, match="batch_chunks: does not apply"):
        fd.train(NET, p, Xd, yd, optimizer="lbfgs", batch_chunks=2, client=threads1)
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        fd.train(NET, p, Xd, yd, optimizer="rmsprop", client=threads1)


# ---------------------------------------------------------------------- scikit-learn


def test_partial_fit_under_dask_ml_incremental(threads1):
    # Incremental feeds the blocks to partial_fit one after another: serial,
    # so the fit is the bits of partial_fit on each block in order
    wrappers = pytest.importorskip("dask_ml.wrappers", reason="dask-ml is not installed")
    from fastbp.sklearn import MLPClassifier

    X, y, _ = _data(N=600)
    Xd, yd = da.from_array(X, chunks=(200, -1)), da.from_array(y, chunks=200)

    def make():
        return MLPClassifier(hidden_layer_sizes=(5,), solver="adam", batch_size=50,
                             learning_rate_init=0.01, random_state=0)

    inc = wrappers.Incremental(make(), shuffle_blocks=False)
    inc.fit(Xd, yd, classes=[0, 1, 2])
    by_hand = make()
    for k in range(3):
        by_hand.partial_fit(X[200 * k:200 * (k + 1)], y[200 * k:200 * (k + 1)],
                            classes=[0, 1, 2])
    for a, b in zip(inc.estimator_.coefs_ + inc.estimator_.intercepts_,
                    by_hand.coefs_ + by_hand.intercepts_):
        assert _bits(a) == _bits(b)
    assert inc.estimator_.t_ == 600
    assert np.array_equal(inc.predict(Xd).compute(), by_hand.predict(X))


def test_without_a_cluster_dask_threads_give_the_same_bits():
    import dask

    X, y, w = _data()
    p = NET.init(seed=6)
    ref = fd.chunked_loss_and_grad(NET, p, X, y, 125, sample_weight=w)
    with dask.config.set(scheduler="threads", num_workers=2):
        J, g = fd.loss_and_grad(NET, p, da.from_array(X, chunks=(125, -1)),
                                da.from_array(y, chunks=125),
                                sample_weight=da.from_array(w, chunks=125))
    assert _bits(J) == _bits(ref[0]) and _bits(g.flat) == _bits(ref[1].flat)
