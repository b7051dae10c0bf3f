"""The contenders of ``fastbp bench``: fastbp, ``fastbp.reference`` and the peers a
Python user could pick instead (a hand-written NumPy implementation, PyTorch eager
autograd, JAX ``jit(value_and_grad)``, scikit-learn's ``MLPClassifier._backprop``).

Every contender turns a workload (``fastbp.bench.Workload``) and the same seeded
inputs into two callables:

- ``run()``: the timed call, in the contender's own idiom, on data already
  converted to its native form (tensors, device arrays, in x out matrices);
- ``result()``: the same computation, converted to fastbp's flat layout for the
  check against the reference: ``(loss, flat gradient)`` for a gradient,
  ``(None, flat parameters after training)`` for a training run.

A contender that cannot run a workload says why (``Unsupported``) instead of
computing something else: the loss definitions must coincide.  Peers are optional
imports; a missing one is reported as skipped by the caller.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..params import Params


class Unsupported(Exception):
    """The contender cannot compute this workload's loss exactly; the message says why."""


@dataclass
class Prepared:
    run: Callable[[], object]
    result: Callable[[], tuple]


def flatten(net, Ws, bs) -> np.ndarray:
    """Per-layer W^(l) (n_l, n_{l-1}) and b^(l) (or None) -> fastbp's flat layout."""
    p = Params.zeros(net.sizes, net.bias, dtype=np.float64)
    for l in range(1, net.n_layers + 1):
        p.W[l][...] = Ws[l - 1]
        if p.b[l] is not None:
            p.b[l][...] = bs[l - 1]
    return p.flat


def _weights(params):
    """Contiguous per-layer copies of W^(l) (out x in) and b^(l) (or None)."""
    L = params.n_layers
    Ws = [np.ascontiguousarray(params.W[l]).copy() for l in range(1, L + 1)]
    bs = [None if params.b[l] is None else params.b[l].copy() for l in range(1, L + 1)]
    return Ws, bs


# ------------------------------------------------------------------------- fastbp


def _settle(net, run):
    """Call ``run`` until the network's plan has settled on its driver: a small
    network's plan moves to its specialized code once its generic calls have
    taken as long as making that code costs (``fastbp._core.plan``), so the
    first calls of a program run the generic drivers; steady state is what
    comes after (at most 30 s of calls)."""
    plan = getattr(net, "plan", None)
    if plan is None or getattr(plan, "settled", not getattr(plan, "_small_ok", False)):
        return
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 30:
        run()
        if plan.last_driver == "small" or getattr(plan, "settled", False):
            return


class FastbpContender:
    name = "fastbp"
    is_peer = False
    module = "fastbp"

    def gradient(self, w, net, params, X, Y, labels):
        def run():
            return net.loss_and_grad(params, X, Y)

        def result():
            J, g = net.loss_and_grad(params, X, Y)
            return J, g.flat.astype(np.float64)

        _settle(net, run)
        return Prepared(run, result)

    def training(self, w, net, params, X, Y, labels):
        import fastbp

        train = getattr(fastbp, "train", None)
        if train is None:
            raise Unsupported("not available: fastbp.train is not in this version of fastbp")

        def run():
            return train(net, params, X, Y, optimizer=w.optimizer, lr=w.lr, epochs=w.steps,
                         batch_size=w.batch_size, shuffle=False)

        def result():
            return None, _trained_flat(run()).astype(np.float64)

        _settle(net, run)
        return Prepared(run, result)


BETAS, EPS = (0.9, 0.999), 1e-8  # Adam's constants in every contender


def optimize(w, leaves, gradients):
    """Workload ``w``'s training run by hand: ``w.steps`` epochs over its batches
    in order, each an update of the arrays ``leaves`` (in place) from
    ``gradients(lo, hi)``, the gradient of the batch of rows lo..hi-1 (a list
    matching ``leaves``): SGD, or Adam as Kingma and Ba's algorithm 1."""
    dt = leaves[0].dtype.type
    lr = dt(w.lr)
    adam = w.optimizer == "adam"
    if adam:
        b1, b2, eps, one = dt(BETAS[0]), dt(BETAS[1]), dt(EPS), dt(1)
        m = [np.zeros_like(p) for p in leaves]
        v = [np.zeros_like(p) for p in leaves]
    elif w.optimizer != "sgd":
        raise Unsupported(f"optimizer {w.optimizer!r} is not in the hand-written loops")
    t = 0
    for _ in range(w.steps):
        for lo, hi in w.batches():
            grads = gradients(lo, hi)
            t += 1
            for k, (p, g) in enumerate(zip(leaves, grads)):
                if not adam:
                    p -= lr * g
                    continue
                m[k] = b1 * m[k] + (one - b1) * g
                v[k] = b2 * v[k] + (one - b2) * (g * g)
                p -= lr * (m[k] / (one - b1 ** t)) / (np.sqrt(v[k] / (one - b2 ** t)) + eps)
    return leaves


