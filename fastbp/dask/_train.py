"""``fastbp.dask.train``: training over a Dask cluster, the data loaded on the
workers once and never moved again.

Each step sends the parameters (one key of the step's graph, or scattered to
every worker) and gets back one gradient: the chunks' sums, added by the tree
in chunk order (``_chunks``).  The optimizer runs on the client, in NumPy, in
the network's dtype, with the update rules of ``fastbp.train``; the epoch
records, the stopping rule, the callback and the returned ``History`` follow
``fastbp.train``'s definitions.  Nothing in a step depends on which worker
computed what, so a run with fixed chunking is bit-identical for any number
of workers.

Mini-batches are groups of whole chunks (``batch_chunks``): a batch is read
where its rows already are, so the data never moves; with ``shuffle`` the
groups' order is drawn afresh every epoch from the seed.
"""

from __future__ import annotations

import math
import secrets
import time
import warnings

import numpy as np

from .._checks import Integer, OneOf, Real, check, is_bool
from ..network import Network
from ..params import Params
from ..training import DEFAULT_LR, EarlyStopping, History, OptimizerState, lbfgs_stop_reason
from ..training import OPTIONS as TRAIN_OPTIONS
from . import _chunks, _gradient
from ._gradient import DaskData

__all__ = ["OPTIMIZERS", "train"]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "lbfgs")
SEND = ("graph", "scatter")

# fastbp.train's options, checked by the same rules, and the cluster's own
OPTIONS = {
    "optimizer": OneOf(OPTIMIZERS),
    **{name: TRAIN_OPTIONS[name] for name in (
        "lr", "epochs", "shuffle", "seed", "momentum", "nesterov", "betas[0]", "betas[1]",
        "eps", "callback", "max_fun", "gtol")},
    "batch_chunks": Integer(1, none=True),
    "send_params": OneOf(SEND),
}


