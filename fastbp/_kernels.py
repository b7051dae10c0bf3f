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

Two phases, each race-free and with a reduction order fixed by the data alone,
so results are bit-identical for any thread count:

1. per block of ``BLOCK`` examples (parallel over blocks): forward, loss and
   output delta, backward; a block writes only its own rows of the buffers.
2. per (layer, block of ``ROWS`` output units) task (parallel over tasks):
   dJ/dW[i, j] = sum_e delta_i(e) a_j(e) and dJ/db_i, the sum over e in example
   order; a task writes only its own rows of the gradient.

Structure (as in stumpy): serial ``@njit`` workers that write only their own
slice; two drivers, one ``parallel=True`` with ``prange`` and one serial twin
for small problems, that only loop over the workers.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._config import FASTMATH
from .functions import (
    BCE,
    CROSS_ENTROPY,
    SOFTMAX,
    activate,
    derivative_from_a,
    log1pexp,
    sigmoid,
)

# Columns of the layout table (one row per layer l = 1..L, stored at row l - 1).
N_IN, N_OUT, W_OFF, B_OFF, ACT, C_IN, C_OUT = range(7)
LAYOUT_COLUMNS = 7
INPUT = np.int64(-1)  # act_prev of the input layer (it has no activation)

BLOCK = 32  # examples per parallel task in phase 1
ROWS = 16  # output units per parallel task in phase 2 (even)
CHUNK = 64  # examples per pass of a phase 2 task over a^(l-1) (a multiple of 4)


# ---------------------------------------------------------------- phase 1 workers


@njit(cache=True, fastmath=FASTMATH)
def _forward_layer(theta, lay, acts, e0, e1):
    """z^(l)_i = sum_j W^(l)[i, j] a^(l-1)_j + b^(l)_i for examples e0..e1-1
    (000 eq. before (1); 004 section 5).  The activation is applied afterwards
    (``_activate_layer``, or ``_output_delta`` for the last layer, which needs z
    for a stable loss).

    Register tile: 2 output units x 4 examples, eight dot products sharing one
    pass over j, so each loaded W[i, j] feeds four multiply-adds and each loaded
    a_j(e) two.  The row pair is the outer loop so W[i, :] and W[i + 1, :] stay in
    L1 while every example of the block streams past them.  Past the last row or
    example the tile repeats the last one (same value, written twice): one loop
    nest, no remainder code.  Each z_i(e) is one dot product whatever its place
    in a tile, so results do not depend on the block boundaries.
    """
    n_in, n_out, w_off, b_off = lay[N_IN], lay[N_OUT], lay[W_OFF], lay[B_OFF]
    c_in, c_out = lay[C_IN], lay[C_OUT]
    zero = theta.dtype.type(0)
    for i in range(0, n_out, 2):
        ib = min(i + 1, n_out - 1)
        W_a = theta[w_off + i * n_in:w_off + (i + 1) * n_in]
        W_b = theta[w_off + ib * n_in:w_off + (ib + 1) * n_in]
        b_a = theta[b_off + i] if b_off >= 0 else zero
        b_b = theta[b_off + ib] if b_off >= 0 else zero
        for e in range(e0, e1, 4):
            p, q, r, s = e, min(e + 1, e1 - 1), min(e + 2, e1 - 1), min(e + 3, e1 - 1)
            x_p = acts[p, c_in:c_in + n_in]
            x_q = acts[q, c_in:c_in + n_in]
            x_r = acts[r, c_in:c_in + n_in]
            x_s = acts[s, c_in:c_in + n_in]
            z_ap = z_aq = z_ar = z_as = zero
            z_bp = z_bq = z_br = z_bs = zero
            for j in range(n_in):
                # z_i(e) += W[i, j] * a_j(e)
                z_ap += W_a[j] * x_p[j]
                z_aq += W_a[j] * x_q[j]
                z_ar += W_a[j] * x_r[j]
                z_as += W_a[j] * x_s[j]
                z_bp += W_b[j] * x_p[j]
                z_bq += W_b[j] * x_q[j]
                z_br += W_b[j] * x_r[j]
                z_bs += W_b[j] * x_s[j]
            acts[p, c_out + i] = z_ap + b_a
            acts[q, c_out + i] = z_aq + b_a
            acts[r, c_out + i] = z_ar + b_a
            acts[s, c_out + i] = z_as + b_a
            acts[p, c_out + ib] = z_bp + b_b
            acts[q, c_out + ib] = z_bq + b_b
            acts[r, c_out + ib] = z_br + b_b
            acts[s, c_out + ib] = z_bs + b_b


