"""Fourth round of adversarial cases, over the whole public surface.

What failed, and is tested here: the quick path of the specialized code (a
read-only X, a 0-d Y, an X without rows, strided views), the drivers' scratch
per example (sized by the micro-kernel's KC, not the network), optimizer
constants that the float32 dtype rounds to 0, inf or 1 and negative Adam
moments in a state, an estimator's network drawn before its memory was
checked, model-file destinations where no file can be created or whose name
is too long, the CSR form of a huge sparse X, a threading layer that numba
cannot start, unknown FASTBP_* settings and NUMBA_DISABLE_JIT.

What held: inputs as memmaps, np.matrix, big-endian, float16 and longdouble
arrays, negative and column strides, broadcast views, object, complex,
structured and datetime dtypes; targets and sample weights of every odd dtype
and shape; every option of ``train`` at and beyond its range (counts near and
beyond int64, NaN and inf reals, tampered states, stopping rules, callbacks
that raise or return arrays); thread-count changes between calls and from a
callback, threads with different thread counts, concurrent and re-entrant
training (bit-identical results); two SIGINTs during an in-place run;
multiprocessing pools with fork, forkserver and spawn after parallel calls;
the scikit-learn estimators' parameters, labels, warm starts and tampered
fitted attributes; the command line's arguments; sparse index dtypes and
formats; gradcheck's arguments.

Cases that could end the interpreter or hang before their fix run in a
subprocess with a timeout.
"""

import os
import warnings

import numpy as np
import pytest
from interpreter import run_script

import fastbp
from fastbp import Network
from fastbp._core import plan as core_plan

_python = run_script


def same_bits(a, b):
    return np.asarray(a).tobytes() == np.asarray(b).tobytes()


# ---------------------------------------------------------------- the quick path