def train(net: Network, params: Params, X, Y, *, optimizer="sgd", lr=None, epochs=100,
          batch_chunks=None, shuffle=True, seed=None, momentum=0.9, nesterov=False,
          betas=(0.9, 0.999), eps=1e-8, validation=None, early_stopping=None,
          callback=None, sample_weight=None, state=None, max_fun=15000, gtol=1e-5,
          client=None, send_params="graph") -> History:
    """Train ``net`` on dask arrays chunked by rows, the optimizer on the client.

    Parameters
    ----------
    net, params, optimizer, lr, epochs, shuffle, seed, momentum, nesterov, betas, eps, \
callback, max_fun, gtol
        As for ``fastbp.train`` (``optimizer="lbfgs"``: scipy's L-BFGS-B on the
        distributed J and gradient).  ``params`` is never modified.
    X : dask.array.Array of shape (N, n_0)
        Row chunks of whole rows; persisted on the workers at the start.
    Y : dask.array.Array of shape (N, n_L) or (N,)
        Targets with X's row chunks.
    batch_chunks : int, optional
        None: full batch (one step per epoch on every chunk).  k: each step's
        batch is k consecutive chunks (the last group may hold fewer), its J
        the mean over its own examples; ceil(chunks / k) steps per epoch.
    validation : (Xv, Yv) of dask arrays, optional
        J (and, for a classifier, the accuracy) at the end of every epoch.
        A held-out fraction is not offered: the rows would move.
    early_stopping : int or EarlyStopping, optional
        As for ``fastbp.train`` (monitors "loss", "val_loss", "val_accuracy",
        "val_r2"), evaluated at the end of every epoch.
    sample_weight : dask.array.Array of shape (N,), optional
        With X's row chunks.
    state : OptimizerState, optional
        Continue the moments, step count and rate of an earlier run of the same
        optimizer (the shuffling starts again from ``seed``).
    client : distributed.Client, optional
        None: dask's current scheduler (the default client, when one exists).
    send_params : {"graph", "scatter"}, default "graph"
        How each step's parameters reach the workers: as one key of the
        step's graph (the scheduler forwards it to each worker that needs it)
        or by ``Client.scatter(broadcast=True)`` before the step (needs a
        client).  Never changes the result.

    Returns
    -------
    History
        As ``fastbp.train``'s: per-epoch ``loss`` (each batch's loss before its
        update, over the epoch, plus the L2 term averaged over the steps),
        ``val_loss``, ``val_accuracy``, ``time``, ``best_epoch``, ``stop_reason``,
        ``seed``, ``params``, ``early_stopping``, ``optimizer_state``.

    Notes
    -----
    The updates, with g the batch gradient (``fastbp.train``'s, in the
    network's dtype): sgd theta -= lr g; momentum v = mu v + g, theta -= lr v;
    nesterov v = mu v + g, theta -= lr (g + mu v); adam m = b1 m + (1 - b1) g,
    v = b2 v + (1 - b2) g^2, theta -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t))
    + eps).
    """
    _gradient.check_net(net)
    theta0 = net.check_params(params)
    client = _gradient.check_client(client)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas: expected a pair (b1, b2), got {betas!r}")
    opts = check(OPTIONS, optimizer=optimizer, lr=lr, epochs=epochs, batch_chunks=batch_chunks,
                 shuffle=shuffle, seed=seed, momentum=momentum, nesterov=nesterov,
                 eps=eps, callback=callback, max_fun=max_fun, gtol=gtol,
                 send_params=send_params, **{"betas[0]": betas[0], "betas[1]": betas[1]})
    if opts["nesterov"]:
        if opts["optimizer"] not in ("momentum", "nesterov"):
            raise ValueError(f"nesterov: applies to optimizer='momentum', not "
                             f"{opts['optimizer']!r}")
        opts["optimizer"] = "nesterov"
    if opts["lr"] is None:
        opts["lr"] = DEFAULT_LR[opts["optimizer"]]
    if opts["send_params"] == "scatter" and client is None:
        raise ValueError("send_params: 'scatter' needs a client")
    data = DaskData(net, X, Y, sample_weight)
    val = None
    if validation is not None:
        if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
            raise TypeError("validation: expected (Xv, Yv), two dask arrays chunked by rows "
                            f"(a held-out fraction would move rows), got "
                            f"{type(validation).__name__}")
        val = DaskData(net, validation[0], validation[1], name="validation[0]")
    if opts["optimizer"] == "lbfgs":
        for name, given in (("validation", validation is not None),
                            ("early_stopping", early_stopping is not None),
                            ("state", state is not None),
                            ("batch_chunks", opts["batch_chunks"] is not None)):
            if given:
                raise ValueError(f"{name}: does not apply to optimizer='lbfgs' (a "
                                 "full-batch quasi-Newton method)")
    rule = _rule(net, early_stopping, val)
    state = _state(net, state, opts)

    run = _Cluster(net, client, opts["send_params"])
    data = data.persist(client)  # loaded once; every step reads it where it is
    if val is not None:
        val = val.persist(client)
    theta = theta0.copy()
    if opts["optimizer"] == "lbfgs":
        return _lbfgs(run, data, theta, opts)
    return _stochastic(run, data, val, theta, opts, rule, state)


class _Cluster:
    """How the steps reach the workers: the client (or None), numba threads
    per task and the parameters' transport."""

    def __init__(self, net, client, send):
        self.net, self.client, self.send = net, client, send
        self.threads = _gradient._threads_for(client)

    def _theta(self, theta):
        if self.send == "scatter":
            return self.client.scatter(theta, broadcast=True, hash=False)
        return _gradient.params_graph(theta)

    def gradient(self, theta, data, chunks=None) -> _chunks.Partial:
        """The total Partial (sums) of the chunks ``chunks`` (all: None)."""
        graph = _gradient.gradient_graph(self.net, self._theta(theta), data, self.threads,
                                         chunks)
        return _gradient.compute(self.client, graph)[0]

    def loss(self, theta, data) -> _chunks.Partial:
        graph = _gradient.loss_graph(self.net, self._theta(theta), data, self.threads)
        return _gradient.compute(self.client, graph)[0]


