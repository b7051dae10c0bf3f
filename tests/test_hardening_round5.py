"""Fifth round of adversarial cases, in the three sections of memory safety,
threads and processes, and resource limits: 146 cases (88, 20 and 38).

What failed, and is tested here.  Memory safety: the plan's empty
``no_targets`` passed as the targets of N rows (the kernels read N rows
beyond its end: a loss of 4e225), a 2-D or list vector in a ``Params.wrap``
(a numba typing error), a Network whose widths, dtype, l2 or loss were set
with object.__setattr__ (rows read past the end of X, or silently trained as
another network: its description is now read from its plan), a frozen
EarlyStopping with fields set the same way (numba typing errors, a KeyError,
a run refused only at its end), ragged nested lists (NumPy's message without
the argument), and sparse matrices whose index arrays answer the structure
check right and later reads wrong (segfault in the first layer's loops, in
scipy's toarray and tocsr, and behind the estimators' validation: the arrays
are now read once, copied and checked).  Threads and signals: a signal
handler that built a network while its thread was building one (a deadlock
on the plans' lock), and a signal handler's exception (a SIGALRM timeout
raising TimeoutError during the first call) taken for an unreadable cache
file (the whole cache deleted, the call redone for 10 s past the timeout).
Resource limits: C-contiguous copies of broadcast or strided views (X,
validation sets, a Params vector), the one-hot rows of class labels, cgroup
v1's memory limit and the address-space limit (``ulimit -v``), none of them
checked before allocating, and a CSV of one endless line (/dev/zero) read
into memory without bound by the command line.

What held: ndarray subclasses (one lying about its shape), objects with
``__array__`` or ``__array_interface__``, torch and jax arrays, memmaps,
views of one array as X and Y or of the parameters as X, COO, BSR, DIA, LIL
and DOK inputs with indices outside their shape, every odd dtype of
X, targets and weights tried; outputs, gradients, dX and states never
aliasing each other or the inputs; tampered optimizer states (every field);
inputs, labels, parameters and sparse indices changed by another thread
during calls (no crash); 8 threads with mixed batch sizes on one plan, threads
with different thread counts, concurrent and in-place training in threads,
threadpoolctl limits (bit-identical results); re-entrant gradients from a
signal handler, KeyboardInterrupt at random points of calls and of training
(same bits after), forks from a callback, from a thread during a training
chunk and while another thread builds plans, a handler using a small
network while another's module compiles; file descriptors over 200 saves,
loads and failures, saving with one descriptor left; metadata nested 10**5
deep or cyclic; networks of 20 000 to 10**6 layers; counts near and beyond
int64 in train, lbfgs, the estimators and the command line.

Not fixed: a signal handler calling fastbp while its thread is inside
numba's first compilation or lazy imports re-enters numba's compiler, which
is not re-entrant (a RecursionError in importlib); an ImportError from such
an interrupted import still counts as a cache error.

Cases that could end the interpreter or hang before their fix run in a
subprocess with a timeout.
"""

import numpy as np
import pytest
from interpreter import run_script

import fastbp
from fastbp import Network, Params
from fastbp._core import memory


def same_bits(a, b):
    return np.asarray(a).tobytes() == np.asarray(b).tobytes()


@pytest.fixture(scope="module")
def sse():
    net = Network([4, 5, 2], "tanh", "sse")
    rng = np.random.default_rng(0)
    return net, net.init(0), rng.normal(size=(20, 4)), rng.normal(size=(20, 2))


@pytest.fixture
def one_gib(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 30)


# ---------------------------------------------------------------- memory safety


@pytest.mark.parametrize("call", ["loss_and_grad", "loss"])
def test_the_plans_empty_targets_are_not_taken_as_the_targets_of_n_rows(sse, call):
    """The targets of a call without any (``net.plan.no_targets``, 0 rows)
    passed the quick checks of any call: a loss and gradient were computed
    from the memory beyond its end (an overflow warning for sse, a loss of
    4e225 for cross_entropy)."""
    net, p, X, _ = sse
    with pytest.raises(ValueError, match=r"Y: expected shape \(20, 2\), got \(0, 2\)"):
        getattr(net, call)(p, X, net.plan.no_targets)
    assert same_bits(net.forward(p, X), net.forward(p, X.copy()))


