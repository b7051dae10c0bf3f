"""Compiled training loop: epochs x mini-batches x fused optimizer step.

One call of ``train_chunk`` runs a chunk of epochs entirely in compiled code;
Python only runs between chunks (progress bar, callbacks).  Each step gathers
the batch's rows into preallocated buffers, calls a gradient driver of
``kernels`` (``loss_grad_serial`` or ``loss_grad_parallel``, same bits)
and applies the optimizer update to the flat parameter vector in place.
Nothing is allocated per step by this module.

The gradient and forward drivers arrive as the addresses of their compiled
code, which ``train_chunk`` turns into first-class functions
(``numba.types.FunctionType``, see ``numba_private.function_at``) and calls through a
pointer instead of linking their code into its own.  Linking would make LLVM
optimize and generate the (large) kernels a second time inside the training
loop, which cost more compile time than the kernels themselves; through a
pointer the loop compiles in well under a second, the kernels compile once for
the whole library, and the same loop serves the serial and the parallel
drivers.  A parallel driver keeps its ``prange`` threads when called this way,
and its results do not depend on the thread count.

State that must survive from one chunk to the next (optimizer moments, step
count, shuffling generator, stopping rule's record) lives in arrays owned by
the caller (fields of the records below), so splitting a run into chunks never changes its result.

``train_chunk`` releases the GIL (``nogil``): it touches no Python object, so
other Python threads run while a chunk trains.  Its helpers are inlined into it
(``inline="always"``): compiled one by one, each small function would cost a
separate code generation, several seconds in all on a cold cache.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np
from numba import njit, types

from .config import ERROR_MODEL, FASTMATH
from .kernels import C_OUT, N_IN, N_OUT, W_OFF
from .numba_private import NO_REFCOUNT, compiled_address, function_at

# Optimizer codes (the names: ``OPTIMIZERS`` in ``fastbp._core``).
SGD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3
# Learning-rate schedules (the names: ``SCHEDULES`` in ``fastbp._core``).
CONSTANT, INVSCALING, ADAPTIVE = 0, 1, 2
# adaptive: the rate is divided by ADAPT_FACTOR when the stopping rule would stop,
# unless it is already at most ADAPT_FLOOR (then the run stops): scikit-learn's
ADAPT_FACTOR, ADAPT_FLOOR = 5.0, 1e-6

# Validation accuracy: none (regression), argmax (softmax), threshold 0.5 (sigmoid).
ACC_NONE, ACC_ARGMAX, ACC_THRESHOLD = 0, 1, 2

# Slots of the stopping rule's int64 ``counters``, carried across chunks.
BEST_EPOCH, WAIT = 0, 1
# What the stopping rule monitors: the training loss, the validation loss, the
# validation accuracy.
MONITOR_LOSS, MONITOR_VAL_LOSS, MONITOR_ACCURACY = 0, 1, 2
# Outcome of a chunk.
RUNNING, EARLY_STOP, DIVERGED, INTERRUPTED = 0, 1, 2, 3

# SplitMix64 constants (Steele, Lea and Flood 2014; the seeding generator of
# xoshiro).  A private generator keeps shuffling in compiled code without
# touching numba's global np.random state.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, inline="always", error_model=ERROR_MODEL)
def _splitmix64(state):
    """Next 64-bit output of SplitMix64; ``state`` is a uint64 array of length 1."""
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always", error_model=ERROR_MODEL)
def shuffle(order, state):
    """Fisher-Yates shuffle of ``order`` in place, driven by SplitMix64.

    j is drawn as the top 53 bits of the output scaled to 0..i: the bias of this
    mapping is below i / 2**53, far beneath anything a training run can see.
    """
    for i in range(order.shape[0] - 1, 0, -1):
        u = _splitmix64(state) >> np.uint64(11)  # 53 random bits
        j = int(u * np.float64(i + 1) / 9007199254740992.0)
        t = order[i]
        order[i] = order[j]
        order[j] = t


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _gather(X, Y, W, order, b0, nb, Xb, Yb, Wb):
    """Rows order[b0 .. b0 + nb - 1] of X and Y (and of the weights W, when there
    are any) into the batch buffers."""
    weighted = W.shape[0] > 0
    for r in range(nb):
        e = order[b0 + r]
        for j in range(X.shape[1]):
            Xb[r, j] = X[e, j]
        for k in range(Y.shape[1]):
            Yb[r, k] = Y[e, k]
        if weighted:
            Wb[r] = W[e]


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _weight_sq(theta, layout):
    """sum of W^(l)[i, j]^2 over every weight (not the biases), for the L2 term."""
    s = theta.dtype.type(0)
    for l in range(layout.shape[0]):
        w_off = layout[l, W_OFF]
        for k in range(w_off, w_off + layout[l, N_IN] * layout[l, N_OUT]):
            s += theta[k] * theta[k]
    return s


@njit(cache=True, inline="always", error_model=ERROR_MODEL)
def _update(opt, theta, grad, t):
    """One optimizer step on the flat vector, in place (t = 1, 2, ... is the step).

    sgd:       theta <- theta - lr g
    momentum:  v <- mu v + g;  theta <- theta - lr v
    nesterov:  v <- mu v + g;  theta <- theta - lr (g + mu v)
    adam:      m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
               theta <- theta - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    (the momentum forms are the ones of PyTorch's SGD; Adam is Kingma and Ba's
    algorithm 1), lr the schedule's current rate (``rate``).  No fastmath here:
    the update is checked bit for bit against its NumPy transcription.
    """
    lr, mu, beta1, beta2, eps = opt.rate[0], opt.mu, opt.beta1, opt.beta2, opt.eps
    m, v = opt.m, opt.v
    n = theta.shape[0]
    if opt.code == SGD:
        for k in range(n):
            theta[k] -= lr * grad[k]
    elif opt.code == MOMENTUM:
        for k in range(n):
            v[k] = mu * v[k] + grad[k]
            theta[k] -= lr * v[k]
    elif opt.code == NESTEROV:
        for k in range(n):
            v[k] = mu * v[k] + grad[k]
            theta[k] -= lr * (grad[k] + mu * v[k])
    else:
        one = theta.dtype.type(1)
        c1 = one - beta1 ** t
        c2 = one - beta2 ** t
        for k in range(n):
            g = grad[k]
            m[k] = beta1 * m[k] + (one - beta1) * g
            v[k] = beta2 * v[k] + (one - beta2) * (g * g)
            theta[k] -= lr * (m[k] / c1) / (math.sqrt(v[k] / c2) + eps)


@njit(cache=True, inline="always", error_model=ERROR_MODEL)
def _accuracy(layout, acts, Y, kind):
    """Fraction of examples classified right from the output columns of ``acts``.

    argmax: predicted class argmax_k a_k against argmax_k y_k (first on ties).
    threshold: every unit's (a_k > 1/2) equals (y_k > 1/2) (exact match over the
    outputs, i.e. plain accuracy for a single sigmoid unit).
    """
    N = Y.shape[0]
    n_L = layout[layout.shape[0] - 1, N_OUT]
    c = layout[layout.shape[0] - 1, C_OUT]
    right = 0
    for e in range(N):
        if kind == ACC_ARGMAX:
            ka = 0
            ky = 0
            for k in range(1, n_L):
                if acts[e, c + k] > acts[e, c + ka]:
                    ka = k
                if Y[e, k] > Y[e, ky]:
                    ky = k
            right += ka == ky
        else:
            ok = True
            for k in range(n_L):
                if (acts[e, c + k] > 0.5) != (Y[e, k] > 0.5):
                    ok = False
            right += ok
    return right / N


@njit(cache=True, inline="always", error_model=ERROR_MODEL)
def _score(stop, q):
    """The stopping rule's score of a monitored value q (higher is better):
    offset + (factor * q) / divisor in float64, as the front end writes it
    (``fastbp.training``), so both give the same bits.  A zero divisor (R^2 of
    constant targets) scores ``offset`` for q = 0 and 0 otherwise, as
    scikit-learn's r2_score does."""
    q = np.float64(q)
    if stop.divisor == 0:
        return stop.offset if q == 0 else 0.0
    return stop.offset + (stop.factor * q) / stop.divisor