def _rule(net, early_stopping, val):
    if early_stopping is None:
        return None
    if not isinstance(early_stopping, EarlyStopping):
        if is_bool(early_stopping) or not isinstance(early_stopping, int | np.integer):
            raise TypeError("early_stopping: expected None, a patience (int) or "
                            f"fastbp.EarlyStopping, got {early_stopping!r}")
        if val is None:
            raise ValueError("early_stopping: needs a validation set (validation=(Xv, Yv))")
        early_stopping = EarlyStopping(Integer(1)("early_stopping", early_stopping))
    import dataclasses

    rule = dataclasses.replace(early_stopping)  # checked again (see fastbp.train)
    if rule.monitor.startswith("val_") and val is None:
        raise ValueError(f"early_stopping: monitor={rule.monitor!r} needs a validation set")
    if rule.monitor == "val_accuracy" and net.loss_name == "sse":
        raise ValueError("early_stopping: monitor='val_accuracy' needs a classifier "
                         "(bce or cross_entropy), this network's loss is 'sse'")
    if rule.monitor == "val_r2" and net.loss_name != "sse":
        raise ValueError(f"early_stopping: monitor='val_r2' needs an 'sse' network, this "
                         f"one's loss is {net.loss_name!r}")
    return rule


def _state(net, state, opts):
    if state is None:
        return None
    if not isinstance(state, OptimizerState):
        raise TypeError(f"state: expected fastbp.OptimizerState or None, got "
                        f"{type(state).__name__}")
    if state.optimizer != opts["optimizer"]:
        raise ValueError(f"state: belongs to optimizer {state.optimizer!r}, this run's is "
                         f"{opts['optimizer']!r}")
    for name in ("m", "v"):
        a = getattr(state, name)
        if not isinstance(a, np.ndarray) or a.shape != (net.n_params,) or \
                not np.isfinite(a).all():
            raise ValueError(f"state.{name}: expected {net.n_params} finite values")
    Integer(0)("state.step", state.step)
    Real(0.0, open_ends=("low",))("state.lr", state.lr)
    return state


# ---------------------------------------------------------------------- the stochastic run


class _Score:
    """The stopping rule's score of a monitored value (``fastbp.train``'s:
    offset + (factor * q) / divisor in float64) and its state."""

    def __init__(self, net, rule, val, client):
        monitor = "val_loss" if val is not None else "loss"
        if rule is not None and rule.monitor != "auto":
            monitor = rule.monitor
        self.monitor = monitor
        scale = 1.0 if rule is None else rule.scale
        self.offset, self.factor, self.divisor = 0.0, -scale, 1.0
        if monitor == "val_accuracy":
            self.factor = scale
        elif monitor == "val_r2":  # 1 - SSR / SST, SSR = 2 N_v J_v (mean) or 2 J_v (sum)
            Yv = val.Y.astype(np.float64)
            sst = ((Yv - Yv.mean(axis=0)) ** 2).sum()
            self.divisor = float(_gradient.compute(client, sst)[0])
            self.offset = 1.0
            self.factor = -2.0 * (val.N if net.reduction == "mean" else 1) * scale
        self.rule = rule
        self.tol = 0.0 if rule is None else rule.tol
        self.patience = 0 if rule is None else rule.patience
        self.best = -np.inf if rule is None or rule.best is None else rule.best
        self.wait = 0 if rule is None else min(rule.count, rule.patience - 1)
        self.best_epoch = -1

    def score(self, q) -> float:
        q = float(q)
        if self.divisor == 0:
            return self.offset if q == 0 else 0.0
        return self.offset + (self.factor * q) / self.divisor

    def end_epoch(self, ep, q) -> tuple[bool, bool]:
        """(improved, stop) after epoch ``ep`` with monitored value q."""
        s = self.score(q)
        self.wait = self.wait + 1 if s < self.best + self.tol else 0
        improved = s > self.best
        if improved:
            self.best, self.best_epoch = s, ep
        return improved, self.patience > 0 and self.wait >= self.patience

    def state(self):
        if self.rule is None:
            return None
        import dataclasses

        return dataclasses.replace(self.rule, best=self.best if math.isfinite(self.best)
                                   else None, count=self.wait)


