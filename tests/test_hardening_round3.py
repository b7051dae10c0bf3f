"""Third round of adversarial cases, on the code added since the second: the
sparse first layer (index arrays that do not describe the matrix), the
optimizer state a run continues from, sample weights and learning rates out
of the dtype's range, the specialized code of small networks (its cache
folder and numba's cache of it), and forks while another thread holds one of
the core's locks.

Cases that could end the interpreter or hang before their fix run in a
subprocess with a timeout.
"""

import os
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import Network

sp = pytest.importorskip("scipy.sparse")

from interpreter import ROOT, run_script

_python = run_script


@pytest.fixture(scope="module")
def data():
    net = Network([5, 4, 2], "tanh", "sse")
    rng = np.random.default_rng(0)
    X = sp.random(6, 5, density=0.5, format="csr", random_state=0)
    return net, net.init(0), X, rng.normal(size=(6, 2))


# ---------------------------------------------------------------- sparse structure

# Each case: a hand-made matrix whose index arrays scipy does not re-check, and
# the message.  Before the check, the first four read or wrote outside the
# arrays (segfault), the next two returned values from rows never computed.
SPARSE_CASES = r'''
import numpy as np, scipy.sparse as sp, fastbp
net = fastbp.Network([5, 4, 2], "tanh", "sse")
one = fastbp.Network([5, 2], "identity", "sse")
p, p1 = net.init(0), one.init(0)
X0 = sp.random(6, 5, density=0.5, format="csr", random_state=0)
Y = np.zeros((6, 2))

def csr(**change):
    X = X0.copy()
    for k, v in change.items():
        getattr(X, k)[v[0]] = v[1]
    return X

def shorter():
    X = X0.copy(); X.indptr = X.indptr[:3]; return X

def down():
    X = X0.copy(); X.indptr[2] = X.indptr[4] + 3; return X

def csc():
    X = X0.tocsc(); X.indices[0] = 10**7; return X

def coo():
    X = X0.tocoo(); X.row[0] = 10**7; return X

def bsr():
    X = sp.bsr_matrix(sp.random(6, 6, density=.5, format="csr", random_state=1),
                      blocksize=(2, 2))
    X.indices[0] = 10**6
    return X

cases = {"column": lambda: csr(indices=(0, 10**7)), "negative": lambda: csr(indices=(0, -10**7)),
         "beyond": lambda: csr(indptr=(-1, 10**7)), "csc": csc, "coo": coo,
         "short": shorter, "down": down}
calls = {"loss_and_grad": lambda X: net.loss_and_grad(p, X, Y),
         "forward": lambda X: net.forward(p, X),
         "one_layer": lambda X: one.loss(p1, X, Y),
         "sgd": lambda X: fastbp.train(net, p, X, Y, epochs=1),
         "lbfgs": lambda X: fastbp.train(net, p, X, Y, epochs=1, optimizer="lbfgs")}
for case, make in cases.items():
    for call, f in calls.items():
        X = make()
        before = [a.copy() for a in (X.data, getattr(X, "indices", X.data))]
        try:
            f(X)
            print(case, call, "ACCEPTED")
        except ValueError as e:
            print(case, call, e)
        same = all(np.array_equal(a, b) for a, b in zip(before, (X.data, getattr(X, "indices", X.data))))
        print(case, call, "unmodified" if same else "MODIFIED")
B = bsr()
net6 = fastbp.Network([6, 4, 2], "tanh", "sse")
try:
    net6.loss(net6.init(0), B, Y)
    print("bsr ACCEPTED")
except ValueError as e:
    print("bsr", e)
'''

SPARSE_MESSAGES = {
    "column": r"X: not a valid sparse matrix: indices\[0\] = 10000000 is outside 0\.\.4 "
              r"\(the column count is 5\)",
    "negative": r"X: not a valid sparse matrix: indices\[0\] = -10000000 is outside 0\.\.4",
    "beyond": r"X: not a valid sparse matrix: indptr\[-1\] = 10000000 entries, but indices "
              r"has 15 and data 15",
    "csc": r"X: not a valid sparse matrix: indices\[0\] = 10000000 is outside 0\.\.5 "
           r"\(the row count is 6\)",
    "coo": r"X: not a valid sparse matrix: row\[0\] = 10000000 is outside 0\.\.5 "
           r"\(there are 6 rows\)",
    "short": r"X: not a valid sparse matrix: indptr has 3 entries, its shape \(6, 5\) needs 7",
    "down": r"X: not a valid sparse matrix: indptr decreases at \[3\] \(10 then 6\)",
}


