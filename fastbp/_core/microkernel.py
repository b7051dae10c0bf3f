"""An outer-product register micro-kernel and the GEMM loops around it.

The micro-kernel computes one MR x NR block of a product,

    C[i, j] += sum_k A[i, k] * B[k, j],    0 <= i < MR, 0 <= j < NR,

from packed micro-panels: ``A_panel[k * MR + i] = A[i, k]`` and
``B_panel[k * NR + j] = B[k, j]`` (contiguous, one k after the other).  Its
MR * NR accumulators live in vector registers for the whole sum: per k it loads
MR / W vectors of A (W values of the dtype per vector), broadcasts each of the
NR values of B, and does MR * NR / W fused multiply-adds.  The block of C is
stored with i contiguous: ``c[c_off + j * ldc + i]``.  ``micro_kernel_rows``
is the same kernel with B read from its rows where they lie (``B[p, j]`` at
``b[b_off + j * ldb + p]``), and with the products' epilogues applied to the
register block as it is stored (+ bias, relu, times relu').

It is emitted as LLVM instructions (a numba intrinsic) because numba's loops do
not reach it: numba turns LLVM's SLP vectorizer off, and the loop vectorizer
vectorizes along k, the reduction index, instead of holding a register block
across it.  The k loop itself is in the IR, its accumulators phi nodes of
vector type.  An intrinsic doing one k step on a block that numba carries
between steps (a tuple of MR * NR values) was measured too: LLVM keeps the
tuple as MR * NR scalar phis and rebuilds the vectors every step, through
shuffles and the stack (8 x 6 float64: 86 stack accesses per k, a tenth of the
speed; ``asv_bench/microkernel_sweep.py --tuple-step``).

Summation order.  Every C[i, j] is ONE chain of fused multiply-adds over k in
order, started from 0 (or from the C[i, j] in memory, when accumulating):

    c = fma(A[i, K-1], B[K-1, j], ... fma(A[i, 1], B[1, j], fma(A[i, 0], B[0, j], c0)))

with one rounding per step.  Nothing else enters it: the accumulator of (i, j) is
one lane of one vector register, and the GEMM driver continues the same chain
across its KC blocks by loading C back into the accumulators.  So each entry is
a function of its row of A, its column of B and K alone: bit-identical however
the caller tiles M and N (or K into KC blocks), on any vector width, and on any
CPU that has fused multiply-add.  Hosts without it get the same bits from
libm's ``fma``, slowly.

Vector width.  Taken from the host CPU when this module is imported
(``NATIVE_BITS``: avx512f -> 512, avx2 with fma -> 256, else 128), or from the
environment variable ``FASTBP_VECTOR_BITS`` (128, 256 or 512) to test another
width's code on this host (LLVM splits vectors wider than the host's into
several registers).  The compiled functions go into numba's cache only at the
host's width: the cache is keyed on the source and the CPU, not on this
module's constants, so a forced width is compiled afresh in each process and
never written where a native process would load it.
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .config import ERROR_MODEL, FASTMATH
from .functions import RELU, _Emit, emit_relu, emit_times_derivative


def host_vector_bits() -> int:
    """The widest vector registers with fused multiply-add on this CPU, in bits."""
    features = llvm.get_host_cpu_features()
    if features.get("avx512f", False):
        return 512
    if features.get("avx2", False) and features.get("fma", False):
        return 256
    return 128


NATIVE_BITS = host_vector_bits()
VECTOR_BITS = int(os.environ.get("FASTBP_VECTOR_BITS", NATIVE_BITS))
if VECTOR_BITS not in (128, 256, 512):
    raise ValueError(f"FASTBP_VECTOR_BITS must be 128, 256 or 512, not {VECTOR_BITS}")

# Overrides of the block table and the unrolling, for asv_bench/microkernel_sweep.py
# to try other values: FASTBP_MK_BLOCKS64 / FASTBP_MK_BLOCKS32 = "MR,NR,KC,MC,NC"
# (at the width in use), FASTBP_MK_UNROLL = values of k per loop iteration.
_TUNE = {key: os.environ[key] for key in os.environ if key.startswith("FASTBP_MK_")}
CACHE = VECTOR_BITS == NATIVE_BITS and not _TUNE

# (bits of the dtype, bits of a vector) -> (MR, NR, KC, MC, NC).
# MR (a multiple of the vector length, rows of A held in vectors) x NR (values
# of B broadcast) accumulators, plus MR / W vectors of A and one broadcast,
# must fit the register file: 16 registers below AVX-512, 32 with it.
# KC x NR of B (one micro-panel) stays in L1 across a block of A; MC x KC of A
# (one block) stays in L2; KC x NC of B (one block) in L3.
# Starting points: flame/blis config/*/bli_cntx_init_*.c (haswell/zen2: 6 x 8
# and 6 x 16 with vectors along NR, here transposed to 8 x 6 and 16 x 6; skx:
# 16 x 14 and 32 x 12).  Measured with asv_bench/microkernel_sweep.py --tune on
# a 2-core znver2 (AVX2; 32 KiB L1, 512 KiB L2 per core), 1024^3 on one thread,
# ratio of NumPy's time to ours: float64 MC = 72 1.02-1.07 in three runs, 96
# 1.00-1.06, 128 0.92-1.04; KC = 384, 512 and 12 x 4 no better.  float32: every
# candidate (KC = 256-768, MC = 96-288, 24 x 4) at 0.87-0.98, in no order that
# held from one run to the next; BLIS's values kept.
# The 128-bit rows are the 256-bit blocks halved along MR; the 512-bit rows
# are BLIS's, not measured here (no AVX-512 host), but checked to compile
# without spills for skylake-avx512 and znver4 (tests/test_microkernel.py).
BLOCKS = {
    (64, 128): (4, 6, 256, 96, 4080),
    (32, 128): (8, 6, 256, 96, 4080),
    (64, 256): (8, 6, 256, 72, 4080),
    (32, 256): (16, 6, 256, 144, 4080),
    (64, 512): (16, 14, 256, 240, 3752),
    (32, 512): (32, 12, 384, 480, 3072),
}


for _bits in (32, 64):
    if f"FASTBP_MK_BLOCKS{_bits}" in _TUNE:
        BLOCKS[(_bits, VECTOR_BITS)] = tuple(
            int(v) for v in _TUNE[f"FASTBP_MK_BLOCKS{_bits}"].split(","))
UNROLL = int(_TUNE.get("FASTBP_MK_UNROLL", 1))


def blocks(dtype, bits: int = VECTOR_BITS) -> tuple[int, int, int, int, int]:
    """(MR, NR, KC, MC, NC) for ``dtype`` (float32 or float64) at ``bits``."""
    return BLOCKS[(np.dtype(dtype).itemsize * 8, bits)]


# ------------------------------------------------------------------ micro-kernel


def _declare(builder, name, ret, params):
    """The function ``name`` of the module being built (an LLVM intrinsic)."""
    return builder.module.globals.get(name) or ir.Function(
        builder.module, ir.FunctionType(ret, params), name)


def _vector_name(vec):
    return f"v{vec.count}f{64 if isinstance(vec.element, ir.DoubleType) else 32}"


def _emit_micro_kernel(builder, T, W, MR, NR, k, pa, pb, pc, ldc, accumulate, mr, nr,
                       ldb=None, deriv=None, bias=None, relu=None):
    """Emit the MR x NR micro-kernel inline, leaving the builder after it.

    pa, pb, pc: element pointers to the A micro-panel, to B (its micro-panel,
    or with ``ldb`` B[0, 0] of B's rows: B[p, j] at ``pb[j * ldb + p]``) and to
    C[0, 0] of the block; k, ldc, mr, nr (and ldb): i64; accumulate: i1.  The
    accumulators are the loops' phi nodes, one vector each: LLVM keeps them in
    registers when they fit, which is what the block sizes are chosen for.  C
    is read (when accumulating) and written in rows i < mr and columns j < nr
    only, with masked vector loads and stores when mr < MR or nr < NR; B's
    rows past nr are not read (column j >= nr reads row nr - 1, and its
    results are not stored).  Before the store, in this order: with ``bias``
    = (pbias, use) and the i1 ``use`` set, C[i, j] += pbias[i] (the forward
    pass's z = W a + b); with the i1 ``relu`` set, C = relu(C) (a = f(z));
    with ``deriv`` = (code, pact) and the relu ``code`` (i64; any other code
    leaves C as it is), C[i, j] *= f'(z) written from a = f(z) at
    ``pact[j * ldc + i]`` (``functions.emit_times_derivative``: the backward
    pass's delta^(l-1) = f'(z^(l-1)) * (W^T delta^(l))): the epilogues of the
    products, applied to the register block once, as it is stored
    (``kernels._block_product`` says why relu alone)."""
    i1, i32, i64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
    vec = ir.VectorType(T, W)
    vptr = vec.as_pointer()
    mask_t = ir.VectorType(i1, W)
    nv = MR // W
    align = 8 if isinstance(T, ir.DoubleType) else 4  # the packed panels are not vector-aligned
    name = _vector_name(vec)
    fma = _declare(builder, f"llvm.fma.{name}", vec, [vec, vec, vec])
    mload = _declare(builder, f"llvm.masked.load.{name}.p0{name}", vec,
                     [vptr, i32, mask_t, vec])
    mstore = _declare(builder, f"llvm.masked.store.{name}.p0{name}", ir.VoidType(),
                      [vec, vptr, i32, mask_t])
    undef = ir.Constant(vec, ir.Undefined)
    zero = ir.Constant(vec, None)
    splat = ir.Constant(ir.VectorType(i32, W), [0] * W)

    def const(x):
        return ir.Constant(i64, x)

    def c_ptr(j, v):
        return builder.bitcast(builder.gep(pc, [builder.add(builder.mul(ldc, const(j)),
                                                            const(v * W))]), vptr)

    def masks():
        """masks[j * nv + v]: lanes of vector v of column j inside the mr x nr corner."""
        lanes = ir.VectorType(i64, W)
        mr_v = builder.shuffle_vector(builder.insert_element(ir.Constant(lanes, ir.Undefined),
                                                             mr, ir.Constant(i32, 0)),
                                      ir.Constant(lanes, ir.Undefined), splat)
        rows = [builder.icmp_signed("<", ir.Constant(lanes, list(range(v * W, v * W + W))),
                                    mr_v) for v in range(nv)]
        none = ir.Constant(mask_t, [0] * W)
        return [builder.select(builder.icmp_signed("<", const(j), nr), rows[v], none)
                for j in range(NR) for v in range(nv)]

    def if_full(emit_full, emit_edge):
        """emit_full() when the block is whole (mr == MR and nr == NR), else
        emit_edge(masks); returns the phis of their results (lists of vectors)."""
        full = builder.and_(builder.icmp_signed("==", mr, const(MR)),
                            builder.icmp_signed("==", nr, const(NR)))
        with builder.if_else(full, likely=True) as (then, otherwise):
            with then:
                x_full = emit_full()
                b_full = builder.block
            with otherwise:
                x_edge = emit_edge(masks())
                b_edge = builder.block
        return phis([(x_full, b_full), (x_edge, b_edge)]) if x_full else None

    if ldb is not None:
        # B's rows, one pointer per column j, each row read along p
        last = builder.sub(nr, const(1))
        b_rows = [builder.gep(pb, [builder.mul(ldb, builder.select(
            builder.icmp_signed("<", const(j), nr), const(j), last))]) for j in range(NR)]

    def b_at(p, j):
        """B[p, j]: in the micro-panel, or in B's row j."""
        if ldb is None:
            return builder.gep(pb, [builder.add(builder.mul(p, const(NR)), const(j))])
        return builder.gep(b_rows[j], [p])

    def step(p, acc):
        """C[i, j] = fma(A[i, p], B[p, j], C[i, j]) for the whole block."""
        a_p = builder.gep(pa, [builder.mul(p, const(MR))])
        a = [builder.load(builder.bitcast(builder.gep(a_p, [const(v * W)]), vptr), align=align)
             for v in range(nv)]
        new = []
        for j in range(NR):
            b = builder.load(b_at(p, j), align=align)
            bv = builder.shuffle_vector(builder.insert_element(undef, b, const(0)), undef, splat)
            new.extend(builder.call(fma, [a[v], bv, acc[j * nv + v]]) for v in range(nv))
        return new

    def phis(incoming):
        """One phi per accumulator, from [(values, block), ...]."""
        out = [builder.phi(vec) for _ in incoming[0][0]]
        for values, block in incoming:
            for phi, x in zip(out, values):
                phi.add_incoming(x, block)
        return out

    def loop(lo, hi, by, acc, pred, after):
        """for p in range(lo, hi, by): acc = step(p) ... step(p + by - 1), entered from
        ``pred`` when lo < hi, else straight to ``after``; returns (acc, block) of
        the loop's exit, for the phis of ``after``."""
        body = builder.append_basic_block("mk.loop")
        builder.cbranch(builder.icmp_signed("<", lo, hi), body, after)
        builder.position_at_end(body)
        p = builder.phi(i64)
        cur = phis([(acc, pred)])
        new = cur
        for u in range(by):
            new = step(builder.add(p, const(u)) if u else p, new)
        p_next = builder.add(p, const(by))
        end = builder.block
        builder.cbranch(builder.icmp_signed("<", p_next, hi), body, after)
        p.add_incoming(lo, pred)
        p.add_incoming(p_next, end)
        for phi, x in zip(cur, new):
            phi.add_incoming(x, end)
        return new, end

    # C[i, j] from memory when accumulating (the chain goes on), else 0
    entry = builder.block
    with builder.if_then(accumulate):
        loaded = if_full(
            lambda: [builder.load(c_ptr(j, v), align=align) for j in range(NR)
                     for v in range(nv)],
            lambda m: [builder.call(mload, [c_ptr(j, v), ir.Constant(i32, align),
                                            m[j * nv + v], zero])
                       for j in range(NR) for v in range(nv)])
        load_end = builder.block
    start = builder.block
    acc = phis([([zero] * len(loaded), entry), (loaded, load_end)])

    if UNROLL > 1:
        k_main = builder.mul(builder.sdiv(k, const(UNROLL)), const(UNROLL))
        mid = builder.append_basic_block("mk.mid")
        acc_main, main_end = loop(const(0), k_main, UNROLL, acc, start, mid)
        builder.position_at_end(mid)
        p0 = builder.phi(i64)
        p0.add_incoming(const(0), start)
        p0.add_incoming(k_main, main_end)
        acc = phis([(acc, start), (acc_main, main_end)])
        start, lo = mid, p0
    else:
        lo = const(0)
    done = builder.append_basic_block("mk.done")
    acc_rem, rem_end = loop(lo, k, 1, acc, start, done)
    builder.position_at_end(done)
    out = phis([(acc, start), (acc_rem, rem_end)])

    def when(flag, make, values):
        """make(values) where the i1 ``flag`` holds, else values (phis after)."""
        before = builder.block
        with builder.if_then(flag):
            done = make(values)
            block = builder.block
        return phis([(values, before), (done, block)])

    def load(ptr, m):
        """A vector at ``ptr``: whole, or with the mask m (None: whole)."""
        ptr = builder.bitcast(ptr, vptr)
        if m is None:
            return builder.load(ptr, align=align)
        return builder.call(mload, [ptr, ir.Constant(i32, align), m, zero])

    def epilogue(values, m):
        """The store's work on the register block (docstring: bias, relu,
        deriv), lanes read whole or with the masks ``m`` of the edge."""
        e = _Emit(builder, vec)
        if bias is not None:
            # z_i = sum_p ... + b_i: one vector of b per MR / W rows, for every column
            pbias, use_bias = bias

            def add_bias(vals):
                b = [load(builder.gep(pbias, [const(v * W)]), None if m is None else m[v])
                     for v in range(nv)]
                return [e.add(x, b[idx % nv]) for idx, x in enumerate(vals)]

            values = when(use_bias, add_bias, values)
        if relu is not None:
            # a = relu(z) (``functions.emit_relu``)
            values = when(relu, lambda vals: [emit_relu(e, x) for x in vals], values)
        if deriv is not None:
            code, pact = deriv

            def times_relu_prime(vals):
                out = []
                for idx, d in enumerate(vals):
                    j, v = divmod(idx, nv)
                    a = load(builder.gep(pact, [builder.add(builder.mul(ldc, const(j)),
                                                            const(v * W))]),
                             None if m is None else m[idx])
                    out.append(emit_times_derivative(e, RELU, d, a))
                return out

            values = when(builder.icmp_signed("==", code, ir.Constant(code.type, RELU)),
                          times_relu_prime, values)
        return values

    def store_full():
        for idx, x in enumerate(epilogue(out, None)):
            builder.store(x, c_ptr(*divmod(idx, nv)), align=align)
        return []

    def store_edge(m):
        for idx, x in enumerate(epilogue(out, m)):
            builder.call(mstore, [x, c_ptr(*divmod(idx, nv)), ir.Constant(i32, align), m[idx]])
        return []

    if_full(store_full, store_edge)


def _is_array(x):
    """A C-contiguous array of any dimension: the intrinsics address its values
    by their flat index from its data pointer, as if it were ``x.reshape(-1)``
    (which numba computes through a call per reshape: measurable in a gradient
    of a few units)."""
    return isinstance(x, types.Array) and x.layout == "C"


@intrinsic
def micro_kernel(typingctx, k, a, a_off, b, b_off, c, c_off, ldc, accumulate, mr, nr):
    """C[i, j] (+)= sum_k A[i, k] * B[k, j] for one MR x NR block (module docstring),
    of which the top-left mr x nr corner is C.

    Parameters
    ----------
    k : int
        Length of the sum.
    a, b : C-contiguous arrays of float64 or float32 (indexed flat)
        Hold the packed micro-panels from ``a_off`` (``a[a_off + k * MR + i]``)
        and ``b_off`` (``b[b_off + k * NR + j]``).
    c : C-contiguous array of the same dtype (indexed flat)
        C[i, j] is ``c[c_off + j * ldc + i]``.
    accumulate : bool
        Add to C (continuing each entry's chain of multiply-adds) or overwrite it.
    mr, nr : int
        Rows (1..MR) and columns (1..NR) of C: nothing outside them is read or
        written (masked vector loads and stores at the edges of a matrix).
    """
    if not (all(_is_array(x) for x in (a, b, c)) and isinstance(a.dtype, types.Float)
            and b.dtype == a.dtype == c.dtype):
        return None
    bits = a.dtype.bitwidth
    MR, NR = BLOCKS[(bits, VECTOR_BITS)][:2]
    W = VECTOR_BITS // bits

    def codegen(context, builder, sig, args):
        kk, ao, bo, co, ld, m, n = (context.cast(builder, args[i], sig.args[i], types.intp)
                                    for i in (0, 2, 4, 6, 7, 9, 10))
        pa, pb, pc = (builder.gep(context.make_array(sig.args[i])(context, builder,
                                                                  args[i]).data, [off])
                      for i, off in ((1, ao), (3, bo), (5, co)))
        acc = context.cast(builder, args[8], sig.args[8], types.boolean)
        T = context.get_value_type(a.dtype)
        _emit_micro_kernel(builder, T, W, MR, NR, kk, pa, pb, pc, ld, acc, m, n)
        return context.get_dummy_value()

    return types.none(k, a, a_off, b, b_off, c, c_off, ldc, accumulate, mr, nr), codegen


@intrinsic
def micro_kernel_rows(typingctx, k, a, a_off, b, b_off, ldb, c, c_off, ldc, accumulate, mr, nr,
                      code, act, bias, bias_off, relu):
    """``micro_kernel`` with B read from its rows where they lie instead of from a
    packed micro-panel: B[p, j] is ``b[b_off + j * ldb + p]``, so

        C[i, j] (+)= sum_p A[i, p] * b[b_off + j * ldb + p]

    (the same chain of fused multiply-adds per entry, so the same bits as on a
    packed B).  For the forward and backward products, whose B is a block of
    examples' rows of a^(l-1) or delta^(l) (contiguous along the sum index p):
    each of the NR broadcasts per step is a load from one of NR rows, which
    stay in L1 across the micro-kernels of one block of A, so the pass that
    packed them (a gather of NR strided values per p) is not made.  Rows j >=
    nr are not read.

    ``code`` and ``act`` (an array of C's shape, C's dtype): for the relu code,
    each stored entry is C[i, j] f'(z) with f'(z) written from a = f(z) at
    ``act[c_off + j * ldc + i]`` (the backward pass's delta^(l-1) =
    f'(z^(l-1)) * sum_i W[i, j] delta^(l)_i, 004 eq. (4), 002 eq. (2)),
    computed as ``functions.times_derivative`` computes it; any other code
    stores C.  ``bias`` (C's dtype) and ``bias_off`` >= 0: each stored entry is
    C[i, j] + bias[bias_off + i] (z = W a + b, 000 eq. before (1)), and then
    with ``relu`` relu of it (a = f(z), 002 eq. (2)); the forward pass's
    epilogue, as ``z += b`` and ``functions.relu`` compute it."""
    if not (all(_is_array(x) for x in (a, b, c, act, bias)) and isinstance(a.dtype, types.Float)
            and b.dtype == a.dtype == c.dtype == act.dtype == bias.dtype
            and isinstance(code, types.Integer) and isinstance(bias_off, types.Integer)
            and isinstance(relu, types.Boolean)):
        return None
    bits = a.dtype.bitwidth
    MR, NR = BLOCKS[(bits, VECTOR_BITS)][:2]
    W = VECTOR_BITS // bits

    def codegen(context, builder, sig, args):
        kk, ao, bo, lb, co, ld, m, n, cd, qo = (
            context.cast(builder, args[i], sig.args[i], types.intp)
            for i in (0, 2, 4, 5, 7, 8, 10, 11, 12, 15))
        use_bias = builder.icmp_signed(">=", qo, ir.Constant(qo.type, 0))
        # an unused bias offset points at bias[0]
        qo = builder.select(use_bias, qo, ir.Constant(qo.type, 0))
        pa, pb, pc, pact, pbias = (
            builder.gep(context.make_array(sig.args[i])(context, builder, args[i]).data, [off])
            for i, off in ((1, ao), (3, bo), (6, co), (13, co), (14, qo)))
        acc = context.cast(builder, args[9], sig.args[9], types.boolean)
        relu_on = context.cast(builder, args[16], sig.args[16], types.boolean)
        T = context.get_value_type(a.dtype)
        _emit_micro_kernel(builder, T, W, MR, NR, kk, pa, pb, pc, ld, acc, m, n, ldb=lb,
                           deriv=(cd, pact), bias=(pbias, use_bias), relu=relu_on)
        return context.get_dummy_value()

    return (types.none(k, a, a_off, b, b_off, ldb, c, c_off, ldc, accumulate, mr, nr, code, act,
                       bias, bias_off, relu), codegen)


def kernel_asm(dtype, bits: int = VECTOR_BITS, cpu: str | None = None) -> str:
    """The assembly of the micro-kernel alone, as a function
    ``kernel(k, a, b, c, ldc, accumulate, mr, nr)``, at width ``bits`` for the LLVM
    CPU ``cpu`` (default: this host), to read its inner loop on CPUs this host
    is not (``asv_bench/microkernel_sweep.py --asm``)."""
    T = ir.DoubleType() if np.dtype(dtype).itemsize == 8 else ir.FloatType()
    dtype_bits = np.dtype(dtype).itemsize * 8
    MR, NR = BLOCKS[(dtype_bits, bits)][:2]
    i64, ptr = ir.IntType(64), T.as_pointer()
    module = ir.Module("micro_kernel")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64, ptr, ptr, ptr, i64,
                                                             ir.IntType(1), i64, i64]),
                     "kernel")
    builder = ir.IRBuilder(fn.append_basic_block())
    k, pa, pb, pc, ldc, accumulate, mr, nr = fn.args
    _emit_micro_kernel(builder, T, bits // dtype_bits, MR, NR, k, pa, pb, pc, ldc, accumulate,
                       mr, nr)
    builder.ret_void()
    parsed = llvm.parse_assembly(str(module))
    parsed.verify()
    if cpu is None:
        cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    else:
        features = ""
    machine = llvm.Target.from_default_triple().create_target_machine(cpu=cpu,
                                                                      features=features, opt=3)
    passes = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(3))
    passes.getModulePassManager().run(parsed, passes)
    return machine.emit_assembly(parsed)