@pytest.mark.parametrize("flat, exc, match", [
    (lambda n: np.ones((n, 1)), ValueError,
     r"params\.flat: expected a 1-D vector of 37 parameters, got shape \(37, 1\)"),
    (lambda n: list(np.ones(n)), TypeError, r"params\.flat: expected a NumPy array, got list"),
])
def test_params_made_without_the_checks_are_checked_before_the_core(sse, flat, exc, match):
    """``Params.wrap`` (and a replaced ``_flat``) skip the setter's checks: a
    2-D vector of the right length reached the compiled screen (a page-long
    numba typing error), a list an AttributeError."""
    net, _, X, Y = sse
    q = Params.wrap(net.sizes, net.bias, flat(net.n_params))
    with pytest.raises(exc, match=match):
        net.loss_and_grad(q, X, Y)
    with pytest.raises(exc, match=match):
        net.forward(q, X)


@pytest.mark.parametrize("field, value", [("sizes", (3, 5, 2)), ("dtype", np.dtype("float32")),
                                          ("l2", -1.0), ("loss_name", "cross_entropy"),
                                          ("bias", (False, False))])
def test_a_network_cannot_be_told_another_description_than_its_plans(sse, field, value):
    """Network's attributes were slots that object.__setattr__ could set: a
    first width of 3 on a plan of 4 let rows of 3 values through to kernels
    that read 4 (past the end of X), another l2 or loss trained or checked
    targets silently for a network the kernels were not made for."""
    net = sse[0]
    tampered = Network([4, 5, 2], "tanh", "sse")
    with pytest.raises(AttributeError, match=rf"property '{field}' of 'Network' object has no "
                                             "setter"):
        object.__setattr__(tampered, field, value)
    assert tampered == net and tampered.to_dict() == {
        "sizes": [4, 5, 2], "activations": ["tanh", "tanh"], "loss": "sse",
        "reduction": "mean", "l2": 0.0, "bias": [True, True], "dtype": "float64"}


@pytest.mark.parametrize("field, value, match", [
    ("patience", 2**70, r"early_stopping\.patience: expected an integer >= 1 \(at most 2\*\*63"),
    ("best", "x", r"early_stopping\.best: expected a number or None, got 'x'"),
    ("monitor", "bogus", r"early_stopping\.monitor: expected one of \['auto'"),
    ("patience", 0, r"early_stopping\.patience: expected an integer >= 1, got 0"),
])
def test_a_tampered_stopping_rule_is_checked_before_the_run(sse, field, value, match):
    """A frozen EarlyStopping whose field was set with object.__setattr__
    reached the compiled rule as it was: a patience beyond int64 or a text
    for best gave numba's page-long typing error, an unknown monitor a
    KeyError, and a patience of 0 ran the whole run, failing only at its end."""
    net, p, X, Y = sse
    rule = fastbp.EarlyStopping(3)
    object.__setattr__(rule, field, value)
    with pytest.raises(ValueError, match=match):
        fastbp.train(net, p, X, Y, epochs=2, validation=0.3, early_stopping=rule)


def test_ragged_inputs_name_their_argument(sse):
    """NumPy's "setting an array element with a sequence" named nothing."""
    net, p, X, Y = sse
    ragged = [[1.0, 2.0, 3.0, 4.0], [1.0]]
    with pytest.raises(ValueError, match=r"^X: not an array of numbers \(setting an array"):
        net.forward(p, ragged)
    with pytest.raises(ValueError, match=r"^Y: not an array of numbers"):
        net.loss(p, X[:2], [[1.0, 2.0], [1.0]])
    with pytest.raises(ValueError, match=r"^sample_weight: not an array of numbers"):
        net.loss(p, X[:2], Y[:2], sample_weight=[1.0, [1.0, 2.0]])


