"""Reference implementation: the documents' matrix equations in plain NumPy.

This module is the oracle the compiled kernels are tested against, so it shares
nothing with them: it imports only NumPy and the ``Params`` container, keeps its
own name -> formula table, and reads the network only through its public
attributes (``sizes``, ``n_layers``, ``activations``, ``loss_name`` (or a
``loss`` string), ``reduction``, ``l2``, ``bias``).  It is written for clarity,
not speed: whole mini-batches as matrices, one example per row.

Notation (N examples, one per row):

    A^(0) = X                                  (N, n_0)
    Z^(l) = A^(l-1) W^(l)T + b^(l)             (N, n_l)   000: z^(l) = w^(l)T a^(l-1)
    A^(l) = f_l(Z^(l))
    Delta^(L) = dJ/dZ^(L)                      a - y for the cancelling pairs
    Delta^(l-1) = (Delta^(l) W^(l)) * f'_{l-1}(Z^(l-1))    004 eq. (4); 002 eq. (24)-(25)
    dJ/dW^(l) = Delta^(l)T A^(l-1) + lambda W^(l)          000 eq. (8), (14); 004 eq. (3)-(9)
    dJ/db^(l) = column sums of Delta^(l)                    004 eq. (2), (6); 002 eq. (27)
    dJ/dX = Delta^(1) W^(1)                                 004 eq. (7); 002 eq. (25)

Computations run in the dtype of ``params.flat`` (float32 or float64), so a
float64 copy of float32 parameters gives a float64 oracle for the same network.
"""

from __future__ import annotations

import numpy as np

from .params import Params

__all__ = ["forward", "loss", "loss_and_grad"]


# ---------------------------------------------------------------------------
# name -> formula table (independent of fastbp.functions on purpose)
# ---------------------------------------------------------------------------


def _sigmoid(z):
    # exp is only ever taken of -|z| <= 0, so it cannot overflow for any z.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _softmax(z):
    # Subtracting the row maximum leaves softmax unchanged and keeps exp <= 1.
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# Each unit-wise activation: (f, f') with f' written as a function of (z, a).
# Softmax couples the units of a layer; its backward step is the Jacobian
# product of 002 eq. (30), handled in ``_backward_through``.
_UNITWISE = {
    "identity": (lambda z: z.copy(), lambda z, a: np.ones_like(z)),
    # 000 eq. (5b): sigma' = a (1 - a)
    "sigmoid": (_sigmoid, lambda z, a: a * (1 - a)),
    # 004 section 2: tau' = 1 - tau^2
    "tanh": (np.tanh, lambda z, a: 1 - a * a),
    # 002 eq. (2); f'(0) is taken as 0
    "relu": (lambda z: np.maximum(z, 0), lambda z, a: (z > 0).astype(z.dtype)),
    # the mean of a Poisson output: (e^z)' = e^z = a
    "exp": (np.exp, lambda z, a: a.copy()),
}
_ACTIVATION_NAMES = (*_UNITWISE, "softmax")

# loss -> the output activation it requires (None: any output)
_LOSS_OUTPUT = {"sse": None, "bce": "sigmoid", "cross_entropy": "softmax", "poisson": "exp"}


def _activate(name, z):
    if name == "softmax":
        return _softmax(z)
    return _UNITWISE[name][0](z)


def _backward_through(name, z, a, g):
    """dJ/dz from g = dJ/da for one layer.

    Unit-wise activations: delta = f'(z) * g (element-wise).  Softmax: delta is
    the Jacobian of 002 eq. (30), da_n/dz_t = a_n ([n = t] - a_t), applied to g:
    delta_t = a_t (g_t - sum_n g_n a_n).
    """
    if name == "softmax":
        return a * (g - (g * a).sum(axis=1, keepdims=True))
    return _UNITWISE[name][1](z, a) * g


# ---------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------


def _loss_name(net):
    # fastbp.Network keeps the name in ``loss_name`` because ``loss`` is its method
    # computing J; a plain description may carry the name as ``loss``.
    name = getattr(net, "loss_name", None)
    return name if name is not None else net.loss