def inner_loop(asm: str) -> dict:
    """Counts over the basic block of x86 ``asm`` with the most vector FMAs (the k
    loop of a micro-kernel): its instructions, FMAs, broadcasts, memory operands
    and stack accesses (spills)."""
    blocks, cur = [], []
    for line in asm.splitlines():
        line = line.strip()
        if line.endswith(":"):
            blocks.append(cur)
            cur = []
        elif line and not line.startswith((".", "#")):
            cur.append(line)
    blocks.append(cur)
    body = max(blocks, key=lambda blk: sum(x.startswith("vfmadd") for x in blk))
    return {
        "instructions": len(body),
        "fma": sum(x.startswith("vfmadd") for x in body),
        "broadcast": sum(x.startswith(("vbroadcast", "vmovddup")) for x in body),
        "memory operands": sum("(" in x for x in body if not x.startswith("lea")),
        "stack": sum("(%rsp)" in x or "(%rbp)" in x for x in body),
    }


@intrinsic
def block_sizes(typingctx, x):
    """(MR, NR, KC, MC, NC) of ``x``'s dtype at this module's width, as constants."""
    if not (isinstance(x, types.Array) and isinstance(x.dtype, types.Float)):
        return None
    sizes = BLOCKS[(x.dtype.bitwidth, VECTOR_BITS)]
    tup = types.UniTuple(types.intp, len(sizes))

    def codegen(context, builder, sig, args):
        return context.make_tuple(builder, tup, [context.get_constant(types.intp, v)
                                                 for v in sizes])

    return tup(x), codegen