@njit(cache=True, inline="always", error_model=ERROR_MODEL)
def _end_epoch(model, val, stop, opt, records, ep, J_train, val_loss):
    """Record epoch ``ep`` and apply the stopping rule; return EARLY_STOP or
    DIVERGED when the run must stop, RUNNING otherwise.  An epoch whose loss or
    parameters are not all finite diverged; the parameters of every other epoch
    are kept in ``finite_theta`` (the last of them is what a diverged run returns).

    The rule (scikit-learn's): the monitored value's score s (``_score``)
    improves on the best score so far when s > best; an epoch with
    s < best + tol counts as one without improvement, any other resets the
    count; the run stops when the count reaches ``patience`` (0: never).  The
    best epoch's parameters are kept in ``best_theta`` when ``restore``."""
    records.loss[ep] = J_train
    q = J_train
    if val.Xv.shape[0] > 0:
        records.val_loss[ep] = val_loss
        q = val_loss
        if val.acc_kind != ACC_NONE:
            acc = _accuracy(model.layout, val.acts, val.Yv, val.acc_kind)
            records.val_accuracy[ep] = acc
            if stop.monitor == MONITOR_ACCURACY:
                q = acc
    if stop.monitor == MONITOR_LOSS:
        q = J_train
    theta = model.theta
    finite = math.isfinite(J_train) and math.isfinite(val_loss)
    for k in range(theta.shape[0]):
        finite &= math.isfinite(theta[k])
    if not finite:
        return DIVERGED
    # the parameters a diverging run returns: an element loop (see below)
    for k in range(theta.shape[0]):
        stop.finite_theta[k] = theta[k]
    s = _score(stop, q)
    best = stop.best[0]
    if s < best + stop.tol:
        stop.counters[WAIT] += 1
    else:
        stop.counters[WAIT] = 0
    if s > best:
        stop.best[0] = s
        stop.counters[BEST_EPOCH] = ep
        if stop.restore:
            # an element loop, not best_theta[:] = theta: the slice assignment's
            # shape-mismatch error message alone costs seconds of compilation
            for k in range(theta.shape[0]):
                stop.best_theta[k] = theta[k]
    if stop.patience > 0 and stop.counters[WAIT] >= stop.patience:
        if opt.schedule == ADAPTIVE and opt.rate[0] > ADAPT_FLOOR:
            opt.rate[0] /= ADAPT_FACTOR
            stop.counters[WAIT] = 0
            return RUNNING
        return EARLY_STOP
    return RUNNING


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _sum(losses):
    s = losses.dtype.type(0)
    for e in range(losses.shape[0]):
        s += losses[e]
    return s