@njit(cache=True, fastmath=FASTMATH)
def _activate_layer(lay, acts, e0, e1):
    """a^(l)_i = f_l(z^(l)_i) in place, for a hidden layer's unit-wise activation."""
    n_out, act, c_out = lay[N_OUT], lay[ACT], lay[C_OUT]
    for e in range(e0, e1):
        for i in range(n_out):
            acts[e, c_out + i] = activate(act, acts[e, c_out + i])


@njit(cache=True, fastmath=FASTMATH)
def _output_delta(lay, acts, deltas, Y, loss_code, scale, want_delta, e):
    """Turn z^(L)(e) into a^(L)(e); return the example's loss and, when asked,
    write delta^(L) = scale * dJ/dz^(L) (scale = 1/N for the mean, else 1).

    bce (000 eq. (1)): per unit softplus(z) - y z, which equals
    -[y ln a + (1 - y) ln(1 - a)] without taking ln of a rounded 0; its delta is the
    cancelled a - y (000 eq. (5a)-(6); 001's advice: no division by a(1 - a)).
    cross_entropy (002 eq. (29), 004 section 3): sum_k y_k (lse(z) - z_k) with the
    log-sum-exp shifted by max z; delta a - y (002 eq. (31), 004 eq. (1)).
    sse (002 eq. (5), 003): 1/2 sum (a - y)^2; delta (a - y) f'(z) (002 eq. (23)-(24),
    003 eq. (46)), or for a softmax output the Jacobian of 002 eq. (30):
    delta_k = a_k [(a_k - y_k) - sum_m a_m (a_m - y_m)].
    """
    n_out, act, c = lay[N_OUT], lay[ACT], lay[C_OUT]
    zero = acts.dtype.type(0)
    J = zero
    if act == SOFTMAX:
        m = acts[e, c]
        for k in range(1, n_out):
            m = max(m, acts[e, c + k])
        s = zero
        for k in range(n_out):
            s += math.exp(acts[e, c + k] - m)
        lse = m + math.log(s)
        if loss_code == CROSS_ENTROPY:
            for k in range(n_out):
                J += Y[e, k] * (lse - acts[e, c + k])
        for k in range(n_out):
            acts[e, c + k] = math.exp(acts[e, c + k] - lse)
    elif loss_code == BCE:  # sigmoid output
        for k in range(n_out):
            z = acts[e, c + k]
            J += max(z, zero) - Y[e, k] * z + log1pexp(-abs(z))
            acts[e, c + k] = sigmoid(z)
    else:
        for k in range(n_out):
            acts[e, c + k] = activate(act, acts[e, c + k])

    if loss_code == BCE or loss_code == CROSS_ENTROPY:
        if want_delta:
            for k in range(n_out):
                deltas[e, c + k] = scale * (acts[e, c + k] - Y[e, k])
        return J

    # sse
    for k in range(n_out):
        r = acts[e, c + k] - Y[e, k]
        J += r * r
    J *= acts.dtype.type(0.5)
    if want_delta:
        if act == SOFTMAX:
            dot = zero
            for k in range(n_out):
                dot += acts[e, c + k] * (acts[e, c + k] - Y[e, k])
            for k in range(n_out):
                a_k = acts[e, c + k]
                deltas[e, c + k] = scale * a_k * ((a_k - Y[e, k]) - dot)
        else:
            for k in range(n_out):
                a_k = acts[e, c + k]
                deltas[e, c + k] = scale * (a_k - Y[e, k]) * derivative_from_a(act, a_k)
    return J


