"""Second round of adversarial cases: what reaches the compiled core (targets,
masked arrays, byte order, aliases of the parameters, tampered Params), model
files on paths that are not regular files, fork while another thread compiles,
and memory that grows with the epochs of a run.

Cases that hang or could end the interpreter before their fix run in a
subprocess with a timeout.
"""

import os
import pickle
import re
import socket
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import fastbp
from fastbp import Network, Params
from fastbp._core import memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(script, timeout):
    """(returncode, stdout, stderr) of ``script`` in a fresh interpreter; a run
    past ``timeout`` seconds fails the test instead of hanging it."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(textwrap.dedent(script))
    try:
        res = subprocess.run([sys.executable, f.name], env=dict(os.environ, PYTHONPATH=ROOT),
                             cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                             check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the script ran past {timeout} s (hung)")
    finally:
        os.unlink(f.name)
    return res.returncode, res.stdout, res.stderr


@pytest.fixture
def small():
    net = Network([3, 4, 2], "tanh", "sse")
    rng = np.random.default_rng(0)
    return net, net.init(0), rng.normal(size=(6, 3)), rng.normal(size=(6, 2))


# ---------------------------------------------------------------- targets


@pytest.mark.parametrize("call", ["loss_and_grad", "loss"])
def test_targets_none_is_a_type_error_naming_y(small, call):
    """It used to reach the compiled core and fail there with numba's typing error."""
    net, p, X, _ = small
    with pytest.raises(TypeError, match=r"Y: expected the targets, an array of shape \(6, 2\), "
                                         "got None"):
        getattr(net, call)(p, X, None)


# ---------------------------------------------------------------- masked arrays


def test_masked_arrays_are_refused_not_read_through_their_mask(small):
    """np.asarray drops the mask: the values under it were used as data (a NaN
    under the mask was reported as a NaN in X)."""
    net, p, X, Y = small
    Xm = np.ma.masked_array(X.copy(), mask=np.zeros(X.shape, bool))
    Xm.mask[0, 0] = True
    Xm.data[0, 0] = np.nan
    with pytest.raises(TypeError, match="X: masked arrays are not supported"):
        net.loss_and_grad(p, Xm, Y)
    with pytest.raises(TypeError, match="Y: masked arrays are not supported"):
        net.loss(p, X, np.ma.masked_array(Y))
    with pytest.raises(TypeError, match=r"validation\[0\]: masked arrays are not supported"):
        fastbp.train(net, p, X, Y, epochs=1, validation=(Xm, Y))
    with pytest.raises(TypeError, match="flat: expected a NumPy array, got a masked array"):
        Params(p.sizes, p.bias, np.ma.masked_array(p.flat))


# ---------------------------------------------------------------- Params


@pytest.mark.parametrize("sizes, bias, exc, match", [
    ((3, -4, 2), (True, True), ValueError, r"sizes: widths must be >= 1, got -4"),
    ((3, 0, 2), (True, True), ValueError, r"sizes: widths must be >= 1, got 0"),
    ((3.7, 4, 2), (True, True), TypeError, r"sizes: widths must be integers, got 3.7"),
    ("32", (True,), TypeError, "sizes: expected a sequence of layer widths"),
    ((3, 2), (1,), TypeError, r"bias: expected 1 bools, got \[1\]"),
    ((3, 2), ("x",), TypeError, "bias: expected 1 bools"),
    ((3, 2), True, TypeError, "bias: expected a sequence of 1 bools"),
])
def test_params_check_their_layout(sizes, bias, exc, match):
    """Sizes were truncated (3.7 -> 3), read digit by digit ("32" -> (3, 2)),
    allowed to be 0 or negative ("expected -22 parameters"); flags were any
    truthy value."""
    with pytest.raises(exc, match=match):
        Params(sizes, bias, np.ones(8))


def test_a_pickle_cannot_build_params_that_disagree_with_their_layout():
    class Tampered:
        def __reduce__(self):
            return (Params, ((3.7, 4, 2), (1, "x"), np.ones(26)))

    with pytest.raises(TypeError, match="sizes: widths must be integers"):
        pickle.loads(pickle.dumps(Tampered()))