@njit(cache=True, error_model=ERROR_MODEL, **NO_REFCOUNT)
def no_forward(theta, layout, X, Y, weights, loss_code, want_loss, scale, l2, acts, losses,
               scratch, fns):
    """Stands in for the forward driver when there is no validation set, so a run
    without one never compiles the forward kernels."""
    return theta.dtype.type(0)


# ---------------------------------------------------------------- the records
# ``train_chunk`` takes its inputs as a few named records rather than ~50
# positional arrays: a field is read by name, so two same-typed arrays cannot
# be swapped by position, and the compiled signature is derived from the
# records themselves (``compiled_train_chunk``), never typed by hand.  Arrays in
# a record are shared with the caller; the scalars are fixed for a run.


class Model(NamedTuple):
    """What J is: the flat parameters (updated in place), the layout table, the
    loss code, the mean (True) or sum reduction, and lambda of the L2 term."""

    theta: np.ndarray
    layout: np.ndarray
    loss_code: int
    mean: bool
    l2: float


class Batches(NamedTuple):
    """The training set (with the examples' weights ``W``, or no values for
    none) and how it is cut into batches of B rows (the last may be
    smaller), with the scratch of a full batch (``Xb`` .. ``losses``) and of the
    last one (``Xr`` .. ``losses_r``), the gradient buffer, the drivers' scratch
    and their workers' addresses (``kernels.worker_table``).
    ``gather`` False: one full batch, X used as it is; ``shuffled``: ``order`` is
    reshuffled before each epoch from the SplitMix64 state ``rng``."""

    X: np.ndarray
    Y: np.ndarray
    W: np.ndarray
    order: np.ndarray
    rng: np.ndarray
    shuffled: bool
    gather: bool
    B: int
    Xb: np.ndarray
    Yb: np.ndarray
    Wb: np.ndarray
    acts: np.ndarray
    deltas: np.ndarray
    losses: np.ndarray
    Xr: np.ndarray
    Yr: np.ndarray
    Wr: np.ndarray
    acts_r: np.ndarray
    deltas_r: np.ndarray
    losses_r: np.ndarray
    grad: np.ndarray
    scratch: np.ndarray
    fns: np.ndarray


class Optimizer(NamedTuple):
    """The update rule (``SGD`` .. ``ADAM``), its constants, the learning-rate
    schedule (``CONSTANT`` .. ``ADAPTIVE``) from the initial rate ``lr`` with
    exponent ``power_t``, and its state: the moments m, v, ``step`` (int64[1],
    the number of steps taken), ``rate`` (float[1], the current learning rate)
    and ``seen`` (int64[1], the examples seen, invscaling's t)."""

    code: int
    lr: float
    mu: float
    beta1: float
    beta2: float
    eps: float
    schedule: int
    power_t: float
    m: np.ndarray
    v: np.ndarray
    step: np.ndarray
    rate: np.ndarray
    seen: np.ndarray