# Sparse matrices whose ``indices`` answer the first read (the structure
# check) with the right array and every later one with columns (rows) far
# outside the matrix: the first layer's loops, or scipy's conversion (the
# dense copy of a one-layer network's X, CSC to CSR, scikit-learn's
# validation), indexed with the array of a later read (segfault, exit 139).
LYING_SPARSE = r'''
import numpy as np, scipy.sparse as sp, fastbp
from fastbp.sklearn import MLPRegressor

def liar(base):
    class Liar(base):
        reads, armed = 0, False

        @property
        def indices(self):
            if not Liar.armed:
                return self._ind
            Liar.reads += 1
            if Liar.reads == 1:
                return self._ind
            bad = self._ind.copy()
            bad[:50] = 10**8
            return bad

        @indices.setter
        def indices(self, v):
            self._ind = v
    return Liar

net = fastbp.Network([40, 16, 3], ["relu", "identity"], "sse")
one = fastbp.Network([40, 3], "identity", "sse")
est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=1).fit(np.ones((5, 40)), np.ones(5))
Y = np.zeros((300, 3))
calls = {"csr": lambda S: net.loss(net.init(0), S, Y),
         "one_layer": lambda S: one.loss(one.init(0), S, Y),
         "csc": lambda S: net.forward(net.init(0), S),
         "train": lambda S: fastbp.train(net, net.init(0), S, Y, epochs=1),
         "estimator": lambda S: est.predict(S)}
for call, f in calls.items():
    base = sp.csc_matrix if call == "csc" else sp.csr_matrix
    Liar = liar(base)
    S = Liar(sp.random(300, 40, density=0.1, format="csc" if call == "csc" else "csr",
                       random_state=0))
    honest = base(S, copy=True)
    Liar.armed = True
    out, ref = f(S), f(honest)
    out, ref = (o.params.flat if call == "train" else o for o in (out, ref))
    print(call, Liar.reads, np.asarray(out).tobytes() == np.asarray(ref).tobytes(), flush=True)
'''


def test_scipy_and_the_sparse_loops_read_only_index_arrays_that_were_checked():
    """Each index array is now read once, copied and checked: the results are
    those of the matrix the first read described."""
    pytest.importorskip("sklearn")
    code, out, err = run_script(LYING_SPARSE, 120)
    assert code == 0, err
    assert out.splitlines() == [f"{call} 1 True" for call in
                                ("csr", "one_layer", "csc", "train", "estimator")]


# ---------------------------------------------------------------- threads and signals


def test_a_signal_handler_may_build_a_network_while_one_is_being_built():
    """Building a plan holds the lock of the plans' table; a handler that ran
    in the same thread meanwhile (SIGALRM every 0.5 ms) and built a network
    waited for that lock for ever."""
    code, out, err = run_script("""
        import signal, time
        import numpy as np, fastbp
        n = [0]
        def handler(sig, frame):
            fastbp.Network([3, 4, 2], "tanh", "sse", l2=0.5)
            n[0] += 1
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
        t0, k = time.time(), 0
        while time.time() - t0 < 1.5:
            fastbp.Network([3, 4, 2], "tanh", "sse", l2=float(k % 7))
            k += 1
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        a = fastbp.Network([3, 4, 2], "tanh", "sse", l2=0.5)
        print(n[0] > 100, a.plan is fastbp.Network([3, 4, 2], "tanh", "sse", l2=0.5).plan)
    """, 60)
    assert code == 0, err
    assert out.split() == ["True", "True"]


def test_an_exception_of_a_signal_handler_is_not_taken_for_a_cache_error():
    """A SIGALRM handler raising TimeoutError (a timeout on the first call)
    while numba loaded the core's cache: the exception passed through numba's
    caching code, so the whole cache was deleted with a warning that it could
    not be read, and the call was made again, compiling for 10 s past the
    timeout.  Here a frame of numba's caching module calls what raises."""
    import functools
    import pickle

    from numba.core import caching

    from fastbp._core.numba_private import is_cache_error

    # a function whose code says it lies in numba's caching module, as the
    # frames of a cache read do
    namespace = {}
    exec(compile("def read(load):\n    return load()\n", caching.__file__, "exec"),  # noqa: S102
         namespace)

    def handler():
        raise TimeoutError("the call took too long")

    for load, expected in ((handler, False),
                           (functools.partial(pickle.loads, b"\x80\x04garbage"), True)):
        with pytest.raises(Exception) as info:
            namespace["read"](load)
        assert is_cache_error(info.value) is expected


# ---------------------------------------------------------------- resource limits


@pytest.mark.parametrize("make, match", [
    (lambda: np.broadcast_to(np.ones(4), (4 * 10**6, 4)),
     r"X: a C-contiguous float64 copy of shape \(4000000, 4\): needs 122\.1 MiB"),
    (lambda: np.broadcast_to(np.ones(4, np.float32), (4 * 10**6, 4)),
     r"X: a C-contiguous float64 copy of shape \(4000000, 4\): needs 122\.1 MiB"),
])
def test_the_copy_of_a_view_is_checked_before_it_is_made(sse, monkeypatch, make, match):
    """A broadcast view of one row stands for any number of rows: its
    C-contiguous copy (the kernels' form) was allocated unchecked (NumPy's
    "Unable to allocate 29.8 GiB" for 10**9 rows; a smaller excess filled
    memory until the system ended the process)."""
    net, p, _, _ = sse
    monkeypatch.setattr(memory, "available_memory", lambda: 100 << 20)
    with pytest.raises(MemoryError, match=match):
        net.forward(p, make())
    with pytest.raises(MemoryError, match=r"^validation\[0\]: a C-contiguous float64 copy"):
        fastbp.train(net, p, np.ones((4, 4)), np.ones((4, 2)), epochs=1,
                     validation=(make(), np.broadcast_to(np.ones(2), (4 * 10**6, 2))))


