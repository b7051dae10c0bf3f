"""Compiled training loop: epochs x mini-batches x fused optimizer step.

One call of ``train_chunk`` runs a chunk of epochs entirely in compiled code;
Python only runs between chunks (progress bar, callbacks).  Each step gathers
the batch's rows into preallocated buffers, calls a gradient driver of
``fastbp._kernels`` (``loss_grad_serial`` or ``loss_grad_parallel``, same bits)
and applies the optimizer update to the flat parameter vector in place.
Nothing is allocated per step by this module.

The gradient and forward drivers arrive as the addresses of their compiled
code, which ``train_chunk`` turns into first-class functions
(``numba.types.FunctionType``, see ``_function_at``) and calls through a
pointer instead of linking their code into its own.  Linking would make LLVM
optimize and generate the (large) kernels a second time inside the training
loop, which cost more compile time than the kernels themselves; through a
pointer the loop compiles in well under a second, the kernels compile once for
the whole library, and the same loop serves the serial and the parallel
drivers.  A parallel driver keeps its ``prange`` threads when called this way,
and its results do not depend on the thread count.

State that must survive from one chunk to the next (optimizer moments, step
count, shuffling generator, early-stopping record) lives in arrays owned by the
caller, so splitting a run into chunks never changes its result.

``train_chunk`` releases the GIL (``nogil``): it touches no Python object, so
other Python threads run while a chunk trains.  Its helpers are inlined into it
(``inline="always"``): compiled one by one, each small function would cost a
separate code generation, several seconds in all on a cold cache.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._config import ERROR_MODEL, FASTMATH
from ._kernels import C_OUT, N_IN, N_OUT, W_OFF, total_loss

# Optimizer codes (names live in fastbp.train.OPTIMIZERS).
SGD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3

# Validation accuracy: none (regression), argmax (softmax), threshold 0.5 (sigmoid).
ACC_NONE, ACC_ARGMAX, ACC_THRESHOLD = 0, 1, 2

# Slots of the int64 ``counters`` array carried across chunks.
STEP, BEST_EPOCH, WAIT = 0, 1, 2
# Outcome of a chunk.
RUNNING, EARLY_STOP, DIVERGED = 0, 1, 2

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
def _gather(X, Y, order, b0, nb, Xb, Yb):
    """Rows order[b0 .. b0 + nb - 1] of X and Y into the batch buffers."""
    for r in range(nb):
        e = order[b0 + r]
        for j in range(X.shape[1]):
            Xb[r, j] = X[e, j]
        for k in range(Y.shape[1]):
            Yb[r, k] = Y[e, k]


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
def _update(opt, theta, grad, m, v, t, lr, mu, beta1, beta2, eps):
    """One optimizer step on the flat vector, in place (t = 1, 2, ... is the step).

    sgd:       theta <- theta - lr g
    momentum:  v <- mu v + g;  theta <- theta - lr v
    nesterov:  v <- mu v + g;  theta <- theta - lr (g + mu v)
    adam:      m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
               theta <- theta - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    (the momentum forms are the ones of PyTorch's SGD; Adam is Kingma and Ba's
    algorithm 1).  No fastmath here: the update is checked bit for bit against
    its NumPy transcription.
    """
    n = theta.shape[0]
    if opt == SGD:
        for k in range(n):
            theta[k] -= lr * grad[k]
    elif opt == MOMENTUM:
        for k in range(n):
            v[k] = mu * v[k] + grad[k]
            theta[k] -= lr * v[k]
    elif opt == NESTEROV:
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
def _end_epoch(theta, layout, ep, J_train, has_val, val_loss, acc_kind, patience, counters,
               best_value, best_theta, out_loss, out_val_loss, out_val_acc, acts_v, Yv):
    """Record epoch ``ep``; track the best epoch (on validation loss when there is
    a validation set, else training loss); return EARLY_STOP or DIVERGED when the
    run must stop, RUNNING otherwise."""
    out_loss[ep] = J_train
    score = J_train
    if has_val:
        out_val_loss[ep] = val_loss
        if acc_kind != ACC_NONE:
            out_val_acc[ep] = _accuracy(layout, acts_v, Yv, acc_kind)
        score = val_loss
    if not (math.isfinite(J_train) and math.isfinite(score)):
        return DIVERGED
    if counters[BEST_EPOCH] < 0 or score < best_value[0]:
        best_value[0] = score
        counters[BEST_EPOCH] = ep
        counters[WAIT] = 0
        if patience > 0:
            # an element loop, not best_theta[:] = theta: the slice assignment's
            # shape-mismatch error message alone costs seconds of compilation
            for k in range(theta.shape[0]):
                best_theta[k] = theta[k]
    else:
        counters[WAIT] += 1
        if patience > 0 and counters[WAIT] >= patience:
            return EARLY_STOP
    return RUNNING


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _sum(losses):
    s = losses.dtype.type(0)
    for e in range(losses.shape[0]):
        s += losses[e]
    return s


@njit(cache=True, error_model=ERROR_MODEL, _nrt=False)
def no_forward(theta, layout, X, Y, loss_code, want_loss, acts, losses):
    """Stands in for the forward driver when there is no validation set, so a run
    without one never compiles the forward kernels."""


def train_chunk(loss_grad_addr, forward_addr, theta, layout, X, Y, loss_code, mean, l2, opt,
                lr, mu, beta1, beta2, eps, m, v, counters, rng, order, shuffled, gather, B,
                Xb, Yb, acts, deltas, losses, Xr, Yr, acts_r, deltas_r, losses_r, grad, panels,
                Xv, Yv, acts_v, losses_v, acc_kind, patience, best_value, best_theta,
                out_loss, out_val_loss, out_val_acc, ep0, n_epochs):
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
    best-epoch / early-stopping bookkeeping.

    Returns
    -------
    (int, int)
        Epochs completed in this call, and RUNNING, EARLY_STOP or DIVERGED.
    """
    loss_grad = _loss_grad_at(loss_grad_addr, theta)
    forward = _forward_at(forward_addr, theta)
    N = X.shape[0]
    n_steps = (N + B - 1) // B
    has_val = Xv.shape[0] > 0
    dt = theta.dtype.type
    for ep in range(ep0, ep0 + n_epochs):
        if shuffled:
            shuffle(order, rng)
        data = dt(0)
        penalty = dt(0)
        for s in range(n_steps):
            b0 = s * B
            nb = min(B, N - b0)
            scale = dt(1.0 / nb) if mean else dt(1)
            # the last batch may be partial: its own buffers, its mean over its nb examples
            full = nb == B
            xb = Xb if full else Xr
            yb = Yb if full else Yr
            if gather:
                _gather(X, Y, order, b0, nb, xb, yb)
            ab = acts if full else acts_r
            db = deltas if full else deltas_r
            lb = losses if full else losses_r
            loss_grad(theta, layout, xb, yb, loss_code, scale, l2, False, ab, db, lb, grad,
                      panels)
            data += _sum(lb)
            if l2 != 0:
                penalty += dt(0.5) * l2 * _weight_sq(theta, layout)
            counters[STEP] += 1
            _update(opt, theta, grad, m, v, counters[STEP], lr, mu, beta1, beta2, eps)
        J_train = (data / dt(N) if mean else data) + penalty / dt(n_steps)
        val_loss = dt(0)
        if has_val:
            forward(theta, layout, Xv, Yv, loss_code, True, acts_v, losses_v)
            val_loss = total_loss(theta, layout, losses_v,
                                  dt(1.0 / Xv.shape[0]) if mean else dt(1), l2)
        outcome = _end_epoch(theta, layout, ep, J_train, has_val, val_loss, acc_kind,
                             patience, counters, best_value, best_theta, out_loss,
                             out_val_loss, out_val_acc, acts_v, Yv)
        if outcome != RUNNING:
            return ep - ep0 + 1, outcome
    return n_epochs, RUNNING