class Validation(NamedTuple):
    """The validation set (no rows: none), its forward scratch, and how its
    accuracy is read (``ACC_NONE`` .. ``ACC_THRESHOLD``)."""

    Xv: np.ndarray
    Yv: np.ndarray
    acts: np.ndarray
    losses: np.ndarray
    scratch: np.ndarray
    acc_kind: int


class Stopping(NamedTuple):
    """The stopping rule (``_end_epoch``): the monitored value (``MONITOR_*``),
    its score's affine map (``_score``), tol and patience (0: never stop
    early), whether the best epoch's parameters are kept (into ``best_theta``),
    its state: the best score (float64[1]) and ``counters`` (int64[2]: the best
    epoch, the epochs without improvement), the parameters at the end of the
    last epoch whose loss and parameters were finite (``finite_theta``), and
    ``interrupt`` (int64[1]): set to nonzero by another thread, it stops the
    chunk after the current mini-batch (``INTERRUPTED``)."""

    monitor: int
    offset: float
    factor: float
    divisor: float
    tol: float
    patience: int
    restore: bool
    best: np.ndarray
    counters: np.ndarray
    best_theta: np.ndarray
    finite_theta: np.ndarray
    interrupt: np.ndarray


class Records(NamedTuple):
    """Per-epoch outputs: training loss, validation loss, validation accuracy."""

    loss: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray


def train_chunk(loss_grad_addr, forward_addr, model, batches, opt, val, stop, records, ep0,
                n_epochs):
    """Run epochs ep0 .. ep0 + n_epochs - 1, with the gradient driver and the
    forward driver at ``loss_grad_addr`` and ``forward_addr`` (``driver_address``).

    Each epoch: reshuffle ``order`` (when ``shuffled``), then for each batch of B
    examples (the last one may be smaller): gather its rows (unless ``gather`` is
    False: full batch, X used as is), compute J_b and its gradient with
    ``loss_grad`` (mean over the batch's own examples when ``mean``), and update
    ``theta``.  The epoch's training loss is the data loss of every example as
    seen by its batch (before that batch's update), averaged (``mean``) or summed
    over the epoch, plus the L2 term averaged over the steps.  Then the
    validation loss (and accuracy) at the epoch's end with ``forward``, and the
    stopping rule (``_end_epoch``).

    Returns
    -------
    (int, int)
        Epochs completed in this call, and RUNNING, EARLY_STOP, DIVERGED or
        INTERRUPTED (the last epoch left incomplete).
    """
    theta, layout, loss_code, mean, l2 = model
    bt = batches
    loss_grad = _loss_grad_at(loss_grad_addr, theta)
    forward = _forward_at(forward_addr, theta)
    N = bt.X.shape[0]
    B = bt.B
    n_steps = (N + B - 1) // B
    has_val = val.Xv.shape[0] > 0
    dt = theta.dtype.type
    weighted = bt.W.shape[0] > 0
    # with weights, the mean over the examples is the weighted mean: scale 1 / sum w
    total = _sum(bt.W) if weighted else dt(N)
    for ep in range(ep0, ep0 + n_epochs):
        if bt.shuffled:
            shuffle(bt.order, bt.rng)
        data = dt(0)
        penalty = dt(0)
        for s in range(n_steps):
            b0 = s * B
            nb = min(B, N - b0)
            # the last batch may be partial: its own buffers, its mean over its nb examples
            full = nb == B
            xb = bt.Xb if full else bt.Xr
            yb = bt.Yb if full else bt.Yr
            wb = bt.Wb if full else bt.Wr
            if bt.gather:
                _gather(bt.X, bt.Y, bt.W, bt.order, b0, nb, xb, yb, wb)
            else:
                wb = bt.W
            scale = dt(1.0 / nb) if mean else dt(1)
            if weighted and mean:
                w_sum = _sum(wb)  # a batch of zero weights contributes nothing
                scale = dt(1.0 / np.float64(w_sum)) if w_sum > 0 else dt(0)
            ab = bt.acts if full else bt.acts_r
            db = bt.deltas if full else bt.deltas_r
            lb = bt.losses if full else bt.losses_r
            loss_grad(theta, layout, xb, yb, wb, loss_code, scale, l2, False, ab, db, lb,
                      bt.grad, bt.scratch, bt.fns)
            data += _sum(lb)
            if l2 != 0:
                penalty += dt(0.5) * l2 * _weight_sq(theta, layout)
            opt.step[0] += 1
            _update(opt, theta, bt.grad, opt.step[0])
            if stop.interrupt[0] != 0:  # Ctrl-C in the caller: stop within a batch
                return ep - ep0, INTERRUPTED
        J_train = (data / total if mean else data) + penalty / dt(n_steps)
        opt.seen[0] += N
        if opt.schedule == INVSCALING:
            # lr_t = lr / (t + 1)^power_t, t the examples seen (scikit-learn's
            # invscaling), set at the end of each epoch
            opt.rate[0] = opt.lr / (np.float64(opt.seen[0]) + 1.0) ** opt.power_t
        val_loss = dt(0)
        if has_val:
            val_loss = forward(theta, layout, val.Xv, val.Yv, bt.W[:0], loss_code, True,
                               dt(1.0 / val.Xv.shape[0]) if mean else dt(1), l2, val.acts,
                               val.losses, val.scratch, bt.fns)
        outcome = _end_epoch(model, val, stop, opt, records, ep, J_train, val_loss)
        if outcome != RUNNING:
            return ep - ep0 + 1, outcome
    return n_epochs, RUNNING