def test_sparse_index_arrays_that_do_not_fit_the_shape_are_refused():
    """scipy does not re-check index arrays changed after construction; its
    conversions and the sparse loops index with them: they segfaulted
    (indices out of range, indptr beyond the entries) or used rows never
    computed (a short or decreasing indptr).  Every entry point refuses them
    by name now, and leaves the matrix as it was."""
    rc, out, err = _python(SPARSE_CASES, 300)
    assert rc == 0, err[-2000:]
    lines = out.splitlines()
    for case, pattern in SPARSE_MESSAGES.items():
        for call in ("loss_and_grad", "forward", "one_layer", "sgd", "lbfgs"):
            said = [ln for ln in lines if ln.startswith(f"{case} {call} ")]
            assert len(said) == 2, (case, call, out)
            assert re.search(pattern, said[0]), said[0]
            assert said[1].endswith("unmodified"), said[1]
    assert any(re.search(r"bsr X: not a valid sparse matrix: indices\[0\] = 1000000 is "
                         r"outside 0\.\.2 \(there are 3 block columns\)", ln) for ln in lines), out


def test_the_estimators_check_a_sparse_x_before_scikit_learns_validation():
    """scikit-learn's validation converts a COO X to CSR first: with a row
    index outside the shape that conversion wrote outside its arrays
    (segfault; scikit-learn's own MLPRegressor does the same)."""
    code, out, err = _python(r"""
        import numpy as np, scipy.sparse as sp
        from fastbp.sklearn import MLPRegressor
        X = sp.random(30, 5, density=0.5, format="coo", random_state=0)
        good = MLPRegressor(hidden_layer_sizes=(3,), solver="lbfgs", max_iter=2).fit(
            X, np.zeros(30))
        X.row[0] = 10**8
        for solver in ("lbfgs", "sgd"):
            try:
                MLPRegressor(hidden_layer_sizes=(3,), solver=solver, max_iter=2).fit(
                    X, np.zeros(30))
            except ValueError as e:
                print(e)
        try:
            good.predict(X)
        except ValueError as e:
            print(e)
    """, 120)
    assert code == 0, err[-2000:]
    said = "X: not a valid sparse matrix: row[0] = 100000000 is outside 0..29 (there are 30 rows)"
    assert out.splitlines() == [said] * 3

def test_valid_sparse_forms_still_give_the_dense_results(data):
    """Unsorted indices, duplicates (summed, as scipy means them), explicit
    zeros, empty rows and int64 indices are valid CSR: same J as the dense X."""
    net, p, X, Y = data
    J = net.loss(p, X.toarray(), Y)
    dup = sp.csr_matrix((np.r_[X.data[:1] / 2, X.data[:1] / 2, X.data[1:]],
                         np.r_[X.indices[:1], X.indices], np.r_[0, X.indptr[1:] + 1]),
                        shape=X.shape)
    zeros = sp.csr_matrix((np.r_[X.data, 0.0], np.r_[X.indices, 3], np.r_[X.indptr[:-1],
                          X.indptr[-1] + 1]), shape=X.shape)
    rev = X.copy()
    for e in range(6):  # each row's entries in reverse order
        a, b = rev.indptr[e], rev.indptr[e + 1]
        rev.indices[a:b] = rev.indices[a:b][::-1].copy()
        rev.data[a:b] = rev.data[a:b][::-1].copy()
    wide = X.copy()
    wide.indices, wide.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    for M in (dup, zeros, rev, wide):
        assert net.loss(p, M, Y) == pytest.approx(J, rel=1e-12)
    assert net.loss(p, sp.csr_matrix((6, 5)), Y) == net.loss(p, np.zeros((6, 5)), Y)


def test_sparse_targets_and_weights_are_named(data):
    """They used to be wrapped by NumPy into 0-d object arrays and reported as
    a wrong dtype ("got object")."""
    net, p, X, Y = data
    with pytest.raises(TypeError, match=r"Y: a scipy.sparse matrix is not accepted here; "
                                        r"pass Y.toarray\(\)"):
        net.loss(p, X, sp.csr_matrix(Y))
    with pytest.raises(TypeError, match="sample_weight: a scipy.sparse matrix is not accepted"):
        net.loss(p, X, Y, sample_weight=sp.csr_matrix(np.ones((1, 6))))
    with pytest.raises(TypeError, match=r"validation\[0\]: a scipy.sparse matrix is not "
                                        "accepted"):
        fastbp.train(net, p, X.toarray(), Y, epochs=1, validation=(X, Y))