@pytest.fixture
def quick(monkeypatch):
    """003's network (the one test_small specializes first) on its specialized
    code from the first call, warnings as errors: a network whose quick path
    (``Plan.quick_loss_and_grad``) is live."""
    monkeypatch.setattr(core_plan, "SMALL_POLICY", "always")
    net = Network([3, 2, 1], ["sigmoid", "sigmoid"], "sse", bias=False)
    rng = np.random.default_rng(0)
    p, X, Y = net.init(0), rng.normal(size=(6, 3)), rng.uniform(size=(6, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        J, g = net.loss_and_grad(p, X, Y)
        assert net.plan.last_driver == "small" and net.plan.quick
        yield net, p, X, Y, J, g


def test_the_quick_path_takes_a_read_only_x(quick):
    """Its compiled call handed X as the (never written) dJ/dX matrix: numba
    refused to type a read-only X there, and the plan took that for a broken
    module: a page-long warning and the generic drivers for good."""
    net, p, X, Y, J, g = quick
    ro = X.copy()
    ro.setflags(write=False)
    J1, g1 = net.loss_and_grad(p, ro, Y)
    assert net.plan.last_driver == "small" and net.plan.quick
    assert J1 == J and same_bits(g1.flat, g.flat)


@pytest.mark.parametrize("Y, exc, match", [
    (np.array(0.5), ValueError, r"Y: expected shape \(6, 1\), got \(\)"),
    (np.zeros((1, 6, 1)), ValueError, r"Y: expected shape \(6, 1\), got \(1, 6, 1\)"),
])
def test_the_quick_path_leaves_targets_of_another_rank_to_the_checks(quick, Y, exc, match):
    """A 0-d Y reached the compiled call, whose typing failed: the specialized
    code was dropped for good with a page-long warning."""
    net, p, X, _, _, g = quick
    with pytest.raises(exc, match=match):
        net.loss_and_grad(p, X, Y)
    assert net.plan.quick and same_bits(net.loss_and_grad(p, X, quick[3])[1].flat, g.flat)


def test_the_quick_path_names_an_x_without_rows(quick):
    """Its scale 1 / N raised a bare ZeroDivisionError."""
    net, p, X, Y, *_ = quick
    with pytest.raises(ValueError, match=r"X: no examples \(N = 0\)"):
        net.loss_and_grad(p, X[:0], Y[:0])


def test_the_quick_path_sends_strided_views_through_the_checks(quick):
    """A view that is not C-contiguous (a column of Y, a Fortran X) compiled
    the module's code again for its layout, seconds per layout; the checked
    path copies it instead.  Same bits either way."""
    net, p, X, Y, J, g = quick
    # the quick path's own call, so that its C-contiguous compile is made here
    # whatever ran before in this process
    assert net.loss_and_grad(p, X, Y)[0] == J
    assert net.plan.specialized().quick_loss_grad.signatures
    wide = np.repeat(Y, 2, axis=1)
    for args in ((np.asfortranarray(X), Y), (X, wide[:, 0]), (X[::-1][::-1], Y)):
        compiled = len(net.plan.specialized().quick_loss_grad.signatures)
        J1, g1 = net.loss_and_grad(p, *args)
        assert J1 == J and same_bits(g1.flat, g.flat)
        assert len(net.plan.specialized().quick_loss_grad.signatures) == compiled


# ---------------------------------------------------------------- workspaces


def test_the_drivers_scratch_grows_with_the_network_not_with_the_block_size(monkeypatch):
    """Each example of a block had KC values of packing buffer (256 in
    float64 on AVX2) whatever the network's widths: 4.8 KB per example for a
    4-5-3 network of 32-byte rows, so a forward pass over 10**6 such rows
    asked for 4.5 GiB (10**7 rows: 48 GiB) and was refused."""
    from fastbp._core import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 30)
    net = Network([4, 5, 3], ["tanh", "softmax"], "cross_entropy")
    p = net.init(0)
    X = np.random.default_rng(0).normal(size=(1000, 4))
    big = np.tile(X, (1000, 1))  # 10**6 rows, 32 MB
    out = net.forward(p, big)
    assert same_bits(out[:1000], net.forward(p, X))
    J, g = net.loss_and_grad(p, big[:200_000], np.zeros(200_000, dtype=np.int64))
    assert np.isfinite(J) and np.isfinite(g.flat).all()


# ---------------------------------------------------------------- training options


@pytest.fixture(scope="module")
def f32():
    net = Network([4, 5, 3], ["tanh", "softmax"], "cross_entropy", dtype="float32")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    X[:, 0] = 0.0  # the weights of input 0 get a gradient of exactly 0
    return net, net.init(0), X, rng.integers(0, 3, 30)


@pytest.mark.parametrize("kwargs, match", [
    ({"optimizer": "adam", "eps": 1e-50}, r"eps: 1e-50 is 0\.0 in float32, the network's dtype"),
    ({"optimizer": "adam", "eps": 1e39}, r"eps: 1e\+39 is inf in float32"),
    ({"optimizer": "adam", "betas": (0.9, 1 - 1e-9)}, r"betas\[1\]: 0\.999999999 is 1 in float32"),
    ({"optimizer": "adam", "betas": (1 - 1e-9, 0.9)}, r"betas\[0\]: 0\.999999999 is 1 in float32"),
    ({"optimizer": "momentum", "momentum": 1 - 1e-9}, r"momentum: 0\.999999999 is 1 in float32"),
])
def test_optimizer_constants_the_dtype_cannot_hold_are_refused(f32, kwargs, match):
    """Checked as Python floats, they were rounded to 0, inf or 1 in the
    compiled update: Adam's 0 / 0 (eps 0 where a gradient entry stays 0) or its
    bias correction 1 - beta^t = 0 gave NaN at once, reported as divergence
    with the advice to lower lr; an eps of inf silently froze the run."""
    net, p, X, Y = f32
    with pytest.raises(ValueError, match=match):
        fastbp.train(net, p, X, Y, epochs=1, **kwargs)


def test_a_state_with_negative_second_moments_is_refused(f32):
    """sqrt(v) of a tampered v < 0 is NaN: reported as divergence, 'try a
    smaller lr'."""
    import dataclasses

    net, p, X, Y = f32
    state = fastbp.train(net, p, X, Y, optimizer="adam", epochs=1, seed=0).optimizer_state
    bad = dataclasses.replace(state, v=-np.ones_like(state.v))
    with pytest.raises(ValueError, match=r"state\.v: Adam's second moments are squares "
                                         r"\(>= 0\); got -1\.0 at \[0\]"):
        fastbp.train(net, p, X, Y, optimizer="adam", epochs=1, state=bad)
    # the velocity of momentum may be negative
    state = fastbp.train(net, p, X, Y, optimizer="momentum", epochs=1).optimizer_state
    fastbp.train(net, p, X, Y, optimizer="momentum", epochs=1,
                 state=dataclasses.replace(state, v=-np.ones_like(state.v)))


# ---------------------------------------------------------------- scikit-learn estimators


def test_an_estimator_checks_the_memory_of_its_network_before_drawing_it(monkeypatch):
    """The initial weights were drawn (in float64) before any check:
    hidden_layer_sizes=(10**9,) on 4 features ended in NumPy's "Unable to
    allocate 29.8 GiB", and one that fitted in memory but not twice over was
    only refused later by the training run."""
    pytest.importorskip("sklearn")
    from fastbp._core import memory
    from fastbp.sklearn import MLPClassifier

    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 30)
    X, y = np.zeros((6, 4)), np.arange(6) % 3
    with pytest.raises(MemoryError, match=r"hidden_layer_sizes: a network of layer sizes "
                                          r"\[4, 20000000, 3\] \(1\.6e\+08 parameters\): "
                                          r"needs 4\.2 GiB, more than the 1\.0 GiB"):
        MLPClassifier(hidden_layer_sizes=(2 * 10**7,), max_iter=1).fit(X, y)