def test_the_one_hot_rows_of_class_labels_are_checked_before_they_are_made(one_gib):
    """10**6 labels over 1000 classes made 8 GB of one-hot rows (touching a
    page per row) before the batch's memory check refused the call."""
    net = Network([4, 5, 1000], ["tanh", "softmax"], "cross_entropy")
    labels = np.broadcast_to(np.int64(1), (10**6,))
    with pytest.raises(MemoryError, match=r"^Y: the one-hot rows of 1000000 class labels over "
                                          r"1000 classes: needs 7\.5 GiB"):
        net.loss(net.init(0), np.broadcast_to(np.ones(4), (10**6, 4)), labels)


def test_params_check_the_copy_of_a_view_before_making_it(one_gib):
    """``Params`` copied a broadcast view of 10**9 parameters (8 GB) unchecked."""
    with pytest.raises(MemoryError, match=r"^flat: a C-contiguous copy: needs 7\.5 GiB"):
        Params((10**5, 10**4), (False,), np.broadcast_to(1.0, (10**9,)))


def test_a_cgroup_v1_memory_limit_is_the_memory_available(tmp_path, monkeypatch):
    """Only cgroup v2's files were read: under cgroup v1 (older container
    hosts) MemAvailable is the whole machine's, so a container limited to a
    few GiB allowed allocations the system then killed it for."""
    limit, usage = tmp_path / "limit", tmp_path / "usage"
    limit.write_text(f"{3 << 30}\n")
    usage.write_text(f"{1 << 30}\n")
    monkeypatch.setattr(memory, "CGROUP_FILES", ((str(tmp_path / "none"), str(usage)),
                                                 (str(limit), str(usage))))
    avail = memory.available_memory()
    assert avail <= 2 << 30
    with pytest.raises(MemoryError, match=rf"needs 4\.0 GiB, more than the "
                                          rf"{memory._size(avail)} of memory available"):
        memory.check_memory("a test", 4 << 30)


@pytest.mark.skipif(not __import__("os").path.exists("/dev/zero"), reason="needs /dev/zero")
def test_the_command_line_reads_no_line_beyond_its_limit():
    """``fastbp train /dev/zero`` read its one endless line into memory until
    the system ended the process."""
    code, _, err = run_script("""
        import sys
        from fastbp import cli
        from fastbp.cli import csvdata
        csvdata.LINE_LIMIT = 1 << 16
        sys.exit(cli.main(["train", "/dev/zero", "--target", "t", "--no-progress"]))
    """, 30)
    assert code == 1
    assert err.strip().splitlines() == [
        "fastbp: error: /dev/zero, line 1: longer than 65536 characters (not a CSV file?)"]


def test_an_address_space_limit_counts_in_the_memory_available(monkeypatch):
    """Under ``ulimit -v`` a batch's buffers beyond the limit (but within
    MemAvailable) passed the check and failed in NumPy's "Unable to allocate
    854. MiB for an array with shape (1000000, 112)", which names no call."""
    import resource

    net = Network([40, 64, 8], ["relu", "softmax"], "cross_entropy")
    p, X = net.init(0), np.ones((200_000, 40))
    net.forward(p, X[:10])  # the kernels are loaded before the limit is set
    with open("/proc/self/status", encoding="ascii") as f:
        size = int(f.read().split("VmSize:")[1].split()[0]) * 1024
    real = resource.getrlimit
    monkeypatch.setattr(resource, "getrlimit", lambda r: (size + (200 << 20), -1)
                        if r == resource.RLIMIT_AS else real(r))
    assert 0 < memory.available_memory() <= 200 << 20
    # acts and deltas, 200000 x 225 float64 values (343.3 MiB), and the scratch
    with pytest.raises(MemoryError, match=r"^a batch of 200000 examples: needs 34[34]\.\d MiB, "
                                          r"more than the \d+\.\d MiB of memory available"):
        net.forward(p, X)