def test_sparse_values_beyond_float32_are_named_as_such():
    """The cast overflowed to inf and was reported as "contains NaN or inf"."""
    net = Network([3, 2, 1], "tanh", "sse", dtype="float32")
    X = sp.csr_matrix(np.array([[1e39, 0.0, 1.0], [0.0, 2.0, 0.0]]))
    with pytest.raises(ValueError, match=r"X.data: 1e\+39 at \[0\] is beyond the range of "
                                         r"float32"):
        net.forward(net.init(0), X)

# ---------------------------------------------------------------- optimizer state

STATE_CASES = r'''
import dataclasses, numpy as np, fastbp
net = fastbp.Network([3, 4, 2], "tanh", "sse")
p = net.init(0)
rng = np.random.default_rng(0)
X, Y = rng.normal(size=(20, 3)), rng.normal(size=(20, 2))
kw = dict(optimizer="momentum", epochs=2, batch_size=4, seed=1)
s = fastbp.train(net, p, X, Y, **kw).optimizer_state
n = net.n_params
cases = {"big": dict(order=np.full(20, 10**9)), "negative": dict(order=np.full(20, -10**9)),
         "repeated": dict(order=np.zeros(20, np.int64)), "float": dict(order=np.arange(20) + .5),
         "shuffle": dict(shuffle=np.zeros(2, np.uint64)), "nan": dict(v=np.full(n, np.nan)),
         "complex": dict(v=np.ones(n, complex)), "step": dict(step=2**63 - 1),
         "seen": dict(seen=2**63 - 1)}
for case, change in cases.items():
    try:
        fastbp.train(net, p, X, Y, **kw, state=dataclasses.replace(s, **change))
        print(case, "ACCEPTED")
    except (TypeError, ValueError) as e:
        print(case, type(e).__name__, e)
'''

STATE_MESSAGES = {
    "big": r"ValueError state.order: \[0\] = 1000000000 is not an example of this run \(0..19\)",
    "negative": r"ValueError state.order: \[0\] = -1000000000 is not an example",
    "repeated": r"ValueError state.order: not a permutation of the run's 20 examples "
                r"\(example 1 is missing\)",
    "float": r"ValueError state.order: expected None or a 1-D array of integers",
    "shuffle": r"ValueError state.shuffle: expected None or the generator state",
    "nan": r"ValueError state.v: contains NaN or inf",
    "complex": r"TypeError state.v: expected floating values, got dtype complex128",
    "step": r"ValueError state.step: expected an integer in \[0, 4611686018427387904\]",
    "seen": r"ValueError state.seen: expected an integer in \[0, 4611686018427387904\]",
}


def test_a_tampered_optimizer_state_is_refused_by_field():
    """``state.order`` names the rows the compiled loop gathers, unchecked: out
    of range it segfaulted, repeated it trained on some rows twice; a float
    order was truncated, a NaN velocity 'diverged' at once with advice about
    the learning rate, complex moments lost their imaginary part with a
    ComplexWarning, a step or seen count near 2**63 overflowed (Adam then
    stood still, invscaling's rate became NaN); a shuffle state of two values
    failed in reshape."""
    rc, out, err = _python(STATE_CASES, 300)
    assert rc == 0, err[-2000:]
    for case, pattern in STATE_MESSAGES.items():
        line = next((ln for ln in out.splitlines() if ln.startswith(case + " ")), "")
        assert re.search(pattern, line), (case, out)


def test_a_state_is_continued_without_being_modified():
    net = Network([3, 4, 2], "tanh", "sse")
    p = net.init(0)
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(20, 3)), rng.normal(size=(20, 2))
    kw = {"optimizer": "adam", "batch_size": 4, "seed": 3}
    s = fastbp.train(net, p, X, Y, epochs=2, **kw).optimizer_state
    copies = [a.copy() for a in (s.m, s.v, s.shuffle, s.order)]
    two = fastbp.train(net, fastbp.train(net, p, X, Y, epochs=2, **kw).params, X, Y,
                       epochs=3, state=s, **kw)
    assert all(np.array_equal(a, b) for a, b in zip(copies, (s.m, s.v, s.shuffle, s.order)))
    one = fastbp.train(net, p, X, Y, epochs=5, **kw)
    assert np.array_equal(two.params.flat, one.params.flat)