def _check(net, params):
    L = net.n_layers
    if tuple(params.sizes) != tuple(net.sizes) or tuple(params.bias) != tuple(net.bias):
        raise ValueError(
            f"params layout (sizes={params.sizes}, bias={params.bias}) does not match "
            f"the network (sizes={tuple(net.sizes)}, bias={tuple(net.bias)})"
        )
    if len(net.activations) != L:
        raise ValueError(f"expected {L} activations, got {len(net.activations)}")
    for name in net.activations:
        if name not in _ACTIVATION_NAMES:
            raise ValueError(f"unknown activation {name!r}")
    loss_name = _loss_name(net)
    if loss_name not in _LOSS_OUTPUT:
        raise ValueError(f"unknown loss {loss_name!r}")
    required = _LOSS_OUTPUT[loss_name]
    if required is not None and net.activations[-1] != required:
        raise ValueError(f"loss {loss_name!r} needs a {required!r} output layer")
    if net.reduction not in ("mean", "sum"):
        raise ValueError(f"unknown reduction {net.reduction!r}")


def _inputs(net, params, X):
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != net.sizes[0]:
        raise ValueError(f"X must have shape (N, {net.sizes[0]}), got {X.shape}")
    return X.astype(params.flat.dtype, copy=False)


def targets(net, Y, N, dtype):
    """Targets as an (N, n_L) matrix of ``dtype``.

    Integer class labels of shape (N,) become one-hot rows for cross_entropy;
    any other (N,) vector is the single output column when n_L == 1.
    """
    n_L = net.sizes[-1]
    Y = np.asarray(Y)
    if Y.ndim == 1 and _loss_name(net) == "cross_entropy" and np.issubdtype(Y.dtype, np.integer):
        if Y.shape[0] != N or (N and (Y.min() < 0 or Y.max() >= n_L)):
            raise ValueError(f"labels must have shape ({N},) and lie in 0..{n_L - 1}")
        onehot = np.zeros((N, n_L), dtype=dtype)
        onehot[np.arange(N), Y] = 1
        return onehot
    if Y.ndim == 1 and n_L == 1:
        Y = Y.reshape(-1, 1)
    if Y.shape != (N, n_L):
        raise ValueError(f"Y must have shape ({N}, {n_L}), got {Y.shape}")
    return Y.astype(dtype, copy=False)


# ---------------------------------------------------------------------------
# forward, loss, gradient
# ---------------------------------------------------------------------------


def _forward_all(net, params, A0):
    """Z^(l) and A^(l) for l = 1..L (index 0 of A is the input)."""
    Z, A = [None], [A0]
    for l in range(1, net.n_layers + 1):
        # Z = A W^T + b: row e is z^(l)(e)_i = sum_j W[i, j] a^(l-1)(e)_j + b_i
        z = A[l - 1] @ params.W[l].T
        if params.b[l] is not None:
            z += params.b[l]
        Z.append(z)
        A.append(_activate(net.activations[l - 1], z))
    return Z, A


def _per_example(w, v):
    """Row e of v times w_e (v unchanged without weights)."""
    return v if w is None else v * w.reshape((-1,) + (1,) * (v.ndim - 1))


def _weights(sample_weight, N, dtype):
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=dtype).reshape(-1)
    if w.shape != (N,) or not np.all(np.isfinite(w)) or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"sample_weight: expected {N} finite weights >= 0 with a positive "
                         "sum")
    return w