def _driver_types(dtype):
    """The first-class function types of a gradient driver and of a forward
    driver for parameters of ``dtype`` (their signatures in ``kernels``)."""
    f = types.float64 if dtype == np.float64 else types.float32
    vec, mat = types.Array(f, 1, "C"), types.Array(f, 2, "C")
    i64, b = types.int64, types.boolean
    layout = types.Array(types.int64, 2, "C", readonly=True)
    fns = types.Array(types.int64, 1, "C")
    loss_grad = types.FunctionType(f(vec, layout, mat, mat, vec, i64, f, f, b, mat, mat, vec,
                                     vec, vec, fns))
    forward = types.FunctionType(f(vec, layout, mat, mat, vec, i64, b, f, f, mat, vec, vec,
                                   fns))
    return loss_grad, forward


# Why addresses rather than the functions themselves: numba unboxes a
# first-class function argument through Python calls and an unpickled
# signature, ~20 us per argument per call, more than a whole chunk of a small
# run.  An address is a plain integer.
_loss_grad_at = function_at(lambda theta: _driver_types(np.dtype(str(theta.dtype)))[0])
_forward_at = function_at(lambda theta: _driver_types(np.dtype(str(theta.dtype)))[1])

_addresses = {}


def driver_address(driver, dtype, which: int) -> int:
    """The address of ``driver`` (a gradient driver for ``which`` = 0, a forward
    driver for 1) compiled for ``dtype``, as ``train_chunk`` takes it: found
    once per driver and dtype (compiling the driver, or loading it from the
    cache, on first use)."""
    key = (driver, np.dtype(dtype), which)
    addr = _addresses.get(key)
    if addr is None:
        sig = _driver_types(np.dtype(dtype))[which].signature
        addr = _addresses[key] = compiled_address(driver, sig)
    return addr


def compiled_train_chunk(records):
    """``train_chunk`` for ``records`` (model, batches, opt, val, stop, records),
    called as ``train_chunk`` itself is, compiled (or loaded from the cache) for
    the types of the records' fields on first use: its signature is derived
    from them, one compiled version per dtype."""
    return _train_chunk_records


def _train_chunk_records(loss_grad_addr, forward_addr, *args):
    *recs, ep0, n_epochs = args
    return _train_chunk_fields(loss_grad_addr, forward_addr, ep0, n_epochs,
                               *itertools.chain.from_iterable(recs))


# The records' fields, counted: where each record begins in the fields passed
# flat to _train_chunk_fields (numba folds globals into constants).
_M = len(Model._fields)
_B = _M + len(Batches._fields)
_O = _B + len(Optimizer._fields)
_V = _O + len(Validation._fields)
_S = _V + len(Stopping._fields)
_R = _S + len(Records._fields)

_train_chunk_inline = njit(inline="always", error_model=ERROR_MODEL, **NO_REFCOUNT)(train_chunk)


@njit(cache=True, nogil=True, error_model=ERROR_MODEL, **NO_REFCOUNT)
def _train_chunk_fields(loss_grad_addr, forward_addr, ep0, n_epochs, *f):
    """``train_chunk`` on the records' fields, passed one by one: numba's
    dispatcher types arrays and scalars in C, while a record (a tuple) goes
    through its Python ``typeof``, ~80 us per record per call, more than a
    small run's whole training.  The records are rebuilt here, in compiled code."""
    return _train_chunk_inline(loss_grad_addr, forward_addr, Model(*f[0:_M]),
                               Batches(*f[_M:_B]), Optimizer(*f[_B:_O]),
                               Validation(*f[_O:_V]), Stopping(*f[_V:_S]),
                               Records(*f[_S:_R]), ep0, n_epochs)