def test_an_early_stopping_count_near_int64_max_stops_the_run():
    """The compiled rule adds one per epoch in int64: a count of 2**63 - 1
    carried in wrapped to a negative one, so the run never stopped, ran every
    epoch and then failed building its History (early_stopping.count < 0)."""
    net = Network([3, 4, 2], "tanh", "sse")
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(20, 3)), rng.normal(size=(20, 2))
    for count in (2**63 - 1, 5):
        rule = fastbp.EarlyStopping(3, best=np.inf, count=count)  # no epoch improves
        h = fastbp.train(net, net.init(0), X, Y, epochs=50, validation=0.25, seed=0,
                         early_stopping=rule)
        assert (h.stop_reason, h.epochs, h.early_stopping.count) == ("early_stopping", 1, 3)

# ---------------------------------------------------------------- weights and rates


@pytest.mark.parametrize("weights, dtype, match", [
    (np.full(6, 1e308), "float64",
     r"sample_weight: the weights sum to inf, beyond the range of float64"),
    (np.full(6, 1e-320), "float64",
     r"sample_weight: weight 1e-320 is too small for float64 \(1 / weight overflows"),
    (np.full(6, 1e39), "float32",
     r"sample_weight: 1e\+39 at \[0\] is beyond the range of float32"),
])
def test_weights_whose_mean_cannot_be_formed_in_the_dtype_are_refused(weights, dtype, match):
    """The weighted mean divides by a batch's sum of weights: a sum that
    overflowed gave NaN losses (train: "diverged ... try a smaller lr"; lbfgs:
    no iteration and no word), a subnormal weight an infinite scale, and a
    float32 cast that overflowed was reported as "contains NaN or inf"."""
    net = Network([3, 2], "identity", "sse", dtype=dtype)
    X = np.ones((6, 3), dtype)
    with pytest.raises(ValueError, match=match):
        net.loss(net.init(0), X, np.ones((6, 2), dtype), sample_weight=weights)
    with pytest.raises(ValueError, match=match):
        fastbp.train(net, net.init(0), X, np.ones((6, 2), dtype), epochs=1,
                     sample_weight=weights, optimizer="lbfgs")


def test_a_learning_rate_the_dtype_cannot_hold_is_refused():
    """float32(1e-50) is 0: the run silently stood still; float32(1e39) is inf."""
    net = Network([3, 2], "identity", "sse", dtype="float32")
    X, Y = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning from the check itself
        for lr, shown in ((1e-50, "0.0"), (1e39, "inf")):
            with pytest.raises(ValueError, match=re.escape(f"lr: {lr!r} is {shown} in float32")):
                fastbp.train(net, net.init(0), X, Y, lr=lr, epochs=1)


# ---------------------------------------------------------------- fork and the core's locks

FORK_WHILE_HELD = r'''
import os, sys, threading, time, numpy as np, fastbp
from fastbp._core import plan as P, small

which = sys.argv[1]
lock = {"probe": P._probe_lock, "plans": P._plans_lock, "small": small._lock}[which]
held, release = threading.Event(), threading.Event()

def hold():
    with lock:  # as a thread inside the first parallel launch, plan_for or module_for
        held.set()
        release.wait()

t = threading.Thread(target=hold)
t.start()
held.wait()
pid = os.fork()
if pid == 0:
    if which == "probe":  # the parent's first launch under way: a launch in the child
        net = fastbp.Network([60, 100, 10], "tanh", "sse")
        X = np.ones((2000, 60)) / 60  # work 2000 * 7170: far above SERIAL_BELOW
        net.loss_and_grad(net.init(0), X, np.zeros((2000, 10)))
        print("driver", net.plan.last_driver, flush=True)
    elif which == "plans":
        fastbp.Network([7, 3, 1], "tanh", "sse")
    else:
        small.module_for((2, 3, 1), (1,), (True, True), 1, 1)
    os._exit(0)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child", os.waitstatus_to_exitcode(status))
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print("child hung")
release.set()
t.join()
'''