def _trained_flat(history):
    """The trained parameters from ``fastbp.train``'s History."""
    p = getattr(history, "params", None)
    if p is None:
        raise TypeError("fastbp.train returned no .params: cannot check the trained weights")
    return p.flat


class ReferenceContender:
    name = "reference"
    is_peer = False
    module = "fastbp.reference"

    def __init__(self):
        self.ref = importlib.import_module("fastbp.reference")

    def gradient(self, w, net, params, X, Y, labels):
        ref = self.ref

        def run():
            return ref.loss_and_grad(net, params, X, Y)

        def result():
            J, g = ref.loss_and_grad(net, params, X, Y)
            return J, g.flat.astype(np.float64)

        return Prepared(run, result)

    def training(self, w, net, params, X, Y, labels):
        ref = self.ref

        def run():
            p = params.copy()
            optimize(w, [p.flat], lambda lo, hi: [ref.loss_and_grad(net, p, X[lo:hi],
                                                                     Y[lo:hi])[1].flat])
            return p

        def result():
            return None, run().flat.astype(np.float64)

        return Prepared(run, result)


# -------------------------------------------------------------------------- NumPy

# f(Z) and f'(Z) written from A = f(Z), in matrix form.
_NP_ACT = {
    "identity": (lambda Z: Z, lambda A: np.ones_like(A)),
    "sigmoid": (lambda Z: 1 / (1 + np.exp(-Z)), lambda A: A * (1 - A)),
    "tanh": (np.tanh, lambda A: 1 - A * A),
    "relu": (lambda Z: np.maximum(Z, 0), lambda A: (A > 0).astype(A.dtype)),
}


def _np_softmax(Z):
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def numpy_loss_and_grad(net, Ws, bs, X, Y):
    """Loss and gradients in matrix form, one example per row (``A @ W.T``).

    Parameters
    ----------
    Ws : list of L ndarrays of shape (n_l, n_{l-1})
    bs : list of L ndarrays of shape (n_l,) or None
    X : ndarray of shape (N, n_0)
    Y : ndarray of shape (N, n_L)

    Returns
    -------
    J : float
    gW, gb : lists of per-layer gradients (gb[l] None where there is no bias)
    """
    L = len(Ws)
    N = X.shape[0]
    acts = net.activations
    A = [X]
    for l in range(L):
        Z = A[-1] @ Ws[l].T
        if bs[l] is not None:
            Z += bs[l]
        if l < L - 1:
            A.append(_NP_ACT[acts[l]][0](Z))
    loss = net.loss_name
    if loss == "bce":  # from the logits: ln(1 + e^z) - y z, overflow-free
        out = _NP_ACT["sigmoid"][0](Z)
        J = (np.logaddexp(0, Z) - Y * Z).sum()
        delta = out - Y
    elif loss == "cross_entropy":
        shifted = Z - Z.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        J = -(Y * logp).sum()
        delta = np.exp(logp) - Y
    else:  # sse after a unit-wise output
        if acts[-1] == "softmax":
            raise Unsupported("sse after a softmax output is not in the NumPy peer")
        f, df = _NP_ACT[acts[-1]]
        out = f(Z)
        J = 0.5 * ((out - Y) ** 2).sum()
        delta = (out - Y) * df(out)
    A.append(None)
    if net.reduction == "mean":
        J = J / N
        delta = delta * X.dtype.type(1.0 / N)
    lam = X.dtype.type(net.l2)
    if lam:
        J = J + 0.5 * float(lam) * sum(float((W * W).sum()) for W in Ws)
    gW, gb = [None] * L, [None] * L
    for l in range(L - 1, -1, -1):
        gW[l] = delta.T @ A[l]
        if lam:
            gW[l] += lam * Ws[l]
        if bs[l] is not None:
            gb[l] = delta.sum(axis=0)
        if l > 0:
            delta = (delta @ Ws[l]) * _NP_ACT[acts[l - 1]][1](A[l])
    return float(J), gW, gb


