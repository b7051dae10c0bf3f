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
- ``panels`` (gradient drivers only, N * ``panel_rows(layout)`` values): the
  same a^(0..L-1) and delta^(1..L) transposed, one row per unit, contiguous
  over the examples (``_to_panels``).

Three phases, each race-free and with a reduction order fixed by the data
alone, so results are bit-identical for any thread count:

0. per block of ``ROWS`` columns of a W^(l) (serial: see the drivers): W^(l)T
   into ``grad``, which holds nothing until phase 2 writes it
   (``_transpose_task``).
1. per block of ``BLOCK`` examples (parallel over blocks): forward, loss and
   output delta, backward, and the block's columns of the panels; a block
   writes only its own rows of the buffers and its own columns of the panels.
2. per (layer, block of ``ROWS`` output units) task (parallel over tasks):
   dJ/dW[i, j] = sum_e delta_i(e) a_j(e) and dJ/db_i from the panels; a task
   writes only its own rows of the gradient.

One register tile does the multiply-adds of all three equations: 4 x 3 dot
products sharing one pass over a contiguous sum index, z_i(e) over j (rows of
W and of a^(l-1)), delta_j(e) over i (rows of W^T and of delta^(l)), dW[i, j]
over e (panel rows of delta_i and a_j); only a backward sum over fewer than
``SHORT`` units runs over the rows of W instead.  With reassociation allowed
LLVM turns each of the twelve scalar sums into a vector accumulator: 12 of the
16 ymm registers, 7 loads per 12 fused multiply-adds, and the sum's grouping
fixed by its length alone.  The BLAS form (an outer-product block of accumulators held
in registers across the sum) is not reachable from Numba: LLVM either
vectorizes such a loop across the sum index with gathers or leaves it scalar,
so the copies (W^T, the panels) are what make every operand contiguous.  Each
copy costs O(weights) or O(N S), the products O(N weights).

Structure (as in stumpy): serial ``@njit`` workers that write only their own
slice; two drivers, one ``parallel=True`` with ``prange`` and one serial twin
for small problems, that only loop over the workers.

Compile time shapes the structure.  Every compiled function costs a fixed
share of a cold start, and each function that calls others links their code
into its own and has LLVM optimize it all again, once per level.  So there are
few workers (one per equation group), called directly by the drivers:
``_example_block`` only sequences them and is inlined into each driver at the
Numba level (small, so inlining is cheap), and no worker allocates.  A cache
load is likewise one file per driver.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .config import ERROR_MODEL, FASTMATH
from .functions import (
    BCE,
    CROSS_ENTROPY,
    IDENTITY,
    SOFTMAX,
    activate,
    derivative_from_a,
    exp,
    log1pexp,
)
from .numba_private import NO_REFCOUNT

# Columns of the layout table (one row per layer l = 1..L, stored at row l - 1);
# T_TASK0 and G_TASK0: the layer's first _transpose_task and _weight_grad_task.
N_IN, N_OUT, W_OFF, B_OFF, ACT, C_IN, C_OUT, T_TASK0, G_TASK0 = range(9)
LAYOUT_COLUMNS = 9
INPUT = np.int64(-1)  # act_prev of the input layer (it has no activation)

BLOCK = 32  # examples per parallel task in phase 1
ROWS = 16  # output units per parallel task in phase 2 (columns of W^(l) per transpose task)
CHUNK = 1024  # examples per pass of a phase 2 task over the panels
COLS = 48  # units j per pass of a phase 2 task over a^(l-1) (a multiple of 3)
SHORT = 16  # backward sums over fewer units i than this run over the rows of W


def panel_rows(layout) -> int:
    """Rows of the panel matrix phase 2 reads (see ``_to_panels``): S_a + S_d with
    S_a = n_0 + ... + n_{L-1} (a^(0) .. a^(L-1)) and S_d = n_1 + ... + n_L
    (delta^(1) .. delta^(L)).  The drivers' ``panels`` holds N times as many
    values (a buffer sized for N serves any batch of at most N examples)."""
    L = layout.shape[0]
    S = int(layout[L - 1, C_OUT] + layout[L - 1, N_OUT])
    return 2 * S - int(layout[0, N_IN]) - int(layout[L - 1, N_OUT])