@pytest.mark.parametrize("which", ["probe", "plans", "small"])
def test_fork_while_another_thread_holds_a_lock_of_the_core(which, tmp_path):
    """A lock held by another thread at the fork stayed held in the child for
    ever: its first call that took it waited for ever (measured: 1 fork in 20
    hung while a thread made specialized modules; a fork during the parent's
    first parallel launch hung the child's first large call).  The child
    makes them anew, and runs the serial kernels when the parent's first
    launch was under way (it may have started OpenMP's threads)."""
    script = tmp_path / "fork.py"
    script.write_text(FORK_WHILE_HELD)
    try:
        res = subprocess.run([sys.executable, str(script), which], capture_output=True,
                             text=True, timeout=200, cwd=ROOT, check=False,
                             env=dict(os.environ, PYTHONPATH=ROOT,
                                      FASTBP_CACHE_DIR=str(tmp_path / "cache")))
    except subprocess.TimeoutExpired:
        pytest.fail("the script hung")
    assert res.returncode == 0, res.stderr[-2000:]
    expected = ("driver serial\n" if which == "probe" else "") + "child 0"
    assert res.stdout.strip() == expected


# ---------------------------------------------------------------- the specialized code's files


def test_a_fifo_or_a_folder_in_place_of_a_generated_module_is_replaced(tmp_path):
    """The module's file was read whatever it was: a FIFO in its place blocked
    the read for ever, a huge file would have been read whole."""
    code, out, err = _python(r"""
        import os, sys
        from fastbp._core import small
        key = ((2, 3, 1), (1,), (True, True), 1, 1)  # sigmoid output, bce
        path = small.module_for(*key).__file__
        os.unlink(path)
        os.mkfifo(path)
        small._modules.clear()
        mod = small.module_for(*key)
        print(os.path.isfile(path), mod.__file__ == path)
        # a folder there cannot be replaced: this process's private copy instead
        os.unlink(path)
        os.mkdir(path)
        small._modules.clear()
        print(small.module_for(*key).__file__ != path)
    """, 60, FASTBP_CACHE_DIR=str(tmp_path))
    assert code == 0, err[-2000:]
    assert out.split() == ["True", "True", "True"]


def test_a_cache_folder_that_cannot_be_written_leaves_nothing_behind(tmp_path):
    """The fallback was a new temporary folder per process, never removed, and
    numba wrote a cache folder for each (one more at every run)."""
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    numba_cache = tmp_path / "numba"
    code, out, err = _python(r"""
        import os, warnings
        import numpy as np
        import fastbp
        from fastbp._core import small
        net = fastbp.Network([3, 2, 1], "sigmoid", "bce")
        X = np.linspace(-1, 1, 12).reshape(4, 3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            J = net.loss(net.init(0), X, np.array([0., 1., 1., 0.]))
        print(net.plan.last_driver, os.path.dirname(small.module_for(
            (3, 2, 1), (1,), (True, True), 1, 1).__file__), J)
    """, 200, FASTBP_CACHE_DIR=str(blocked), FASTBP_SMALL="always",
        NUMBA_CACHE_DIR=str(numba_cache))
    assert code == 0, err[-2000:]
    driver, folder, J = out.split()
    assert driver == "small"
    assert not os.path.exists(folder)  # removed at exit
    assert not any("fastbp-small" in p.name for p in numba_cache.iterdir())
    net = Network([3, 2, 1], "sigmoid", "bce")
    X = np.linspace(-1, 1, 12).reshape(4, 3)
    assert float(J) == net.loss(net.init(0), X, np.array([0., 1., 1., 0.]))