class NumpyContender:
    name = "numpy"
    is_peer = True
    module = "numpy"

    def gradient(self, w, net, params, X, Y, labels):
        Ws, bs = _weights(params)
        numpy_loss_and_grad(net, Ws, bs, X[:1], Y[:1])  # raises Unsupported early

        def run():
            return numpy_loss_and_grad(net, Ws, bs, X, Y)

        def result():
            J, gW, gb = run()
            return J, flatten(net, gW, gb)

        return Prepared(run, result)

    def training(self, w, net, params, X, Y, labels):
        Ws0, bs0 = _weights(params)

        def run():
            Ws = [W.copy() for W in Ws0]
            bs = [None if b is None else b.copy() for b in bs0]

            def gradients(lo, hi):
                _, gW, gb = numpy_loss_and_grad(net, Ws, bs, X[lo:hi], Y[lo:hi])
                return gW + [g for g in gb if g is not None]

            optimize(w, Ws + [b for b in bs if b is not None], gradients)
            return Ws, bs

        def result():
            return None, flatten(net, *run())

        return Prepared(run, result)


# ------------------------------------------------------------------------ PyTorch


class TorchContender:
    name = "torch"
    is_peer = True
    module = "torch"

    def __init__(self, threads):
        import torch

        torch.set_num_threads(threads)
        self.torch = torch

    def _setup(self, w, net, params, X, Y, labels):
        torch = self.torch
        F = torch.nn.functional
        if net.loss_name == "sse" and net.activations[-1] == "softmax":
            raise Unsupported("sse after a softmax output is not in the torch peer")
        act = {"identity": lambda z: z, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
               "relu": torch.relu}
        Ws, bs = _weights(params)
        Wt = [torch.from_numpy(W).requires_grad_() for W in Ws]
        bt = [None if b is None else torch.from_numpy(b).requires_grad_() for b in bs]
        leaves = [t for t in Wt + bt if t is not None]
        Xt = torch.from_numpy(X)
        Yt = torch.from_numpy(Y)
        lab = torch.from_numpy(labels.astype(np.int64)) if labels is not None else None
        acts, loss, L = net.activations, net.loss_name, net.n_layers
        red = net.reduction
        l2 = net.l2

        def objective(Xt=Xt, Yt=Yt, lab=lab):
            N = Xt.shape[0]
            a = Xt
            for l in range(L):
                z = F.linear(a, Wt[l], bt[l])  # torch's Linear is out x in, like W^(l)
                if l < L - 1:
                    a = act[acts[l]](z)
            if loss == "bce":
                J = F.binary_cross_entropy_with_logits(z, Yt, reduction="sum")
            elif loss == "cross_entropy":
                J = F.cross_entropy(z, lab, reduction="sum")
            else:
                J = 0.5 * (act[acts[-1]](z) - Yt).square().sum()
            if red == "mean":
                J = J / N
            if l2:
                J = J + 0.5 * l2 * sum(W.square().sum() for W in Wt)
            return J

        return Wt, bt, leaves, objective

    def gradient(self, w, net, params, X, Y, labels):
        Wt, bt, leaves, objective = self._setup(w, net, params, X, Y, labels)

        def run():
            for t in leaves:
                t.grad = None
            J = objective()
            J.backward()
            return J

        def result():
            J = run()
            gW = [W.grad.numpy() for W in Wt]
            gb = [None if b is None else b.grad.numpy() for b in bt]
            return float(J.item()), flatten(net, gW, gb)

        return Prepared(run, result)

    def training(self, w, net, params, X, Y, labels):
        torch = self.torch
        Wt, bt, leaves, objective = self._setup(w, net, params, X, Y, labels)
        init = [t.detach().clone() for t in leaves]
        steps = w.steps
        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        lab = torch.from_numpy(labels.astype(np.int64)) if labels is not None else None
        batches = [(Xt[lo:hi], Yt[lo:hi], None if lab is None else lab[lo:hi])
                   for lo, hi in w.batches()]

        def run():
            with torch.no_grad():
                for t, t0 in zip(leaves, init):
                    t.copy_(t0)
            # a new optimizer per run: its state (Adam's moments) starts at zero
            if w.optimizer == "adam":
                opt = torch.optim.Adam(leaves, lr=w.lr, betas=BETAS, eps=EPS)
            else:
                opt = torch.optim.SGD(leaves, lr=w.lr)
            for _ in range(steps):
                for xb, yb, lb in batches:
                    opt.zero_grad(set_to_none=True)
                    objective(xb, yb, lb).backward()
                    opt.step()

        def result():
            run()
            return None, flatten(net, [W.detach().numpy() for W in Wt],
                                 [None if b is None else b.detach().numpy() for b in bt])

        return Prepared(run, result)