def _driver_types(dtype):
    """The first-class function types of a gradient driver and of a forward
    driver for parameters of ``dtype`` (their signatures in ``fastbp._kernels``)."""
    f = types.float64 if dtype == np.float64 else types.float32
    vec, mat = types.Array(f, 1, "C"), types.Array(f, 2, "C")
    i64, b = types.int64, types.boolean
    layout = types.Array(types.int64, 2, "C", readonly=True)
    loss_grad = types.FunctionType(f(vec, layout, mat, mat, i64, f, f, b, mat, mat, vec, vec,
                                     vec))
    forward = types.FunctionType(types.none(vec, layout, mat, mat, i64, b, mat, vec))
    return loss_grad, forward


def _function_at(which):
    """An intrinsic ``fn(addr, theta)``: the compiled driver at address ``addr``
    (from ``driver_address``) as a first-class function of type
    ``_driver_types(theta.dtype)[which]``.

    Why not pass the function itself: numba unboxes a first-class function
    argument through Python calls and an unpickled signature, ~20 us per
    argument per call, more than a whole chunk of a small run.  An address is a
    plain integer.  The value holds only the address of the function in numba's
    own calling convention (``jit_addr``), so calls through it go straight
    there; its C wrapper and Python object are left empty, as nothing here
    needs them."""

    @intrinsic
    def function_at(typingctx, addr, theta):
        ftype = _driver_types(np.dtype(str(theta.dtype)))[which]

        def codegen(context, builder, signature, args):
            fn = cgutils.create_struct_proxy(ftype)(context, builder)
            null = cgutils.voidptr_t(None)
            fn.c_addr = null
            fn.py_addr = null
            fn.jit_addr = builder.inttoptr(args[0], cgutils.voidptr_t)
            return fn._getvalue()

        return ftype(types.int64, theta), codegen

    return function_at