# ------------------------------------------------------------------ packing


@intrinsic
def _panel_row(typingctx, src, s_off, s_stride, rows, dst, d_off, side):
    """dst[d_off + i] = src[s_off + i * s_stride] for i < rows, 0 for rows <= i < R
    (R = MR for side 0, NR for side 1): one row of a micro-panel, stored as one
    vector; read as one vector load when s_stride is 1 and rows is R, else by
    R loads (of the last row past ``rows``: always inside src) and selects.
    Raw addresses: numba's indexing adds a negative-index test to every
    element, and its loops of R copies are unrolled into scalar moves (the SLP
    vectorizer is off)."""
    if not (_is_array(src) and _is_array(dst) and src.dtype == dst.dtype
            and isinstance(src.dtype, types.Float) and isinstance(side, types.IntegerLiteral)):
        return None
    R = BLOCKS[(src.dtype.bitwidth, VECTOR_BITS)][side.literal_value]

    def codegen(context, builder, sig, args):
        T = context.get_value_type(sig.args[0].dtype)
        vec = ir.VectorType(T, R)
        align = 8 if isinstance(T, ir.DoubleType) else 4
        sp = context.make_array(sig.args[0])(context, builder, args[0]).data
        dp = context.make_array(sig.args[4])(context, builder, args[4]).data
        so, st, n, do = (context.cast(builder, args[i], sig.args[i], types.intp)
                         for i in (1, 2, 3, 5))
        base = builder.gep(sp, [so])
        i64 = st.type
        fast = builder.and_(builder.icmp_signed("==", st, ir.Constant(i64, 1)),
                            builder.icmp_signed("==", n, ir.Constant(i64, R)))
        with builder.if_else(fast, likely=True) as (contiguous, general):
            with contiguous:
                blk_c = builder.block
                v_c = builder.load(builder.bitcast(base, vec.as_pointer()), align=align)
            with general:
                v_g = ir.Constant(vec, ir.Undefined)
                last = builder.sub(n, ir.Constant(i64, 1))
                for i in range(R):
                    inside = builder.icmp_signed("<", ir.Constant(i64, i), n)
                    row = builder.select(inside, ir.Constant(i64, i), last)
                    x = builder.load(builder.gep(base, [builder.mul(st, row)]), align=align)
                    x = builder.select(inside, x, ir.Constant(T, 0))
                    v_g = builder.insert_element(v_g, x, ir.Constant(ir.IntType(32), i))
                blk_g = builder.block
        v = builder.phi(vec)
        v.add_incoming(v_c, blk_c)
        v.add_incoming(v_g, blk_g)
        builder.store(v, builder.bitcast(builder.gep(dp, [do]), vec.as_pointer()), align=align)
        return context.get_dummy_value()

    return types.none(src, s_off, s_stride, rows, dst, d_off, side), codegen


