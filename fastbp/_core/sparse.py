"""A sparse first layer: the loops of layer 1 over the nonzeros of a CSR input.

For a CSR matrix X (row e's nonzeros x_j(e) at ``data[p]``, column
``indices[p]``, p in ``indptr[e] .. indptr[e + 1] - 1``) the only products that
touch X are those of layer 1, and both run over the nonzeros alone:

    z^(1)_i(e) = sum over e's nonzero j of W^(1)[i, j] x_j(e) + b^(1)_i
    dJ/dW^(1)[i, j] = sum over the e with a nonzero x_j(e) of delta^(1)_i(e) x_j(e)

(000 eq. before (1) and eq. (8); 004 sections 5 and eq. (5), restricted to the
nonzero terms).  Layers 2..L are the dense kernels' (the plan of the network
without its first layer, whose input is a^(1) and whose input gradient is
dJ/da^(1)); ``Plan.sparse_loss_and_grad`` and its siblings chain the two.

Both loops are serial and sum in a fixed order (examples in order, each
example's nonzeros in order): the bits do not depend on the thread count.  W^(1)
is read transposed (``WT[j, i]``, contiguous in i), so each nonzero adds a
contiguous run of n_1 products, which vectorizes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .config import ERROR_MODEL, FASTMATH
from .functions import activate, derivative_from_a
from .memory import check_memory


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def first_layer_forward(indptr, indices, data, WT, b, has_bias, act, A):
    """A[e, i] = f(z^(1)_i(e)), z^(1)_i(e) = sum over e's nonzero j of WT[j, i] x_j(e)
    + b_i (b not read without ``has_bias``), for every row e of the CSR input.

    Parameters
    ----------
    indptr, indices, data : the CSR arrays of X, (N + 1,), (nnz,), (nnz,)
    WT : ndarray of shape (n_0, n_1)
        W^(1) transposed (in x out), C-contiguous.
    b : ndarray of shape (n_1,)
    act : int
        f_1's code (a hidden layer's: unit-wise).
    A : ndarray of shape (N, n_1)
        Output.
    """
    N = indptr.shape[0] - 1
    n_out = A.shape[1]
    zero = A.dtype.type(0)
    for e in range(N):
        z = A[e]
        for i in range(n_out):
            z[i] = b[i] if has_bias else zero
        # 000 eq. before (1) over the nonzeros: z_i += W[i, j] x_j
        for p in range(indptr[e], indptr[e + 1]):
            w = WT[indices[p]]
            v = data[p]
            for i in range(n_out):
                z[i] += w[i] * v
        for i in range(n_out):
            z[i] = activate(act, z[i])


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def first_layer_grad(indptr, indices, data, A, G, act, GT, db):
    """From G = dJ/da^(1) (N, n_1): delta^(1) = f'(z^(1)) G in place (004 eq. (4),
    written from a = f(z)), then GT[j, i] = sum_e delta^(1)_i(e) x_j(e) over the
    nonzeros (dJ/dW^(1) transposed, 000 eq. (8), 004 eq. (5)) and
    db[i] = sum_e delta^(1)_i(e) (004 eq. (6)); GT and db are overwritten."""
    N = indptr.shape[0] - 1
    n_out = A.shape[1]
    zero = GT.dtype.type(0)
    for j in range(GT.shape[0]):
        for i in range(n_out):
            GT[j, i] = zero
    for i in range(n_out):
        db[i] = zero
    for e in range(N):
        d = G[e]
        a = A[e]
        for i in range(n_out):
            d[i] *= derivative_from_a(act, a[i])
        for i in range(n_out):
            db[i] += d[i]
        for p in range(indptr[e], indptr[e + 1]):
            g = GT[indices[p]]
            v = data[p]
            for i in range(n_out):
                g[i] += d[i] * v


# ---------------------------------------------------------------- the chain


class SparseInput:
    """A CSR input as the loops take it: int64 ``indptr`` and ``indices``,
    ``data`` of the plan's dtype (new arrays: the caller's matrix is never
    touched), and its shape."""

    __slots__ = ("data", "indices", "indptr", "shape")

    def __init__(self, indptr, indices, data, shape):
        self.indptr, self.indices, self.data, self.shape = indptr, indices, data, shape


def rest_plan(plan):
    """The plan of layers 2..L of ``plan``'s network (input a^(1)): the dense
    part of the chain."""
    from .kernels import ACT, B_OFF
    from .plan import plan_for  # plan imports the kernels this module's users load first

    lay = plan.layout
    codes = [int(c) for c in lay[1:, ACT]]
    bias = [bool(b >= 0) for b in lay[1:, B_OFF]]
    return plan_for(plan.sizes[1:], codes, bias, plan.loss_code, plan.mean, plan.l2,
                    plan.dtype, plan._row_sum_tol / plan.sizes[-1])


def _first_layer(plan, theta):
    """(W^(1), W^(1)T contiguous, b^(1) or zeros, has_bias, f_1's code, where layer 2
    starts in theta)."""
    from .kernels import ACT, B_OFF, N_IN, N_OUT, W_OFF

    lay = plan.layout[0]
    n_in, n_out, w_off, b_off = int(lay[N_IN]), int(lay[N_OUT]), int(lay[W_OFF]), int(lay[B_OFF])
    W = theta[w_off:w_off + n_out * n_in].reshape(n_out, n_in)
    b = theta[b_off:b_off + n_out] if b_off >= 0 else np.zeros(n_out, theta.dtype)
    return W, np.ascontiguousarray(W.T), b, b_off >= 0, int(lay[ACT]), int(plan.layout[1, W_OFF])


def _check_memory(plan, N, grad):
    """The first layer's arrays (a^(1), W^(1)T, and with ``grad`` its gradient
    and the gradient vector) checked against the memory available before any
    is allocated: the dense layers check theirs only after a^(1) is made."""
    from .kernels import N_IN, N_OUT

    lay = plan.layout[0]
    n_in, n_out = int(lay[N_IN]), int(lay[N_OUT])
    values = N * n_out + n_in * n_out + (n_in * n_out + n_out + plan.n_params if grad else 0)
    check_memory(f"the sparse first layer of a batch of {N} examples",
                 values * plan.dtype.itemsize)


def _activations(plan, theta, X, grad=False):
    _check_memory(plan, X.shape[0], grad)
    W, WT, b, has_bias, act, start = _first_layer(plan, theta)
    A = np.empty((X.shape[0], W.shape[0]), plan.dtype)
    first_layer_forward(X.indptr, X.indices, X.data, WT, b, has_bias, act, A)
    return A, W, act, start


def forward(plan, rest, theta, X):
    """a^(L) for a sparse X: the sparse first layer, then ``rest``'s forward pass."""
    A, _, _, start = _activations(plan, theta, X)
    return rest.forward(theta[start:], A)