@njit(cache=True, fastmath=FASTMATH)
def _backward_layer(theta, lay, act_prev, acts, deltas, e0, e1):
    """delta^(l-1)_j = f'_{l-1}(z^(l-1)_j) * sum_i W^(l)[i, j] delta^(l)_i
    (004 eq. (4); 002 eq. (25) with (24); 000 eq. (12a)-(14)), for examples e0..e1-1.

    ``act_prev`` < 0 means layer l - 1 is the input: then this is the input
    gradient dJ/dx_j = sum_i W^(1)[i, j] delta^(1)_i (004 eq. (7), 002 eq. (25)).
    The literal formula reads the column W[:, j]; here the sum over i runs four
    rows at a time in the outer loop, so the inner loop over j reads four
    contiguous rows W[i..i+3, :] (kept in L1 while the block's examples stream
    past) and updates delta^(l-1)(e) once per four multiply-adds.  Rows past the
    last one enter with delta = 0.  The order of the sum over i is the same for
    every example, so results do not depend on the block boundaries.
    """
    n_in, n_out, w_off = lay[N_IN], lay[N_OUT], lay[W_OFF]
    c_in, c_out = lay[C_IN], lay[C_OUT]
    zero = theta.dtype.type(0)
    for e in range(e0, e1):
        for j in range(n_in):
            deltas[e, c_in + j] = zero
    for i in range(0, n_out, 4):
        i1, i2, i3 = min(i + 1, n_out - 1), min(i + 2, n_out - 1), min(i + 3, n_out - 1)
        W_0 = theta[w_off + i * n_in:w_off + (i + 1) * n_in]
        W_1 = theta[w_off + i1 * n_in:w_off + (i1 + 1) * n_in]
        W_2 = theta[w_off + i2 * n_in:w_off + (i2 + 1) * n_in]
        W_3 = theta[w_off + i3 * n_in:w_off + (i3 + 1) * n_in]
        for e in range(e0, e1):
            d_0 = deltas[e, c_out + i]
            d_1 = deltas[e, c_out + i1] if i + 1 < n_out else zero
            d_2 = deltas[e, c_out + i2] if i + 2 < n_out else zero
            d_3 = deltas[e, c_out + i3] if i + 3 < n_out else zero
            out = deltas[e, c_in:c_in + n_in]
            for j in range(n_in):
                # sum_i W[i, j] * delta_i, four terms of it
                out[j] += W_0[j] * d_0 + W_1[j] * d_1 + W_2[j] * d_2 + W_3[j] * d_3
    if act_prev >= 0:
        for e in range(e0, e1):
            for j in range(n_in):
                deltas[e, c_in + j] *= derivative_from_a(act_prev, acts[e, c_in + j])


@njit(cache=True, fastmath=FASTMATH)
def _example_block(theta, layout, X, Y, loss_code, scale, want_grad, input_grad,
                   acts, deltas, losses, e0, e1):
    """Phase 1 for examples e0..e1-1: a^(0) = x, forward through every layer,
    the loss and delta^(L), then deltas from the last layer down (002 Table 1)."""
    n_0 = X.shape[1]
    for e in range(e0, e1):
        for j in range(n_0):
            acts[e, j] = X[e, j]
    L = layout.shape[0]
    for l in range(L):
        _forward_layer(theta, layout[l], acts, e0, e1)
        if l < L - 1:
            _activate_layer(layout[l], acts, e0, e1)
    for e in range(e0, e1):
        losses[e] = _output_delta(layout[L - 1], acts, deltas, Y, loss_code, scale,
                                  want_grad, e)
    if want_grad:
        for l in range(L - 1, 0, -1):
            _backward_layer(theta, layout[l], layout[l - 1, ACT], acts, deltas, e0, e1)
        if input_grad:
            _backward_layer(theta, layout[0], INPUT, acts, deltas, e0, e1)


# ---------------------------------------------------------------- phase 2 workers