@njit(fastmath=FASTMATH, error_model=ERROR_MODEL, inline="always")
def _pack(s, off, rs, cs, m, k, side, out, out_off):
    """Pack S[0:m, 0:k], S[i, p] = ``s[off + i * rs + p * cs]``, into micro-panels of R
    rows (R = MR for side 0, NR for side 1):
    ``out[out_off + (i // R) * R * k + p * R + i % R] = S[i, p]``, the rows past m
    of the last panel set to 0 (they only feed entries of C that are not stored)."""
    R = block_sizes(out)[side]
    if rs == 1:
        # column p of S is contiguous: read it along the whole block (one stream
        # per p; per panel it would be R values from each of k rows far apart)
        for p in range(k):
            for i0 in range(0, m, R):
                _panel_row(s, off + p * cs + i0, 1, min(R, m - i0), out,
                           out_off + i0 * k + p * R, side)
    else:
        # R rows of S at a time, each read along p (contiguous when cs == 1)
        for i0 in range(0, m, R):
            rows = min(R, m - i0)
            for p in range(k):
                _panel_row(s, off + i0 * rs + p * cs, rs, rows, out,
                           out_off + i0 * k + p * R, side)


@njit(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL)
def pack_a(a, off, rs, cs, m, k, out, out_off):
    """Pack A[0:m, 0:k], A[i, p] = ``a[off + i * rs + p * cs]``, into micro-panels of
    MR rows: ``out[out_off + (i // MR) * MR * k + p * MR + i % MR] = A[i, p]``,
    zero-padded to a multiple of MR rows."""
    _pack(a, off, rs, cs, m, k, 0, out, out_off)