def _data_loss(net, z, a, Y, w=None):
    """Summed (not yet reduced) loss over all examples and output units, example e
    counted w_e times."""
    loss_name = _loss_name(net)
    if loss_name == "bce":
        # 000 eq. (1) written in the logits z = z^(L):
        # -[y ln s(z) + (1-y) ln(1-s(z))] = max(z, 0) - y z + ln(1 + e^-|z|),
        # finite for every z, where ln(a) and ln(1-a) would give -inf.
        return np.sum(_per_example(w, np.maximum(z, 0) - Y * z + np.log1p(np.exp(-np.abs(z)))))
    if loss_name == "cross_entropy":
        # 002 eq. (29) / 004 section 3: -sum y ln softmax(z), with ln softmax by
        # log-sum-exp (004: -z_i + log sum_j exp z_j).
        return -np.sum(_per_example(w, Y * _log_softmax(z)))
    if loss_name == "poisson":
        # Poisson negative log-likelihood of the mean a = e^z, less ln y!:
        # a - y ln a = e^z - y z
        return np.sum(_per_example(w, np.exp(z) - Y * z))
    # 002 eq. (5), 003: 1/2 sum (a - y)^2
    return 0.5 * np.sum(_per_example(w, (a - Y) ** 2))


def _output_delta(net, z, a, Y):
    """Delta^(L) = dJ/dZ^(L) of the summed loss (before the 1/N of the mean)."""
    loss_name = _loss_name(net)
    if loss_name == "bce":
        # 000 eq. (5a) x (5b): the a(1-a) cancels, leaving a - y  (000 eq. (6)).
        return a - Y
    if loss_name == "cross_entropy":
        # 002 eq. (31) / 004 eq. (1): sum_i y_i a_t - y_t, which is a - y when
        # each row of y sums to 1 (002 eq. (32)); kept exact for any y.
        return a * Y.sum(axis=1, keepdims=True) - Y
    if loss_name == "poisson":
        # d(e^z - y z)/dz = e^z - y = a - y
        return a - Y
    # sse: dJ/da = a - y (002 eq. (6), (23)), then back through f_L
    # (003 eq. (46) for the sigmoid; the full Jacobian for softmax).
    return _backward_through(net.activations[-1], z, a, a - Y)


def _l2_penalty(net, params):
    lam = params.flat.dtype.type(net.l2)
    if lam == 0:
        return lam
    # 004 section 9 with its squares restored: lambda/2 sum_l sum_ij W^(l)[i, j]^2
    return lam / 2 * sum(np.sum(W * W) for W in params.W)


def forward(net, params: Params, X) -> np.ndarray:
    """Network output a^(L) for every example.

    Parameters
    ----------
    net : Network
        Read through ``sizes``, ``n_layers``, ``activations``, ``loss_name``, ``bias``.
    params : Params
        Weights ``W[l]`` of shape (n_l, n_{l-1}) and biases ``b[l]`` (or None).
    X : array_like of shape (N, n_0)

    Returns
    -------
    ndarray of shape (N, n_L), dtype of ``params.flat``

    Notes
    -----
    Z^(l) = A^(l-1) W^(l)T + b^(l), A^(l) = f_l(Z^(l)): the rows of 000's
    z^(1) = w^(1)T x and z^(2) = w^(2)T a^(1), and of 002 eq. (1).
    """
    _check(net, params)
    _, A = _forward_all(net, params, _inputs(net, params, X))
    return A[-1]


def loss(net, params: Params, X, Y, *, sample_weight=None) -> float:
    """Loss J of the network on (X, Y).

    Parameters
    ----------
    net : Network
    params : Params
    X : array_like of shape (N, n_0)
    Y : array_like of shape (N, n_L), or (N,)
        (N,) holds integer class labels for cross_entropy, or the single output
        column when n_L == 1.
    sample_weight : array_like of shape (N,), optional
        w_e >= 0 (sum > 0): the loss of example e counts w_e times.

    Returns
    -------
    float
        J = (1/N if reduction == "mean" else 1) * sum_e loss(e)
        + l2/2 * sum_l sum_ij W^(l)[i, j]^2; with weights
        (1/sum_e w_e if "mean" else 1) * sum_e w_e loss(e) + the same L2 term.

    Notes
    -----
    bce: 000 eq. (1); cross_entropy: 002 eq. (29), 004 section 2; sse: 002 eq. (5);
    poisson: e^z - y z per output (the negative log-likelihood less ln y!).
    The L2 term (004 section 9) is added once, not divided by N.
    """
    _check(net, params)
    A0 = _inputs(net, params, X)
    N = A0.shape[0]
    Z, A = _forward_all(net, params, A0)
    Y = targets(net, Y, N, A0.dtype)
    w = _weights(sample_weight, N, A0.dtype)
    J = _data_loss(net, Z[-1], A[-1], Y, w)
    if net.reduction == "mean":
        J = J / (N if w is None else w.sum())
    return float(J + _l2_penalty(net, params))