_loss_grad_at = _function_at(0)
_forward_at = _function_at(1)


def _signature(dtype):
    """Argument types of ``train_chunk`` for parameters of ``dtype``: one compiled
    version per dtype, whatever the network."""
    f = types.float64 if dtype == np.float64 else types.float32
    vec, mat = types.Array(f, 1, "C"), types.Array(f, 2, "C")
    f64, i64, i64vec = types.Array(types.float64, 1, "C"), types.int64, types.Array(
        types.int64, 1, "C")
    layout = types.Array(types.int64, 2, "C", readonly=True)
    b = types.boolean
    return types.UniTuple(i64, 2)(
        i64, i64, vec, layout, mat, mat, i64, b, f, i64, f, f, f, f, f, vec, vec,
        i64vec, types.Array(types.uint64, 1, "C"), i64vec, b, b, i64,
        mat, mat, mat, mat, vec, mat, mat, mat, mat, vec, vec, vec,
        mat, mat, mat, vec, i64, i64, f64, vec, f64, f64, f64, i64, i64)


_compiled = {}
_addresses = {}


def driver_address(driver, dtype, which: int) -> int:
    """The address of ``driver`` (a gradient driver for ``which`` = 0, a forward
    driver for 1) compiled for ``dtype``, as ``train_chunk`` takes it: found
    once per driver and dtype (compiling the driver, or loading it from the
    cache, on first use).  The address stays valid as long as the driver's
    dispatcher lives, i.e. for the life of the process."""
    key = (driver, np.dtype(dtype), which)
    addr = _addresses.get(key)
    if addr is None:
        sig = _driver_types(np.dtype(dtype))[which].signature
        cres = driver.get_compile_result(sig)
        addr = _addresses[key] = cres.library.get_pointer_to_function(
            cres.fndesc.llvm_func_name)
    return addr


def compiled_train_chunk(dtype):
    """``train_chunk`` compiled (or loaded from the cache) for ``dtype``, on first use."""
    dtype = np.dtype(dtype)
    if dtype not in _compiled:
        _compiled[dtype] = njit(_signature(dtype), cache=True, nogil=True,
                                error_model=ERROR_MODEL, _nrt=False)(train_chunk)
    return _compiled[dtype]
