"""The register micro-kernel and the GEMM driver against NumPy, and the promise of
their summation order: every C[i, j] is one chain of fused multiply-adds over k
in order, so its bits do not depend on how M, N or K are cut into blocks, nor on
the vector width.

The widths other than this host's run in subprocesses (``FASTBP_VECTOR_BITS`` is
read at import); wider than the host's, LLVM splits each vector into several
registers, which tests the layout and masks, not the speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

import fastbp
from fastbp._core import microkernel as mk
from fastbp._core.config import ERROR_MODEL, FASTMATH
from fastbp._core.functions import ACTIVATIONS, times_derivative
from fastbp._core.functions import relu as relu_fn

DTYPES = (np.float64, np.float32)
RTOL = {np.float64: 1e-12, np.float32: 1e-5}


def assert_product(got, X, Y, dtype, what="", C0=0.0):
    """|got - (C0 + X Y)| <= rtol (|C0| + |X| |Y|) entrywise: the forward error bound
    of a sum of products, so entries that are small by cancellation are judged
    fairly."""
    X, Y, C0 = X.astype(np.float64), Y.astype(np.float64), np.asarray(C0, np.float64)
    err = np.abs(got.astype(np.float64) - (C0 + X @ Y))
    bound = RTOL[dtype] * (np.abs(C0) + np.abs(X) @ np.abs(Y)) + 1e-300
    assert (err <= bound).all(), f"{what}: worst error / bound {np.max(err / bound):.3g}"


@njit(cache=mk.CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _kernel(k, a, b, c, ldc, accumulate, mr, nr):
    mk.micro_kernel(k, a, 0, b, 0, c, 0, ldc, accumulate, mr, nr)


@njit(cache=mk.CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _kernel_rows(k, a, b, b_off, ldb, c, ldc, accumulate, mr, nr, code, act, bias=None,
                 bias_off=-1, relu=False):
    bias = act[:0] if bias is None else bias
    mk.micro_kernel_rows(k, a, 0, b, b_off, ldb, c, 0, ldc, accumulate, mr, nr, code, act,
                         bias, bias_off, relu)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _times_derivative(code, d, a):
    """d[k] f'(z) from a[k] = f(z), one value at a time (``times_derivative``)."""
    out = d.copy()
    for k in range(d.shape[0]):
        out[k] = times_derivative(code, d[k], a[k])
    return out


@intrinsic
def _fma(typingctx, x, y, z):
    """x * y + z with one rounding (llvm.fma): the reference chain's step."""
    if not (isinstance(x, types.Float) and x == y == z):
        return None

    def codegen(context, builder, sig, args):
        T = args[0].type
        name = f"llvm.fma.f{64 if isinstance(T, ir.DoubleType) else 32}"
        fn = mk._declare(builder, name, T, [T, T, T])
        return builder.call(fn, args)

    return x(x, y, z), codegen


@njit(cache=True, error_model=ERROR_MODEL)
def _fma_chains(X, Y):
    """C[r, s] = fma(X[r, K-1], Y[K-1, s], ... fma(X[r, 0], Y[0, s], 0)): the
    order the micro-kernel promises, one entry at a time."""
    M, K = X.shape
    N = Y.shape[1]
    C = np.zeros((M, N), X.dtype)
    for r in range(M):
        for s in range(N):
            c = X.dtype.type(0)
            for p in range(K):
                c = _fma(X[r, p], Y[p, s], c)
            C[r, s] = c
    return C


def _shapes(dtype):
    """(M, K, N) around the block sizes: 1, MR - 1, MR + 1, NR +- 1, primes,
    K = 1, K past KC (two and three blocks, unequal)."""
    MR, NR, KC, MC = mk.blocks(dtype)[:4]
    return [(1, 1, 1), (MR - 1, 5, NR + 1), (MR + 1, 1, NR - 1), (13, 29, 7),
            (NR, KC + 7, MR), (2 * MR + 3, 2 * KC + 1, 3 * NR + 2), (MC + MR + 1, 3, 11),
            (5, 0, 4)]