# ---------------------------------------------------------------------------- JAX


def configure_jax_threads(threads: int, cores: int) -> str | None:
    """XLA reads its thread settings once, when jax is first imported: set them
    before.  Returns a note when the requested count cannot be honoured exactly."""
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()
        return None
    if threads < cores:
        return f"jax: XLA uses all {cores} cores (it has no exact {threads}-thread setting)"
    return None


class JaxContender:
    name = "jax"
    is_peer = True
    module = "jax"

    def __init__(self):
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 workloads stay float64
        self.jax = jax

    def _setup(self, net, params, X, Y):
        jax = self.jax
        jnp = jax.numpy
        if net.loss_name == "sse" and net.activations[-1] == "softmax":
            raise Unsupported("sse after a softmax output is not in the jax peer")
        act = {"identity": lambda z: z, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh,
               "relu": jax.nn.relu}
        Ws, bs = _weights(params)
        theta = [(jnp.asarray(W), None if b is None else jnp.asarray(b)) for W, b in zip(Ws, bs)]
        acts, loss, L = net.activations, net.loss_name, net.n_layers
        red, l2 = net.reduction, net.l2

        def objective(theta, X, Y):
            N = X.shape[0]  # the batch's (static when traced)
            a = X
            for l, (W, b) in enumerate(theta):
                z = a @ W.T
                if b is not None:
                    z = z + b
                if l < L - 1:
                    a = act[acts[l]](z)
            if loss == "bce":
                J = jnp.sum(jax.nn.softplus(z) - Y * z)
            elif loss == "cross_entropy":
                J = -jnp.sum(Y * jax.nn.log_softmax(z, axis=1))
            else:
                J = 0.5 * jnp.sum((act[acts[-1]](z) - Y) ** 2)
            if red == "mean":
                J = J / N
            if l2:
                J = J + 0.5 * l2 * sum(jnp.sum(W * W) for W, _ in theta)
            return J

        return theta, objective, jnp.asarray(X), jnp.asarray(Y)

    def gradient(self, w, net, params, X, Y, labels):
        jax = self.jax
        theta, objective, Xj, Yj = self._setup(net, params, X, Y)
        vg = jax.jit(jax.value_and_grad(objective))

        def run():
            return jax.block_until_ready(vg(theta, Xj, Yj))

        def result():
            J, g = run()
            return float(J), flatten(net, [np.asarray(gw) for gw, _ in g],
                                     [None if gb is None else np.asarray(gb) for _, gb in g])

        return Prepared(run, result)

    def training(self, w, net, params, X, Y, labels):
        jax = self.jax
        jnp = jax.numpy
        tree = jax.tree_util
        theta, objective, Xj, Yj = self._setup(net, params, X, Y)
        grad = jax.grad(objective)
        lr, steps, adam = w.lr, w.steps, w.optimizer == "adam"
        b1, b2 = BETAS

        def update(state, xb, yb):
            """One optimizer step on the batch (SGD, or Adam's algorithm 1)."""
            theta, m, v, t = state
            g = grad(theta, xb, yb)
            if not adam:
                return tree.tree_map(lambda p, d: p - lr * d, theta, g), m, v, t
            t = t + 1
            m = tree.tree_map(lambda m, d: b1 * m + (1 - b1) * d, m, g)
            v = tree.tree_map(lambda v, d: b2 * v + (1 - b2) * (d * d), v, g)
            c1, c2 = 1 - b1 ** t, 1 - b2 ** t
            theta = tree.tree_map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + EPS),
                                  theta, m, v)
            return theta, m, v, t

        B = w.batch_size or w.N
        n_full = w.N // B
        # the full batches stacked for lax.scan over them, the last partial one apart
        Xs = Xj[:n_full * B].reshape(n_full, B, -1)
        Ys = Yj[:n_full * B].reshape(n_full, B, -1)
        Xr, Yr = Xj[n_full * B:], Yj[n_full * B:]

        @jax.jit
        def fit(theta, Xs, Ys, Xr, Yr):
            zeros = tree.tree_map(jnp.zeros_like, theta)
            state = (theta, zeros, zeros, jnp.asarray(0, dtype=Xs.dtype))

            def epoch(i, state):
                state, _ = jax.lax.scan(lambda st, b: (update(st, *b), None), state, (Xs, Ys))
                if Xr.shape[0]:
                    state = update(state, Xr, Yr)
                return state

            return jax.lax.fori_loop(0, steps, epoch, state)[0]

        def run():
            return jax.block_until_ready(fit(theta, Xs, Ys, Xr, Yr))

        def result():
            out = run()
            return None, flatten(net, [np.asarray(W) for W, _ in out],
                                 [None if b is None else np.asarray(b) for _, b in out])

        return Prepared(run, result)