def test_unreadable_cache_files_of_the_sparse_loops_and_the_specialized_code_heal(tmp_path):
    """A garbled numba cache file of the sparse loops made every sparse call
    fail ("invalid literal for int()") until it was deleted by hand; one of a
    specialized module turned that code off in every later process, with a
    warning each time.  Both are now deleted and compiled again, once."""
    script = r"""
        import glob, os, sys, warnings
        import numpy as np, scipy.sparse as sp
        import fastbp
        net = fastbp.Network([3, 2, 1], "sigmoid", "bce")
        p = net.init(0)
        X = np.linspace(-1, 1, 12).reshape(4, 3)
        Y = np.array([0., 1., 1., 0.])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Js = net.loss_and_grad(p, sp.csr_matrix(X), Y)[0]
            J = net.loss_and_grad(p, X, Y)[0]
        print(Js, J, net.plan.last_driver, len(caught))
        print("warned:", *(str(w.message) for w in caught), file=sys.stderr)
        if sys.argv[1] == "garble":
            files = [f for f in glob.glob(os.path.join(os.environ["NUMBA_CACHE_DIR"], "*", "*.nbi"))
                     if os.path.basename(f).startswith(("sparse.", "net_"))]
            for f in files:
                with open(f, "w") as fh:
                    fh.write("garbage")
            print(len(files))
    """
    env = {"FASTBP_CACHE_DIR": str(tmp_path / "small"), "FASTBP_SMALL": "always",
           "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    path = tmp_path / "heal.py"
    path.write_text(textwrap.dedent(script))
    runs = []
    for arg in ("garble", "again", "after"):
        res = subprocess.run([sys.executable, str(path), arg], capture_output=True, text=True,
                             timeout=300, cwd=ROOT, check=False, env=dict(os.environ, PYTHONPATH=ROOT, **env))
        assert res.returncode == 0, res.stderr[-2000:]
        runs.append((res.stdout.split(), res.stderr))
    first, healed, after = (r[0] for r in runs)
    assert int(first[4]) >= 3  # the sparse loops' two files and the module's
    assert first[:3] == healed[:3] == after[:3]  # same J, and the specialized code ran
    assert first[2] == "small"
    assert healed[3] == "1" and "numba's cache of the compiled core could not be read" in runs[1][1]
    assert after[3] == "0"


def test_the_sparse_first_layer_checks_its_memory_before_allocating(monkeypatch):
    """Its activations, transposed weights and gradient were allocated (and
    written) unchecked; only the dense layers after it checked theirs."""
    from fastbp._core import memory

    net = Network([5, 2500, 1], "tanh", "sse")  # a^(1) of 5000 rows: 100 MB
    X = sp.random(5000, 5, density=0.2, format="csr", random_state=0)
    monkeypatch.setattr(memory, "available_memory", lambda: 80 << 20)
    for call in (net.forward, lambda p, X: net.loss_and_grad(p, X, np.zeros(5000))):
        with pytest.raises(MemoryError, match=r"the sparse first layer of a batch of 5000 "
                                              r"examples: needs 9[0-9.]+ MiB, more than the "
                                              r"80.0 MiB"):
            call(net.init(0), X)


def test_lbfgs_checks_the_memory_of_scipys_workspace_first(monkeypatch):
    """scipy's L-BFGS-B allocates ~240 bytes per parameter (for 10
    corrections), 30 to 60 times the parameters' own memory, unchecked."""
    from fastbp._core import memory

    net = Network([200, 2000, 1], "tanh", "sse")  # 404,001 parameters: 116 MB for lbfgs
    X, Y = np.ones((3, 200)), np.zeros(3)
    p = net.init(0)
    monkeypatch.setattr(memory, "available_memory", lambda: 80 << 20)
    with pytest.raises(MemoryError, match=r"train\(optimizer='lbfgs'\): needs 11[0-9.]+ MiB, "
                                          r"more than the 80.0 MiB"):
        fastbp.train(net, p, X, Y, optimizer="lbfgs", epochs=1)


def test_a_deep_narrow_network_gets_no_specialized_code():
    """200 layers of one unit are 200 parameters: the specialized module was
    made for them, and its first call compiled for 108 s in 1.3 GB."""
    code, out, err = _python(r"""
        import numpy as np, fastbp
        net = fastbp.Network([1] * 201, "tanh", "sse", bias=False)
        net.loss_and_grad(net.init(0), np.full((5, 1), 0.5), np.zeros((5, 1)))
        print(net.plan.last_driver)
    """, 60, FASTBP_SMALL="always")
    assert code == 0, err[-2000:]
    assert out.strip() == "serial"


def test_the_command_line_names_weights_whose_sum_overflows_in_one_line(tmp_path, capsys):
    """Its own check summed the weights first: NumPy's two-line overflow warning
    (with a source line) came before the error."""
    from fastbp import cli

    rows = ["a,b,y,w"] + [f"{i / 10},{1 - i / 10},{i % 2},1e308" for i in range(10)]
    path = tmp_path / "w.csv"
    path.write_text("\n".join(rows) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = cli.main(["train", str(path), "--target", "y", "--sample-weight", "w",
                         "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == ("fastbp: error: sample_weight: the weights sum to inf, beyond the range "
                   "of float64 (1.798e+308); scale them down\n")