def loss(plan, rest, theta, X, Y, weights=None) -> float:
    """J for a sparse X (``rest``'s J on a^(1) plus the L2 term of W^(1))."""
    A, W, _, start = _activations(plan, theta, X)
    J = rest.loss(theta[start:], A, Y, weights)
    return J + 0.5 * plan.l2 * float(np.sum(W * W, dtype=np.float64)) if plan.l2 else J


def loss_and_grad(plan, rest, theta, X, Y, weights=None):
    """(J, dJ/dtheta) for a sparse X: a^(1) from the sparse loop, then ``rest``'s
    loss, gradient and input gradient G = dJ/da^(1), then delta^(1) and the first
    layer's gradients over the nonzeros (``first_layer_grad``), and the L2 term
    of W^(1) (004 section 9: J += l2/2 sum W^2, dJ/dW += l2 W)."""
    A, W, act, start = _activations(plan, theta, X, grad=True)
    J, g_rest, G = rest.loss_and_grad(theta[start:], A, Y, True, weights)
    n_out, n_in = W.shape
    GT = np.empty((n_in, n_out), plan.dtype)
    db = np.empty(n_out, plan.dtype)
    first_layer_grad(X.indptr, X.indices, X.data, A, G, act, GT, db)
    grad = np.empty(plan.n_params, plan.dtype)
    dW = grad[:n_out * n_in].reshape(n_out, n_in)
    dW[...] = GT.T
    if plan.l2:
        dW += plan.dtype.type(plan.l2) * W
        J += 0.5 * plan.l2 * float(np.sum(W * W, dtype=np.float64))
    if start > n_out * n_in:
        grad[n_out * n_in:start] = db
    grad[start:] = g_rest
    return J, grad
