"""``fastbp.train`` (in ``fastbp.training``): gradient-based training with the whole run in compiled code.

Python validates, converts and allocates once; then each call into the
compiled training loop (through the network's plan) runs a chunk of epochs
(every mini-batch, gradient, optimizer step and the stopping rule) without
returning.  Between chunks (about every quarter of a second) Python updates
the progress bar, calls the user's callback and lets Ctrl-C through.  Chunk
boundaries never change the result.

``train`` reads as its four steps: check the options (``_options``), allocate
the records the compiled loop works on (``_records``), choose the drivers
(``Plan.training_drivers``) and run the chunks (``_run``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import secrets
import sys
import threading
import time
import warnings
from collections.abc import Callable

import numpy as np

from . import _core
from ._checks import (
    Bool,
    Callable_,
    Integer,
    OneOf,
    Real,
    as_float_matrix,
    as_sample_weight,
    as_targets,
    check,
    convert,
    dense_copy,
    is_bool,
    is_sparse,
)
from .network import Network
from .params import Params

__all__ = ["OPTIMIZERS", "SCHEDULES", "STOCHASTIC", "EarlyStopping", "History",
           "OptimizerState", "train"]

# the stochastic optimizers (the compiled loop's), then the full-batch one
STOCHASTIC = tuple(_core.OPTIMIZERS)
OPTIMIZERS = (*STOCHASTIC, "lbfgs")
SCHEDULES = tuple(_core.SCHEDULES)
DEFAULT_LR = {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adam": 0.001, "lbfgs": 1.0}

# Wall time aimed at for one compiled chunk of epochs: long enough that the
# Python between chunks costs nothing measurable, short enough for a live
# progress bar and a prompt Ctrl-C.
_CHUNK_SECONDS = 0.25
# Chunks expected to run longer than this run in a worker thread (``_watched``),
# so that Ctrl-C stops them within a mini-batch; starting the thread costs ~0.1 ms.
_WATCHED_CHUNK_S = 0.05
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

# The options of ``train`` and what each must be.
OPTIONS = {
    "optimizer": OneOf(OPTIMIZERS),
    "lr": Real(0.0, open_ends=("low",), none=True),
    "epochs": Integer(1),
    "batch_size": Integer(1, none=True),
    "shuffle": Bool(),
    "seed": Integer(0, high=None, none=True),
    "momentum": Real(0.0, 1.0, open_ends=("high",)),
    "nesterov": Bool(),
    "betas[0]": Real(0.0, 1.0, open_ends=("high",)),
    "betas[1]": Real(0.0, 1.0, open_ends=("high",)),
    "eps": Real(0.0, open_ends=("low",)),
    "progress": Bool(),
    "callback": Callable_(),
    "inplace": Bool(),
    "lr_schedule": OneOf(SCHEDULES),
    "power_t": Real(0.0),
    "max_fun": Integer(1),
    "gtol": Real(0.0),
}

# The most steps and examples seen a state may carry in: a run adds its own
# to them in int64, and 2**62 more would take centuries.
_MAX_COUNT = 2**62

MONITORS = {"loss": _core.MONITOR_LOSS, "val_loss": _core.MONITOR_VAL_LOSS,
            "val_accuracy": _core.MONITOR_ACCURACY, "val_r2": _core.MONITOR_VAL_LOSS}


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """A stopping rule evaluated in compiled code at the end of every epoch.

    Each epoch's monitored value gets a score s (higher is better): -value for
    a loss, the value itself for an accuracy or R^2, times ``scale`` first.
    The epoch improves on the best score so far when s > best; an epoch with
    s < best + tol counts as one without improvement and any other resets the
    count; the run stops (``stop_reason="early_stopping"``) once the count
    reaches ``patience``.  This is scikit-learn's MLP rule with ``patience =
    n_iter_no_change + 1``; ``train(early_stopping=k)`` is
    ``EarlyStopping(k)`` on the validation loss.

    Parameters
    ----------
    patience : int
        Epochs without improvement (>= 1) after which the run stops.
    tol : float, default 0.0
        Improvement a score must exceed the best by to reset the count (>= 0).
    monitor : {"auto", "loss", "val_loss", "val_accuracy", "val_r2"}, default "auto"
        ``"auto"``: the validation loss with a validation set, else the training
        loss.  ``"val_accuracy"`` needs a classifier (bce or cross_entropy);
        ``"val_r2"`` an ``sse`` network: 1 - sum of squared residuals / total sum
        of squares of the validation targets (pooled over the outputs), read
        from the validation loss (whose L2 term it includes).
    restore_best : bool, default True
        Return the parameters of the best epoch rather than the last one.
    best : float, optional
        The score to beat (default: none, so the first epoch improves), and
    count : int, default 0
        the epochs without improvement so far: the state a run returns in
        ``History.early_stopping``, to continue a rule across runs.  A count of
        ``patience`` or more counts as ``patience - 1`` (the same stop).
    scale : float, default 1.0
        Factor on the monitored value before its score is taken (> 0): the
        units ``tol`` is in.
    """

    patience: int
    tol: float = 0.0
    monitor: str = "auto"
    restore_best: bool = True
    best: float | None = None
    count: int = 0
    scale: float = 1.0

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "patience", Integer(1)("early_stopping.patience", self.patience))
        set_(self, "tol", Real(0.0)("early_stopping.tol", self.tol))
        OneOf(("auto", *MONITORS))("early_stopping.monitor", self.monitor)
        Bool()("early_stopping.restore_best", self.restore_best)
        if self.best is not None:
            if is_bool(self.best) or not isinstance(self.best, (int, float, np.floating)) \
                    or math.isnan(self.best):
                raise ValueError(f"early_stopping.best: expected a number or None, got "
                                 f"{self.best!r}")
            set_(self, "best", float(self.best))
        set_(self, "count", Integer(0)("early_stopping.count", self.count))
        set_(self, "scale", Real(0.0, open_ends=("low",))("early_stopping.scale", self.scale))


@dataclasses.dataclass(frozen=True, eq=False)
class OptimizerState:
    """Where an optimizer stands: what ``History.optimizer_state`` returns and
    ``train(state=...)`` continues from, so that runs in a row take exactly
    the steps of one long run (``partial_fit``, a resumed checkpoint).  Plain
    data: it pickles.

    Attributes
    ----------
    optimizer : str
        The update rule it belongs to (``OPTIMIZERS``).
    step : int
        Steps taken (Adam's t).
    m, v : ndarray of shape (n_params,)
        Adam's moments; v is the velocity of "momentum" and "nesterov".
    lr : float
        The learning rate reached (the schedule's current one).
    seen : int
        Examples seen (invscaling's t).
    shuffle : ndarray of uint64, shape (1,), or None
        The shuffling generator's state (None: the next run seeds it afresh).
    order : ndarray of int64, shape (N,), or None
        The order of the examples the last epoch ran (each epoch shuffles the
        last one's); a run on as many examples continues from it.
    """

    optimizer: str
    step: int
    m: np.ndarray
    v: np.ndarray
    lr: float
    seen: int = 0
    shuffle: np.ndarray | None = None
    order: np.ndarray | None = None


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
        Index (into the arrays above) of the epoch with the best score of the
        stopping rule's monitored value (by default the lowest validation loss,
        or the lowest training loss without validation); -1 when no epoch beat
        the best score an ``EarlyStopping`` record carried in.
    epochs : int
        Epochs run (fewer than asked after early stopping or a stop request).
    steps : int
        Optimizer steps taken.
    stop_reason : {"completed", "early_stopping", "callback", "diverged", "converged", \
"max_fun"}
        "diverged": the loss or the parameters became NaN or infinite; ``params``
        are then the best epoch's (with ``restore_best``) or the last finite
        epoch's, never NaN, and a RuntimeWarning says which.  "converged" and
        "max_fun" ("lbfgs" only): scipy's convergence test passed (``gtol``, or
        its relative change of J), or ``max_fun`` evaluations were made;
        "completed" there means ``epochs`` iterations.
    seed : int
        Seed of the run (drawn from the OS when ``seed=None``): passing it back
        as ``seed`` repeats the run bit for bit.
    params : Params
        The trained parameters (the best epoch's when early stopping restored them).
    early_stopping : EarlyStopping or None
        The run's stopping rule with its state at the end (best score, epochs
        without improvement): passed back as ``early_stopping``, a later run
        continues the count.  None when the run had no rule.
    optimizer_state : OptimizerState or None
        The optimizer's state at the end: passed back as ``state``, a later run
        continues exactly where this one stopped (None for "lbfgs").
    """

    __slots__ = (
        "best_epoch",
        "early_stopping",
        "epochs",
        "loss",
        "optimizer_state",
        "params",
        "seed",
        "steps",
        "stop_reason",
        "time",
        "val_accuracy",
        "val_loss",
    )

    def __init__(self, loss, val_loss, val_accuracy, time, best_epoch, epochs, steps,
                 stop_reason, seed, params, early_stopping=None, optimizer_state=None):
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
        self.early_stopping = early_stopping
        self.optimizer_state = optimizer_state

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
    early_stopping: int | EarlyStopping | None = None,
    progress: bool = False,
    callback: Callable[[History], bool | None] | None = None,
    inplace: bool = False,
    sample_weight=None,
    lr_schedule: str = "constant",
    power_t: float = 0.5,
    state: OptimizerState | None = None,
    max_fun: int = 15000,
    gtol: float = 1e-5,
) -> History:
    """Train ``net`` from ``params`` on (X, Y), the whole run in compiled code.

    Parameters
    ----------
    net : Network
        Defines J (loss, reduction, l2); J is minimized on each mini-batch.
    params : Params
        Starting point.  Never modified unless ``inplace=True``.
    X : array_like or scipy.sparse matrix of shape (N, n_0)
        A sparse X runs layer 1 over its nonzeros with "lbfgs"; the stochastic
        optimizers densify it (their compiled loop gathers dense rows).
    Y : array_like of shape (N, n_L), or (N,)
        As for ``Network.loss_and_grad`` (integer labels for cross_entropy).
    optimizer : {"sgd", "momentum", "nesterov", "adam", "lbfgs"}, default "sgd"
        With g the mini-batch gradient and t = 1, 2, ... the step:

        - ``"sgd"``: theta <- theta - lr g (plain gradient descent; with
          ``batch_size=None`` this is 000's and 003's full-batch update).
        - ``"momentum"``: v <- momentum v + g; theta <- theta - lr v.
        - ``"nesterov"``: v <- momentum v + g; theta <- theta - lr (g + momentum v).
        - ``"adam"``: m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
          theta <- theta - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).

        The momentum forms are PyTorch's; v and m start at zero (or at
        ``state``'s).

        - ``"lbfgs"``: full-batch L-BFGS (``scipy.optimize.minimize`` with
          ``method="L-BFGS-B"``, needs scipy) on J and its exact gradient over
          the flat parameter vector: ``epochs`` is its iteration limit, with
          ``max_fun`` and ``gtol``; ``lr``, ``batch_size``, the schedules,
          ``validation`` and ``early_stopping`` do not apply.
    lr : float, optional
        Learning rate > 0.  Default 0.01, or 0.001 for Adam.  The initial rate of
        ``lr_schedule``.
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
    early_stopping : int or EarlyStopping, optional
        The stopping rule, evaluated at the end of every epoch inside the
        compiled loop.  An int is the patience of ``EarlyStopping(patience)``:
        stop after this many epochs without a lower validation loss and restore
        the parameters of the best epoch (it then needs ``validation``).
    progress : bool, default False
        Show a progress bar with the current loss on stderr (tqdm when installed).
    callback : callable, optional
        Called between compiled chunks of epochs (about every 0.25 s, and after the
        last epoch) with the History so far; returning True stops training.
    inplace : bool, default False
        Update ``params.flat`` in place (its dtype must be the network's);
        ``History.params`` is then ``params`` itself.
    sample_weight : array_like of shape (N,), optional
        Example weights (>= 0, sum > 0): each step's J is the weighted mean of
        its batch (``Network.loss_and_grad(sample_weight=)``), and the epoch's
        loss the weighted mean over the training set.  With a ``validation``
        fraction the weights of the held-out rows are dropped (its loss is
        unweighted).
    lr_schedule : {"constant", "invscaling", "adaptive"}, default "constant"
        The learning rate lr_t: ``"constant"``: lr.  ``"invscaling"``: after each
        epoch lr / (t + 1)^power_t, t the examples seen so far (with ``state``,
        across runs).  ``"adaptive"``: lr until the stopping rule would stop the
        run; then, while lr_t > 1e-6, lr_t / 5 instead and the rule's count
        starts over (scikit-learn's rule; it needs ``early_stopping``).
    power_t : float, default 0.5
        Exponent of "invscaling" (>= 0).
    state : OptimizerState, optional
        Continue from a previous run's ``History.optimizer_state`` (same
        optimizer and network): its moments, step count, learning rate,
        examples seen and shuffling generator.  Runs chained this way take
        exactly the steps of one run over all their epochs.
    max_fun : int, default 15000
        "lbfgs": the most evaluations of J and its gradient.
    gtol : float, default 1e-5
        "lbfgs": stop when the largest projected gradient entry falls to
        ``gtol`` (scipy's ``gtol``; its ``ftol`` keeps scipy's default, as
        scikit-learn's "lbfgs" does).

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
    theta0 = net.check_params(params)
    opts = _options(net, params, optimizer=optimizer, lr=lr, epochs=epochs,
                    batch_size=batch_size, shuffle=shuffle, seed=seed, momentum=momentum,
                    nesterov=nesterov, betas=betas, eps=eps, progress=progress,
                    callback=callback, inplace=inplace, lr_schedule=lr_schedule,
                    power_t=power_t, max_fun=max_fun, gtol=gtol)
    sparse = None
    if is_sparse(X) and opts["optimizer"] == "lbfgs":
        sparse = net._sparse(params, X, Y, targets=True)
    if sparse is not None:  # lbfgs on a sparse X: layer 1 over the nonzeros
        _, X, Y = sparse
    else:
        if is_sparse(X):  # the compiled loop gathers dense rows
            X = dense_copy("X", X)
        X = as_float_matrix("X", X, net.sizes[0], net.dtype)
        Y = as_targets(Y, X.shape[0], net.sizes[-1], net.loss_name, net.dtype)
    W = as_sample_weight(sample_weight, X.shape[0], net.dtype)
    if opts["optimizer"] == "lbfgs":
        _lbfgs_options(opts, validation, early_stopping, state)
        theta = params.flat if opts["inplace"] else theta0.copy()
        history = _train_lbfgs(net, theta, X, Y, W, opts, sparse is not None)
        if opts["inplace"]:
            history.params = params
        return history
    state = _check_state(net, state, opts)
    stop_rule = _stopping_rule(net, early_stopping, validation)
    # The seed's two streams (validation split, shuffling) are only drawn when a
    # run uses them: building them costs more than a whole small run.
    entropy = secrets.randbits(128) if opts["seed"] is None else opts["seed"]
    streams = _Streams(entropy)  # as SeedSequence(None) when no seed was given
    X, Y, Xv, Yv, W = _split(net, X, Y, validation, streams, W)
    if opts["inplace"]:
        _refuse_aliases(params.flat, X=X, Y=Y, **{"validation[0]": Xv, "validation[1]": Yv})

    theta = params.flat if opts["inplace"] else theta0.copy()
    run = _records(net, theta, X, Y, W, Xv, Yv, opts, stop_rule, streams, state)
    outcome, done, stop_reason, times = _run(net, run, opts, entropy)

    stop = run.records[4]
    best = int(stop.counters[_core.BEST_EPOCH])
    if outcome == _core.EARLY_STOP:
        stop_reason = "early_stopping"
    elif outcome == _core.DIVERGED:
        stop_reason = "diverged"
        if stop.restore and best >= 0:
            which = f"the best epoch's ({best})"
        else:
            theta[:] = stop.finite_theta  # never NaN: the last finite epoch's
            which = (f"those of epoch {done - 2}, the last finite one" if done > 1
                     else "the starting parameters")
        warnings.warn(f"train: the loss or the parameters became NaN or infinite at epoch "
                      f"{done - 1}; training stopped and returned {which} (try a smaller lr "
                      f"than {opts['lr']!r})", RuntimeWarning, stacklevel=2)
    if stop.restore and 0 <= best < done - 1:
        theta[:] = stop.best_theta  # snapshot taken when the best epoch ended
    history = _history(run, times, done, stop_reason, entropy, net, theta, stop_rule)
    if opts["inplace"]:
        history.params = params
    if opts["callback"] is not None:
        opts["callback"](history)
    return history


# ---------------------------------------------------------------------- steps


def _options(net, params, *, betas, **values) -> dict:
    """The options checked against ``OPTIONS`` and normalized: optimizer as its
    final name (nesterov folded in), lr defaulted, betas split."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas: expected a pair (b1, b2), got {betas!r}")
    opts = check(OPTIONS, **values, **{"betas[0]": betas[0], "betas[1]": betas[1]})
    if opts["nesterov"]:
        if opts["optimizer"] not in ("momentum", "nesterov"):
            raise ValueError(f"nesterov: applies to optimizer='momentum', not "
                             f"{opts['optimizer']!r}")
        opts["optimizer"] = "nesterov"
    if opts["lr"] is None:
        opts["lr"] = DEFAULT_LR[opts["optimizer"]]
    rate = _in_dtype(opts["lr"], net.dtype)
    if not 0 < rate < np.inf:  # the compiled loop's rate is of the network's dtype
        raise ValueError(f"lr: {opts['lr']!r} is {rate} in {net.dtype.name}, the network's "
                         "dtype; expected a rate it holds")
    # the compiled update runs in the network's dtype too: an eps that is 0 there
    # divides 0 by 0 where a gradient entry stays 0, a beta that is 1 there makes
    # Adam's bias correction 1 - beta^t zero (both NaN, reported as divergence)
    eps = _in_dtype(opts["eps"], net.dtype)
    if opts["optimizer"] == "adam" and not 0 < eps < np.inf:
        raise ValueError(f"eps: {opts['eps']!r} is {eps} in {net.dtype.name}, the network's "
                         f"dtype; expected a finite value > 0 there (at least "
                         f"{float(np.finfo(net.dtype).smallest_subnormal):.3g})")
    for name in ("betas[0]", "betas[1]", "momentum"):
        used = opts["optimizer"] == "adam" if name.startswith("betas") else (
            opts["optimizer"] in ("momentum", "nesterov"))
        if used and _in_dtype(opts[name], net.dtype) >= 1:
            raise ValueError(f"{name}: {opts[name]!r} is 1 in {net.dtype.name}, the network's "
                             f"dtype; expected a value below 1 there (at most "
                             f"{float(np.nextafter(net.dtype.type(1), net.dtype.type(0))):.9g})")
    if opts["inplace"]:
        if params.flat.dtype != net.dtype:
            raise ValueError(f"inplace: params are {params.flat.dtype} but the network is "
                             f"{net.dtype}; convert with params.astype({net.dtype.name!r})")
        if not params.flat.flags.writeable:
            raise ValueError("inplace: params.flat is read-only")
    return opts


def _in_dtype(x, dtype):
    """The float ``x`` in ``dtype`` (0 or inf where it is out of its range)."""
    with np.errstate(over="ignore", under="ignore"):
        return dtype.type(x)


def _stopping_rule(net, early_stopping, validation) -> EarlyStopping | None:
    """``early_stopping`` as an ``EarlyStopping`` (or None), checked against the
    network and the presence of a validation set."""
    if early_stopping is None:
        return None
    if not isinstance(early_stopping, EarlyStopping):
        if is_bool(early_stopping) or not isinstance(early_stopping, int | np.integer):
            raise TypeError("early_stopping: expected None, a patience (int) or "
                            f"fastbp.EarlyStopping, got {early_stopping!r}")
        if validation is None:
            raise ValueError("early_stopping: needs a validation set (validation=(Xv, Yv) "
                             "or a fraction such as validation=0.2)")
        early_stopping = EarlyStopping(Integer(1)("early_stopping", early_stopping))
    # checked again (a copy runs __post_init__): a frozen dataclass's fields can
    # still be set with object.__setattr__, and the compiled rule takes them as
    # they are (a patience beyond int64 or a text for best: numba's typing errors)
    rule = dataclasses.replace(early_stopping)
    if rule.monitor.startswith("val_") and validation is None:
        raise ValueError(f"early_stopping: monitor={rule.monitor!r} needs a validation set")
    if rule.monitor == "val_accuracy" and net.loss_name == "sse":
        raise ValueError("early_stopping: monitor='val_accuracy' needs a classifier "
                         "(bce or cross_entropy), this network's loss is 'sse'")
    if rule.monitor == "val_r2" and net.loss_name != "sse":
        raise ValueError(f"early_stopping: monitor='val_r2' needs an 'sse' network, this "
                         f"one's loss is {net.loss_name!r}")
    return rule


class _Run:
    """What one run's compiled chunks work on: the records (model, batches,
    optimizer, validation, stopping, per-epoch records) and the plan."""

    __slots__ = ("B", "N", "Nv", "plan", "records")

    def __init__(self, plan, records, N, B, Nv):
        self.plan, self.records, self.N, self.B, self.Nv = plan, records, N, B, Nv


def _records(net, theta, X, Y, W, Xv, Yv, opts, rule, streams, state=None) -> _Run:
    """Everything the compiled loop touches, allocated once, as its records."""
    plan = net.plan
    dt = net.dtype
    N, n_0 = X.shape
    n_L = net.sizes[-1]
    batch_size = opts["batch_size"]
    B = N if batch_size is None else min(batch_size, N)
    minibatch = B < N
    shuffled = minibatch and opts["shuffle"]
    Xb, Yb = (np.empty((B, n_0), dt), np.empty((B, n_L), dt)) if minibatch else (X, Y)
    r = N % B
    scalar = dt.type
    model = _core.Model(theta, plan.layout, plan.loss_code, plan.mean, scalar(net.l2))
    weighted = W is not None
    W = plan.no_weights if W is None else W
    rng = np.zeros(1, np.uint64)
    order = np.arange(N, dtype=np.int64)
    if shuffled:
        rng = (streams.shuffle_state() if state is None or state.shuffle is None
               else np.array(state.shuffle, dtype=np.uint64).reshape(1))
        given = _state_order(state, N)
        if given is not None:
            order = given
    batches = _core.Batches(
        X, Y, W, order, rng, shuffled, minibatch,
        B, Xb, Yb, np.empty(B if weighted and minibatch else 0, dt), *plan.buffers(B),
        np.empty((r, n_0), dt), np.empty((r, n_L), dt),
        np.empty(r if weighted and minibatch else 0, dt), *plan.buffers(r),
        np.empty_like(theta), plan.scratch(B), plan.worker_table())
    if state is None:
        m, v, step, rate, seen = np.zeros_like(theta), np.zeros_like(theta), 0, opts["lr"], 0
    else:
        m, v = np.array(state.m, dtype=dt), np.array(state.v, dtype=dt)
        step, rate, seen = state.step, state.lr, state.seen
    optimizer = _core.Optimizer(
        _core.OPTIMIZERS[opts["optimizer"]], scalar(opts["lr"]), scalar(opts["momentum"]),
        scalar(opts["betas[0]"]), scalar(opts["betas[1]"]), scalar(opts["eps"]),
        _core.SCHEDULES[opts["lr_schedule"]], float(opts["power_t"]), m, v,
        np.array([step], np.int64), np.array([rate], dt), np.array([seen], np.int64))
    # the optimizer's state, the gradient and the stopping rule's copies of theta
    _core.check_memory("train", theta.nbytes * 5 + Xb.nbytes * minibatch + Yb.nbytes * minibatch)
    Nv = Xv.shape[0]
    acts_v, _, losses_v = plan.buffers(Nv)
    validation = _core.Validation(Xv, Yv, acts_v, losses_v, plan.scratch(Nv, grad=False),
                                  _accuracy_kind(net) if Nv else _core.ACC_NONE)
    stopping = _stopping_record(net, rule, theta, Nv, Yv)
    # per-epoch records (training loss, validation loss, accuracy), grown as the run
    # goes so that a huge ``epochs`` stopped early costs no memory
    n = min(opts["epochs"], 1024)
    records = _core.Records(*np.full((3, n), np.nan))
    return _Run(plan, [model, batches, optimizer, validation, stopping, records], N, B, Nv)


def _stopping_record(net, rule, theta, Nv, Yv) -> _core.Stopping:
    """The compiled form of ``rule`` (None: track the best epoch on the validation
    loss, or the training loss without validation, and never stop early).

    score = offset + (factor * value) / divisor (``train_kernels._score``)."""
    offset, factor, divisor = 0.0, -1.0, 1.0
    monitor = "val_loss" if Nv else "loss"
    if rule is not None:
        monitor = rule.monitor if rule.monitor != "auto" else monitor
        factor = rule.scale if monitor == "val_accuracy" else -rule.scale
        if monitor == "val_r2":  # 1 - SSR / SST, SSR = 2 N_v J_v (mean) or 2 J_v (sum)
            Yv64 = np.asarray(Yv, dtype=np.float64)
            offset = 1.0
            factor = -2.0 * (Nv if net.reduction == "mean" else 1) * rule.scale
            divisor = float(((Yv64 - Yv64.mean(axis=0)) ** 2).sum())
    restore = rule is not None and rule.restore_best
    best = -np.inf if rule is None or rule.best is None else rule.best
    return _core.Stopping(
        MONITORS[monitor], offset, factor, divisor, 0.0 if rule is None else rule.tol,
        0 if rule is None else rule.patience, restore, np.array([best]),
        # a count of patience or more stops at the first epoch without improvement,
        # as patience - 1 does; carried in as such, since the compiled rule adds one
        # per epoch in int64 (a count near 2**63 wrapped to a negative one, which
        # never reached the patience)
        np.array([-1, 0 if rule is None else min(rule.count, rule.patience - 1)],
                 dtype=np.int64),
        np.empty_like(theta) if restore else theta[:0].copy(), theta.copy(),
        np.zeros(1, np.int64))


def _run(net, run, opts, seed):
    """The compiled chunks of epochs, with Python in between: (outcome, epochs
    done, stop reason so far, per-epoch times)."""
    plan, records = run.plan, run.records
    model, batches = records[0], records[1]
    drivers = plan.training_drivers(model.theta, batches.X, batches.Y, run.B, run.Nv,
                                    opts["epochs"] * -(-run.N // run.B))
    loss_grad = drivers.loss_grad
    serial_epoch = drivers.serial_step * -(-run.N // run.B) if drivers.serial_step else math.inf
    chunk_fn = plan.chunk_function(tuple(records))
    epochs, callback = opts["epochs"], opts["callback"]
    times = np.zeros(records[5].loss.shape[0])
    bar = _progress_bar(epochs) if opts["progress"] else None
    done = 0
    chunk = _first_chunk(run.N, run.B, run.Nv, plan.n_params + net.sizes[0],
                         not drivers.parallel)
    per_epoch_guess = _epoch_guess(run.N, run.B, run.Nv, plan.n_params + net.sizes[0])
    outcome = _core.RUNNING
    stop_reason = "completed"
    t_start = time.perf_counter()
    try:
        while done < epochs:
            n = min(chunk, epochs - done)
            if done + n > times.shape[0]:
                grown = min(epochs, max(2 * times.shape[0], done + n))
                # loss, val_loss, val_accuracy and time: 4 float64 per epoch
                _core.check_memory(f"train: the per-epoch records of {grown} epochs",
                                   32 * grown)
                records[5] = _core.Records(*(_grow(a, grown, np.nan) for a in records[5]))
                times = _grow(times, grown, 0.0)
            t0 = time.perf_counter()
            args = (loss_grad, drivers.forward, *records, done, n)
            if n * per_epoch_guess > _WATCHED_CHUNK_S:
                k, outcome = _watched(chunk_fn, args, records[4].interrupt)
            else:
                k, outcome = chunk_fn(*args)
            t1 = time.perf_counter()
            times[done:done + k] = (t0 - t_start) + (t1 - t0) * np.arange(1, k + 1) / k
            done += k
            if bar is not None:
                bar.update(k, records[5].loss[done - 1],
                           records[5].val_loss[done - 1] if run.Nv else None)
            if outcome != _core.RUNNING:
                break
            if callback is not None and done < epochs:
                snapshot = _history(run, times, done, "completed", seed, net,
                                    model.theta.copy(), None)
                if _stop_requested(callback(snapshot)):
                    stop_reason = "callback"
                    break
            # the time of a call includes its fixed cost, so this over-estimates
            # an epoch: the next chunk stays within _CHUNK_SECONDS
            per_epoch = per_epoch_guess = max((t1 - t0) / k, 1e-9)
            chunk = max(1, min(256 * chunk, int(_CHUNK_SECONDS / per_epoch)))
            if per_epoch > _GIVE_UP * serial_epoch:
                serial_epoch = math.inf
                loss_grad = plan.serial_driver()
    finally:
        if bar is not None:
            bar.close()
    return outcome, done, stop_reason, times


# ---------------------------------------------------------------------- helpers


def _watched(chunk_fn, args, interrupt):
    """``chunk_fn(*args)`` in a worker thread (the compiled chunk releases the
    GIL), so that Ctrl-C reaches this thread at once: it then sets ``interrupt``,
    which stops the chunk after its current mini-batch, waits for it and lets
    the KeyboardInterrupt go on.  Without this, Python would handle the signal
    only once the whole chunk (one epoch at least) had returned."""
    result = []

    def work():
        try:
            result.append(chunk_fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            result.append(e)

    worker = threading.Thread(target=work, name="fastbp-train", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except KeyboardInterrupt:
        interrupt[0] = 1
        worker.join()
        raise
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def _refuse_aliases(theta, **arrays):
    """With ``inplace``, the data the run reads must not lie in the memory of
    the parameters it writes: each update would change the data under it."""
    for name, A in arrays.items():
        if A.size and np.may_share_memory(A, theta):
            raise ValueError(f"{name}: shares memory with params.flat, which inplace=True "
                             f"updates as it trains; pass a copy ({name}.copy())")


def _stop_requested(answer) -> bool:
    """What the callback's return value says: stop when it is true."""
    try:
        return bool(answer)
    except (TypeError, ValueError) as e:
        raise TypeError(f"callback: must return True (stop), False or None, got "
                        f"{type(answer).__name__} ({e})") from None


def _grow(a, n, fill):
    """``a`` with its last axis extended to length n, new entries ``fill``."""
    out = np.full(a.shape[:-1] + (n,), fill, dtype=a.dtype)
    out[..., : a.shape[-1]] = a
    return out


def _history(run, times, done, stop_reason, seed, net, theta, rule):
    records = run.records[5]
    stop = run.records[4]
    Nv = run.Nv
    has_acc = Nv and _accuracy_kind(net) != _core.ACC_NONE
    state = None
    if rule is not None:
        state = dataclasses.replace(rule, best=float(stop.best[0]) if math.isfinite(
            stop.best[0]) else None, count=int(stop.counters[_core.WAIT]))
    return History(
        loss=records.loss[:done].copy(),
        val_loss=records.val_loss[:done].copy() if Nv else None,
        val_accuracy=records.val_accuracy[:done].copy() if has_acc else None,
        time=times[:done].copy(),
        best_epoch=int(stop.counters[_core.BEST_EPOCH]),
        epochs=done,
        steps=int(run.records[2].step[0]),
        stop_reason=stop_reason,
        seed=int(seed),
        params=Params.wrap(net.sizes, net.bias, theta),
        early_stopping=state,
        optimizer_state=_optimizer_state(run),
    )


def _optimizer_state(run) -> OptimizerState:
    """The run's optimizer record as an ``OptimizerState`` (copies)."""
    opt, batches = run.records[2], run.records[1]
    name = next(k for k, c in _core.OPTIMIZERS.items() if c == opt.code)
    shuffled = batches.shuffled
    return OptimizerState(name, int(opt.step[0]), opt.m.copy(), opt.v.copy(),
                          float(opt.rate[0]), int(opt.seen[0]),
                          batches.rng.copy() if shuffled else None,
                          batches.order.copy() if shuffled else None)


def _check_state(net, state, opts) -> OptimizerState | None:
    """``state`` checked against this run: an OptimizerState of the same
    optimizer and parameter count, finite moments of the network's dtype,
    counts that leave the run room in int64, and a shuffling generator and
    order of the right forms (whether the order is a permutation of the
    run's examples is checked once they are known, ``_state_order``).
    Returns it with its arrays converted (new arrays where converted)."""
    if state is None:
        return None
    if not isinstance(state, OptimizerState):
        raise TypeError(f"state: expected fastbp.OptimizerState (History.optimizer_state) "
                        f"or None, got {type(state).__name__}")
    if state.optimizer != opts["optimizer"]:
        raise ValueError(f"state: belongs to optimizer {state.optimizer!r}, this run's is "
                         f"{opts['optimizer']!r}")
    moments = {}
    for name in ("m", "v"):
        a = getattr(state, name)
        if not isinstance(a, np.ndarray) or a.shape != (net.n_params,):
            raise ValueError(f"state.{name}: expected an array of shape ({net.n_params},), "
                             f"got {getattr(a, 'shape', type(a).__name__)}")
        if a.dtype.kind != "f":
            raise TypeError(f"state.{name}: expected floating values, got dtype {a.dtype}")
        moments[name] = convert(f"state.{name}", a, net.dtype)
    if state.optimizer == "adam" and moments["v"].size and moments["v"].min() < 0:
        k = int(np.argmin(moments["v"]))
        raise ValueError(f"state.v: Adam's second moments are squares (>= 0); got "
                         f"{float(moments['v'][k])!r} at [{k}]")
    lr = state.lr
    if not (isinstance(lr, numbers.Real) and not is_bool(lr) and lr > 0 and math.isfinite(lr)
            and 0 < _in_dtype(lr, net.dtype) < np.inf):
        raise ValueError(f"state.lr: expected a finite learning rate > 0 (in "
                         f"{net.dtype.name}), got {lr!r}")
    step = Integer(0, _MAX_COUNT)("state.step", state.step)
    seen = Integer(0, _MAX_COUNT)("state.seen", state.seen)
    shuffle = state.shuffle
    if shuffle is not None:
        a = np.asarray(shuffle) if isinstance(shuffle, np.ndarray | list | tuple) else None
        if a is None or a.dtype.kind not in "iu" or a.size != 1 or (
                a.dtype.kind == "i" and a.min() < 0):
            raise ValueError(f"state.shuffle: expected None or the generator state, one "
                             f"unsigned 64-bit integer (an array of shape (1,)), got "
                             f"{shuffle!r:.80}")
        shuffle = a.astype(np.uint64).reshape(1)
    order = state.order
    if order is not None and not (isinstance(order, np.ndarray) and order.ndim == 1
                                  and order.dtype.kind in "iu"):
        what = f"dtype {order.dtype}, shape {order.shape}" if isinstance(
            order, np.ndarray) else type(order).__name__
        raise ValueError(f"state.order: expected None or a 1-D array of integers (the "
                         f"examples' order), got {what}")
    return dataclasses.replace(state, m=moments["m"], v=moments["v"], lr=float(lr), step=step,
                               seen=seen, shuffle=shuffle)


def _state_order(state, N):
    """The order of ``state`` when the run has as many examples (None when it
    has no order or another count: the run then starts from 0..N-1): checked
    to be a permutation of 0..N-1, since the compiled loop reads the rows it
    names unchecked."""
    order = None if state is None else state.order
    if order is None or len(order) != N:
        return None
    bad = np.flatnonzero((order < 0) | (order >= N))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"state.order: [{k}] = {int(order[k])} is not an example of this "
                         f"run (0..{N - 1})")
    hit = np.zeros(N, dtype=bool)
    hit[order] = True
    if not hit.all():
        raise ValueError(f"state.order: not a permutation of the run's {N} examples "
                         f"(example {int(np.argmin(hit))} is missing)")
    return np.array(order, dtype=np.int64)


def _lbfgs_options(opts, validation, early_stopping, state) -> None:
    """What ``optimizer="lbfgs"`` refuses: the options of the stochastic runs."""
    given = {"validation": validation is not None,
             "early_stopping": early_stopping is not None,
             "state": state is not None,
             "batch_size": opts["batch_size"] is not None,
             "lr_schedule": opts["lr_schedule"] != "constant"}
    for name, set_ in given.items():
        if set_:
            raise ValueError(f"{name}: does not apply to optimizer='lbfgs' (a full-batch "
                             "quasi-Newton method)")


def _train_lbfgs(net, theta, X, Y, W, opts, is_sparse_X=False) -> History:
    """``optimizer="lbfgs"``: scipy's L-BFGS-B on J(theta) and its exact gradient
    (``Network.loss_and_grad``, the full batch) over the flat vector, in
    float64 (scipy's) with J evaluated in the network's dtype.  ``is_sparse_X``:
    X is a ``_core.SparseInput`` (the plan's sparse entry points)."""
    try:
        from scipy.optimize import minimize
    except ImportError as e:  # pragma: no cover - scipy ships with the sklearn extra
        raise ImportError("optimizer='lbfgs' needs scipy: pip install scipy "
                          "(or the 'sklearn' extra)") from e
    plan = net.plan
    dt = net.dtype
    # scipy's L-BFGS-B allocates about 240 bytes per variable (its workspace of
    # 2 * 10 + 5 float64 vectors for 10 corrections, bounds, gradient, int
    # arrays), and the float64 copies of theta and the gradient here 48 more
    _core.check_memory("train(optimizer='lbfgs')", 288 * theta.shape[0])
    if W is not None:
        W = np.ascontiguousarray(W)
    losses = []
    t_start = time.perf_counter()
    times = []

    last = [None, None]  # the point of fun's last evaluation and J there

    def fun(x):
        t = np.ascontiguousarray(x, dtype=dt)
        if is_sparse_X:
            J, g = plan.sparse_loss_and_grad(t, X, Y, W)
        else:
            J, g, _ = plan.loss_and_grad(t, X, Y, False, W)
        last[:] = x.copy(), J
        return J, g.astype(np.float64)

    def J_at(x):
        if last[0] is not None and np.array_equal(x, last[0]):
            return last[1]  # the line search ended at its last evaluation (usual)
        t = np.ascontiguousarray(x, dtype=dt)
        if is_sparse_X:
            return plan.sparse_loss(t, X, Y, W)
        return plan.loss(t, X, Y, W)

    def record(xk):
        # the loss at each iterate (the same value as loss_and_grad's there)
        losses.append(J_at(xk))
        times.append(time.perf_counter() - t_start)
        callback = opts["callback"]
        if callback is not None and _stop_requested(callback(_lbfgs_history(
                net, xk.astype(dt), losses, times, len(losses), "completed"))):
            raise StopIteration

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a diverging step: reported below
        res = minimize(fun, theta.astype(np.float64), method="L-BFGS-B", jac=True,
                       callback=record,
                       options={"maxiter": opts["epochs"], "maxfun": opts["max_fun"],
                                "gtol": opts["gtol"]})
    theta[:] = res.x.astype(dt)
    nit = int(res.nit)
    reason = lbfgs_stop_reason(res, opts)
    history = _lbfgs_history(net, theta, losses, times, nit, reason, int(res.nfev))
    if opts["callback"] is not None:
        opts["callback"](history)
    return history


def lbfgs_stop_reason(res, opts) -> str:
    """The History's ``stop_reason`` of an L-BFGS run from scipy's result ``res``
    and the run's options (``epochs``, ``max_fun``)."""
    if res.success:
        return "converged"
    if res.nfev >= opts["max_fun"] or "EVALUATIONS" in str(res.message).upper():
        return "max_fun"
    if int(res.nit) >= opts["epochs"]:
        return "completed"
    if not np.isfinite(res.x).all() or not math.isfinite(res.fun):
        return "diverged"
    return "callback" if "callback" in str(res.message).lower() else "converged"


def _lbfgs_history(net, theta, losses, times, nit, reason, steps=None) -> History:
    """The History of an L-BFGS run after ``nit`` iterations (one per "epoch";
    ``steps``: evaluations of J)."""
    loss = np.array(losses[:nit], dtype=np.float64)
    best = int(np.argmin(loss)) if len(loss) else -1
    return History(loss=loss, val_loss=None, val_accuracy=None,
                   time=np.array(times[:nit], dtype=np.float64), best_epoch=best,
                   epochs=nit, steps=nit if steps is None else steps, stop_reason=reason,
                   seed=0, params=Params.wrap(net.sizes, net.bias, theta))


def _accuracy_kind(net: Network) -> int:
    if net.loss_name == "cross_entropy":
        return _core.ACC_ARGMAX
    if net.loss_name == "bce":
        return _core.ACC_THRESHOLD
    return _core.ACC_NONE


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
    return max(1, int(_FIRST_CHUNK_SECONDS / _epoch_guess(N, B, Nv, per_example)))


def _epoch_guess(N, B, Nv, per_example) -> float:
    """A pessimistic estimate of an epoch's seconds (see ``_first_chunk``)."""
    steps = -(-N // B) + (Nv > 0)
    return steps * _STEP_SECONDS + (N + Nv) * per_example * _MULADD_SECONDS


def _split(net, X, Y, validation, streams, W=None):
    """(X, Y, Xv, Yv, W): the training rows, the validation set (possibly empty)
    and the training rows' weights (None: unweighted).

    Every array is writeable and C-contiguous, so the compiled loop is one
    specialization per dtype whatever the caller passed.
    """
    n_0, n_L, dt = net.sizes[0], net.sizes[-1], net.dtype
    Xv = np.empty((0, n_0), dt)
    Yv = np.empty((0, n_L), dt)
    if validation is None:
        pass
    elif isinstance(validation, numbers.Real) and not is_bool(validation):
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
        if W is not None:
            W = W[~held]
            if not W.sum(dtype=np.float64) > 0:
                raise ValueError("sample_weight: the training rows left by the validation "
                                 "split all have weight 0")
    elif isinstance(validation, (tuple, list)) and len(validation) == 2:
        Xv = as_float_matrix("validation[0]", validation[0], n_0, dt)
        Yv = as_targets(validation[1], Xv.shape[0], n_L, net.loss_name, dt)
    else:
        raise TypeError("validation: expected (Xv, Yv), a fraction in (0, 1) or None, "
                        f"got {type(validation).__name__}")
    X, Y, Xv, Yv = (A if A.flags.writeable and A.flags.c_contiguous else np.array(A, order="C")
                    for A in (X, Y, Xv, Yv))
    return X, Y, Xv, Yv, None if W is None else np.ascontiguousarray(W)


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