@njit(cache=True, fastmath=FASTMATH)
def _weight_grad_rows(theta, lay, acts, deltas, grad, l2, i0, i1):
    """dJ/dW^(l)[i, j] = sum_e delta^(l)_i(e) a^(l-1)_j(e) + l2 W[i, j] and
    dJ/db^(l)_i = sum_e delta^(l)_i(e), for output units i0..i1-1
    (000 eq. (7)-(8), (13)-(14); 004 eq. (3), (5), (8), (9); 002 eq. (26)-(27)).

    Returns sum of W[i, j]^2 over these rows (for the L2 term of the loss).

    The sum over examples runs in example order, four examples per step
    (examples past N enter with delta = 0), so the grouping depends on N alone.
    Register tile: 2 rows x 4 examples, so each update of a gradient entry
    carries four multiply-adds and each loaded a_j(e) feeds two rows.  Examples
    are taken in chunks of ``CHUNK``: a chunk of a^(l-1) stays in L2 while every
    row pair of the task passes over it, instead of re-streaming the whole batch
    for each pair.  The chunking does not change the order of the sums.
    """
    n_in, w_off, b_off = lay[N_IN], lay[W_OFF], lay[B_OFF]
    c_in, c_out = lay[C_IN], lay[C_OUT]
    N = acts.shape[0]
    zero = theta.dtype.type(0)
    for k in range(w_off + i0 * n_in, w_off + i1 * n_in):
        grad[k] = zero
    for c0 in range(0, N, CHUNK):
        c1 = min(N, c0 + CHUNK)
        for i in range(i0, i1, 2):
            ib = min(i + 1, i1 - 1)
            G_a = grad[w_off + i * n_in:w_off + (i + 1) * n_in]
            G_b = grad[w_off + ib * n_in:w_off + (ib + 1) * n_in]
            for e in range(c0, c1, 4):
                p, q, r, s = e, min(e + 1, N - 1), min(e + 2, N - 1), min(e + 3, N - 1)
                d_ap = deltas[p, c_out + i]
                d_bp = deltas[p, c_out + ib]
                d_aq = deltas[q, c_out + i] if e + 1 < N else zero
                d_bq = deltas[q, c_out + ib] if e + 1 < N else zero
                d_ar = deltas[r, c_out + i] if e + 2 < N else zero
                d_br = deltas[r, c_out + ib] if e + 2 < N else zero
                d_as = deltas[s, c_out + i] if e + 3 < N else zero
                d_bs = deltas[s, c_out + ib] if e + 3 < N else zero
                x_p = acts[p, c_in:c_in + n_in]
                x_q = acts[q, c_in:c_in + n_in]
                x_r = acts[r, c_in:c_in + n_in]
                x_s = acts[s, c_in:c_in + n_in]
                for j in range(n_in):
                    # dW[i, j] += delta_i(e) * a_j(e), four examples at once; both
                    # rows are read before either is written (ib == i on odd tails)
                    g_a = G_a[j] + (d_ap * x_p[j] + d_aq * x_q[j] + d_ar * x_r[j]
                                    + d_as * x_s[j])
                    g_b = G_b[j] + (d_bp * x_p[j] + d_bq * x_q[j] + d_br * x_r[j]
                                    + d_bs * x_s[j])
                    G_a[j] = g_a
                    G_b[j] = g_b
    if b_off >= 0:
        for i in range(i0, i1):
            s = zero
            for e in range(N):
                s += deltas[e, c_out + i]
            grad[b_off + i] = s
    sq = zero
    if l2 != 0:
        # 004 section 9, with the squares its J_reg omits (see the errata)
        for k in range(w_off + i0 * n_in, w_off + i1 * n_in):
            grad[k] += l2 * theta[k]
            sq += theta[k] * theta[k]
    return sq


@njit(cache=True)
def _grad_tasks(layout):
    """(layer, first row) of every phase 2 task: ROWS output units of one layer."""
    L = layout.shape[0]
    T = 0
    for l in range(L):
        T += (layout[l, N_OUT] + ROWS - 1) // ROWS
    tasks = np.empty((T, 2), dtype=np.int64)
    t = 0
    for l in range(L):
        for i0 in range(0, layout[l, N_OUT], ROWS):
            tasks[t, 0] = l
            tasks[t, 1] = i0
            t += 1
    return tasks


@njit(cache=True, fastmath=FASTMATH)
def _total_loss(losses, sq, scale, l2):
    """J = scale * sum_e J(e) + l2/2 * sum W^2, summed in a fixed order."""
    J = losses.dtype.type(0)
    for e in range(losses.shape[0]):
        J += losses[e]
    J *= scale
    if l2 != 0:
        s = losses.dtype.type(0)
        for t in range(sq.shape[0]):
            s += sq[t]
        J += losses.dtype.type(0.5) * l2 * s
    return J