# ---------------------------------------------------------------- model files


@pytest.fixture(scope="module")
def tiny():
    net = Network([3, 2], "identity", "sse")
    return net, net.init(0)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_destination_where_no_file_can_be_created_is_named_before_any_work(tiny):
    """/proc/version is a regular file in a folder that takes no new files:
    check_destination accepted it, so ``fastbp train --save`` trained first and
    then failed naming the temporary file '/proc/.version.XXXXXXXX.tmp'."""
    with pytest.raises(OSError, match=r"--save '/proc/version': cannot create a file in "
                                      r"'/proc'"):
        fastbp.io.check_destination("/proc/version", "--save")
    with pytest.raises(OSError, match=r"path '/proc/version': cannot create"):
        fastbp.save("/proc/version", *tiny)


def test_long_file_names_are_saved_or_refused_at_once(tiny, tmp_path):
    """The temporary file was named '.NAME.XXXXXXXX.tmp': a name of 245 to 255
    bytes, which the file system takes, could not be saved at all; one of more
    than 255 failed at the final rename, naming the temporary file."""
    net, p = tiny
    ok = tmp_path / ("m" * 247 + ".npz")  # 251 bytes
    fastbp.save(ok, net, p)
    assert same_bits(fastbp.load(ok)[1].flat, p.flat)
    assert os.listdir(tmp_path) == [ok.name]
    longest = os.pathconf(tmp_path, "PC_NAME_MAX")
    with pytest.raises(ValueError, match=rf"a file name of {longest + 1} bytes, more than the "
                                         rf"{longest} its file system takes"):
        fastbp.save(tmp_path / ("m" * (longest - 3) + ".npz"), net, p)


# ---------------------------------------------------------------- environment variables


def test_a_threading_layer_that_cannot_start_leaves_the_serial_kernels():
    """numba.get_num_threads() starts the layer the user named: an unknown
    name (or 'tbb' without TBB) raised there, in every call, the serial ones
    of a tiny network too.  Now: one warning, then the serial twins."""
    code, out, err = _python("""
        import warnings
        import numpy as np, fastbp
        small = fastbp.Network([3, 2], "identity", "sse")
        big = fastbp.Network([40, 64, 8], ["relu", "softmax"], "cross_entropy")
        X, Y = np.ones((3000, 40)), np.zeros(3000, dtype=int)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            small.loss_and_grad(small.init(0), X[:4, :3], np.zeros((4, 2)))
            J, g = big.loss_and_grad(big.init(0), X, Y)
            h = fastbp.train(big, big.init(0), X, Y, epochs=1, batch_size=1000)
        print(big.plan.last_driver, h.stop_reason, len(w))
        print(w[0].message)
    """, 120, NUMBA_THREADING_LAYER="bogus")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "serial completed 1"
    assert lines[1].startswith("fastbp: numba's threading layer 'bogus' could not be started")


def test_unknown_settings_are_named_and_case_is_ignored():
    """FASTBP_SMALL=ALWAYS (or any typo) was taken silently as 'never'."""
    code, out, err = _python("""
        import warnings
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            from fastbp._core import plan
        print(plan.SMALL_POLICY, plan.POLICY)
        print(*(str(x.message) for x in w), sep="\\n")
    """, 60, FASTBP_SMALL="ALWAYS", FASTBP_LAUNCH="fast")
    assert code == 0, err
    assert out.splitlines() == [
        "always threshold",
        "FASTBP_LAUNCH='fast' is not one of threshold, adaptive; using 'threshold'"]


def test_numba_disable_jit_is_named_at_import():
    """The import ended in "AttributeError: 'function' object has no
    attribute 'py_func'"."""
    code, _, err = _python("import fastbp", 60, NUMBA_DISABLE_JIT="1")
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "ImportError: fastbp: NUMBA_DISABLE_JIT=1 is set, but fastbp's core runs only as "
        "compiled code (unset NUMBA_DISABLE_JIT to use it)")


# ---------------------------------------------------------------- sparse inputs


def test_the_csr_form_of_a_sparse_x_is_checked_before_scipy_makes_it(monkeypatch):
    """A COO X of 10**12 rows (one nonzero) ended in NumPy's "Unable to
    allocate 7.28 TiB" from inside scipy's conversion."""
    sp = pytest.importorskip("scipy.sparse")
    from fastbp._core import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 30)
    net = Network([5, 4, 2], "tanh", "sse")
    X = sp.coo_matrix((np.ones(1), (np.array([10**12 - 1]), np.array([0]))), shape=(10**12, 5))
    with pytest.raises(MemoryError, match=r"X: the CSR form of a sparse matrix of shape "
                                          r"\(1000000000000, 5\): needs 14\.6 TiB"):
        net.forward(net.init(0), X)
