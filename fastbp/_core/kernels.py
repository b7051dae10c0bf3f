"""Compiled loops: forward, loss, backward and gradient sums of an MLP.

Everything is written in the canonical notation of ``shared/seeds/README.md``:
layers l = 1..L, a^(0) = x, W^(l)[i, j] out x in, z, a, delta.  The layers are
described by an int64 ``layout`` table (one row per layer, columns below) and
the parameters by ONE flat vector ``theta`` (see ``fastbp.params``), so one
compiled specialization per dtype serves every architecture.

Buffers for a batch of N examples (allocated by the caller, reused freely):

- ``acts``   (N, S): row e holds a^(0)(e), a^(1)(e), ..., a^(L)(e) side by side,
  layer l in columns [C_OUT of layer l, + n_l); S = n_0 + n_1 + ... + n_L.
- ``deltas`` (N, S): delta^(l)(e) in the same columns (layer 0: dJ/dx).
- ``scratch`` (``scratch_size(layout, N)`` values): a flag, the packed weights,
  and (gradient drivers) two buffers of the packed panels of a^(l-1) and
  delta^(l) that the weight gradients read, one chunk of examples each.

Every multiply-add of the three equations (z = W a, sum_i W[i, j] delta_i,
dW = sum_e delta a^T) runs in the register-blocked micro-kernel of
``microkernel``: an MR x NR block of outputs held in vector registers for the
whole sum, over operands packed into micro-panels.  W^(l) and W^(l)T are
packed once per call (``_pack_weights``); the examples' activations and deltas
are read where they lie, from their rows (``_block_product``); the weight
gradients' operands are packed by the block of examples that produced them
(``_to_panels``).  Each
output is one chain of fused multiply-adds over its sum index in order, so its
bits depend on the layer's shape and N alone: results are bit-identical for
any thread count and any cut of the batch or of the units into tasks.  Three
phases, each race-free:

0. the packed weights (O(weights); one task, or one per matrix for large
   networks: ``_pack_tasks``).
1. per block of examples (``_block_rows``): forward, loss and output delta,
   backward, and the block's part of the panels; a block writes only its own
   rows of the buffers and its own part of the panels.
2. per (layer, block of inputs j, block of outputs i) task: dJ/dW[i, j] =
   sum_e delta_i(e) a_j(e), dJ/db_i, from the panels; a task writes only its own
   entries of the gradient.

Phases 1 and 2 run chunk by chunk of examples (``_chunking``: one KC block of
examples for most networks), each chunk's tasks continuing the sums where the
chunk before left them, so that the panels are read back from cache instead
of memory: on one thread, C3's gradient (150-100-5, 10,000 examples) took
0.82 of the time of one chunk for the whole batch (float64; 0.86 in
float32), C3 with 2,000 examples 0.91, C4-4096 and C5 about the same
(0.95-1.03); on two threads 0.84 (C3 float64), 0.88 (float32)
(docs/benchmarks.md).

Structure (as in stumpy): serial ``@njit`` workers that write only their own
slice; two drivers, one ``parallel=True`` and one serial twin for small
problems, that only loop over the workers.  The parallel driver is one region
whose threads take the three phases' tasks, in order, from one queue
(``sync``): a thread that starts late takes what is left, and whichever thread
runs a task, it writes the same bits to the same place.

Compile time shapes the structure.  Every compiled function costs a fixed
share of a cold start, and each function that calls others links their code
into its own and has LLVM optimize it all again, once per level.  So there are
three workers (``_pack_weights``, ``_example_block``, ``_weight_grad_task``),
compiled once per dtype and called by the drivers through their addresses
(see the drivers), and no worker allocates (they and the serial drivers run
without reference counting).  Every function here is cached only at the host's
vector width (``microkernel.CACHE``): the micro-kernel's block sizes are
constants in their code, and numba's cache is keyed on the source and the CPU,
so code compiled under a forced width would otherwise be loaded at another.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types

from . import sync
from .config import ERROR_MODEL, FASTMATH
from .functions import (
    BCE,
    CROSS_ENTROPY,
    EXP,
    IDENTITY,
    POISSON,
    RELU,
    SOFTMAX,
    SSE,
    activate,
    add_kept,
    bce_term,
    cross_entropy_term,
    exp,
    fixed_sum,
    mul_kept,
    output_delta,
    poisson_term,
    softmax_dot,
    sse_term,
    sub_kept,
    times_derivative,
)
from .microkernel import (
    CACHE,
    _even_step,
    _panel_row,
    block_sizes,
    micro_kernel,
    micro_kernel_rows,
    pack_a,
)
from .numba_private import NO_REFCOUNT, compiled_address, function_at

# Columns of the layout table (one row per layer l = 1..L, stored at row l - 1):
# G_TASK0: the layer's first _weight_grad_task; PACK_W, PACK_T: where its
# packed W and W^T start in the scratch; PA_ROW, PD_ROW: its panel rows of
# a^(l-1) and delta^(l); P0, P_ROWS, CHUNK (equal in every row): where the
# packed weights end, the panel rows in all, and the examples per chunk of
# the weight gradients (``_chunking``).
(N_IN, N_OUT, W_OFF, B_OFF, ACT, C_IN, C_OUT, G_TASK0, PACK_W, PACK_T, PA_ROW, PD_ROW,
 P0, P_ROWS, CHUNK) = range(15)
LAYOUT_COLUMNS = 15
INPUT = np.int64(-1)  # act_prev of the input layer (it has no activation)
EVERY_MATRIX = np.int64(-1)  # the _pack_weights task that packs them all

# examples per phase-1 block (``_block_rows``): at least BLOCK_MIN, at most about
# BLOCK_MAX
BLOCK_MIN, BLOCK_MAX = 48, 512
GCOLS = 8  # at most this many micro-panels (NR units i each) per weight-gradient task
# bytes of panels per chunk of examples, about (``plan.layout_table`` turns it
# into whole KC blocks of examples, at least one: the layout's ``CHUNK``).
# Measured (2-core AVX2, one and two threads, 256K-4M): the smallest chunk,
# one KC block of examples, was the fastest or tied on C3, C4 and C5; a chunk
# of many KC blocks only for networks whose panels are a few values per example.
CHUNK_BYTES = 1 << 19


def scratch_size(layout, N: int, grad: bool = True) -> int:
    """Values of the drivers' ``scratch`` for batches of up to N examples: the
    flag, the counters and the packed weights (``P0`` values), then (the
    gradient drivers, ``grad``) a counter pair per chunk of examples and the
    panel buffers (``_chunking``)."""
    p0, p_rows, ch = (int(layout[0, c]) for c in (P0, P_ROWS, CHUNK))
    if not grad:
        return p0
    # as _chunking and _panel_base compute them, in Python (no compile)
    cap, count = min(N, ch), max(1, -(-N // ch))
    return p0 + -(-2 * count // 16) * 16 + min(2, count) * cap * p_rows


@njit(inline="always", error_model=ERROR_MODEL)
def _up(x, unit):
    """x rounded up to a multiple of ``unit``: a padded panel's rows or columns."""
    return (x + unit - 1) // unit * unit


