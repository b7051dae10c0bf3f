"""How fast are the register micro-kernel and the GEMM built on it, against NumPy?

Single-threaded, in one process per vector width, every timed call of
``fastbp._core.microkernel`` followed by the same product in NumPy (OpenBLAS
on one thread), so both see the same load on a shared machine; the table
gives the median GFLOP/s of each over the repeats and the median of the
per-repeat ratios.  Rows:

- ``micro-kernel (L1)``: one MR x NR block over k = KC, its panels in L1,
  called over and over (the arithmetic peak the loops around it can reach);
  its NumPy column is the 1024^3 product.
- square products M = N = K = 512, 1024;
- the three products of one layer 784 -> 1024 on a batch of 1024 examples,
  examples as rows: z = W a (A W^T), delta_prev = W^T delta (D W),
  dW = delta a^T (D^T A).

Also the inner loop of the micro-kernel as compiled (vector FMAs, broadcasts,
memory operands and stack accesses per k), ``--compile``: the compile time
from an empty numba cache and the load time from a warm one, ``--tune``: the
1024^3 product for other block sizes (through ``FASTBP_MK_BLOCKS64`` /
``FASTBP_MK_BLOCKS32``), and ``--asm znver4:512,...``: the inner loop compiled
for other CPUs (LLVM names) at their widths, for widths this host lacks;
``--tuple-step``: the alternative to the k loop in the IR (one k step per
intrinsic call on a block numba carries as a tuple), on the same panels.

OpenBLAS reads OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which slow it down on
some machines; leave them out of this command only:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=. \\
        python asv_bench/microkernel_sweep.py --widths 256,128 --compile
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

# One thread for NumPy's BLAS, set before NumPy loads it (threadpoolctl, when
# installed, limits it again below).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np

GEMMS = [
    # name, (M, K, N), trans_x, trans_y: out (M, N) = op(X) op(Y)
    ("512^3", (512, 512, 512), False, False),
    ("1024^3", (1024, 1024, 1024), False, False),
    ("z = W a      (1024 x 784 -> 1024)", (1024, 784, 1024), False, True),
    ("d' = W^T d   (1024 x 1024 -> 784)", (1024, 1024, 784), False, False),
    ("dW = d a^T   (1024 x 1024 -> 784)", (1024, 1024, 784), True, False),
]


def _limit_threads():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=1)


def _paired(ours, theirs, flops, repeats):
    """(median GFLOP/s of ours, of theirs, median of theirs' time / ours), the two
    called alternately ``repeats`` times after one warm-up call each."""
    ours()
    theirs()
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours()
        t1 = time.perf_counter()
        theirs()
        t2 = time.perf_counter()
        t_ours.append(t1 - t0)
        t_theirs.append(t2 - t1)
    t_ours, t_theirs = np.array(t_ours), np.array(t_theirs)
    return (flops / np.median(t_ours) / 1e9, flops / np.median(t_theirs) / 1e9,
            float(np.median(t_theirs / t_ours)))


def _kernel_caller():
    """A compiled loop calling the micro-kernel ``reps`` times on the same panels."""
    from numba import njit

    from fastbp._core import microkernel as mk
    from fastbp._core.config import ERROR_MODEL, FASTMATH

    @njit(fastmath=FASTMATH, error_model=ERROR_MODEL)
    def repeat(k, a, b, c, ldc, reps, mr, nr):
        for r in range(reps):
            mk.micro_kernel(k, a, 0, b, 0, c, 0, ldc, r > 0, mr, nr)

    return repeat


def measure(repeats: int) -> None:
    """The table for this process's vector width."""
    limits = _limit_threads()
    from fastbp._core import microkernel as mk

    rng = np.random.default_rng(0)
    print(f"vector width {mk.VECTOR_BITS} bits (host {mk.NATIVE_BITS}), "
          f"threadpoolctl {'yes' if limits else 'no (OPENBLAS_NUM_THREADS=1)'}, "
          f"load {os.getloadavg()[0]:.2f}")
    if mk.VECTOR_BITS > mk.NATIVE_BITS:
        print("  (wider than the host's vectors: LLVM splits them, timings are not the width's)")
    repeat = _kernel_caller()
    print(f"  {'':36s} {'dtype':8s} {'fastbp':>8s} {'numpy':>8s} {'ratio':>6s}   GFLOP/s")
    for dtype in (np.float64, np.float32):
        MR, NR, KC = mk.blocks(dtype)[:3]
        a = rng.normal(size=MR * KC).astype(dtype)
        b = rng.normal(size=NR * KC).astype(dtype)
        c = np.zeros(MR * NR, dtype)
        reps = max(1, int(2e8 / (2 * MR * NR * KC)))  # ~5-10 ms a call
        X = rng.normal(size=(1024, 1024)).astype(dtype)
        g_k, g_np, ratio = _paired(
            lambda a=a, b=b, c=c, k=KC, m=MR, n=NR, reps=reps: repeat(k, a, b, c, m, reps, m, n),
            lambda X=X: X @ X, 2 * MR * NR * KC * reps, repeats)
        g_np = 2 * 1024**3 * (g_np / (2 * MR * NR * KC * reps))  # its own flops
        label = f"micro-kernel (L1) {MR} x {NR}, k = {KC}"
        print(f"  {label:36s} {np.dtype(dtype).name:8s} {g_k:8.1f} {g_np:8.1f} "
              f"{g_k / g_np:6.2f}")
        for name, (M, K, N), tx, ty in GEMMS:
            X = rng.normal(size=(K, M) if tx else (M, K)).astype(dtype)
            Y = rng.normal(size=(N, K) if ty else (K, N)).astype(dtype)
            out = np.empty((M, N), dtype)
            work = mk.workspace(M, dtype)
            Xn, Yn = (X.T if tx else X), (Y.T if ty else Y)
            g_ours, g_np, ratio = _paired(
                lambda X=X, Y=Y, out=out, tx=tx, ty=ty, work=work: mk.matmul(
                    X, Y, out, trans_x=tx, trans_y=ty, work=work),
                lambda Xn=Xn, Yn=Yn: Xn @ Yn, 2 * M * N * K, repeats)
            print(f"  {name:36s} {np.dtype(dtype).name:8s} {g_ours:8.1f} {g_np:8.1f} "
                  f"{ratio:6.2f}")
        sig = next(s for s in repeat.signatures if str(s[1].dtype) == np.dtype(dtype).name)
        counts = mk.inner_loop(repeat.inspect_asm(sig))
        print(f"  inner loop ({np.dtype(dtype).name}, per k): "
              + ", ".join(f"{k} {v}" for k, v in counts.items()))


_COMPILE = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    import numpy as np
    from numba import njit
    t1 = time.perf_counter()
    from fastbp._core import microkernel as mk
    from fastbp._core.config import ERROR_MODEL, FASTMATH
    t2 = time.perf_counter()
    print(f"    import numpy + numba {t1 - t0:.2f} s, microkernel {t2 - t1:.2f} s")

    @njit
    def first(x):
        return x + 1

    t = time.perf_counter(); first(1)
    print(f"    numba's first compile (x + 1) {time.perf_counter() - t:.2f} s")

    @njit(fastmath=FASTMATH, error_model=ERROR_MODEL)
    def kernel(k, a, b, c):
        mk.micro_kernel(k, a, 0, b, 0, c, 0, 1, False, 1, 1)

    for dtype in (np.float64, np.float32):
        z = np.zeros(1024, dtype)
        t = time.perf_counter(); kernel(1, z, z, z); t_k = time.perf_counter() - t
        X = np.ones((5, 3), dtype)
        t = time.perf_counter(); mk.matmul(X, X.T.copy()); t_g = time.perf_counter() - t
        print(f"    {np.dtype(dtype).name}: micro-kernel alone {t_k:.2f} s, "
              f"first matmul (packing + gemm) {t_g:.2f} s")
""")


def compile_times() -> None:
    """Compile from an empty numba cache, then load from the cache it wrote."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache,
                   PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for what in ("empty cache (compile)", "warm cache (load)"):
            print(f"  {what}:")
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", _COMPILE], env=env, check=True)
            print(f"    whole process {time.perf_counter() - t:.2f} s")


TUNE = {
    # (dtype bits, vector bits) -> candidate (MR, NR, KC, MC, NC)
    (64, 256): [(8, 6, 256, 72, 4080), (8, 6, 256, 128, 4080), (8, 6, 384, 128, 4080),
                (8, 6, 512, 96, 4080), (12, 4, 256, 120, 4080)],
    (32, 256): [(16, 6, 256, 144, 4080), (16, 6, 384, 144, 4080), (16, 6, 512, 96, 4080),
                (16, 6, 256, 288, 4080), (24, 4, 256, 144, 4080)],
}

_TUNE_ONE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    import numpy as np
    from microkernel_sweep import _limit_threads, _paired
    limits = _limit_threads()
    from fastbp._core import microkernel as mk
    dtype = np.float{bits}
    X = np.random.default_rng(0).normal(size=(1024, 1024)).astype(dtype)
    out = np.empty_like(X)
    work = mk.workspace(1024, dtype)
    g, g_np, ratio = _paired(lambda: mk.matmul(X, X, out, work=work), lambda: X @ X,
                             2 * 1024**3, {repeats})
    print(f"  {{mk.blocks(dtype)}}: {{g:6.1f}} GFLOP/s, numpy {{g_np:6.1f}}, ratio {{ratio:.2f}}")
""")


def tune(repeats: int) -> None:
    """The 1024^3 product for each candidate block size of the host's width."""
    from fastbp._core.microkernel import NATIVE_BITS

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    for (bits, width), candidates in TUNE.items():
        if width != NATIVE_BITS:
            continue
        print(f"float{bits}, {width}-bit vectors, 1024^3:")
        for cand in candidates:
            env = dict(os.environ, PYTHONPATH=root, FASTBP_VECTOR_BITS=str(width),
                       **{f"FASTBP_MK_BLOCKS{bits}": ",".join(map(str, cand))})
            subprocess.run([sys.executable, "-c", _TUNE_ONE.format(here=here, bits=bits,
                                                                   repeats=repeats)],
                           env=env, check=True)


def asm(cpus: str) -> None:
    """The micro-kernel's inner loop compiled for other CPUs, at their widths."""
    from fastbp._core import microkernel as mk

    for spec in cpus.split(","):
        cpu, bits = spec.split(":")
        for dtype in (np.float64, np.float32):
            MR, NR = mk.blocks(dtype, int(bits))[:2]
            counts = mk.inner_loop(mk.kernel_asm(dtype, int(bits), cpu))
            print(f"  {cpu} {bits}-bit {np.dtype(dtype).name} {MR} x {NR}: "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()))