@njit(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL)
def pack_b(b, off, rs, cs, k, n, out, out_off):
    """Pack B[0:k, 0:n], B[p, j] = ``b[off + p * rs + j * cs]``, into micro-panels of
    NR columns: ``out[out_off + (j // NR) * NR * k + p * NR + j % NR] = B[p, j]``,
    zero-padded to a multiple of NR columns."""
    _pack(b, off, cs, rs, n, k, 1, out, out_off)


# ------------------------------------------------------------------ GEMM


def workspace_size(n: int, dtype) -> int:
    """Values of the ``work`` buffer ``gemm`` needs for a product with n columns:
    one packed block of A (MC x KC) and one of B (KC x min(n, NC) rounded up to
    NR), each starting on a 64-byte line."""
    _, NR, KC, MC, NC = blocks(dtype)
    per_line = 64 // np.dtype(dtype).itemsize
    cols = -(-min(max(n, 1), NC) // NR) * NR
    return sum(-(-size // per_line) * per_line for size in (MC * KC, KC * cols))


def workspace(n: int, dtype) -> np.ndarray:
    """A ``work`` buffer for ``gemm`` (``workspace_size`` values), 64-byte aligned so
    that no vector load of a packed panel crosses a cache line."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(workspace_size(n, dtype) + 64 // itemsize, dtype)
    skip = (-raw.ctypes.data % 64) // itemsize
    return raw[skip:skip + workspace_size(n, dtype)]


@njit(fastmath=FASTMATH, error_model=ERROR_MODEL, inline="always")
def _even_step(size, most, unit):
    """The step that cuts range(size) into the fewest blocks of at most ``most``
    values, of equal sizes rounded up to a multiple of ``unit`` (``most`` is one);
    at least ``unit``."""
    count = max(1, (size + most - 1) // most)
    per_block = (size + count - 1) // count
    return max(1, (per_block + unit - 1) // unit) * unit


@njit(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL)
def gemm(m, n, k, a, a_off, a_rs, a_cs, b, b_off, b_rs, b_cs, c, c_off, ldc, accumulate,
         work):
    """C (+)= A B for general strides (C column-major), on the micro-kernel.

    Parameters
    ----------
    m, n, k : int
        C is m x n, the sum runs over k.
    a, b : 1-d C-contiguous arrays
        A[i, p] is ``a[a_off + i * a_rs + p * a_cs]``, B[p, j] is
        ``b[b_off + p * b_rs + j * b_cs]``: any layout of either, transposed or
        not, through the strides.
    c : 1-d C-contiguous array of the same dtype
        C[i, j] is ``c[c_off + j * ldc + i]``.
    accumulate : bool
        C += A B, else C = A B.
    work : 1-d C-contiguous array
        ``workspace(n, dtype)``.

    Notes
    -----
    C[i, j] = sum_p A[i, p] B[p, j], each entry one chain of fused multiply-adds
    over p = 0..k-1 in order (module docstring): bit-identical for any m, n,
    offsets and blocking.  BLIS's loop nest: per block of NC columns and KC
    values of p, B is packed once (kept in L3); per block of MC rows, A is
    packed (kept in L2); per micro-panel of B (kept in L1 while the block of A
    streams past), the micro-kernel runs over the block's micro-panels of A.
    Blocks after the first value of p accumulate into C, continuing each
    entry's chain.  At the edges (fewer than MR rows or NR columns left) the
    packed panels are padded with zeros and the micro-kernel's loads and
    stores of C are masked.
    """
    MR, NR, KC, MC, NC = block_sizes(work)
    line = 64 // work.itemsize
    wb = -(-(MC * KC) // line) * line
    # equal blocks of at most KC (MC, NC): a last block of a few values of p
    # would pay the micro-kernel's loads and stores of C for little work
    k_step = _even_step(k, KC, 1)
    m_step = _even_step(m, MC, MR)
    n_step = _even_step(n, NC, NR)
    for jc in range(0, n, n_step):
        nc = min(n_step, n - jc)
        # k = 0: one pass with kc = 0, which stores C = 0 (or leaves C)
        for pc in range(0, max(k, 1), k_step):
            kc = min(k_step, k - pc)
            acc = accumulate or pc > 0
            pack_b(b, b_off + pc * b_rs + jc * b_cs, b_rs, b_cs, kc, nc, work, wb)
            for ic in range(0, m, m_step):
                mc = min(m_step, m - ic)
                pack_a(a, a_off + ic * a_rs + pc * a_cs, a_rs, a_cs, mc, kc, work, 0)
                for j_nr in range(0, nc, NR):
                    for i_mr in range(0, mc, MR):
                        c0 = c_off + (jc + j_nr) * ldc + ic + i_mr
                        micro_kernel(kc, work, i_mr * kc, work, wb + j_nr * kc, c, c0, ldc, acc,
                                     min(MR, mc - i_mr), min(NR, nc - j_nr))


def matmul(X, Y, out=None, *, trans_x=False, trans_y=False, accumulate=False, work=None):
    """out (+)= op(X) @ op(Y) for C-contiguous 2-d arrays of one float dtype, on ``gemm``.

    Parameters
    ----------
    X : ndarray of shape (M, K), or (K, M) with ``trans_x`` (op(X) = X^T)
    Y : ndarray of shape (K, N), or (N, K) with ``trans_y``
    out : ndarray of shape (M, N), optional
        Written (or added to, with ``accumulate``); allocated when not given.
    work : ndarray, optional
        ``workspace(M, dtype)``, reused across calls of the same M (or less).

    Returns
    -------
    out : ndarray of shape (M, N)

    Notes
    -----
    out[r, s] = sum_p op(X)[r, p] op(Y)[p, s].  ``gemm`` writes a column-major C,
    and a row-major out is the column-major C = out^T = op(Y)^T op(X)^T: its A
    is op(Y)^T (rows s, contiguous in s unless ``trans_y``), its B op(X)^T.
    The three products of backpropagation are this with op = identity or a
    transpose: z = W a (out = A W^T, ``trans_y``), delta_prev = W^T delta
    (out = D W), dW = delta a^T (out = D^T A, ``trans_x``), examples as rows.
    """
    M, K = X.shape[::-1] if trans_x else X.shape
    K2, N = Y.shape[::-1] if trans_y else Y.shape
    if K2 != K:
        raise ValueError(f"inner dimensions differ: {K} and {K2}")
    for x in (X, Y) + (() if out is None else (out,)):
        if not (x.flags.c_contiguous and x.dtype == X.dtype and x.dtype.kind == "f"):
            raise ValueError("X, Y and out must be C-contiguous and of one float dtype")
    if out is None:
        out = np.zeros((M, N), X.dtype)
    if out.shape != (M, N):
        raise ValueError(f"out has shape {out.shape}, not {(M, N)}")
    if work is None:
        work = workspace(M, X.dtype)
    a_rs, a_cs = (K, 1) if trans_y else (1, N)
    b_rs, b_cs = (M, 1) if trans_x else (1, K)
    gemm(N, M, K, Y.reshape(-1), 0, a_rs, a_cs, X.reshape(-1), 0, b_rs, b_cs, out.reshape(-1),
         0, N, accumulate, work)
    return out