class _Update:
    """The optimizer on the client: ``fastbp.train``'s update rules, element
    for element, in the network's dtype (``train_kernels._update``)."""

    def __init__(self, net, opts, state):
        dt = self.dt = net.dtype
        n = net.n_params
        self.code = opts["optimizer"]
        self.lr = dt.type(opts["lr"] if state is None else state.lr)
        self.mu = dt.type(opts["momentum"])
        self.b1, self.b2 = dt.type(opts["betas[0]"]), dt.type(opts["betas[1]"])
        self.eps = dt.type(opts["eps"])
        self.m = np.zeros(n, dt) if state is None else np.array(state.m, dtype=dt)
        self.v = np.zeros(n, dt) if state is None else np.array(state.v, dtype=dt)
        self.step = 0 if state is None else int(state.step)
        self.seen = 0 if state is None else int(state.seen)

    def __call__(self, theta, g):
        self.step += 1
        lr = self.lr
        if self.code == "sgd":
            theta -= lr * g
        elif self.code == "momentum":
            self.v[...] = self.mu * self.v + g
            theta -= lr * self.v
        elif self.code == "nesterov":
            self.v[...] = self.mu * self.v + g
            theta -= lr * (g + self.mu * self.v)
        else:
            one = self.dt.type(1)
            c1 = one - self.b1 ** self.step
            c2 = one - self.b2 ** self.step
            self.m[...] = self.b1 * self.m + (one - self.b1) * g
            self.v[...] = self.b2 * self.v + (one - self.b2) * (g * g)
            theta -= lr * (self.m / c1) / (np.sqrt(self.v / c2) + self.eps)

    def state(self):
        return OptimizerState(self.code, self.step, self.m.copy(), self.v.copy(),
                              float(self.lr), self.seen, None, None)


def _groups(n_chunks, k):
    """The chunk indices of each batch: k consecutive chunks per group."""
    k = n_chunks if k is None else min(k, n_chunks)
    return [list(range(s, min(s + k, n_chunks))) for s in range(0, n_chunks, k)]


def _stochastic(run, data, val, theta, opts, rule, state) -> History:
    net = run.net
    entropy = secrets.randbits(128) if opts["seed"] is None else opts["seed"]
    shuffler = np.random.default_rng(np.random.SeedSequence(entropy))
    groups = _groups(len(data.chunks), opts["batch_chunks"])
    update = _Update(net, opts, state)
    score = _Score(net, rule, val, run.client)
    restore = rule is not None and rule.restore_best
    best_theta = finite_theta = theta.copy()
    losses, val_losses, accs, times = [], [], [], []
    callback = opts["callback"]
    outcome = "completed"
    t_start = time.perf_counter()

    def history(reason, th):
        return History(
            loss=np.array(losses), val_loss=np.array(val_losses) if val is not None else None,
            val_accuracy=np.array(accs) if val is not None and net.loss_name not in (
                "sse", "poisson") else None,
            time=np.array(times), best_epoch=score.best_epoch, epochs=len(losses),
            steps=update.step, stop_reason=reason, seed=int(entropy),
            params=Params.wrap(net.sizes, net.bias, th), early_stopping=score.state(),
            optimizer_state=update.state())

    for ep in range(opts["epochs"]):
        order = (shuffler.permutation(len(groups)) if opts["shuffle"] and len(groups) > 1
                 else range(len(groups)))
        S = count = 0.0
        l2_sum = 0.0
        for gi in order:
            part = run.gradient(theta, data, groups[gi])
            _J_b, g = _chunks.finish(net, theta, part)
            l2 = _chunks.l2_term(net, theta)
            S += part.loss
            count += part.count
            l2_sum += l2
            update(theta, g)
            update.seen += sum(data.chunks[k] for k in groups[gi])
        J_train = (S / count if net.reduction == "mean" else S) + l2_sum / len(groups)
        losses.append(J_train)
        q = J_train
        vl = 0.0
        if val is not None:
            vpart = run.loss(theta, val)
            vl, _ = _chunks.finish(net, theta, vpart)
            val_losses.append(vl)
            q = vl
            if net.loss_name not in ("sse", "poisson"):
                accs.append(vpart.right / vpart.count)
                if score.monitor == "val_accuracy":
                    q = accs[-1]
        if score.monitor == "loss":
            q = J_train
        times.append(time.perf_counter() - t_start)
        if not (math.isfinite(J_train) and math.isfinite(vl) and np.isfinite(theta).all()):
            outcome = "diverged"
            break
        finite_theta = theta.copy()
        improved, stop = score.end_epoch(ep, q)
        if improved and restore:
            best_theta = theta.copy()
        if stop:
            outcome = "early_stopping"
            break
        if (callback is not None and ep + 1 < opts["epochs"]
                and _stop_requested(callback(history("completed", theta.copy())))):
            outcome = "callback"
            break
    done = len(losses)
    if outcome == "diverged":
        best = score.best_epoch
        if restore and best >= 0:
            theta, which = best_theta, f"the best epoch's ({best})"
        else:
            theta = finite_theta
            which = (f"those of epoch {done - 2}, the last finite one" if done > 1
                     else "the starting parameters")
        warnings.warn(f"train: the loss or the parameters became NaN or infinite at epoch "
                      f"{done - 1}; training stopped and returned {which} (try a smaller lr "
                      f"than {opts['lr']!r})", RuntimeWarning, stacklevel=3)
    elif restore and 0 <= score.best_epoch < done - 1:
        theta = best_theta
    out = history(outcome, theta)
    if callback is not None:
        callback(out)
    return out


