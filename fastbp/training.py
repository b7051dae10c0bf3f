"""``fastbp.train`` (in ``fastbp.training``): gradient-based training with the whole run in compiled code.

Python validates, converts and allocates once; then each call into
``fastbp._train_kernels`` runs a chunk of epochs (every mini-batch, gradient and
optimizer step) without returning.  Between chunks (about every quarter of a
second) Python updates the progress bar, calls the user's callback and lets
Ctrl-C through.  Chunk boundaries never change the result.
"""

from __future__ import annotations

import math
import numbers
import secrets
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np

from . import _engine, _kernels
from . import _train_kernels as tk
from ._config import SERIAL_BELOW
from ._validate import as_float_matrix, as_targets
from .network import Network
from .params import Params

__all__ = ["OPTIMIZERS", "History", "train"]

# name -> code of the compiled update (see ``train`` for the formulas)
OPTIMIZERS = {"sgd": tk.SGD, "momentum": tk.MOMENTUM, "nesterov": tk.NESTEROV, "adam": tk.ADAM}
DEFAULT_LR = {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adam": 0.001}

# Wall time aimed at for one compiled chunk of epochs: long enough that the
# Python between chunks costs nothing measurable, short enough for a live
# progress bar and a prompt Ctrl-C.
_CHUNK_SECONDS = 0.25
# Pessimistic costs of a serial step (its fixed part: calls, zeroing, update)
# and of a multiply-add of the forward pass (with its share of the backward
# pass, gradient and activations), for sizing the first chunk: measured
# 0.4-1.1 us (003's network) and 4-6 ns (000's) on a busy 2-core box.
_STEP_SECONDS = 2e-6
_MULADD_SECONDS = 1e-8
_FIRST_CHUNK_SECONDS = 0.05
# A run on the parallel driver whose epochs take this many times the serial
# driver's gradients (as timed by the trial) goes back to the serial driver.
_GIVE_UP = 2.0


class History:
    """What a training run did, epoch by epoch, and the parameters it produced.

    Attributes
    ----------
    loss : ndarray of shape (epochs_run,)
        Training loss of each epoch: every example's loss as its mini-batch saw it
        (before that batch's update), averaged over the training set (summed for
        ``reduction="sum"``), plus the L2 term averaged over the epoch's steps.
        With full batches this is J at the start of the epoch (to rounding).
    val_loss : ndarray of shape (epochs_run,) or None
        J on the validation set at the end of each epoch (None without validation).
    val_accuracy : ndarray of shape (epochs_run,) or None
        Fraction of validation examples classified right at the end of each epoch
        (argmax for softmax, 0.5 threshold for sigmoid outputs); None without
        validation or for the regression loss ``sse``.
    time : ndarray of shape (epochs_run,)
        Wall-clock seconds since the start of training at the end of each epoch
        (measured per compiled chunk, spread evenly over the chunk's epochs; the
        first chunk includes any compilation).
    best_epoch : int
        Index (into the arrays above) of the epoch with the lowest validation
        loss, or the lowest training loss without validation.
    epochs : int
        Epochs run (fewer than asked after early stopping or a stop request).
    steps : int
        Optimizer steps taken.
    stop_reason : {"completed", "early_stopping", "callback", "diverged"}
    seed : int
        Seed of the run (drawn from the OS when ``seed=None``): passing it back
        as ``seed`` repeats the run bit for bit.
    params : Params
        The trained parameters (the best epoch's when early stopping restored them).
    """

    __slots__ = (
        "best_epoch",
        "epochs",
        "loss",
        "params",
        "seed",
        "steps",
        "stop_reason",
        "time",
        "val_accuracy",
        "val_loss",
    )

    def __init__(self, loss, val_loss, val_accuracy, time, best_epoch, epochs, steps,
                 stop_reason, seed, params):
        self.loss = loss
        self.val_loss = val_loss
        self.val_accuracy = val_accuracy
        self.time = time
        self.best_epoch = best_epoch
        self.epochs = epochs
        self.steps = steps
        self.stop_reason = stop_reason
        self.seed = seed
        self.params = params

    def to_dict(self) -> dict:
        """Everything but ``params`` as plain JSON-able Python values (lists, not arrays)."""
        def as_list(a):
            return None if a is None else [float(x) for x in a]

        return {
            "loss": as_list(self.loss),
            "val_loss": as_list(self.val_loss),
            "val_accuracy": as_list(self.val_accuracy),
            "time": as_list(self.time),
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "steps": self.steps,
            "stop_reason": self.stop_reason,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        last = f", loss={self.loss[-1]:.6g}" if self.epochs else ""
        if self.val_loss is not None and self.epochs:
            last += f", val_loss={self.val_loss[-1]:.6g}"
        return (f"History(epochs={self.epochs}{last}, best_epoch={self.best_epoch}, "
                f"stop_reason={self.stop_reason!r})")


def train(
    net: Network,
    params: Params,
    X,
    Y,
    *,
    optimizer: str = "sgd",
    lr: float | None = None,
    epochs: int = 100,
    batch_size: int | None = None,
    shuffle: bool = True,
    seed: int | None = None,
    momentum: float = 0.9,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    validation=None,
    early_stopping: int | None = None,
    progress: bool = False,
    callback: Callable[[History], bool | None] | None = None,
    inplace: bool = False,
) -> History:
    """Train ``net`` from ``params`` on (X, Y), the whole run in compiled code.

    Parameters
    ----------
    net : Network
        Defines J (loss, reduction, l2); J is minimized on each mini-batch.
    params : Params
        Starting point.  Never modified unless ``inplace=True``.
    X : array_like of shape (N, n_0)
    Y : array_like of shape (N, n_L), or (N,)
        As for ``Network.loss_and_grad`` (integer labels for cross_entropy).
    optimizer : {"sgd", "momentum", "nesterov", "adam"}, default "sgd"
        With g the mini-batch gradient and t = 1, 2, ... the step:

        - ``"sgd"``: theta <- theta - lr g (plain gradient descent; with
          ``batch_size=None`` this is 000's and 003's full-batch update).
        - ``"momentum"``: v <- momentum v + g; theta <- theta - lr v.
        - ``"nesterov"``: v <- momentum v + g; theta <- theta - lr (g + momentum v).
        - ``"adam"``: m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
          theta <- theta - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).

        The momentum forms are PyTorch's; v and m start at zero.
    lr : float, optional
        Learning rate > 0.  Default 0.01, or 0.001 for Adam.
    epochs : int, default 100
        Passes over the training set.
    batch_size : int, optional
        None (or >= N): full batch, one step per epoch on the whole training set.
        Otherwise ceil(N / batch_size) steps per epoch; the last batch holds the
        remaining examples and, with ``reduction="mean"``, its loss is the mean over
        its own size.
    shuffle : bool, default True
        Reshuffle the examples before each epoch (mini-batches only).
    seed : int, optional
        Seeds the shuffling and the ``validation`` split.  Same seed and data give
        bit-identical parameters for any number of threads.  None draws a seed,
        reported as ``History.seed``.
    momentum : float, default 0.9
        In [0, 1); used by "momentum" and "nesterov".
    nesterov : bool, default False
        ``optimizer="momentum", nesterov=True`` is ``optimizer="nesterov"``.
    betas : (float, float), default (0.9, 0.999)
        Adam's b1, b2, each in [0, 1).
    eps : float, default 1e-8
        Adam's epsilon, > 0.
    validation : (Xv, Yv) or float, optional
        A validation set, or the fraction in (0, 1) of (X, Y) to hold out (rows
        drawn with ``seed``; the remaining rows train, in their original order).
    early_stopping : int, optional
        Patience: stop after this many epochs without a lower validation loss and
        restore the parameters of the best epoch.  Needs ``validation``.
    progress : bool, default False
        Show a progress bar with the current loss on stderr (tqdm when installed).
    callback : callable, optional
        Called between compiled chunks of epochs (about every 0.25 s, and after the
        last epoch) with the History so far; returning True stops training.
    inplace : bool, default False
        Update ``params.flat`` in place (its dtype must be the network's);
        ``History.params`` is then ``params`` itself.

    Returns
    -------
    History
        Per-epoch losses, timings, best epoch and the trained ``params``.

    Notes
    -----
    Each step evaluates J and dJ/dtheta on the mini-batch with the kernels of
    ``Network.loss_and_grad`` (same bits), then applies the update above to the
    flat parameter vector, inside the same compiled loop.
    """
    if not isinstance(net, Network):
        raise TypeError(f"net: expected fastbp.Network, got {type(net).__name__}")
    theta0 = net._theta(params)
    if not _is_bool(inplace):
        raise TypeError(f"inplace: expected a bool, got {inplace!r}")
    if inplace and params.flat.dtype != net.dtype:
        raise ValueError(f"inplace: params are {params.flat.dtype} but the network is "
                         f"{net.dtype}; convert with params.astype({net.dtype.name!r})")
    if inplace and not params.flat.flags.writeable:
        raise ValueError("inplace: params.flat is read-only")
    X = as_float_matrix("X", X, net.sizes[0], net.dtype)
    Y = as_targets(Y, X.shape[0], net.sizes[-1], net.loss_name, net.dtype)

    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if not _is_bool(nesterov):
        raise TypeError(f"nesterov: expected a bool, got {nesterov!r}")
    if nesterov:
        if optimizer not in ("momentum", "nesterov"):
            raise ValueError(f"nesterov: applies to optimizer='momentum', not {optimizer!r}")
        optimizer = "nesterov"
    lr = DEFAULT_LR[optimizer] if lr is None else _positive("lr", lr)
    epochs = _count("epochs", epochs)
    if batch_size is not None:
        batch_size = _count("batch_size", batch_size)
    if not _is_bool(shuffle):
        raise TypeError(f"shuffle: expected a bool, got {shuffle!r}")
    if seed is not None and (_is_bool(seed) or not isinstance(seed, numbers.Integral)
                             or seed < 0):
        raise ValueError(f"seed: expected None or an integer >= 0, got {seed!r}")
    momentum = _unit_interval("momentum", momentum)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas: expected a pair (b1, b2), got {betas!r}")
    beta1 = _unit_interval("betas[0]", betas[0])
    beta2 = _unit_interval("betas[1]", betas[1])
    eps = _positive("eps", eps)
    if early_stopping is not None:
        early_stopping = _count("early_stopping", early_stopping)
        if validation is None:
            raise ValueError("early_stopping: needs a validation set (validation=(Xv, Yv) "
                             "or a fraction such as validation=0.2)")
    if not _is_bool(progress):
        raise TypeError(f"progress: expected a bool, got {progress!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable or None, got {callback!r}")

    # The seed's two streams (validation split, shuffling) are only drawn when a
    # run uses them: building them costs more than a whole small run.
    entropy = secrets.randbits(128) if seed is None else int(seed)  # as SeedSequence(None)
    streams = _Streams(entropy)
    X, Y, Xv, Yv = _split(net, X, Y, validation, streams)

    # -- everything the compiled loop touches, allocated once
    dt = net.dtype
    N, n_0 = X.shape
    n_L = net.sizes[-1]
    layout = net._layout
    theta = params.flat if inplace else theta0.copy()
    B = N if batch_size is None else min(batch_size, N)
    minibatch = B < N
    if minibatch:
        Xb, Yb = np.empty((B, n_0), dt), np.empty((B, n_L), dt)
    else:
        Xb, Yb = X, Y
    acts = _engine._buffers(layout, B, dt)
    r = N % B
    Xr, Yr = np.empty((r, n_0), dt), np.empty((r, n_L), dt)
    acts_r = _engine._buffers(layout, r, dt)
    Nv = Xv.shape[0]
    acts_v = _engine._buffers(layout, Nv, dt)
    patience = early_stopping or 0
    best_theta = np.empty_like(theta) if patience else theta[:0].copy()
    # per-epoch records (training loss, validation loss, accuracy), grown as the run
    # goes so that a huge ``epochs`` stopped early costs no memory
    history_arrays = np.full((3, min(epochs, 1024)), np.nan)
    counters = np.array([0, -1, 0], dtype=np.int64)  # tk.STEP, tk.BEST_EPOCH, tk.WAIT
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    scalar = dt.type
    args = [
        theta, layout, X, Y, net._loss_code, net.reduction == "mean", scalar(net.l2),
        OPTIMIZERS[optimizer], scalar(lr), scalar(momentum), scalar(beta1), scalar(beta2),
        scalar(eps), m, v, counters,
        streams.shuffle_state() if minibatch and shuffle else np.zeros(1, np.uint64),
        np.arange(N, dtype=np.int64), bool(minibatch and shuffle), minibatch, B,
        Xb, Yb, acts, np.empty_like(acts), np.empty(B, dt),
        Xr, Yr, acts_r, np.empty_like(acts_r), np.empty(r, dt), np.empty_like(theta),
        _engine._panels(layout, B, dt), Xv, Yv, acts_v, np.empty(Nv, dt),
        _accuracy_kind(net) if Nv else tk.ACC_NONE,
        patience, np.full(1, np.inf), best_theta,
    ]
    # The serial gradient driver, or the parallel one when one step's work could
    # repay a launch (as _engine decides for one call) AND it wins a timed trial
    # on this run's first batch: a run makes thousands of launches back to back,
    # and on a busy machine each can wait for a descheduled thread far longer
    # than the step itself takes.  A parallel run whose epochs then take over
    # _GIVE_UP times what the serial driver's steps would goes back to the serial
    # driver.  Both give the same bits, so the choice never changes the result.
    # The validation forward pass (one launch per epoch) is chosen by its work.
    per_example = theta.size + n_0
    loss_grad = _kernels.loss_grad_serial
    serial_epoch = math.inf  # seconds of an epoch's serial gradients, per the trial
    if _use_parallel(B * per_example, theta, layout, X, Y, net, B):
        serial_step = _parallel_wins(theta, layout, X, Y, net, B)
        if serial_step:
            loss_grad = _kernels.loss_grad_parallel
            serial_epoch = serial_step * -(-N // B)
    forward = _kernels.forward_serial if Nv else tk.no_forward
    if Nv and _use_parallel(Nv * per_example, theta, layout, X, Y, net, B):
        forward = _kernels.forward_parallel
    chunk_fn = tk.compiled_train_chunk(dt)
    loss_grad_addr = tk.driver_address(loss_grad, dt, 0)
    forward_addr = tk.driver_address(forward, dt, 1)

    # -- the run: compiled chunks of epochs, Python in between
    times = np.zeros(history_arrays.shape[1])
    bar = _progress_bar(epochs) if progress else None
    done = 0
    chunk = _first_chunk(N, B, Nv, theta.size + n_0, loss_grad is _kernels.loss_grad_serial
                         and forward is not _kernels.forward_parallel)
    outcome = tk.RUNNING
    stop_reason = "completed"
    t_start = time.perf_counter()
    try:
        while done < epochs:
            n = min(chunk, epochs - done)
            if done + n > history_arrays.shape[1]:
                grown = min(epochs, max(2 * history_arrays.shape[1], done + n))
                history_arrays = _grow(history_arrays, grown, np.nan)
                times = _grow(times, grown, 0.0)
            t0 = time.perf_counter()
            k, outcome = chunk_fn(loss_grad_addr, forward_addr, *args, *history_arrays, done, n)
            t1 = time.perf_counter()
            times[done:done + k] = (t0 - t_start) + (t1 - t0) * np.arange(1, k + 1) / k
            done += k
            if bar is not None:
                bar.update(k, history_arrays[0, done - 1],
                           history_arrays[1, done - 1] if Nv else None)
            if outcome != tk.RUNNING:
                break
            if callback is not None and done < epochs:
                snapshot = _history(history_arrays, times, done, counters, "completed",
                                    entropy, net, theta.copy(), Nv)
                if callback(snapshot):
                    stop_reason = "callback"
                    break
            # the time of a call includes its fixed cost, so this over-estimates
            # an epoch: the next chunk stays within _CHUNK_SECONDS
            per_epoch = max((t1 - t0) / k, 1e-9)
            chunk = max(1, min(256 * chunk, int(_CHUNK_SECONDS / per_epoch)))
            if per_epoch > _GIVE_UP * serial_epoch:
                serial_epoch = math.inf
                loss_grad_addr = tk.driver_address(_kernels.loss_grad_serial, dt, 0)
    finally:
        if bar is not None:
            bar.close()

    if outcome == tk.EARLY_STOP:
        stop_reason = "early_stopping"
    elif outcome == tk.DIVERGED:
        stop_reason = "diverged"
        warnings.warn(f"train: the loss became NaN or infinite at epoch {done - 1}; "
                      f"training stopped (try a smaller lr than {lr!r})",
                      RuntimeWarning, stacklevel=2)
    best = int(counters[tk.BEST_EPOCH])
    if patience and 0 <= best < done - 1:
        theta[:] = best_theta  # snapshot taken when the best epoch ended
    trained = params if inplace else Params._wrap(net.sizes, net.bias, theta)
    history = _history(history_arrays, times, done, counters, stop_reason, entropy, net,
                       theta, Nv)
    history.params = trained
    if callback is not None:
        callback(history)
    return history


# ---------------------------------------------------------------------- helpers


def _grow(a, n, fill):
    """``a`` with its last axis extended to length n, new entries ``fill``."""
    out = np.full(a.shape[:-1] + (n,), fill, dtype=a.dtype)
    out[..., : a.shape[-1]] = a
    return out


def _history(arrays, times, done, counters, stop_reason, seed, net, theta, Nv):
    has_acc = Nv and _accuracy_kind(net) != tk.ACC_NONE
    return History(
        loss=arrays[0, :done].copy(),
        val_loss=arrays[1, :done].copy() if Nv else None,
        val_accuracy=arrays[2, :done].copy() if has_acc else None,
        time=times[:done].copy(),
        best_epoch=int(counters[tk.BEST_EPOCH]),
        epochs=done,
        steps=int(counters[tk.STEP]),
        stop_reason=stop_reason,
        seed=int(seed),
        params=Params._wrap(net.sizes, net.bias, theta),
    )


def _accuracy_kind(net: Network) -> int:
    if net.loss_name == "cross_entropy":
        return tk.ACC_ARGMAX
    if net.loss_name == "bce":
        return tk.ACC_THRESHOLD
    return tk.ACC_NONE


def _use_parallel(work, theta, layout, X, Y, net, B) -> bool:
    """Parallel kernels when the batch's work repays a launch (as ``_engine`` decides)
    and a thread-safe threading layer loads; the first parallel launch of the
    process goes through ``_engine``'s probe."""
    if work < SERIAL_BELOW or not _engine._parallel_ok:
        return False
    if not _engine._probed:
        Xp = np.ascontiguousarray(X[:B])
        Yp = np.ascontiguousarray(Y[:B])
        acts = _engine._buffers(layout, B, theta.dtype)
        scale = theta.dtype.type(1.0 / B)
        _engine._run(_kernels.loss_grad_parallel, _kernels.loss_grad_serial, work,
                     theta, layout, Xp, Yp, net._loss_code, scale, theta.dtype.type(net.l2),
                     False, acts, np.empty_like(acts), np.empty(B, theta.dtype),
                     np.empty_like(theta), _engine._panels(layout, B, theta.dtype))
    return _engine._parallel_ok


def _parallel_wins(theta, layout, X, Y, net, B, rounds=3) -> float:
    """Whether the parallel gradient driver beats the serial one on a batch of B
    rows, timed here and now: the lower of ``rounds`` alternating calls of each (a
    minimum, since noise only ever adds time).  A parallel call more than four
    times slower than the serial one ends the trial at once: on a machine busy
    enough for that, each launch can cost milliseconds.

    Returns the serial driver's time per call (seconds) when the parallel one
    wins, else 0.0."""
    Xb = np.ascontiguousarray(X[:B])
    Yb = np.ascontiguousarray(Y[:B])
    acts = _engine._buffers(layout, B, theta.dtype)
    args = (theta, layout, Xb, Yb, net._loss_code, theta.dtype.type(1.0 / B),
            theta.dtype.type(net.l2), False, acts, np.empty_like(acts),
            np.empty(B, theta.dtype), np.empty_like(theta),
            _engine._panels(layout, B, theta.dtype))
    best = {}
    for _ in range(rounds):
        for fn in (_kernels.loss_grad_serial, _kernels.loss_grad_parallel):
            t0 = time.perf_counter()
            fn(*args)
            best[fn] = min(best.get(fn, math.inf), time.perf_counter() - t0)
        if best[_kernels.loss_grad_parallel] > 4 * best[_kernels.loss_grad_serial]:
            return 0.0
    serial = best[_kernels.loss_grad_serial]
    return serial if best[_kernels.loss_grad_parallel] < serial else 0.0


class _Streams:
    """The run's random streams, derived from its seed on first use:
    ``np.random.SeedSequence(entropy).spawn(2)``, the first for the validation
    split, the second for shuffling."""

    __slots__ = ("_children", "entropy")

    def __init__(self, entropy: int):
        self.entropy = entropy
        self._children = None

    def _child(self, k: int):
        if self._children is None:
            self._children = np.random.SeedSequence(self.entropy).spawn(2)
        return self._children[k]

    def split_rng(self):
        return np.random.default_rng(self._child(0))

    def shuffle_state(self):
        """The SplitMix64 state of the compiled shuffle."""
        return self._child(1).generate_state(1, np.uint64)


def _first_chunk(N, B, Nv, per_example, serial) -> int:
    """Epochs in the first compiled chunk: as many as surely fit in
    ``_FIRST_CHUNK_SECONDS`` by a pessimistic estimate of an epoch (a fixed cost
    per step and per validation pass, plus a cost per multiply-add of the
    training and validation examples), at least one.  Later chunks are sized
    from measured times.  A small run is then one call into compiled code, not
    three (one epoch, 256 epochs, the rest); a big run starts with one epoch as
    before.  Runs on a parallel driver (``serial`` False) start with one epoch,
    whatever their size: its launches cost what the load of the machine makes
    them."""
    if not serial:
        return 1
    steps = -(-N // B) + (Nv > 0)
    epoch = steps * _STEP_SECONDS + (N + Nv) * per_example * _MULADD_SECONDS
    return max(1, int(_FIRST_CHUNK_SECONDS / epoch))


def _split(net, X, Y, validation, streams):
    """(X, Y, Xv, Yv): the training rows and the validation set (possibly empty).

    Every array is writeable and C-contiguous, so the compiled loop is one
    specialization per dtype whatever the caller passed.
    """
    n_0, n_L, dt = net.sizes[0], net.sizes[-1], net.dtype
    Xv = np.empty((0, n_0), dt)
    Yv = np.empty((0, n_L), dt)
    if validation is None:
        pass
    elif isinstance(validation, numbers.Real) and not _is_bool(validation):
        frac = float(validation)
        if not 0 < frac < 1:
            raise ValueError(f"validation: a fraction must lie in (0, 1), got {validation!r}")
        N = X.shape[0]
        n_val = round(frac * N)
        if n_val < 1 or n_val > N - 1:
            raise ValueError(f"validation: holding out {frac!r} of {N} examples leaves "
                             f"{n_val} for validation and {N - n_val} for training; "
                             "each needs at least one")
        held = np.zeros(N, dtype=bool)
        held[streams.split_rng().permutation(N)[:n_val]] = True
        X, Y, Xv, Yv = X[~held], Y[~held], X[held], Y[held]
    elif isinstance(validation, (tuple, list)) and len(validation) == 2:
        Xv = as_float_matrix("validation[0]", validation[0], n_0, dt)
        Yv = as_targets(validation[1], Xv.shape[0], n_L, net.loss_name, dt)
    else:
        raise TypeError("validation: expected (Xv, Yv), a fraction in (0, 1) or None, "
                        f"got {type(validation).__name__}")
    return tuple(A if A.flags.writeable and A.flags.c_contiguous else np.array(A, order="C")
                 for A in (X, Y, Xv, Yv))


def _is_bool(x):
    return isinstance(x, (bool, np.bool_))


def _positive(name, x) -> float:
    if _is_bool(x) or not isinstance(x, numbers.Real) or not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {x!r}")
    return float(x)


def _unit_interval(name, x) -> float:
    if _is_bool(x) or not isinstance(x, numbers.Real) or not 0 <= x < 1:
        raise ValueError(f"{name}: expected a number in [0, 1), got {x!r}")
    return float(x)


def _count(name, x) -> int:
    if _is_bool(x) or not isinstance(x, numbers.Integral) or x < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {x!r}")
    return int(x)


# ---------------------------------------------------------------------- progress bar


def _progress_bar(total):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _TextBar(total)
    return _TqdmBar(tqdm(total=total, unit="epoch", desc="training", file=sys.stderr))


class _TqdmBar:
    def __init__(self, bar):
        self._bar = bar

    def update(self, k, loss, val_loss):
        post = {"loss": f"{loss:.4g}"}
        if val_loss is not None:
            post["val_loss"] = f"{val_loss:.4g}"
        self._bar.set_postfix(post, refresh=False)
        self._bar.update(k)

    def close(self):
        self._bar.close()


class _TextBar:
    """A one-line progress bar on stderr, for when tqdm is not installed."""

    WIDTH = 30

    def __init__(self, total, stream=None):
        self.total = total
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self._t0 = time.perf_counter()
        self._last = ""

    def update(self, k, loss, val_loss):
        self.done += k
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = (f"\rtraining {100 * self.done // self.total:3d}% [{bar}] "
                f"{self.done}/{self.total} epochs, {time.perf_counter() - self._t0:.1f}s, "
                f"loss {loss:.4g}")
        if val_loss is not None:
            line += f", val_loss {val_loss:.4g}"
        self.stream.write(line.ljust(len(self._last)))
        self.stream.flush()
        self._last = line

    def close(self):
        if self._last:
            self.stream.write("\n")
            self.stream.flush()