# ------------------------------------------------------------------ micro-kernel


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [0, 1, 5, 300])
@pytest.mark.parametrize("accumulate", [False, True])
def test_micro_kernel(dtype, k, accumulate):
    """C[i, j] (+)= sum_k A[i, k] B[k, j] on packed panels, for the whole block and
    for corners: nothing outside rows < mr, columns < nr is read or written."""
    MR, NR = mk.blocks(dtype)[:2]
    rng = np.random.default_rng(k)
    A = rng.normal(size=(MR, k)).astype(dtype)
    B = rng.normal(size=(k, NR)).astype(dtype)
    a = np.ascontiguousarray(A.T).reshape(-1)  # a[k * MR + i] = A[i, k]
    b = B.reshape(-1).copy()  # b[k * NR + j] = B[k, j]
    ldc = MR + 3
    for mr, nr in [(MR, NR), (1, 1), (MR - 1, NR), (MR, 1), (3, NR - 1)]:
        C0 = rng.normal(size=(NR, ldc)).astype(dtype)  # C[i, j] = C0[j, i]
        C0[nr:] = np.nan  # outside the corner: must stay as it is, and not be read
        C0[:, mr:] = np.nan
        c = C0.reshape(-1).copy()
        _kernel(k, a, b, c, ldc, accumulate, mr, nr)
        got = c.reshape(NR, ldc)
        np.testing.assert_array_equal(got[nr:], C0[nr:])
        np.testing.assert_array_equal(got[:, mr:], C0[:, mr:])
        before = C0[:nr, :mr].T if accumulate else 0.0
        assert_product(got[:nr, :mr].T, A[:mr], B[:, :nr], dtype, f"mr={mr} nr={nr}", before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [0, 1, 5, 300])
@pytest.mark.parametrize("accumulate", [False, True])
def test_micro_kernel_on_rows_of_b_has_the_packed_kernels_bits(dtype, k, accumulate):
    """``micro_kernel_rows``: B[p, j] read from row j of a matrix (``b[b_off + j *
    ldb + p]``, the examples' rows of a forward or backward product) gives the
    packed kernel's C, bit for bit, for the whole block and for corners, and
    writes nothing outside them.  B's rows lie at the end of their array, so
    that a read of a row past nr would be a read past it."""
    MR, NR = mk.blocks(dtype)[:2]
    rng = np.random.default_rng(k + 7)
    A = rng.normal(size=(MR, k)).astype(dtype)
    a = np.ascontiguousarray(A.T).reshape(-1)
    ldb, col = k + 5, 2  # B[p, j] = rows[j, col + p]
    ldc = MR + 3
    for mr, nr in [(MR, NR), (1, 1), (MR - 1, NR), (MR, 1), (3, NR - 1)]:
        rows = rng.normal(size=(nr, ldb)).astype(dtype)
        B = np.zeros((k, NR), dtype)
        B[:, :nr] = rows[:, col:col + k].T
        C0 = rng.normal(size=(NR, ldc)).astype(dtype)
        C0[nr:] = np.nan
        C0[:, mr:] = np.nan
        packed, c = C0.reshape(-1).copy(), C0.reshape(-1).copy()
        _kernel(k, a, B.reshape(-1).copy(), packed, ldc, accumulate, mr, nr)
        _kernel_rows(k, a, rows.reshape(-1), col, ldb, c, ldc, accumulate, mr, nr, 0, c)
        assert c.tobytes() == packed.tobytes(), (mr, nr)
        got = c.reshape(NR, ldc)
        np.testing.assert_array_equal(got[nr:], C0[nr:])
        np.testing.assert_array_equal(got[:, mr:], C0[:, mr:])
        before = C0[:nr, :mr].T if accumulate else 0.0
        assert_product(got[:nr, :mr].T, A[:mr], B[:, :nr], dtype, f"mr={mr} nr={nr}", before)