def tuple_step(repeats: int) -> None:
    """The rejected alternative: an intrinsic doing one k step of the 256-bit
    float64 block on a tuple of MR * NR values that numba carries between steps,
    against the micro-kernel with its k loop in the IR, on the same panels."""
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic

    from fastbp._core import microkernel as mk
    from fastbp._core.config import ERROR_MODEL, FASTMATH

    MR, NR, KC = mk.blocks(np.float64, 256)[:3]
    W = 4
    block = types.UniTuple(types.float64, MR * NR)

    @intrinsic
    def zeros(typingctx):
        def codegen(context, builder, sig, args):
            return ir.Constant(context.get_value_type(block), None)

        return block(), codegen

    @intrinsic
    def step(typingctx, acc, a, a_off, b, b_off):
        """acc[j * MR + i] = fma(a[a_off + i], b[b_off + j], acc[j * MR + i])."""

        def codegen(context, builder, sig, args):
            vec, i32, i64 = ir.VectorType(ir.DoubleType(), W), ir.IntType(32), ir.IntType(64)
            fma = mk._declare(builder, "llvm.fma.v4f64", vec, [vec, vec, vec])
            out, arr_a, off_a, arr_b, off_b = args
            pa = builder.gep(context.make_array(sig.args[1])(context, builder, arr_a).data,
                             [off_a])
            pb = builder.gep(context.make_array(sig.args[3])(context, builder, arr_b).data,
                             [off_b])
            undef = ir.Constant(vec, ir.Undefined)
            va = [builder.load(builder.bitcast(builder.gep(pa, [ir.Constant(i64, v * W)]),
                                               vec.as_pointer()), align=8)
                  for v in range(MR // W)]
            acc_in = out
            for j in range(NR):
                bj = builder.load(builder.gep(pb, [ir.Constant(i64, j)]))
                bv = builder.shuffle_vector(builder.insert_element(undef, bj, ir.Constant(i32, 0)),
                                            undef, ir.Constant(ir.VectorType(i32, W), [0] * W))
                for v in range(MR // W):
                    cv = undef
                    for lane in range(W):
                        x = builder.extract_value(acc_in, j * MR + v * W + lane)
                        cv = builder.insert_element(cv, x, ir.Constant(i32, lane))
                    r = builder.call(fma, [va[v], bv, cv])
                    for lane in range(W):
                        out = builder.insert_value(
                            out, builder.extract_element(r, ir.Constant(i32, lane)),
                            j * MR + v * W + lane)
            return out

        return block(acc, a, a_off, b, b_off), codegen

    @njit(fastmath=FASTMATH, error_model=ERROR_MODEL)
    def by_steps(k, a, b, c, reps):
        for _ in range(reps):
            acc = zeros()
            for p in range(k):
                acc = step(acc, a, p * MR, b, p * NR)
            for i in range(MR * NR):
                c[i] += acc[i]

    if mk.VECTOR_BITS != 256:
        print("  (needs FASTBP_VECTOR_BITS=256)")
        return
    repeat = _kernel_caller()
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=MR * KC), rng.normal(size=NR * KC), np.zeros(MR * NR)
    reps = 2000
    g_step, g_loop, _ = _paired(lambda: by_steps(KC, a, b, c, reps),
                                lambda: repeat(KC, a, b, c, MR, reps, MR, NR),
                                2 * MR * NR * KC * reps, repeats)
    counts = mk.inner_loop(by_steps.inspect_asm(by_steps.signatures[0]))
    print(f"  one k step on a tuple: {g_step:.1f} GFLOP/s; k loop in the IR: {g_loop:.1f}")
    print("  tuple's inner loop: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="",
                        help="vector widths in bits, comma-separated (default: the host's)")
    parser.add_argument("--repeats", type=int, default=9, help="timed calls of each (>= 7)")
    parser.add_argument("--compile", action="store_true", help="also the compile times")
    parser.add_argument("--tune", action="store_true", help="also other block sizes")
    parser.add_argument("--tuple-step", action="store_true",
                        help="also the rejected one-step-on-a-tuple micro-kernel")
    parser.add_argument("--asm", default="",
                        help="inner loop for LLVM CPUs at widths, e.g. znver4:512,haswell:256")
    args = parser.parse_args()
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"warning: {var} is set; it can slow NumPy's BLAS (see the docstring)")
    if not args.widths:
        measure(args.repeats)
    else:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for bits in args.widths.split(","):
            env = dict(os.environ, FASTBP_VECTOR_BITS=bits, PYTHONPATH=root)
            subprocess.run([sys.executable, os.path.abspath(__file__),
                            "--repeats", str(args.repeats)], env=env, check=True)
    if args.compile:
        print("compile times (float64 then float32, in a fresh process):")
        compile_times()
    if args.tune:
        tune(args.repeats)
    if args.tuple_step:
        print("float64 8 x 6 micro-kernel, 256-bit, k = 256, in L1:")
        tuple_step(args.repeats)
    if args.asm:
        print("inner loop of the micro-kernel compiled for (per loop iteration):")
        asm(args.asm)


if __name__ == "__main__":
    main()