# -------------------------------------------------------------------- scikit-learn

_SK_ACT = {"identity": "identity", "sigmoid": "logistic", "tanh": "tanh", "relu": "relu"}


class SklearnContender:
    name = "sklearn"
    is_peer = True
    module = "sklearn"
    # sklearn's log loss clips the probabilities to [eps, 1 - eps] (float eps), so
    # its loss VALUE differs where an output underflows; its gradient (a - y, then
    # backpropagated) does not, and that is what is checked.
    loss_exact = False

    def __init__(self):
        from sklearn.neural_network import MLPClassifier

        self.MLPClassifier = MLPClassifier

    def _model(self, net, params, N):
        """An MLPClassifier whose ``_backprop`` computes exactly this network's loss,
        or ``Unsupported`` naming the definition that differs."""
        acts = net.activations
        if net.loss_name == "sse":
            raise Unsupported("sklearn's _backprop takes the output delta as a - y (canonical "
                              "link); sse after a sigmoid output is not expressible")
        if net.reduction != "mean":
            raise Unsupported("sklearn averages the loss over the examples; workload sums")
        if not all(net.bias):
            raise Unsupported("sklearn's layers always have an intercept")
        hidden = set(acts[:-1])
        if len(hidden) > 1:
            raise Unsupported("sklearn uses one activation for every hidden layer")
        out = {"bce": "logistic", "cross_entropy": "softmax"}[net.loss_name]
        if out == "softmax" and net.sizes[-1] < 2:
            raise Unsupported("sklearn's softmax output needs >= 2 units")
        # sklearn's J = mean loss + alpha / (2 N) sum W^2 and dJ/dW adds alpha W / N:
        # fastbp's l2 (lambda/2 sum W^2 added once) maps to alpha = lambda N.
        m = self.MLPClassifier(hidden_layer_sizes=net.sizes[1:-1],
                               activation=_SK_ACT[next(iter(hidden), "identity")],
                               alpha=net.l2 * N)
        m.n_layers_ = net.n_layers + 1
        m.out_activation_ = out  # "logistic" + log_loss is binary_log_loss: bce summed over outputs
        return m

    def gradient(self, w, net, params, X, Y, labels):
        m = self._model(net, params, X.shape[0])
        Ws, bs = _weights(params)
        m.coefs_ = [np.ascontiguousarray(W.T) for W in Ws]  # sklearn stores in x out
        m.intercepts_ = bs
        L = net.n_layers
        activations = [X] + [None] * L
        deltas = [None] * L
        coef_grads = [np.empty_like(c) for c in m.coefs_]
        intercept_grads = [np.empty_like(b) for b in bs]

        def run():
            return m._backprop(X, Y, None, activations, deltas, coef_grads, intercept_grads)

        def result():
            J, gW, gb = run()
            return float(J), flatten(net, [g.T for g in gW], gb)

        return Prepared(run, result)

    def training(self, w, net, params, X, Y, labels):
        raise Unsupported("sklearn's fit cannot start from given parameters without its "
                          "private warm-start state; no idiomatic fixed-step loop to time")


PEERS = ("numpy", "torch", "jax", "sklearn")


def make_contender(name: str, threads: int):
    """Build a contender; ImportError propagates (the caller reports it as skipped)."""
    if name == "fastbp":
        return FastbpContender()
    if name == "reference":
        return ReferenceContender()
    if name == "numpy":
        return NumpyContender()
    if name == "torch":
        return TorchContender(threads)
    if name == "jax":
        return JaxContender()
    if name == "sklearn":
        return SklearnContender()
    raise ValueError(f"contender: unknown name {name!r}")