def loss_and_grad(net, params: Params, X, Y, *, input_grad: bool = False, sample_weight=None):
    """Loss and its exact gradient by backpropagation in matrix form.

    Parameters
    ----------
    net : Network
    params : Params
    X : array_like of shape (N, n_0)
    Y : array_like of shape (N, n_L), or (N,) (see ``loss``)
    input_grad : bool
        Also return dJ/dX.
    sample_weight : array_like of shape (N,), optional
        As for ``loss``: row e of Delta^(L) is scaled by w_e (and the mean
        divides by sum_e w_e instead of N).

    Returns
    -------
    loss : float
    grads : Params
        Same layout and dtype as ``params``: ``grads.W[l]`` = dJ/dW^(l) of shape
        (n_l, n_{l-1}), ``grads.b[l]`` = dJ/db^(l) of shape (n_l,).
    dX : ndarray of shape (N, n_0)
        Only with ``input_grad=True``: row e is dJ/dx(e) (including the 1/N of
        the mean reduction, since J includes it).

    Notes
    -----
    Delta^(L) is a - y for sigmoid+bce (000 eq. (6)) and softmax+cross_entropy
    (002 eq. (31), 004 eq. (1)); (a - y) * f'(z) for sse (003 eq. (46)), or the
    softmax Jacobian of 002 eq. (30) applied to a - y.  Then, from l = L down
    (002 Table 1)::

        dJ/dW^(l) = Delta^(l)T A^(l-1) + lambda W^(l)   000 eq. (8), (14); 004 eq. (3), (5), (8), (9)
        dJ/db^(l) = sum over rows of Delta^(l)           004 eq. (2), (6); 002 eq. (27)
        Delta^(l-1) = (Delta^(l) W^(l)) * f'(Z^(l-1))    000 eq. (15) with (12b); 004 eq. (4)
        dJ/dX = Delta^(1) W^(1)                           004 eq. (7); 002 eq. (25)
    """
    _check(net, params)
    A0 = _inputs(net, params, X)
    N = A0.shape[0]
    dtype = A0.dtype
    Z, A = _forward_all(net, params, A0)
    Y = targets(net, Y, N, dtype)
    L = net.n_layers

    w = _weights(sample_weight, N, dtype)
    J = _data_loss(net, Z[L], A[L], Y, w)
    delta = _per_example(w, _output_delta(net, Z[L], A[L], Y))
    if net.reduction == "mean":
        # The 1/|Sx| of 000 eq. (1) carried by the deltas, so every gradient below
        # is already a mean over the examples (000 eq. (7), (13)); the weighted
        # mean divides by sum_e w_e.
        total = N if w is None else w.sum()
        J = J / total
        delta = delta / dtype.type(total)
    J = J + _l2_penalty(net, params)

    grads = Params.zeros(net.sizes, net.bias, dtype=dtype)
    lam = dtype.type(net.l2)
    dX = None
    for l in range(L, 0, -1):
        W = params.W[l]
        # 000 eq. (8) / (14): the sum over examples of delta_i(e) a_j(e)
        grads.W[l][...] = delta.T @ A[l - 1] + lam * W
        if grads.b[l] is not None:
            grads.b[l][...] = delta.sum(axis=0)
        # (Delta W)[e, j] = sum_i delta_i(e) W[i, j]: dJ/da^(l-1)(e)_j (000 eq. (15))
        g = delta @ W
        if l > 1:
            delta = _backward_through(net.activations[l - 2], Z[l - 1], A[l - 1], g)
        elif input_grad:
            dX = g
    if input_grad:
        return float(J), grads, dX
    return float(J), grads