# ---------------------------------------------------------------- phase 1 workers


@njit(fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _activate_rows(code, acts, e0, e1, c, n):
    """a = f(z) in place over columns c..c+n-1 of rows e0..e1-1.  ``code`` does
    not change in the loop, so LLVM moves the branch in ``activate`` out of it
    and each version of the loop body is one formula (vectorizable when the
    formula is).  A copy of the loop per kind, written out, ran at the same
    speed and cost ~1 s of cold start."""
    for e in range(e0, e1):
        a = acts[e, c:c + n]  # indices from 0: no negative-index fix-up in the loop
        for k in range(n):
            a[k] = activate(code, a[k])


@njit(fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _derivative_rows(code, acts, deltas, e0, e1, c, n):
    """delta *= f'(z), written from a = f(z), over columns c..c+n-1 of rows e0..e1-1
    (004 eq. (4); 000 eq. (5b)); the branch on ``code`` as in ``_activate_rows``."""
    for e in range(e0, e1):
        a = acts[e, c:c + n]
        d = deltas[e, c:c + n]
        for k in range(n):
            d[k] *= derivative_from_a(code, a[k])


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _forward_layer(theta, lay, hidden, acts, e0, e1):
    """z^(l)_i = sum_j W^(l)[i, j] a^(l-1)_j + b^(l)_i for examples e0..e1-1
    (000 eq. before (1); 004 section 5), then, for a ``hidden`` layer,
    a^(l)_i = f_l(z^(l)_i) in place.  The last layer keeps z: ``_output_delta``
    needs it for a stable loss.

    Register tile: 4 output units x 3 examples, twelve dot products sharing one
    pass over j.  LLVM turns each into a vector accumulator (12 of the 16 ymm
    registers), so each step loads 7 vectors for 12 multiply-adds.  The row
    quadruple is the outer loop: W[i..i+3, :] stays in L1 while the block's
    examples stream past from L2.  Past the last row or example the tile repeats
    the last one (same value, written twice): one loop nest, no remainder code.
    Each z_i(e) is one dot product whatever its place in a tile, so results do
    not depend on the block boundaries.
    """
    n_in, n_out, w_off, b_off = lay[N_IN], lay[N_OUT], lay[W_OFF], lay[B_OFF]
    c_in, c_out = lay[C_IN], lay[C_OUT]
    zero = theta.dtype.type(0)
    for i in range(0, n_out, 4):
        i1, i2, i3 = min(i + 1, n_out - 1), min(i + 2, n_out - 1), min(i + 3, n_out - 1)
        W_0 = theta[w_off + i * n_in:w_off + (i + 1) * n_in]
        W_1 = theta[w_off + i1 * n_in:w_off + (i1 + 1) * n_in]
        W_2 = theta[w_off + i2 * n_in:w_off + (i2 + 1) * n_in]
        W_3 = theta[w_off + i3 * n_in:w_off + (i3 + 1) * n_in]
        b_0 = theta[b_off + i] if b_off >= 0 else zero
        b_1 = theta[b_off + i1] if b_off >= 0 else zero
        b_2 = theta[b_off + i2] if b_off >= 0 else zero
        b_3 = theta[b_off + i3] if b_off >= 0 else zero
        for e in range(e0, e1, 3):
            p, q, r = e, min(e + 1, e1 - 1), min(e + 2, e1 - 1)
            x_p = acts[p, c_in:c_in + n_in]
            x_q = acts[q, c_in:c_in + n_in]
            x_r = acts[r, c_in:c_in + n_in]
            z_0p = z_0q = z_0r = z_1p = z_1q = z_1r = zero
            z_2p = z_2q = z_2r = z_3p = z_3q = z_3r = zero
            for j in range(n_in):
                # z_i(e) += W[i, j] * a_j(e)
                z_0p += W_0[j] * x_p[j]
                z_0q += W_0[j] * x_q[j]
                z_0r += W_0[j] * x_r[j]
                z_1p += W_1[j] * x_p[j]
                z_1q += W_1[j] * x_q[j]
                z_1r += W_1[j] * x_r[j]
                z_2p += W_2[j] * x_p[j]
                z_2q += W_2[j] * x_q[j]
                z_2r += W_2[j] * x_r[j]
                z_3p += W_3[j] * x_p[j]
                z_3q += W_3[j] * x_q[j]
                z_3r += W_3[j] * x_r[j]
            acts[p, c_out + i] = z_0p + b_0
            acts[q, c_out + i] = z_0q + b_0
            acts[r, c_out + i] = z_0r + b_0
            acts[p, c_out + i1] = z_1p + b_1
            acts[q, c_out + i1] = z_1q + b_1
            acts[r, c_out + i1] = z_1r + b_1
            acts[p, c_out + i2] = z_2p + b_2
            acts[q, c_out + i2] = z_2q + b_2
            acts[r, c_out + i2] = z_2r + b_2
            acts[p, c_out + i3] = z_3p + b_3
            acts[q, c_out + i3] = z_3q + b_3
            acts[r, c_out + i3] = z_3r + b_3
    if hidden:
        # 004 section 2; one loop per kind (identity: a = z, nothing to do)
        _activate_rows(lay[ACT], acts, e0, e1, c_out, n_out)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _output_delta(lay, acts, deltas, Y, losses, loss_code, scale, want_loss, want_delta,
                  e0, e1):
    """Turn z^(L)(e) into a^(L)(e) for examples e0..e1-1; when asked, write the
    example's loss to ``losses[e]`` and delta^(L) = scale * dJ/dz^(L) (scale = 1/N
    for the mean, else 1).  Without ``want_loss`` and ``want_delta``, Y is not read.

    softmax: a_k = exp(z_k - lse), lse = m + ln sum_k exp(z_k - m), m = max z (no
    overflow).  cross_entropy (002 eq. (29), 004 section 3): sum_k y_k (lse - z_k).
    bce (000 eq. (1)): per unit softplus(z) - y z, which equals
    -[y ln a + (1 - y) ln(1 - a)] without taking ln of a rounded 0.  Both have the
    cancelled delta a - y (000 eq. (5a)-(6), 002 eq. (31), 004 eq. (1); 001's advice:
    no division by a(1 - a)).
    sse (002 eq. (5), 003): 1/2 sum (a - y)^2; delta (a - y) f'(z) (002 eq. (23)-(24),
    003 eq. (46)), or for a softmax output the Jacobian of 002 eq. (30):
    delta_k = a_k [(a_k - y_k) - sum_m a_m (a_m - y_m)].
    """
    n_out, act, c = lay[N_OUT], lay[ACT], lay[C_OUT]
    zero = acts.dtype.type(0)
    half = acts.dtype.type(0.5)
    softmax = act == SOFTMAX
    sse = loss_code != BCE and loss_code != CROSS_ENTROPY
    for e in range(e0, e1):
        lse = zero
        if softmax:
            m = acts[e, c]
            for k in range(1, n_out):
                m = max(m, acts[e, c + k])
            s = zero
            for k in range(n_out):
                s += exp(acts[e, c + k] - m)
            lse = m + math.log(s)
        J = zero
        dot = zero  # sum_m a_m (a_m - y_m), for sse after softmax
        for k in range(n_out):
            z = acts[e, c + k]
            a = exp(z - lse) if softmax else activate(act, z)
            acts[e, c + k] = a
            if want_loss or want_delta:
                y = Y[e, k]
                if loss_code == CROSS_ENTROPY:
                    J += y * (lse - z)
                elif loss_code == BCE:
                    J += max(z, zero) - y * z + log1pexp(-abs(z))
                else:
                    J += half * (a - y) * (a - y)
                    dot += a * (a - y)
        if want_loss:
            losses[e] = J
        if want_delta:
            for k in range(n_out):
                a = acts[e, c + k]
                r = a - Y[e, k]
                if not sse:
                    deltas[e, c + k] = scale * r
                elif softmax:
                    deltas[e, c + k] = scale * a * (r - dot)
                else:
                    deltas[e, c + k] = scale * r * derivative_from_a(act, a)


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


@njit(fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _transpose_tasks(layout, input_grad):
    """Number of ``_transpose_task`` tasks: blocks of ``ROWS`` columns of the
    weight matrices the backward pass reads."""
    T = 0
    for l in range(0 if input_grad else 1, layout.shape[0]):
        T += (layout[l, N_IN] + ROWS - 1) // ROWS
    return T


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _transpose_task(theta, layout, input_grad, WT, t):
    """W^(l)T, (n_{l-1}, n_l) row-major, into ``WT`` at W^(l)'s offset, for task t:
    the t-th block of ``ROWS`` columns j of W^(l), counting the blocks of the
    layers whose transpose the backward pass reads (l >= 2, and l = 1 when
    ``input_grad``) in order.  A copy is O(n_l n_{l-1}), the backward pass that
    reads it O(N n_l n_{l-1}).
    """
    if not input_grad:  # layer 1's tasks are skipped
        t += layout[1, T_TASK0] if layout.shape[0] > 1 else 0
    l = _task_layer(layout, T_TASK0, t)
    j0 = (t - layout[l, T_TASK0]) * ROWS
    n_in, n_out, w_off = layout[l, N_IN], layout[l, N_OUT], layout[l, W_OFF]
    j1 = min(n_in, j0 + ROWS)
    # 8 rows of W at a time: their lines stay in L1 while the task's columns
    # are written out as 8-long runs of the rows of W^T
    for i0 in range(0, n_out, 8):
        for j in range(j0, j1):
            for i in range(i0, min(n_out, i0 + 8)):
                WT[w_off + j * n_out + i] = theta[w_off + i * n_in + j]


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _backward_layer(theta, WT, lay, act_prev, acts, deltas, e0, e1):
    """delta^(l-1)_j = f'_{l-1}(z^(l-1)_j) * sum_i W^(l)[i, j] delta^(l)_i
    (004 eq. (4); 002 eq. (25) with (24); 000 eq. (12a)-(14)), for examples e0..e1-1.

    ``act_prev`` < 0 means layer l - 1 is the input: then this is the input
    gradient dJ/dx_j = sum_i W^(1)[i, j] delta^(1)_i (004 eq. (7), 002 eq. (25)).
    The sum reads the column W[:, j], which is row j of the transposed copy in
    ``WT`` (``_transpose_task``): contiguous, so the backward pass has the
    forward pass's register tile, 4 units j x 3 examples, twelve dot products
    over i sharing one pass, and its remainder rule (repeat the last unit or
    example).  Below ``SHORT`` terms (an output layer's few units) a dot product
    would be all remainder code, so the sum runs instead over the rows W[i, :]
    of ``theta``, each scaled by delta_i(e) and added in i order, vectorized
    over j.  Either way each delta_j(e) is summed in an order fixed by the
    layer's shape, the same for every example, so results do not depend on the
    block boundaries.
    """
    n_in, n_out, w_off = lay[N_IN], lay[N_OUT], lay[W_OFF]
    c_in, c_out = lay[C_IN], lay[C_OUT]
    zero = WT.dtype.type(0)
    if n_out < SHORT:
        for e in range(e0, e1):
            out = deltas[e, c_in:c_in + n_in]
            for j in range(n_in):
                out[j] = zero
            for i in range(n_out):
                d_i = deltas[e, c_out + i]
                W_i = theta[w_off + i * n_in:w_off + (i + 1) * n_in]
                for j in range(n_in):
                    out[j] += W_i[j] * d_i  # W[i, j] * delta_i(e)
    # The same 4 x 3 tile as _forward_layer's, written out again over W^T and
    # delta: one shared (non-inlined) tile function was measured at 1.2 s less
    # cold start but 2-10% slower, so each equation keeps its own loop nest.
    for j in range(0, n_in if n_out >= SHORT else 0, 4):
        j1, j2, j3 = min(j + 1, n_in - 1), min(j + 2, n_in - 1), min(j + 3, n_in - 1)
        V_0 = WT[w_off + j * n_out:w_off + (j + 1) * n_out]  # W[:, j]
        V_1 = WT[w_off + j1 * n_out:w_off + (j1 + 1) * n_out]
        V_2 = WT[w_off + j2 * n_out:w_off + (j2 + 1) * n_out]
        V_3 = WT[w_off + j3 * n_out:w_off + (j3 + 1) * n_out]
        for e in range(e0, e1, 3):
            p, q, r = e, min(e + 1, e1 - 1), min(e + 2, e1 - 1)
            d_p = deltas[p, c_out:c_out + n_out]
            d_q = deltas[q, c_out:c_out + n_out]
            d_r = deltas[r, c_out:c_out + n_out]
            s_0p = s_0q = s_0r = s_1p = s_1q = s_1r = zero
            s_2p = s_2q = s_2r = s_3p = s_3q = s_3r = zero
            for i in range(n_out):
                # sum_i W[i, j] * delta_i(e)
                s_0p += V_0[i] * d_p[i]
                s_0q += V_0[i] * d_q[i]
                s_0r += V_0[i] * d_r[i]
                s_1p += V_1[i] * d_p[i]
                s_1q += V_1[i] * d_q[i]
                s_1r += V_1[i] * d_r[i]
                s_2p += V_2[i] * d_p[i]
                s_2q += V_2[i] * d_q[i]
                s_2r += V_2[i] * d_r[i]
                s_3p += V_3[i] * d_p[i]
                s_3q += V_3[i] * d_q[i]
                s_3r += V_3[i] * d_r[i]
            deltas[p, c_in + j] = s_0p
            deltas[q, c_in + j] = s_0q
            deltas[r, c_in + j] = s_0r
            deltas[p, c_in + j1] = s_1p
            deltas[q, c_in + j1] = s_1q
            deltas[r, c_in + j1] = s_1r
            deltas[p, c_in + j2] = s_2p
            deltas[q, c_in + j2] = s_2q
            deltas[r, c_in + j2] = s_2r
            deltas[p, c_in + j3] = s_3p
            deltas[q, c_in + j3] = s_3q
            deltas[r, c_in + j3] = s_3r
    if act_prev > IDENTITY:  # identity (f' = 1) and the input (act_prev < 0) skip it
        _derivative_rows(act_prev, acts, deltas, e0, e1, c_in, n_in)


@njit(fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _to_panels(buf, c, n, panels, row, e0, e1):
    """Columns c..c+n-1 of ``buf``'s rows e0..e1-1 into rows row..row+n-1 of the
    panel matrix: ``panels[u * N + e]``, one unit's values over the batch,
    contiguous in e, as phase 2's dot products over the examples read them.
    Rows a^(0) .. a^(L-1) come first (panel row = column of ``acts``), then
    delta^(1) .. delta^(L) (panel row = S_a + column of ``deltas`` - n_0).
    Written at the end of phase 1 by the block that owns those examples, while
    its rows are still in cache: cheap and race-free.  Two calls (a, then
    delta) rather than one per layer: each call site is inlined into every
    driver, and each costs compile time."""
    N = buf.shape[0]
    for u in range(n):
        for e in range(e0, e1):
            panels[(row + u) * N + e] = buf[e, c + u]


@njit(fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _example_block(theta, WT, layout, X, Y, loss_code, scale, want_loss, want_grad,
                   input_grad, acts, deltas, losses, panels, e0, e1):
    """Phase 1 for examples e0..e1-1: a^(0) = x, forward through every layer, the
    output activation, the loss (``want_loss``) and delta^(L) (``want_grad``), then
    the deltas from the last layer down (002 Table 1), reading W^T from ``WT``.
    With ``want_grad``, every a^(l) (l < L) and delta^(l) (l >= 1) also goes to
    ``panels`` for phase 2."""
    n_0 = X.shape[1]
    for e in range(e0, e1):
        for j in range(n_0):
            acts[e, j] = X[e, j]
    L = layout.shape[0]
    for l in range(L):
        _forward_layer(theta, layout[l], l < L - 1, acts, e0, e1)
    _output_delta(layout[L - 1], acts, deltas, Y, losses, loss_code, scale,
                  want_loss, want_grad, e0, e1)
    if want_grad:
        for l in range(L - 1, 0, -1):
            _backward_layer(theta, WT, layout[l], layout[l - 1, ACT], acts, deltas, e0, e1)
        S_a = layout[L - 1, C_IN] + layout[L - 1, N_IN]
        _to_panels(acts, 0, S_a, panels, 0, e0, e1)
        S_d = layout[L - 1, C_OUT] + layout[L - 1, N_OUT] - n_0
        _to_panels(deltas, n_0, S_d, panels, S_a, e0, e1)
        if input_grad:
            _backward_layer(theta, WT, layout[0], INPUT, acts, deltas, e0, e1)


# ---------------------------------------------------------------- phase 2 worker


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _weight_grad_task(theta, layout, panels, N, grad, l2, t):
    """dJ/dW^(l)[i, j] = sum_e delta^(l)_i(e) a^(l-1)_j(e) + l2 W[i, j] and
    dJ/db^(l)_i = sum_e delta^(l)_i(e) (000 eq. (7)-(8), (13)-(14); 004 eq. (3),
    (5), (8), (9); 002 eq. (26)-(27)), for task t: the t-th block of ``ROWS``
    output units, counting the layers' blocks in order.

    Both factors are read from the transposed panels (``_panel_task``), where
    delta_i and a_j are contiguous over e, so each dW[i, j] is a dot product
    over the examples and this is the forward pass's register tile again:
    4 units i x 3 units j, twelve dot products sharing one pass over e.  The
    examples are taken in chunks of ``CHUNK`` (a chunk of a delta_i row and the
    rows a_j of ``COLS`` units stay in cache while the task's tiles pass over
    them); each chunk's twelve sums are added to the gradient entries, all read
    before any is written, so a tile that repeats a unit at the edge stores one
    value twice rather than adding it twice.  The grouping of every sum
    depends on N alone, so results do not depend on the tasks.
    """
    l = _task_layer(layout, G_TASK0, t)
    i0 = (t - layout[l, G_TASK0]) * ROWS
    L = layout.shape[0]
    lay = layout[l]
    n_in, w_off, b_off = lay[N_IN], lay[W_OFF], lay[B_OFF]
    i1 = min(lay[N_OUT], i0 + ROWS)
    # rows of the panel matrix: a_j^(l-1) at c_in + j, delta_i^(l) at S_a + c_out + i - n_0
    a_row = lay[C_IN]
    d_row = layout[L - 1, C_IN] + layout[L - 1, N_IN] + lay[C_OUT] - layout[0, N_IN]
    zero = theta.dtype.type(0)
    for k in range(w_off + i0 * n_in, w_off + i1 * n_in):
        grad[k] = zero
    for c0 in range(0, N, CHUNK):
        c1 = min(N, c0 + CHUNK)
        for j0 in range(0, n_in, COLS):
            jn = min(n_in, j0 + COLS)
            for i in range(i0, i1, 4):
                ia, ib, ic = min(i + 1, i1 - 1), min(i + 2, i1 - 1), min(i + 3, i1 - 1)
                D_0 = panels[(d_row + i) * N + c0:(d_row + i) * N + c1]
                D_1 = panels[(d_row + ia) * N + c0:(d_row + ia) * N + c1]
                D_2 = panels[(d_row + ib) * N + c0:(d_row + ib) * N + c1]
                D_3 = panels[(d_row + ic) * N + c0:(d_row + ic) * N + c1]
                G_0 = grad[w_off + i * n_in:w_off + (i + 1) * n_in]
                G_1 = grad[w_off + ia * n_in:w_off + (ia + 1) * n_in]
                G_2 = grad[w_off + ib * n_in:w_off + (ib + 1) * n_in]
                G_3 = grad[w_off + ic * n_in:w_off + (ic + 1) * n_in]
                for j in range(j0, jn, 3):
                    jb, jc = min(j + 1, jn - 1), min(j + 2, jn - 1)
                    A_p = panels[(a_row + j) * N + c0:(a_row + j) * N + c1]
                    A_q = panels[(a_row + jb) * N + c0:(a_row + jb) * N + c1]
                    A_r = panels[(a_row + jc) * N + c0:(a_row + jc) * N + c1]
                    s_0p = s_0q = s_0r = s_1p = s_1q = s_1r = zero
                    s_2p = s_2q = s_2r = s_3p = s_3q = s_3r = zero
                    for e in range(c1 - c0):
                        # dW[i, j] += delta_i(e) * a_j(e)
                        s_0p += D_0[e] * A_p[e]
                        s_0q += D_0[e] * A_q[e]
                        s_0r += D_0[e] * A_r[e]
                        s_1p += D_1[e] * A_p[e]
                        s_1q += D_1[e] * A_q[e]
                        s_1r += D_1[e] * A_r[e]
                        s_2p += D_2[e] * A_p[e]
                        s_2q += D_2[e] * A_q[e]
                        s_2r += D_2[e] * A_r[e]
                        s_3p += D_3[e] * A_p[e]
                        s_3q += D_3[e] * A_q[e]
                        s_3r += D_3[e] * A_r[e]
                    g_0p, g_0q, g_0r = G_0[j] + s_0p, G_0[jb] + s_0q, G_0[jc] + s_0r
                    g_1p, g_1q, g_1r = G_1[j] + s_1p, G_1[jb] + s_1q, G_1[jc] + s_1r
                    g_2p, g_2q, g_2r = G_2[j] + s_2p, G_2[jb] + s_2q, G_2[jc] + s_2r
                    g_3p, g_3q, g_3r = G_3[j] + s_3p, G_3[jb] + s_3q, G_3[jc] + s_3r
                    G_0[j], G_0[jb], G_0[jc] = g_0p, g_0q, g_0r
                    G_1[j], G_1[jb], G_1[jc] = g_1p, g_1q, g_1r
                    G_2[j], G_2[jb], G_2[jc] = g_2p, g_2q, g_2r
                    G_3[j], G_3[jb], G_3[jc] = g_3p, g_3q, g_3r
    if b_off >= 0:
        for i in range(i0, i1):
            D_i = panels[(d_row + i) * N:(d_row + i + 1) * N]
            s = zero
            for e in range(N):
                s += D_i[e]
            grad[b_off + i] = s
    if l2 != 0:
        for k in range(w_off + i0 * n_in, w_off + i1 * n_in):
            grad[k] += l2 * theta[k]  # 004 section 9


@njit(inline="always", error_model=ERROR_MODEL)
def _finite_flag(grad, panels):
    """panels[0] = 1 when every entry of ``grad`` is finite, else 0: the gradient
    drivers' report to the plan (the panels are dead once phase 2 is done).  A
    comparison folded into a flag, as in the input screen (no fastmath here:
    it could assume the values finite)."""
    ok = True
    for k in range(grad.shape[0]):
        v = grad[k]
        ok &= v - v == 0
    panels[0] = 1 if ok else 0


@njit(fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _total_loss(theta, layout, losses, scale, l2):
    """J = scale * sum_e J(e) + l2/2 * sum_l sum_ij W^(l)[i, j]^2 (004 section 9,
    with the squares its J_reg omits: see the errata), each sum in a fixed
    order.  Inlined into every driver, so the gradient and the forward drivers
    compute J by the same code."""
    J = losses.dtype.type(0)
    for e in range(losses.shape[0]):
        J += losses[e]
    J *= scale
    if l2 != 0:
        s = theta.dtype.type(0)
        for l in range(layout.shape[0]):
            w_off = layout[l, W_OFF]
            for k in range(w_off, w_off + layout[l, N_OUT] * layout[l, N_IN]):
                s += theta[k] * theta[k]
        J += theta.dtype.type(0.5) * l2 * s
    return J


# ---------------------------------------------------------------- drivers


@njit(parallel=True, cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def loss_grad_parallel(theta, layout, X, Y, loss_code, scale, l2, input_grad,
                       acts, deltas, losses, grad, panels):
    """Loss, gradient into ``grad`` and (when ``input_grad``) dJ/dx into
    ``deltas[:, :n_0]``; W^T copied serially, then parallel over example blocks,
    then over row tasks.  ``panels`` (at least N * ``panel_rows(layout)`` values)
    is scratch; at the end ``panels[0]`` is 1 when every gradient entry is
    finite, else 0 (``_finite_flag``)."""
    N = X.shape[0]
    want = N >= 0  # True, typed as a plain bool like the forward drivers' flag
    # grad is free until phase 2 writes it: it holds W^T for the backward pass.
    # Serial: the O(weights) copies are a few % of a gradient (C5: ~4 ms), while
    # each parallel region costs a launch, ~12 ms when another process holds a
    # core (fastbp bench, C3-1000 and C4-256: 24 ms with two regions, 36 with three).
    for t in range(_transpose_tasks(layout, input_grad)):
        _transpose_task(theta, layout, input_grad, grad, t)
    for b in prange((N + BLOCK - 1) // BLOCK):
        _example_block(theta, grad, layout, X, Y, loss_code, scale, want, want, input_grad,
                       acts, deltas, losses, panels, b * BLOCK, min(N, b * BLOCK + BLOCK))
    T = 0
    for l in range(layout.shape[0]):
        T += (layout[l, N_OUT] + ROWS - 1) // ROWS
    for t in prange(T):
        # prange's index is unsigned: cast, or the worker compiles a second time
        _weight_grad_task(theta, layout, panels, N, grad, l2, np.int64(t))
    _finite_flag(grad, panels)
    return _total_loss(theta, layout, losses, scale, l2)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL, **NO_REFCOUNT)
def loss_grad_serial(theta, layout, X, Y, loss_code, scale, l2, input_grad,
                     acts, deltas, losses, grad, panels):
    """Serial twin of ``loss_grad_parallel`` (same workers, same order, so the
    same bits): for problems too small to repay a parallel launch.

    Compiled without reference counting (``_config``: it allocates nothing).
    Written out rather than compiling one function twice with different options:
    numba's cache keys an entry by the function and its signature, not by
    ``parallel``, so two variants of one function would load each other's code."""
    N = X.shape[0]
    want = N >= 0
    for t in range(_transpose_tasks(layout, input_grad)):
        _transpose_task(theta, layout, input_grad, grad, t)
    for b in range((N + BLOCK - 1) // BLOCK):
        _example_block(theta, grad, layout, X, Y, loss_code, scale, want, want, input_grad,
                       acts, deltas, losses, panels, b * BLOCK, min(N, b * BLOCK + BLOCK))
    T = 0
    for l in range(layout.shape[0]):
        T += (layout[l, N_OUT] + ROWS - 1) // ROWS
    for t in range(T):
        _weight_grad_task(theta, layout, panels, N, grad, l2, t)
    _finite_flag(grad, panels)
    return _total_loss(theta, layout, losses, scale, l2)


@njit(parallel=True, cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def forward_parallel(theta, layout, X, Y, loss_code, want_loss, scale, l2, acts, losses):
    """Forward pass into ``acts``; with ``want_loss``, the per-example losses into
    ``losses`` and J returned (as by ``loss_grad_parallel``), else 0.  Without
    targets (``want_loss`` False) Y is not read."""
    N = X.shape[0]
    no = N < 0  # False, typed as a plain bool
    for b in prange((N + BLOCK - 1) // BLOCK):
        _example_block(theta, theta, layout, X, Y, loss_code, scale, want_loss,
                       no, no, acts, acts, losses, theta, b * BLOCK, min(N, b * BLOCK + BLOCK))
    if want_loss:
        return _total_loss(theta, layout, losses, scale, l2)
    return theta.dtype.type(0)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL, **NO_REFCOUNT)
def forward_serial(theta, layout, X, Y, loss_code, want_loss, scale, l2, acts, losses):
    """Serial twin of ``forward_parallel``."""
    N = X.shape[0]
    no = N < 0
    for b in range((N + BLOCK - 1) // BLOCK):
        _example_block(theta, theta, layout, X, Y, loss_code, scale, want_loss,
                       no, no, acts, acts, losses, theta, b * BLOCK, min(N, b * BLOCK + BLOCK))
    if want_loss:
        return _total_loss(theta, layout, losses, scale, l2)
    return theta.dtype.type(0)