def test_params_of_the_other_byte_order_are_converted(small):
    """Refused with "dtype must be float32 or float64, got >f8", though the
    docstring promises a copy of any vector not in the kernels' form."""
    net, p, X, Y = small
    swapped = p.flat.astype(p.flat.dtype.newbyteorder("S"))
    q = Params(p.sizes, p.bias, swapped)
    assert q.flat.dtype == np.float64 and q.flat.dtype.isnative and q == p
    assert net.loss_and_grad(q, X, Y)[0] == net.loss_and_grad(p, X, Y)[0]
    with pytest.raises(TypeError, match=r"flat: dtype must be float32 or float64 in the "
                                        r"machine's byte order, got .f8 \(convert with "
                                        r"flat.astype\('float64'\)\)"):
        q.flat = swapped  # the setter never copies: it says how to convert


# ---------------------------------------------------------------- aliasing


@pytest.mark.parametrize("which", ["X", "Y", "validation[0]"])
def test_inplace_training_refuses_data_inside_the_parameters(small, which):
    """With inplace=True every update also rewrote the data that lay in the
    memory of params.flat, silently."""
    net, p, X, Y = small
    q = p.copy()
    inside = {"X": q.flat[:18].reshape(6, 3), "Y": q.flat[:12].reshape(6, 2),
              "validation[0]": q.flat[:18].reshape(6, 3)}[which]
    args = {"X": (inside, Y, None), "Y": (X, inside, None),
            "validation[0]": (X, Y, (inside, Y))}[which]
    with pytest.raises(ValueError, match=re.escape(which) + ": shares memory with params.flat"):
        fastbp.train(net, q, args[0], args[1], epochs=3, inplace=True, validation=args[2])
    assert q == p  # refused before any step
    # without inplace the run trains a copy: the same data is fine
    fastbp.train(net, q, args[0], args[1], epochs=3, validation=args[2])
    assert q == p


# ---------------------------------------------------------------- callbacks


def test_a_callback_answer_without_a_truth_value_names_the_callback(small):
    net, p, X, Y = small
    with pytest.raises(TypeError, match="callback: must return True .stop., False or None, "
                                        "got ndarray"):
        fastbp.train(net, p, X, Y, epochs=10**6, callback=lambda h: np.array([1, 2]))


# ---------------------------------------------------------------- model files


def test_save_refuses_what_is_not_a_regular_file(small, tmp_path):
    """The atomic write renamed its temporary file over the destination: a FIFO
    (or, for root, /dev/null itself) was replaced by a model file."""
    net, p, _, _ = small
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="fifo'?: is a FIFO, not a regular file"):
        fastbp.save(fifo, net, p)
    assert os.path.exists(fifo) and not os.path.isfile(fifo)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        with pytest.raises(ValueError, match="is a socket, not a regular file"):
            fastbp.save(tmp_path / "sock", net, p)
    # checked, never written: check_destination alone is safe on a device
    with pytest.raises(ValueError, match="'/dev/null': is a character device"):
        fastbp.io.check_destination("/dev/null")
    assert list(tmp_path.iterdir()) and not [f for f in tmp_path.iterdir()
                                             if f.name.endswith(".tmp")]


def test_load_refuses_a_fifo_at_once(tmp_path):
    """Opening a FIFO waits for a writer: load hung for ever."""
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    code, out, err = _python(f"""
        import fastbp
        try:
            fastbp.load({str(fifo)!r})
        except fastbp.ModelFileError as e:
            print(e)
    """, timeout=60)
    assert code == 0, err
    assert out.strip() == f"{fifo}: is a FIFO, not a model file"


def test_saving_a_network_whose_description_is_too_long_names_the_network(tmp_path):
    net = Network([1] * 100_001, "tanh", "sse")
    with pytest.raises(ValueError, match=r"^net: \d+ bytes of JSON with the network "
                                         "description"):
        fastbp.save(tmp_path / "deep.npz", net, Params.zeros(net.sizes, net.bias))
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- fork