def _stop_requested(answer) -> bool:
    try:
        return bool(answer)
    except (TypeError, ValueError) as e:
        raise TypeError(f"callback: must return True (stop), False or None, got "
                        f"{type(answer).__name__} ({e})") from None


# ---------------------------------------------------------------------- L-BFGS


def _lbfgs(run, data, theta, opts) -> History:
    """scipy's L-BFGS-B on the distributed J and gradient (float64 for scipy,
    J evaluated in the network's dtype), as ``fastbp.train(optimizer="lbfgs")``."""
    try:
        from scipy.optimize import minimize
    except ImportError as e:  # pragma: no cover
        raise ImportError("optimizer='lbfgs' needs scipy: pip install scipy") from e
    net = run.net
    dt = net.dtype
    losses, times = [], []
    last = [None, None]
    t_start = time.perf_counter()

    def fun(x):
        t = np.ascontiguousarray(x, dtype=dt)
        J, g = _chunks.finish(net, t, run.gradient(t, data))
        last[:] = x.copy(), J
        return J, g.astype(np.float64)

    def J_at(x):
        if last[0] is not None and np.array_equal(x, last[0]):
            return last[1]
        t = np.ascontiguousarray(x, dtype=dt)
        return _chunks.finish(net, t, run.loss(t, data))[0]

    def hist(th, nit, reason, steps=None):
        loss = np.array(losses[:nit], dtype=np.float64)
        return History(loss=loss, val_loss=None, val_accuracy=None,
                       time=np.array(times[:nit]), best_epoch=int(np.argmin(loss)) if nit else -1,
                       epochs=nit, steps=nit if steps is None else steps, stop_reason=reason,
                       seed=0, params=Params.wrap(net.sizes, net.bias, th))

    def record(xk):
        losses.append(J_at(xk))
        times.append(time.perf_counter() - t_start)
        cb = opts["callback"]
        if cb is not None and _stop_requested(cb(hist(xk.astype(dt), len(losses),
                                                      "completed"))):
            raise StopIteration

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = minimize(fun, theta.astype(np.float64), method="L-BFGS-B", jac=True,
                       callback=record,
                       options={"maxiter": opts["epochs"], "maxfun": opts["max_fun"],
                                "gtol": opts["gtol"]})
    theta = res.x.astype(dt)
    nit = int(res.nit)
    reason = lbfgs_stop_reason(res, opts)
    out = hist(theta, nit, reason, int(res.nfev))
    if opts["callback"] is not None:
        opts["callback"](out)
    return out