@njit(inline="always", error_model=ERROR_MODEL)
def _chunking(layout, N):
    """(cap, count): the weight gradients run over the batch in ``count`` chunks
    of ``CHUNK`` examples in order (the last one shorter), each chunk's panels
    written by its examples' blocks and read by its weight-gradient tasks
    while they are still in cache; ``cap`` = min(N, CHUNK) examples per panel
    buffer.  The chunks change the order of nothing: each gradient entry is
    one chain of fused multiply-adds over e = 0..N-1, continued from chunk to
    chunk, so the bits do not depend on ``CHUNK``."""
    ch = layout[0, CHUNK]
    return min(N, ch), max(1, (N + ch - 1) // ch)


@njit(inline="always", error_model=ERROR_MODEL)
def _panel_base(layout, N):
    """Where the panel buffers start in the scratch: after the packed weights and
    a pair of counters per chunk (``_chunk_counter``), on a 64-byte line."""
    return layout[0, P0] + _up(2 * _chunking(layout, N)[1], 16)


@njit(inline="always", error_model=ERROR_MODEL)
def _panel_buffer(layout, N, c):
    """Where chunk c's panels start: two buffers, used by the chunks in turn (a
    parallel driver writes chunk c + 1's while it reads chunk c's)."""
    return _panel_base(layout, N) + (c % 2) * _chunking(layout, N)[0] * layout[0, P_ROWS]


@njit(inline="always", error_model=ERROR_MODEL)
def _chunk_counter(layout, c, tasks):
    """The scratch index of chunk c's count of blocks done (``tasks`` False) or of
    weight-gradient tasks done (True), for the parallel driver's waits."""
    return layout[0, P0] + 2 * c + (1 if tasks else 0)


@njit(inline="always", error_model=ERROR_MODEL)
def _block_rows(scratch, N, threads):
    """Examples per phase-1 block for a batch of N on ``threads`` threads: as
    many as possible (each block streams every packed W^(l) from memory once),
    at most about BLOCK_MAX (the block's activations stay in L2), in at least two
    blocks per thread when there are several (a thread held up elsewhere
    delays only its share), and at least BLOCK_MIN; a multiple of NR (the
    micro-kernel's columns).  The bits do not depend on it."""
    MR, NR, KC, MC, NC = block_sizes(scratch)
    count = max((N + BLOCK_MAX - 1) // BLOCK_MAX, 2 * threads if threads > 1 else 1)
    rows = max((N + count - 1) // count, BLOCK_MIN)
    return _up(rows, NR)


# ---------------------------------------------------------------- phase 1 workers


@njit(fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _derivative_rows(code, acts, deltas, e0, e1, c, n):
    """delta *= f'(z), written from a = f(z), over columns c..c+n-1 of rows e0..e1-1
    (004 eq. (4); 000 eq. (5b)).  ``code`` does not change in the loop, so LLVM
    moves the branch in ``times_derivative`` out of it and each version of the
    loop body is one formula (vectorizable when the formula is)."""
    for e in range(e0, e1):
        a = acts[e, c:c + n]
        d = deltas[e, c:c + n]
        for k in range(n):
            d[k] = times_derivative(code, d[k], a[k])


@njit(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _output_delta(lay, acts, deltas, Y, weights, losses, loss_code, scale, want_loss,
                  want_delta, e0, e1):
    """Turn z^(L)(e) into a^(L)(e) for examples e0..e1-1; when asked, write the
    example's loss to ``losses[e]`` and delta^(L) = scale * dJ/dz^(L) (scale = 1/N
    for the mean, else 1).  Without ``want_loss`` and ``want_delta``, Y is not read.

    With ``weights`` (N values; none: an empty array) example e counts w_e times:
    its loss is written as w_e J(e) and its delta scaled by w_e, so the drivers'
    J = scale sum_e w_e J(e) with scale = 1 / sum_e w_e for the mean (the
    weighted mean), and every gradient sum over e is the weighted one.

    softmax: a_k = exp(z_k - lse), lse = m + ln sum_k exp(z_k - m), m = max z (no
    overflow).  cross_entropy (002 eq. (29), 004 section 3): sum_k y_k (lse - z_k).
    bce (000 eq. (1)): per unit softplus(z) - y z, which equals
    -[y ln a + (1 - y) ln(1 - a)] without taking ln of a rounded 0.  Both have the
    cancelled delta a - y (000 eq. (5a)-(6), 002 eq. (31), 004 eq. (1); 001's advice:
    no division by a(1 - a)).
    poisson (exp output, a = e^z, the mean of a Poisson count y): the negative
    log-likelihood a - y ln a + ln y!, less the constant ln y!, is
    J(e) = sum_k a_k - y_k z_k (z = ln a, so no ln of a rounded 0), and
    dJ/dz_k = da_k/dz_k - y_k = a_k - y_k: the third cancelling pair (as for
    000 eq. (5a)-(6), the output derivative e^z = a cancels against the loss's).
    sse (002 eq. (5), 003): 1/2 sum (a - y)^2; delta (a - y) f'(z) (002 eq. (23)-(24),
    003 eq. (46)), f'(z) = a for an exp output, or for a softmax output the Jacobian
    of 002 eq. (30): delta_k = a_k [(a_k - y_k) - sum_m a_m (a_m - y_m)].
    Every term is one of ``functions``' output-layer formulas (``bce_term`` ..
    ``output_delta``), sums over the units run in order from 0 with
    ``add_kept``: nothing here is reordered, so a specialized module
    (``small``) computing the same formulas example by example in vector lanes
    gets the same bits.
    """
    n_out, act, c = lay[N_OUT], lay[ACT], lay[C_OUT]
    zero = acts.dtype.type(0)
    softmax = act == SOFTMAX
    exp_out = act == EXP
    weighted = weights.shape[0] > 0
    sse = loss_code == SSE
    for e in range(e0, e1):
        lse = zero
        if softmax:
            m = acts[e, c]
            for k in range(1, n_out):
                m = max(m, acts[e, c + k])
            s = zero
            for k in range(n_out):
                s = add_kept(s, exp(sub_kept(acts[e, c + k], m)))
            lse = add_kept(m, math.log(s))
        J = zero
        dot = zero  # sum_m a_m (a_m - y_m), for sse after softmax
        for k in range(n_out):
            z = acts[e, c + k]
            if softmax:
                a = exp(sub_kept(z, lse))
            elif exp_out:
                a = exp(z)
            else:
                a = activate(act, z)
            acts[e, c + k] = a
            if want_loss or want_delta:
                y = Y[e, k]
                if loss_code == CROSS_ENTROPY:
                    J = add_kept(J, cross_entropy_term(y, lse, z))
                elif loss_code == BCE:
                    J = add_kept(J, bce_term(z, y))
                elif loss_code == POISSON:
                    J = add_kept(J, poisson_term(a, y, z))
                else:
                    J = add_kept(J, sse_term(a, y))
                    dot = softmax_dot(a, y, dot)
        # the example's weight, when there are weights: a separate multiply, so
        # that the unweighted results keep their bits
        s = mul_kept(scale, weights[e]) if weighted else scale
        if want_loss:
            losses[e] = mul_kept(J, weights[e]) if weighted else J
        if want_delta:
            for k in range(n_out):
                deltas[e, c + k] = output_delta(act, sse, s, acts[e, c + k], Y[e, k], dot)


@njit(inline="always", error_model=ERROR_MODEL)
def _task_layer(layout, col, t):
    """The layer (row of ``layout``) of task t: the last l with layout[l, col] <= t,
    ``col`` holding each layer's first task (a non-decreasing column).  A binary
    search, so a task costs O(log L), not O(L): a network of many narrow layers
    would otherwise take time quadratic in its depth."""
    lo, hi = 0, layout.shape[0] - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if layout[mid, col] <= t:
            lo = mid
        else:
            hi = mid - 1
    return lo


# ---------------------------------------------------------------- micro-kernel layers


@njit(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL, **NO_REFCOUNT)
def _pack_weights(theta, layout, scratch, backward, input_grad, t):
    """W^(l) (and, with ``backward``, W^(l)T for l >= 2, and for l = 1 with
    ``input_grad``) into micro-panels at ``PACK_W`` (``PACK_T``) of ``scratch``:
    the A operand of ``_block_product`` for z = W a and for sum_i W[i, j]
    delta_i.  Task t < 0: every layer; else one matrix, W^(l) for t = 2 (l - 1),
    W^(l)T for t = 2 (l - 1) + 1, so that a parallel driver can pack the
    matrices side by side (``_pack_in_parallel``).

    A is packed per block of ``KC`` values of the sum index p (blocks of equal
    size, ``_even_step``): the block at p0 holds, from m_pad * p0 on (m_pad = m
    rounded up to MR), one micro-panel of MR rows per MR rows of A,
    ``A[i, p]`` at ``(i // MR) * MR * kc + (p - p0) * MR + i % MR``."""
    MR, NR, KC, MC, NC = block_sizes(scratch)
    # task t's layer alone (a loop over every layer per task would make the
    # packing of a deep network quadratic in its depth)
    first, stop = (0, layout.shape[0]) if t < 0 else (t // 2, t // 2 + 1)
    for l in range(first, stop):
        n_in, n_out, w_off = layout[l, N_IN], layout[l, N_OUT], layout[l, W_OFF]
        if t < 0 or t == 2 * l:
            # A = W: m = n_out rows, sum over j; A[i, p] = theta[w_off + i * n_in + p]
            pad = _up(n_out, MR)
            step = _even_step(n_in, KC, 1)
            for p0 in range(0, n_in, step):
                pack_a(theta, w_off + p0, n_in, 1, n_out, min(step, n_in - p0), scratch,
                       layout[l, PACK_W] + pad * p0)
        if backward and (l > 0 or input_grad) and (t < 0 or t == 2 * l + 1):
            # A = W^T: m = n_in rows, sum over i; A[j, p] = theta[w_off + p * n_in + j]
            pad = _up(n_in, MR)
            step = _even_step(n_out, KC, 1)
            for p0 in range(0, n_out, step):
                pack_a(theta, w_off + p0 * n_in, 1, n_in, n_in, min(step, n_out - p0),
                       scratch, layout[l, PACK_T] + pad * p0)


@njit(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _block_product(scratch, a_off, m, k, src, s_col, dst, d_col, e0, e1, code, acts, theta,
                   b_off, relu):
    """dst[e, d_col + i] = sum_p A[i, p] src[e, s_col + p] for examples e0..e1-1,
    i < m, p < k, with A packed at ``a_off`` of ``scratch`` (``_pack_weights``):
    z^(l) = W^(l) a^(l-1) for the forward pass, sum_i W[i, j] delta_i for the
    backward one (the callers cite their equations).  For the relu ``code``
    (any other: none), each entry is stored times f'(z) written from a = f(z)
    at its place in ``acts`` (``functions.times_derivative``'s formula,
    applied in the micro-kernel's registers as the last block of p is stored).
    The forward pass's epilogue likewise: with ``b_off`` >= 0, each entry is
    stored plus theta[b_off + i] (z = W a + b), then with ``relu`` as relu of
    that (a = f(z)): the bits of ``z += b`` and of ``functions.relu``.
    Measured on one thread against the plain store followed by a pass over
    the block (``_derivative_rows``; same bits), relu: 0.31-0.36 of the time
    for 256 <- 10 units, 0.40 for 100 <- 5, 0.83-0.86 for 100 <- 150 and
    256 <- 256, 0.93-1.04 for 1024 <- 1024.  Sigmoid and tanh keep the
    pass: with their factors in the store too (one switch on the code), every
    product with a factor ran 1.05-1.7 times product + pass, relu's included;
    and tanh's d (1 - a a) alone in the store gave other bits than the pass
    (1 - a a contracted into one fused multiply-add in one of the two), where
    relu's factor (a select) rounds nothing.

    On the micro-kernel (``microkernel``: each entry one chain of fused
    multiply-adds over p in order, so the bits depend on k alone): per block of
    KC values of p, for each block of MC rows of A (kept in L2) and each NR
    examples (their rows' KC values kept in L1), the micro-kernel runs over the
    block's micro-panels of A, reading the examples' values from their rows
    (``micro_kernel_rows``); blocks after the first continue each entry's
    chain from ``dst``.  Reading B in place instead of packing it into
    micro-panels first (a gather of NR strided values per p) was measured on
    one thread (AVX2, 4096 examples in blocks of 516, same bits): 0.40-0.46 of
    the packed time for products of 5 or 10 outputs (the output layers), 0.65-0.86
    for 8-64 units, 0.93-0.97 for 150 x 100, 784 x 256 and 1024 x 1024, 1.02
    for 256 x 256, and 1.07-1.19 for sums over 5 or 10 units (backward from an
    output layer), a few microseconds a block."""
    MR, NR, KC, MC, NC = block_sizes(scratch)
    S = src.shape[1]
    nb = e1 - e0
    pad = _up(m, MR)
    k_step = _even_step(k, KC, 1)
    m_step = _even_step(m, MC, MR)
    for p0 in range(0, k, k_step):
        kc = min(k_step, k - p0)
        last = p0 + kc == k  # the epilogues: once, as the last block of p is stored
        for ic in range(0, m, m_step):
            mc = min(m_step, m - ic)
            for j in range(0, nb, NR):
                # B[p, e] = src[e0 + j + e, s_col + p0 + p]: NR examples' rows, read in place
                for i in range(ic, ic + mc, MR):
                    micro_kernel_rows(kc, scratch, a_off + pad * p0 + i * kc,
                                      src, (e0 + j) * S + s_col + p0, S,
                                      dst, (e0 + j) * S + d_col + i, S, p0 > 0,
                                      min(MR, ic + mc - i), min(NR, nb - j),
                                      code if last else IDENTITY, acts,
                                      theta, b_off + i if b_off >= 0 and last else -1,
                                      relu and last)


@njit(fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _activate_rows(code, acts, e0, e1, c, n):
    """a = f(z) in place over columns c..c+n-1 of rows e0..e1-1, for the
    activations the forward micro-kernel's store does not apply (004 section
    2): ``code`` does not change in the loop, so LLVM moves the branch in
    ``activate`` out of it and each version of the loop body is one formula
    (vectorizable when the formula is)."""
    for e in range(e0, e1):
        z = acts[e, c:c + n]
        for k in range(n):
            z[k] = activate(code, z[k])


@njit(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _to_panels(layout, acts, deltas, scratch, N, e0, e1):
    """a^(l-1)(e) and delta^(l)(e) of examples e0..e1-1 (inside one chunk,
    ``_chunking``), for every layer l, into the chunk's panels that the weight
    gradients read (``_weight_grad_task``): the A and B operands of dW^(l) =
    sum_e delta^(l)(e) a^(l-1)(e)^T, packed as the micro-kernel reads them, in
    blocks of KC examples (``_even_step`` of the chunk): in the block at q0
    (kc examples), a_j(e) at ``(j // MR) * MR * kc + (e - q0) * MR + j % MR``
    from the layer's A panels + pad_a * (q0 - c0) (c0: the chunk's first
    example), delta_i(e) likewise with NR.  Written at the end of phase 1 by
    the block that owns those examples, while its rows are still in cache;
    lanes past n_in (n_out) hold 0 (``_panel_runs``)."""
    MR, NR, KC, MC, NC = block_sizes(scratch)
    cap = _chunking(layout, N)[0]
    c = e0 // layout[0, CHUNK]
    c0 = c * layout[0, CHUNK]
    k_step = _even_step(min(N, c0 + cap) - c0, KC, 1)
    buf = _panel_buffer(layout, N, c)
    for l in range(layout.shape[0]):
        n_in, n_out = layout[l, N_IN], layout[l, N_OUT]
        c_in, c_out = layout[l, C_IN], layout[l, C_OUT]
        pa = buf + layout[l, PA_ROW] * cap
        pd = buf + layout[l, PD_ROW] * cap
        pad_a = _up(n_in, MR)
        pad_d = _up(n_out, NR)
        # the KC blocks of examples this block overlaps, one micro-panel at a time:
        # consecutive examples' runs are adjacent in a panel (sequential writes)
        for q0 in range(c0 + (e0 - c0) // k_step * k_step, e1, k_step):
            kc = min(k_step, min(N, c0 + cap) - q0)
            ea, eb = max(e0, q0), min(e1, q0 + kc)
            _panel_runs(acts, ea, eb, c_in, n_in, scratch, pa + pad_a * (q0 - c0), q0, kc, 0)
            _panel_runs(deltas, ea, eb, c_out, n_out, scratch, pd + pad_d * (q0 - c0), q0, kc,
                        1)


@njit(fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _panel_runs(buf, ea, eb, c, n, scratch, panels, q0, kc, side):
    """buf[e, c + u] into scratch[panels + (u // R) * R * kc + (e - q0) * R + u % R]
    for examples ea..eb-1 and u < n, 0 past n up to a multiple of R (R = MR for
    ``side`` 0, NR for 1): the examples' R-long runs of the micro-panels of one
    block of kc examples from q0, each run one vector load and store
    (``_panel_row``: a loop over the run's R values costs a run-time alias
    test and a scalar copy per run, ~30 ns, most of the panels' time)."""
    R = block_sizes(scratch)[side]
    S = buf.shape[1]
    for u0 in range(0, n, R):
        rows = min(R, n - u0)
        for e in range(ea, eb):
            _panel_row(buf, e * S + c + u0, 1, rows, scratch, panels + u0 * kc + (e - q0) * R,
                       side)


@njit(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL, **NO_REFCOUNT)
def _example_block(theta, layout, X, Y, weights, loss_code, scale, want_loss, want_grad,
                   input_grad, acts, deltas, losses, scratch, e0, e1):
    """Phase 1 for examples e0..e1-1: a^(0) = x, forward through every layer, the
    output activation, the loss (``want_loss``) and delta^(L) (``want_grad``), then
    the deltas from the last layer down (002 Table 1), on the packed W and W^T
    in ``scratch``.  With ``want_grad``, every a^(l) (l < L) and delta^(l)
    (l >= 1) also goes to the panels in ``scratch`` for phase 2."""
    n_0 = X.shape[1]
    for e in range(e0, e1):
        for j in range(n_0):
            acts[e, j] = X[e, j]
    L = layout.shape[0]
    for l in range(L):
        lay = layout[l]
        # z^(l)_i = sum_j W^(l)[i, j] a^(l-1)_j + b^(l)_i (000 eq. before (1); 004 section 5),
        # then a^(l) = f_l(z^(l)) for a hidden layer (004 section 2); the last layer
        # keeps z: _output_delta needs it for a stable loss.  + b and relu in the
        # micro-kernel's store, the other activations in a pass after it
        hidden = l < L - 1
        relu = hidden and lay[ACT] == RELU
        _block_product(scratch, lay[PACK_W], lay[N_OUT], lay[N_IN], acts, lay[C_IN],
                       acts, lay[C_OUT], e0, e1, IDENTITY, acts, theta, lay[B_OFF], relu)
        if hidden and lay[ACT] != RELU and lay[ACT] != IDENTITY:
            _activate_rows(lay[ACT], acts, e0, e1, lay[C_OUT], lay[N_OUT])
    _output_delta(layout[L - 1], acts, deltas, Y, weights, losses, loss_code, scale,
                  want_loss, want_grad, e0, e1)
    if want_grad:
        for l in range(L - 1, -1 if input_grad else 0, -1):
            lay = layout[l]
            # delta^(l-1)_j = f'_{l-1}(z^(l-1)_j) * sum_i W^(l)[i, j] delta^(l)_i (004 eq. (4);
            # 002 eq. (25) with (24); 000 eq. (12a)-(14)); for l = 1 the input gradient
            # dJ/dx_j = sum_i W^(1)[i, j] delta^(1)_i (004 eq. (7), 002 eq. (25)); relu's
            # factor f' in the micro-kernel's store, the others' in a pass after it
            # (identity and the input: none)
            act_prev = layout[l - 1, ACT] if l > 0 else INPUT
            _block_product(scratch, lay[PACK_T], lay[N_IN], lay[N_OUT], deltas,
                           lay[C_OUT], deltas, lay[C_IN], e0, e1, act_prev, acts, theta, -1,
                           False)
            if act_prev > IDENTITY and act_prev != RELU:
                _derivative_rows(act_prev, acts, deltas, e0, e1, lay[C_IN], lay[N_IN])
        _to_panels(layout, acts, deltas, scratch, X.shape[0], e0, e1)


# ---------------------------------------------------------------- phase 2 worker


@njit(inline="always", error_model=ERROR_MODEL)
def _grad_blocks(n_in, n_out, MR, NR, MC):
    """(rows, cols, row blocks, column blocks) of a layer's weight-gradient
    tasks: blocks of at most MC inputs j (a multiple of MR) by at most GCOLS
    micro-panels of NR outputs i, of equal sizes (``_even_step``)."""
    rows = _even_step(n_in, MC, MR)
    cols = _even_step(n_out, GCOLS * NR, NR)
    return rows, cols, (n_in + rows - 1) // rows, (n_out + cols - 1) // cols


@njit(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL, **NO_REFCOUNT)
def _weight_grad_task(theta, layout, scratch, deltas, N, grad, l2, t):
    """dJ/dW^(l)[i, j] = sum_e delta^(l)_i(e) a^(l-1)_j(e) + l2 W[i, j] and
    dJ/db^(l)_i = sum_e delta^(l)_i(e) (000 eq. (7)-(8), (13)-(14); 004 eq. (3),
    (5), (8), (9); 002 eq. (26)-(27)), for task t: one block of inputs j by
    one block of outputs i of one layer (``_grad_blocks``), counting the
    layers' tasks in order (``G_TASK0``), over the examples of one chunk
    (``_chunking``): task t of chunk c is t + c * ``_weight_grad_tasks``.  The
    chunks of a task run in order: chunk 0 stores, the others add, the last
    one adds the l2 term.

    The product C = A B with C[j, i] = dW[i, j] (column-major with ldc = n_in:
    the row-major W), A[j, e] = a_j(e), B[e, i] = delta_i(e), on the
    micro-kernel over the panels ``_to_panels`` packed: each entry one chain of
    fused multiply-adds over e = 0..N-1 in order, continued across the blocks
    of KC examples and across the chunks, so the bits depend on N alone, not
    on the tasks or the chunks."""
    MR, NR, KC, MC, NC = block_sizes(scratch)
    c, t = divmod(t, _weight_grad_tasks(layout, scratch))
    cap = _chunking(layout, N)[0]
    c0 = c * layout[0, CHUNK]
    c1 = min(N, c0 + cap)
    l = _task_layer(layout, G_TASK0, t)
    lay = layout[l]
    n_in, n_out, w_off, b_off = lay[N_IN], lay[N_OUT], lay[W_OFF], lay[B_OFF]
    rows, cols, n_rb, n_cb = _grad_blocks(n_in, n_out, MR, NR, MC)
    r, cb = divmod(t - lay[G_TASK0], n_cb)
    j0, i0 = r * rows, cb * cols
    j1, i1 = min(n_in, j0 + rows), min(n_out, i0 + cols)
    buf = _panel_buffer(layout, N, c)
    pa = buf + lay[PA_ROW] * cap
    pd = buf + lay[PD_ROW] * cap
    pad_a = _up(n_in, MR)
    pad_d = _up(n_out, NR)
    k_step = _even_step(c1 - c0, KC, 1)
    # N = 0: one pass with kc = 0, which stores dW = 0
    for q0 in range(c0, max(c1, 1), k_step):
        kc = min(k_step, c1 - q0)
        for i in range(i0, i1, NR):
            for j in range(j0, j1, MR):
                # C[j, i] (+)= sum_e a_j(e) delta_i(e) for an MR x NR block
                micro_kernel(kc, scratch, pa + pad_a * (q0 - c0) + j * kc, scratch,
                             pd + pad_d * (q0 - c0) + i * kc, grad, w_off + i * n_in + j, n_in,
                             q0 > 0, min(MR, j1 - j), min(NR, i1 - i))
    if l2 != 0 and c1 == N:
        for i in range(i0, i1):
            for j in range(j0, j1):
                grad[w_off + i * n_in + j] += l2 * theta[w_off + i * n_in + j]  # 004 section 9
    if b_off >= 0 and r == 0:
        # the first row block's tasks also sum the biases' deltas, over e in order
        db = grad[b_off + i0:b_off + i1]
        if c == 0:
            zero = grad.dtype.type(0)
            for i in range(i1 - i0):
                db[i] = zero
        c_out = lay[C_OUT]
        for e in range(c0, c1):
            d = deltas[e, c_out + i0:c_out + i1]
            for i in range(i1 - i0):
                db[i] += d[i]


@njit(fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _weight_grad_tasks(layout, scratch):
    """Number of ``_weight_grad_task`` tasks: the last layer's first, plus its own."""
    MR, NR, KC, MC, NC = block_sizes(scratch)
    L = layout.shape[0]
    rows, cols, n_rb, n_cb = _grad_blocks(layout[L - 1, N_IN], layout[L - 1, N_OUT], MR, NR, MC)
    return layout[L - 1, G_TASK0] + n_rb * n_cb


@njit(inline="always", error_model=ERROR_MODEL)
def _finite_flag(grad, scratch):
    """scratch[0] = 1 when every entry of ``grad`` is finite, else 0: the gradient
    drivers' report to the plan (the scratch is dead once phase 2 is done).  A
    comparison folded into a flag, as in the input screen (no fastmath here:
    it could assume the values finite)."""
    ok = True
    for k in range(grad.shape[0]):
        v = grad[k]
        ok &= v - v == 0
    scratch[0] = 1 if ok else 0


@njit(fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _total_loss(theta, layout, losses, scale, l2):
    """J = scale * sum_e J(e) + l2/2 * sum_l sum_ij W^(l)[i, j]^2 (004 section 9,
    with the squares its J_reg omits: see the errata), each sum in one fixed
    order (``fixed_sum``), so every driver, and ``small``'s specialized code,
    gives the same J."""
    J = fixed_sum(losses, 0, losses.shape[0], False) * scale
    if l2 != 0:
        s = theta.dtype.type(0)
        for l in range(layout.shape[0]):
            w_off = layout[l, W_OFF]
            s = add_kept(s, fixed_sum(theta, w_off, w_off + layout[l, N_OUT] * layout[l, N_IN],
                                      True))
        J += theta.dtype.type(0.5) * l2 * s
    return J


# ---------------------------------------------------------------- drivers
#
# The drivers call the three workers above through their addresses (``fns``,
# from ``worker_table``), not as functions: a call to a compiled function
# links the callee's code into the caller, where numba and LLVM process it
# again, once per driver; through an address each worker is compiled once per
# dtype and the four drivers hold only their loops.

# fns: the workers' addresses, then the number of threads a parallel driver
# cuts its blocks for (``_block_rows``; the serial drivers take 1), then the
# address of ``_output_delta`` (the output layer of ``small``'s specialized code)
EXAMPLE_BLOCK, WEIGHT_GRAD_TASK, PACK_WEIGHTS, THREADS, OUTPUT_DELTA = range(5)
_WORKERS = (_example_block, _weight_grad_task, _pack_weights)


def _worker_types(dtype):
    """The signatures of the three workers for parameters of ``dtype``: the
    caller's arrays that a worker only reads (theta, X, Y) typed read-only, so
    that a read-only input array passes too."""
    f = types.float64 if np.dtype(dtype) == np.float64 else types.float32
    vec, mat = types.Array(f, 1, "C"), types.Array(f, 2, "C")
    rvec = types.Array(f, 1, "C", readonly=True)
    rmat = types.Array(f, 2, "C", readonly=True)
    lay = types.Array(types.int64, 2, "C", readonly=True)
    i64, b = types.int64, types.boolean
    return (types.none(rvec, lay, rmat, rmat, rvec, i64, f, b, b, b, mat, mat, vec, vec, i64,
                       i64),
            types.none(rvec, lay, vec, mat, i64, vec, f, i64),
            types.none(rvec, lay, vec, b, b, i64))


def _at(which):
    return function_at(lambda like: types.FunctionType(
        _worker_types(np.dtype(str(like.dtype)))[which]))


_example_block_at, _weight_grad_task_at, _pack_weights_at = (_at(w) for w in range(3))

_addresses = {}


def output_delta_type(like):
    """The first-class function type of ``_output_delta`` as ``_example_block``
    calls it, for parameters of ``like``'s (a numba array type's) dtype."""
    f = like.dtype
    vec, mat = types.Array(f, 1, "C"), types.Array(f, 2, "C")
    rvec, rmat = types.Array(f, 1, "C", readonly=True), types.Array(f, 2, "C", readonly=True)
    row = types.Array(types.int64, 1, "C", readonly=True)
    return types.FunctionType(types.none(row, mat, mat, rmat, rvec, vec, types.int64, f,
                                         types.boolean, types.boolean, types.int64, types.int64))


def worker_table(dtype, threads: int = 1) -> np.ndarray:
    """A new ``fns`` for the drivers for ``dtype``: the addresses of the three
    workers' compiled code (compiled, or loaded from the cache, once per
    process), ``threads`` (``THREADS``), and the address of ``_output_delta``
    (``OUTPUT_DELTA``)."""
    dtype = np.dtype(dtype)
    fns = _addresses.get(dtype)
    if fns is None:
        fns = [compiled_address(w, sig) for w, sig in zip(_WORKERS, _worker_types(dtype))]
        f = types.float64 if dtype == np.float64 else types.float32
        od = compiled_address(_output_delta,
                              output_delta_type(types.Array(f, 1, "C")).signature)
        fns = _addresses.setdefault(dtype, (fns, od))
    return np.array(fns[0] + [threads, fns[1]], dtype=np.int64)


# Weights above which a parallel driver packs them as one task per matrix
# (W^(l), W^(l)T), so that the threads share the packing out; below it, as one
# task: the packing (about a nanosecond a weight) is shorter than a thread's
# wait at the end of the phase would be.
PACK_PARALLEL = 100_000


@njit(inline="always", error_model=ERROR_MODEL)
def _pack_tasks(layout):
    """Tasks of a parallel driver's packing phase: one per matrix (2 L) when the
    network has more than ``PACK_PARALLEL`` weights, else one (every matrix)."""
    L = layout.shape[0]
    last = layout[L - 1]
    weights = last[W_OFF] + last[N_IN] * last[N_OUT]  # an upper bound (biases included)
    return 2 * L if weights > PACK_PARALLEL else 1


@njit(inline="always", error_model=ERROR_MODEL)
def _queue_item(u, count, blocks, tasks):
    """Item u of a gradient driver's queue after the packing, as (is a task,
    chunk, index in the chunk): chunk 0's ``blocks`` examples' blocks, then
    for each chunk c >= 1 its blocks followed by chunk c - 1's ``tasks``
    weight-gradient tasks, then the last chunk's tasks.  So a chunk's tasks
    come after the next chunk's blocks, which a thread can run meanwhile."""
    if u < blocks:
        return False, 0, u
    r, v = divmod(u - blocks, blocks + tasks)
    r += 1
    if r < count and v < blocks:
        return False, r, v
    return True, r - 1, v - blocks if r < count else v


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL)
def loss_grad_parallel(theta, layout, X, Y, weights, loss_code, scale, l2, input_grad,
                       acts, deltas, losses, grad, scratch, fns):
    """Loss, gradient into ``grad`` and (when ``input_grad``) dJ/dx into
    ``deltas[:, :n_0]``, in one parallel region whose threads take the tasks
    from one queue (``sync``): the packing of the weights (``_pack_tasks``),
    then per chunk of examples (``_chunking``) the examples' blocks and the
    weight-gradient tasks (``_queue_item``).  A block waits for the packing and
    for the tasks two chunks back (their panel buffer is its own); a chunk's
    tasks wait for its blocks and for the chunk before's tasks (the entries
    they continue).  ``scratch`` (``scratch_size(layout, N)`` values) is
    scratch; at the end ``scratch[0]`` is 1 when every gradient entry is
    finite, else 0 (``_finite_flag``).  ``fns``: ``worker_table(theta.dtype,
    threads)``.  ``weights``: the examples' weights, or no values for none
    (``_output_delta``; ``scale`` is then 1 / sum_e w_e for the mean).

    One region, not one per phase with a fixed share per thread: each region's
    end waits for its slowest thread, and a thread woken late, or sharing its
    core, held up each phase (docs/benchmarks.md, "Threads")."""
    N = X.shape[0]
    want = N >= 0  # True, typed as a plain bool like the forward drivers' flag
    cap, count = _chunking(layout, N)
    rows = _block_rows(scratch, cap, fns[THREADS])
    blocks = (cap + rows - 1) // rows
    tasks = _weight_grad_tasks(layout, scratch)
    n_pack = _pack_tasks(layout)
    tasks_end = n_pack + count * (blocks + tasks)
    sync.reset(scratch, sync.TAKEN)
    sync.reset(scratch, sync.DONE)
    for c in range(count):
        sync.reset(scratch, _chunk_counter(layout, c, False))
        sync.reset(scratch, _chunk_counter(layout, c, True))
    for _ in prange(fns[THREADS]):
        pack = _pack_weights_at(fns[PACK_WEIGHTS], scratch)
        block = _example_block_at(fns[EXAMPLE_BLOCK], scratch)
        task = _weight_grad_task_at(fns[WEIGHT_GRAD_TASK], scratch)
        t = sync.take(scratch, sync.TAKEN)
        while t < tasks_end:
            if t < n_pack:
                pack(theta, layout, scratch, want, input_grad, t if n_pack > 1 else EVERY_MATRIX)
            else:
                is_task, c, k = _queue_item(t - n_pack, count, blocks, tasks)
                if is_task:
                    sync.wait_for(scratch, _chunk_counter(layout, c, False), blocks)
                    if c > 0:
                        sync.wait_for(scratch, _chunk_counter(layout, c - 1, True), tasks)
                    task(theta, layout, scratch, deltas, N, grad, l2, c * tasks + k)
                else:
                    sync.wait_for(scratch, sync.DONE, n_pack)
                    if c > 1:
                        sync.wait_for(scratch, _chunk_counter(layout, c - 2, True), tasks)
                    e0 = c * layout[0, CHUNK] + k * rows
                    e1 = min(min(N, c * layout[0, CHUNK] + cap), e0 + rows)
                    if e0 < e1:
                        block(theta, layout, X, Y, weights, loss_code, scale, want, want,
                              input_grad, acts, deltas, losses, scratch, e0, e1)
                sync.take(scratch, _chunk_counter(layout, c, is_task))
            sync.take(scratch, sync.DONE)
            t = sync.take(scratch, sync.TAKEN)
    _finite_flag(grad, scratch)
    return _total_loss(theta, layout, losses, scale, l2)


@njit(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL, **NO_REFCOUNT)
def loss_grad_serial(theta, layout, X, Y, weights, loss_code, scale, l2, input_grad,
                     acts, deltas, losses, grad, scratch, fns):
    """Serial twin of ``loss_grad_parallel`` (same workers, same order of every
    sum, so the same bits): for problems too small to repay a parallel launch.
    Each chunk's blocks, then its weight-gradient tasks.

    Compiled without reference counting (``_config``: it allocates nothing).
    Written out rather than compiling one function twice with different options:
    numba's cache keys an entry by the function and its signature, not by
    ``parallel``, so two variants of one function would load each other's code."""
    N = X.shape[0]
    want = N >= 0
    _pack_weights_at(fns[PACK_WEIGHTS], scratch)(theta, layout, scratch, want, input_grad,
                                              EVERY_MATRIX)
    block = _example_block_at(fns[EXAMPLE_BLOCK], scratch)
    task = _weight_grad_task_at(fns[WEIGHT_GRAD_TASK], scratch)
    cap, count = _chunking(layout, N)
    rows = _block_rows(scratch, cap, 1)
    tasks = _weight_grad_tasks(layout, scratch)
    for c in range(count):
        c0 = c * layout[0, CHUNK]
        c1 = min(N, c0 + cap)
        for e0 in range(c0, c1, rows):
            block(theta, layout, X, Y, weights, loss_code, scale, want, want, input_grad, acts,
                  deltas, losses, scratch, e0, min(c1, e0 + rows))
        for t in range(tasks):
            task(theta, layout, scratch, deltas, N, grad, l2, c * tasks + t)
    _finite_flag(grad, scratch)
    return _total_loss(theta, layout, losses, scale, l2)


@njit(parallel=True, cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL)
def forward_parallel(theta, layout, X, Y, weights, loss_code, want_loss, scale, l2, acts,
                     losses, scratch, fns):
    """Forward pass into ``acts``; with ``want_loss``, the per-example losses into
    ``losses`` and J returned (as by ``loss_grad_parallel``), else 0.  Without
    targets (``want_loss`` False) Y is not read.  ``scratch``: at least
    ``scratch_size(layout, N, False)`` values.  One region, two phases from
    one queue (as ``loss_grad_parallel``): the packing, the examples' blocks."""
    N = X.shape[0]
    no = N < 0  # False, typed as a plain bool
    rows = _block_rows(scratch, N, fns[THREADS])
    n_pack = _pack_tasks(layout)
    blocks_end = n_pack + (N + rows - 1) // rows
    sync.reset(scratch, sync.TAKEN)
    sync.reset(scratch, sync.DONE)
    for _ in prange(fns[THREADS]):
        pack = _pack_weights_at(fns[PACK_WEIGHTS], scratch)
        block = _example_block_at(fns[EXAMPLE_BLOCK], scratch)
        t = sync.take(scratch, sync.TAKEN)
        while t < blocks_end:
            if t < n_pack:
                pack(theta, layout, scratch, no, no, t if n_pack > 1 else EVERY_MATRIX)
            else:
                sync.wait_for(scratch, sync.DONE, n_pack)
                e0 = (t - n_pack) * rows
                block(theta, layout, X, Y, weights, loss_code, scale, want_loss, no, no, acts,
                      acts, losses, scratch, e0, min(N, e0 + rows))
            sync.take(scratch, sync.DONE)
            t = sync.take(scratch, sync.TAKEN)
    if want_loss:
        return _total_loss(theta, layout, losses, scale, l2)
    return theta.dtype.type(0)


@njit(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL, **NO_REFCOUNT)
def forward_serial(theta, layout, X, Y, weights, loss_code, want_loss, scale, l2, acts,
                   losses, scratch, fns):
    """Serial twin of ``forward_parallel``."""
    N = X.shape[0]
    no = N < 0
    _pack_weights_at(fns[PACK_WEIGHTS], scratch)(theta, layout, scratch, no, no, EVERY_MATRIX)
    block = _example_block_at(fns[EXAMPLE_BLOCK], scratch)
    rows = _block_rows(scratch, N, 1)
    for b in range((N + rows - 1) // rows):
        block(theta, layout, X, Y, weights, loss_code, scale, want_loss, no, no, acts, acts,
              losses, scratch, b * rows, min(N, b * rows + rows))
    if want_loss:
        return _total_loss(theta, layout, losses, scale, l2)
    return theta.dtype.type(0)