# ---------------------------------------------------------------- drivers


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def loss_grad_parallel(theta, layout, X, Y, loss_code, scale, l2, input_grad,
                       acts, deltas, losses, grad):
    """Loss, gradient into ``grad`` and (when ``input_grad``) dJ/dx into
    ``deltas[:, :n_0]``; parallel over example blocks, then over row tasks."""
    N = X.shape[0]
    for b in prange((N + BLOCK - 1) // BLOCK):
        _example_block(theta, layout, X, Y, loss_code, scale, True, input_grad,
                       acts, deltas, losses, b * BLOCK, min(N, b * BLOCK + BLOCK))
    tasks = _grad_tasks(layout)
    sq = np.zeros(tasks.shape[0], dtype=theta.dtype)
    for t in prange(tasks.shape[0]):
        lay = layout[tasks[t, 0]]
        i0 = tasks[t, 1]
        sq[t] = _weight_grad_rows(theta, lay, acts, deltas, grad, l2, i0,
                                  min(lay[N_OUT], i0 + ROWS))
    return _total_loss(losses, sq, scale, l2)


@njit(cache=True, fastmath=FASTMATH)
def loss_grad_serial(theta, layout, X, Y, loss_code, scale, l2, input_grad,
                     acts, deltas, losses, grad):
    """Serial twin of ``loss_grad_parallel`` (same workers, same order, so the
    same bits): for problems too small to repay a parallel launch."""
    N = X.shape[0]
    for b in range((N + BLOCK - 1) // BLOCK):
        _example_block(theta, layout, X, Y, loss_code, scale, True, input_grad,
                       acts, deltas, losses, b * BLOCK, min(N, b * BLOCK + BLOCK))
    tasks = _grad_tasks(layout)
    sq = np.zeros(tasks.shape[0], dtype=theta.dtype)
    for t in range(tasks.shape[0]):
        lay = layout[tasks[t, 0]]
        i0 = tasks[t, 1]
        sq[t] = _weight_grad_rows(theta, lay, acts, deltas, grad, l2, i0,
                                  min(lay[N_OUT], i0 + ROWS))
    return _total_loss(losses, sq, scale, l2)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def forward_parallel(theta, layout, X, Y, loss_code, want_loss, acts, losses):
    """Forward pass (and per-example losses when ``want_loss``) into ``acts``."""
    N = X.shape[0]
    for b in prange((N + BLOCK - 1) // BLOCK):
        e0 = b * BLOCK
        e1 = min(N, e0 + BLOCK)
        _forward_block(theta, layout, X, Y, loss_code, want_loss, acts, losses, e0, e1)


@njit(cache=True, fastmath=FASTMATH)
def forward_serial(theta, layout, X, Y, loss_code, want_loss, acts, losses):
    """Serial twin of ``forward_parallel``."""
    N = X.shape[0]
    for b in range((N + BLOCK - 1) // BLOCK):
        e0 = b * BLOCK
        e1 = min(N, e0 + BLOCK)
        _forward_block(theta, layout, X, Y, loss_code, want_loss, acts, losses, e0, e1)


@njit(cache=True, fastmath=FASTMATH)
def _forward_block(theta, layout, X, Y, loss_code, want_loss, acts, losses, e0, e1):
    """Phase 1 without the backward pass.  Without targets (``want_loss`` False) the
    output activation is applied with the loss code of sse, which only reads Y
    when computing a loss."""
    n_0 = X.shape[1]
    for e in range(e0, e1):
        for j in range(n_0):
            acts[e, j] = X[e, j]
    L = layout.shape[0]
    for l in range(L):
        _forward_layer(theta, layout[l], acts, e0, e1)
        if l < L - 1:
            _activate_layer(layout[l], acts, e0, e1)
    lay = layout[L - 1]
    if want_loss:
        for e in range(e0, e1):
            losses[e] = _output_delta(lay, acts, acts, Y, loss_code, theta.dtype.type(0),
                                      False, e)
    else:
        _output_activation(lay, acts, e0, e1)


@njit(cache=True, fastmath=FASTMATH)
def _output_activation(lay, acts, e0, e1):
    """a^(L) = f_L(z^(L)); softmax shifted by max z (no overflow for large z)."""
    n_out, act, c = lay[N_OUT], lay[ACT], lay[C_OUT]
    if act != SOFTMAX:
        _activate_layer(lay, acts, e0, e1)
        return
    for e in range(e0, e1):
        m = acts[e, c]
        for k in range(1, n_out):
            m = max(m, acts[e, c + k])
        s = acts.dtype.type(0)
        for k in range(n_out):
            acts[e, c + k] = math.exp(acts[e, c + k] - m)
            s += acts[e, c + k]
        for k in range(n_out):
            acts[e, c + k] /= s


@njit(cache=True, fastmath=FASTMATH)
def total_loss(theta, layout, losses, scale, l2):
    """J from per-example losses, with the L2 term summed in the same per-task
    grouping as ``loss_grad_*`` so ``Network.loss`` matches ``loss_and_grad``."""
    tasks = _grad_tasks(layout)
    sq = np.zeros(tasks.shape[0], dtype=theta.dtype)
    if l2 != 0:
        for t in range(tasks.shape[0]):
            lay = layout[tasks[t, 0]]
            n_in, w_off, i0 = lay[N_IN], lay[W_OFF], tasks[t, 1]
            i1 = min(lay[N_OUT], i0 + ROWS)
            s = theta.dtype.type(0)
            for k in range(w_off + i0 * n_in, w_off + i1 * n_in):
                s += theta[k] * theta[k]
            sq[t] = s
    return _total_loss(losses, sq, scale, l2)