def test_fork_while_another_thread_compiles():
    """A child forked while another thread held numba's compiler lock (compiling
    or loading a kernel from the cache, as a thread's first train() does)
    inherited the lock held, and its own first compilation waited for ever.
    Forks now wait for the lock."""
    code, out, err = _python("""
        import os, threading, time
        import numpy as np
        import fastbp
        from numba.core.compiler_lock import global_compiler_lock

        held = threading.Event()

        def compiling():
            with global_compiler_lock:  # as a thread compiling a kernel holds it
                held.set()
                time.sleep(1.0)

        t = threading.Thread(target=compiling)
        t.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            # float32: kernels this process has not loaded, so the child compiles
            net = fastbp.Network([3, 4, 2], "tanh", "sse", dtype="float32")
            h = fastbp.train(net, net.init(0), np.ones((5, 3)), np.ones((5, 2)), epochs=2)
            os._exit(0 if h.epochs == 2 else 3)
        t.join()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                print("child", os.waitstatus_to_exitcode(status))
                break
            time.sleep(0.1)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print("child hung")
    """, timeout=200)
    assert code == 0, err
    assert out.strip() == "child 0"


def test_fork_while_another_thread_runs_a_parallel_region():
    """A child forked at any moment while another thread of the parent is
    inside a parallel gradient (GNU OpenMP's team busy) runs the serial kernels
    and gives the parent's bits; none crashes or hangs."""
    code, out, err = _python("""
        import os, random, threading, time
        import numpy as np
        import fastbp

        net = fastbp.Network([40, 64, 8], ["tanh", "softmax"], "cross_entropy")
        p = net.init(1)
        rng = np.random.default_rng(0)
        X, Y = rng.normal(size=(600, 40)), rng.integers(0, 8, 600)
        J0, g0 = net.loss_and_grad(p, X, Y)
        assert net.plan.last_driver == "parallel", net.plan.last_driver
        expected = g0.flat.copy()

        stop = threading.Event()
        calls = [0]

        def compute():
            while not stop.is_set():
                J, g = net.loss_and_grad(p, X, Y)
                if not np.array_equal(g.flat, expected):
                    os._exit(7)
                calls[0] += 1

        t = threading.Thread(target=compute, daemon=True)
        t.start()
        while calls[0] < 3:
            time.sleep(0.001)
        results = []
        pick = random.Random(0)
        for i in range(5):
            time.sleep(pick.uniform(0.0, 0.02))
            pid = os.fork()
            if pid == 0:
                try:
                    J, g = net.loss_and_grad(p, X, Y)
                    ok = (np.array_equal(g.flat, expected) and J == J0
                          and net.plan.last_driver == "serial")
                    os._exit(0 if ok else 1)
                except BaseException:
                    os._exit(2)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    results.append(os.waitstatus_to_exitcode(status))
                    break
                time.sleep(0.01)
            else:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                results.append("hung")
        stop.set()
        t.join()
        print("children", results, "parent calls", calls[0] > 3)
    """, timeout=120)
    assert code == 0, err
    assert out.strip() == "children [0, 0, 0, 0, 0] parent calls True", out


# ---------------------------------------------------------------- resources


def test_per_epoch_records_beyond_the_memory_available_are_refused(monkeypatch):
    """A run of a huge ``epochs`` grows its per-epoch records as it goes (32
    bytes an epoch, doubling): past the memory available, a MemoryError naming
    them rather than the system killing the process."""
    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 26)  # 64 MiB
    net = Network([1, 1], "identity", "sse")
    with pytest.raises(MemoryError, match=r"train: the per-epoch records of \d+ epochs: "
                                          r"needs [\d.]+ MiB, more than the 64\.0 MiB"):
        fastbp.train(net, net.init(0), np.ones((1, 1)), np.ones((1, 1)), lr=1e-9,
                     epochs=5_000_000)