def test_micro_kernel_holds_its_block_in_registers():
    """The k loop of the native block, as numba compiles it inside a caller: MR / W
    loads of A, NR broadcasts of B per MR * NR / W fused multiply-adds (per k), and
    no other memory access (no accumulator spilled to the stack).  Compiled here
    without the cache: numba cannot show the assembly of cached code."""
    kernel = njit(fastmath=FASTMATH, error_model=ERROR_MODEL)(_kernel.py_func)
    for dtype in DTYPES:
        MR, NR = mk.blocks(dtype)[:2]
        W = mk.VECTOR_BITS // (8 * np.dtype(dtype).itemsize)
        a = np.zeros(MR * 4, dtype)
        b = np.zeros(NR * 4, dtype)
        c = np.zeros(MR * NR, dtype)
        kernel(4, a, b, c, MR, False, MR, NR)
        sig = next(s for s in kernel.signatures if str(s[1].dtype) == np.dtype(dtype).name)
        counts = mk.inner_loop(kernel.inspect_asm(sig))
        # LLVM may unroll the loop (it does by two for znver3): whole steps only
        steps, rest = divmod(counts["fma"], MR * NR // W)
        assert steps >= 1 and rest == 0, counts
        assert counts["broadcast"] == steps * NR, counts
        assert counts["memory operands"] == steps * (MR // W + NR), counts
        assert counts["stack"] == 0, counts


@pytest.mark.parametrize("cpu, bits", [("haswell", 256), ("skylake-avx512", 512),
                                       ("znver4", 512)])
def test_blocks_fit_the_registers(cpu, bits):
    """Each width's block, compiled for a CPU of that width (which this host need
    not be): per k, MR / W loads and NR broadcasts per MR * NR / W FMAs (LLVM
    may unroll the loop), and no accumulator spilled."""
    for dtype in DTYPES:
        MR, NR = mk.blocks(dtype, bits)[:2]
        W = bits // (8 * np.dtype(dtype).itemsize)
        counts = mk.inner_loop(mk.kernel_asm(dtype, bits, cpu))
        steps, rest = divmod(counts["fma"], MR * NR // W)
        assert steps >= 1 and rest == 0, counts
        assert counts["broadcast"] == steps * NR, counts
        assert counts["memory operands"] == steps * (MR // W + NR), counts
        assert counts["stack"] == 0, counts


# ------------------------------------------------------------------ GEMM


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_x, trans_y", [(False, False), (True, False), (False, True),
                                              (True, True)])
def test_matmul(dtype, trans_x, trans_y):
    """out = op(X) op(Y) for awkward shapes, each operand plain or transposed: the
    layouts of z = W a (trans_y), delta_prev = W^T delta (plain) and
    dW = delta a^T (trans_x), examples as rows."""
    rng = np.random.default_rng(1)
    for M, K, N in _shapes(dtype):
        X = rng.normal(size=(M, K)).astype(dtype)
        Y = rng.normal(size=(K, N)).astype(dtype)
        Xs = np.ascontiguousarray(X.T) if trans_x else X
        Ys = np.ascontiguousarray(Y.T) if trans_y else Y
        got = mk.matmul(Xs, Ys, trans_x=trans_x, trans_y=trans_y)
        assert got.shape == (M, N) and got.dtype == dtype
        assert_product(got, X, Y, dtype, f"{(M, K, N)}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_accumulates(dtype):
    """accumulate adds to out; K = 0 leaves it (accumulating) or zeroes it."""
    MR, NR, KC = mk.blocks(dtype)[:3]
    rng = np.random.default_rng(2)
    M, K, N = MR + 2, KC + 3, 2 * NR + 1
    X = rng.normal(size=(M, K)).astype(dtype)
    Y = rng.normal(size=(K, N)).astype(dtype)
    C0 = rng.normal(size=(M, N)).astype(dtype)
    out = mk.matmul(X, Y, C0.copy(), accumulate=True)
    assert_product(out, X, Y, dtype, C0=C0)
    empty_x, empty_y = np.zeros((M, 0), dtype), np.zeros((0, N), dtype)
    np.testing.assert_array_equal(mk.matmul(empty_x, empty_y, C0.copy(), accumulate=True), C0)
    np.testing.assert_array_equal(mk.matmul(empty_x, empty_y, C0.copy()), 0 * C0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_order_is_one_fma_chain(dtype):
    """Each entry is bit for bit the chain fma(X[r, K-1], Y[K-1, s], ... 0), K across
    two blocks of KC and an edge in M and N."""
    MR, NR, KC = mk.blocks(dtype)[:3]
    rng = np.random.default_rng(3)
    X = rng.normal(size=(MR + 3, 2 * KC + 5)).astype(dtype)
    Y = rng.normal(size=(2 * KC + 5, NR + 2)).astype(dtype)
    np.testing.assert_array_equal(mk.matmul(X, Y), _fma_chains(X, Y))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bits_do_not_depend_on_tiling(dtype):
    """Any block of out computed on its own (rows r0:r1, columns s0:s1, through
    offsets into the same arrays, so the micro-tiles fall elsewhere), and any
    split of K continued with ``accumulate``, gives the bits of the whole."""
    MR, NR, KC, MC = mk.blocks(dtype)[:4]
    rng = np.random.default_rng(4)
    M, K, N = MC + 2 * MR + 5, KC + 9, 4 * NR + 3
    X = rng.normal(size=(M, K)).astype(dtype)
    Y = rng.normal(size=(K, N)).astype(dtype)
    whole = mk.matmul(X, Y)
    x, y = X.reshape(-1), Y.reshape(-1)
    for r0, r1, s0, s1 in [(1, M, 0, N), (3, 3 + MR, 5, N - 1), (M - 1, M, 0, 1),
                           (MR - 1, M - 2, NR + 1, 2 * NR + 3)]:
        part = np.full((r1 - r0, s1 - s0), np.nan, dtype)
        # part^T (column-major, ldc = s1 - s0) = Y[:, s0:s1]^T X[r0:r1]^T
        mk.gemm(s1 - s0, r1 - r0, K, y, s0, 1, N, x, r0 * K, 1, K, part.reshape(-1), 0,
                s1 - s0, False, mk.workspace(r1 - r0, dtype))
        np.testing.assert_array_equal(part, whole[r0:r1, s0:s1], err_msg=f"{r0, r1, s0, s1}")
    for k1 in (1, KC - 1, K - 2):
        out = mk.matmul(np.ascontiguousarray(X[:, :k1]), np.ascontiguousarray(Y[:k1]))
        mk.matmul(np.ascontiguousarray(X[:, k1:]), np.ascontiguousarray(Y[k1:]), out,
                  accumulate=True)
        np.testing.assert_array_equal(out, whole, err_msg=f"K split at {k1}")


def test_matmul_refuses_bad_arguments():
    X = np.ones((3, 4))
    with pytest.raises(ValueError, match="inner"):
        mk.matmul(X, np.ones((5, 2)))
    with pytest.raises(ValueError, match="C-contiguous"):
        mk.matmul(X, np.ones((2, 4)).T)
    with pytest.raises(ValueError, match="float"):
        mk.matmul(X, np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        mk.matmul(X, np.ones((4, 2)), np.ones((2, 3)))


# ------------------------------------------------------------------ other widths

_OTHER_WIDTH = textwrap.dedent("""
    import sys
    import numpy as np
    from fastbp._core import microkernel as mk
    assert mk.VECTOR_BITS == {bits} and not mk.CACHE
    data = np.load(sys.argv[1])
    out = {{}}
    for name in data.files:
        if name.startswith("X"):
            key = name[1:]
            trans_x, trans_y = bool(int(key[-2])), bool(int(key[-1]))
            out["C" + key] = mk.matmul(data[name], data["Y" + key], trans_x=trans_x,
                                       trans_y=trans_y)
    np.savez(sys.argv[2], **out)
""")


def test_other_widths_give_the_same_bits(tmp_path):
    """The code of every other vector width (and block table entry), forced with
    FASTBP_VECTOR_BITS, against this width's results: bit-identical, as every
    entry is the same chain whatever the vector length."""
    rng = np.random.default_rng(5)
    inputs, expected = {}, {}
    for dtype in DTYPES:
        for n, (M, K, N) in enumerate([(1, 1, 1), (19, 70, 23), (37, 530, 41)]):
            for trans_x, trans_y in [(False, False), (True, False), (False, True)]:
                key = f"{np.dtype(dtype).name}_{n}_{int(trans_x)}{int(trans_y)}"
                X = rng.normal(size=(K, M) if trans_x else (M, K)).astype(dtype)
                Y = rng.normal(size=(N, K) if trans_y else (K, N)).astype(dtype)
                inputs["X" + key], inputs["Y" + key] = X, Y
                expected["C" + key] = mk.matmul(X, Y, trans_x=trans_x, trans_y=trans_y)
    np.savez(tmp_path / "in.npz", **inputs)
    env = dict(os.environ, PYTHONPATH=str(Path(fastbp.__file__).parent.parent))
    runs = {}
    for bits in (128, 256, 512):
        if bits == mk.VECTOR_BITS:
            continue
        runs[bits] = subprocess.Popen(
            [sys.executable, "-c", _OTHER_WIDTH.format(bits=bits), str(tmp_path / "in.npz"),
             str(tmp_path / f"out{bits}.npz")],
            env=dict(env, FASTBP_VECTOR_BITS=str(bits)), stderr=subprocess.PIPE, text=True)
    for bits, proc in runs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        got = np.load(tmp_path / f"out{bits}.npz")
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name], value, err_msg=f"{bits} bits, {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "identity"])
def test_micro_kernel_store_times_the_derivative_has_the_scalar_bits(dtype, name):
    """With the relu code, ``micro_kernel_rows`` stores C[i, j] f'(z), f'
    written from a = f(z) at C's place in ``act`` (the backward pass's fused
    factor, 004 eq. (4)): the bits of the plain store followed by
    ``times_derivative`` one value at a time, for the whole block, corners
    (nothing outside them written) and a continued chain; a = 0 gives 0
    (f'(0) = 0), a NaN delta stays NaN.  Other codes store C as it is (their
    factor is a pass of its own, ``kernels._derivative_rows``)."""
    MR, NR, KC = mk.blocks(dtype)[:3]
    code = ACTIVATIONS[name]
    rng = np.random.default_rng(code)
    k = KC + 3
    A = rng.normal(size=(MR, k)).astype(dtype)
    a = np.ascontiguousarray(A.T).reshape(-1)
    ldb, ldc = k + 1, MR + 2
    for mr, nr, accumulate in [(MR, NR, False), (MR - 1, NR, True), (2, 1, False), (MR, NR, True)]:
        rows = rng.normal(size=(nr, ldb)).astype(dtype)
        C0 = rng.normal(size=(NR, ldc)).astype(dtype)
        C0[nr:] = np.nan
        C0[:, mr:] = np.nan
        act = rng.uniform(-1, 1, size=(NR, ldc)).astype(dtype)  # values of sigmoid, tanh, relu
        act[0, 0] = 0.0
        if name == "relu":
            act = np.maximum(act, 0)
            rows[0, 0] = np.nan  # column 0 of C becomes NaN: times 0 or 1, it stays NaN
        plain, c = C0.reshape(-1).copy(), C0.reshape(-1).copy()
        _kernel_rows(k, a, rows.reshape(-1), 0, ldb, plain, ldc, accumulate, mr, nr, 0, plain)
        _kernel_rows(k, a, rows.reshape(-1), 0, ldb, c, ldc, accumulate, mr, nr, code,
                     act.reshape(-1))
        want = plain.reshape(NR, ldc).copy()
        if name == "relu":
            want[:nr, :mr] = _times_derivative(code, want[:nr, :mr].reshape(-1).copy(),
                                               act[:nr, :mr].reshape(-1).copy()).reshape(nr, mr)
        assert c.tobytes() == want.reshape(-1).tobytes(), (name, mr, nr, accumulate)
        if name == "relu":
            assert np.isnan(c.reshape(NR, ldc)[0, :mr]).all()
            assert not np.array_equal(c, plain)  # the factor was applied


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _bias_relu(z, b, relu):
    """z[k] + b[k], then relu of it, one value at a time (the forward pass's
    z = W a + b and ``functions.relu``)."""
    out = z.copy()
    for k in range(z.shape[0]):
        out[k] = z[k] + b[k]
        if relu:
            out[k] = relu_fn(out[k])
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
def test_micro_kernel_store_adds_the_bias_and_applies_relu_with_the_scalar_bits(dtype, relu):
    """With a bias offset, ``micro_kernel_rows`` stores C[i, j] + b[i] (z = W a
    + b), and with ``relu`` relu of it: the bits of the plain store followed
    by the scalar formulas, for the whole block, corners and a continued
    chain; nothing outside the corner is written."""
    MR, NR, KC = mk.blocks(dtype)[:3]
    rng = np.random.default_rng(3 + relu)
    k = KC + 3
    A = rng.normal(size=(MR, k)).astype(dtype)
    a = np.ascontiguousarray(A.T).reshape(-1)
    ldb, ldc = k + 1, MR + 2
    signs = set()
    for mr, nr, accumulate in [(MR, NR, False), (MR - 1, NR, True), (2, 1, False), (MR, NR, True)]:
        rows = rng.normal(size=(nr, ldb)).astype(dtype)
        C0 = rng.normal(size=(NR, ldc)).astype(dtype)
        C0[nr:] = np.nan
        C0[:, mr:] = np.nan
        theta = rng.normal(size=MR + 9).astype(dtype)  # the biases at theta[5:5 + mr]
        plain, c = C0.reshape(-1).copy(), C0.reshape(-1).copy()
        _kernel_rows(k, a, rows.reshape(-1), 0, ldb, plain, ldc, accumulate, mr, nr, 0, plain)
        _kernel_rows(k, a, rows.reshape(-1), 0, ldb, c, ldc, accumulate, mr, nr, 0, c, theta, 5,
                     relu)
        want = plain.reshape(NR, ldc).copy()
        for j in range(nr):
            want[j, :mr] = _bias_relu(want[j, :mr].copy(), theta[5:5 + mr].copy(), relu)
        assert c.tobytes() == want.reshape(-1).tobytes(), (mr, nr, accumulate)
        got = c.reshape(NR, ldc)[:nr, :mr]
        signs.update(np.sign(got).ravel().tolist())
    assert signs == ({0.0, 1.0} if relu else {-1.0, 1.0})  # relu applied (or not), both sides seen
