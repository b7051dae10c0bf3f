"""Finite-difference check of the reference gradient.

Central differences of the reference loss are a third oracle, independent of both
the compiled kernels and the backpropagation algebra: they use nothing but the
definition of J.
"""

from __future__ import annotations

import numpy as np

from . import reference
from ._checks import Bool, Real, as_float_matrix, as_sample_weight, as_targets, check_finite
from .params import Params, as_flat, n_params

__all__ = ["gradcheck"]

# Floor of the relative error's denominator, as a fraction of the largest
# gradient entry compared (see the docstring of ``gradcheck``).
_FLOOR = 1e-4


def _central_differences(f, x, eps):
    """Fourth-order central differences of f() in every entry of ``x``.

    d_k = (8 [f(x + h e_k) - f(x - h e_k)] - [f(x + 2h e_k) - f(x - 2h e_k)]) / (12 h),
    h the power of two nearest eps * max(1, |x_k|): x_k +- h and x_k +- 2h are
    then (almost always) exact, so the step taken is the step divided by.
    ``x`` is modified in place and restored entry by entry.
    """
    flat = x.reshape(-1)
    fd = np.empty(flat.shape, dtype=np.float64)
    for k in range(flat.shape[0]):
        x_k = flat[k]
        h = 2.0 ** np.round(np.log2(eps * max(1.0, abs(x_k))))
        values = []
        for step in (h, -h, 2 * h, -2 * h):
            flat[k] = x_k + step
            values.append(f())
        flat[k] = x_k
        f_p1, f_m1, f_p2, f_m2 = values
        fd[k] = (8 * (f_p1 - f_m1) - (f_p2 - f_m2)) / (12 * h)
    return fd.reshape(x.shape)


def gradcheck(
    net, params: Params, X, Y, *, eps: float | None = None, input_grad: bool = False,
    sample_weight=None,
) -> float:
    """Worst relative error between the reference gradient and finite differences.

    Parameters
    ----------
    net : Network
        Its hyper-parameters (sizes, activations, loss, reduction, l2, bias) are
        used; its dtype is not: everything is computed in float64.
    params : Params
        The point theta at which the gradient is checked (converted to float64).
    X : array_like of shape (N, n_0)
    Y : array_like of shape (N, n_L), or (N,) (as for ``Network.loss``)
    eps : float, optional
        Relative step: the step for entry k is the power of two nearest
        ``eps * max(1, |theta_k|)``.  Default 1e-4: with the fourth-order stencil
        the truncation error O(h^4 J^(5)) is about 1e-16 and the rounding error
        O(machine eps * |J| / h) about 1e-12 |J|.
    input_grad : bool
        Also check dJ/dX against differences in each entry of X.
    sample_weight : array_like of shape (N,), optional
        The examples' weights (as for ``Network.loss_and_grad``).

    Returns
    -------
    float
        ``max_k |g_k - d_k| / max(|g_k|, |d_k|, floor)`` over every parameter (and
        every input entry with ``input_grad=True``), where g is the analytic
        gradient of ``fastbp.reference.loss_and_grad`` and d the finite
        difference, and ``floor = 1e-4 * max(max_k |g_k|, max_k |d_k|, |J|)``
        (1e-300 if all are zero).  Entries far below that scale are judged by
        their absolute error relative to it: an exactly-zero entry (a dead ReLU
        unit, say) or a gradient much smaller than the loss (near a minimum)
        would otherwise turn the differences' rounding noise, about
        1e-12 |J|, into a large relative error.  So a result below ``tol`` means
        every entry is right to ``tol`` relative, or to ``1e-4 * tol * scale``
        absolute.  A correct gradient of a smooth loss gives about 1e-8 or less;
        an error in any entry above that absolute level shows in full.

    Notes
    -----
    d_k = (8 [J(theta + h e_k) - J(theta - h e_k)]
           - [J(theta + 2h e_k) - J(theta - 2h e_k)]) / (12 h),
    the fourth-order central difference, error O(h^4).  Across a ReLU kink (a z
    within about 2h of 0) the difference mixes both slopes and the check is not
    meaningful: keep test data away from kinks.
    """
    eps = 1e-4 if eps is None else Real(0.0, 0.1, open_ends=("low",))("eps", eps)
    Bool()("input_grad", input_grad)
    if not isinstance(params, Params):
        raise TypeError(f"params: expected fastbp.Params, got {type(params).__name__}")
    if params.sizes != tuple(net.sizes) or params.bias != tuple(net.bias):
        raise ValueError(f"params: built for sizes {list(params.sizes)}, bias "
                         f"{list(params.bias)}; the network has sizes {list(net.sizes)}, bias "
                         f"{list(net.bias)}")
    theta = Params(params.sizes, params.bias, as_flat("params.flat", params.flat,
                                                      n_params(params.sizes, params.bias)))
    theta = theta.astype(np.float64)
    check_finite("params", theta.flat)
    # a copy (differences perturb it in place), 2-D, finite
    X64 = as_float_matrix("X", X, net.sizes[0], np.dtype(np.float64)).copy()
    # labels -> one-hot once, so the differences perturb only theta and X
    Y64 = as_targets(Y, X64.shape[0], net.sizes[-1], net.loss_name, np.dtype(np.float64))

    w = as_sample_weight(sample_weight, X64.shape[0], np.dtype(np.float64))

    def J():
        return reference.loss(net, theta, X64, Y64, sample_weight=w)

    result = reference.loss_and_grad(net, theta, X64, Y64, input_grad=input_grad,
                                     sample_weight=w)
    analytic = [result[1].flat]
    numeric = [_central_differences(J, theta.flat, eps)]
    if input_grad:
        analytic.append(result[2].reshape(-1))
        numeric.append(_central_differences(J, X64, eps).reshape(-1))
    g = np.concatenate(analytic)
    d = np.concatenate(numeric)
    if g.size == 0:
        return 0.0
    # The differences' rounding error is about machine eps * |J| / h, whatever the
    # size of the gradient, so the floor follows |J| as well as the gradient.
    scale = max(np.max(np.abs(g)), np.max(np.abs(d)), abs(result[0]))
    floor = _FLOOR * scale if scale > 0 else 1e-300
    denom = np.maximum(np.maximum(np.abs(g), np.abs(d)), floor)
    return float(np.max(np.abs(g - d) / denom))
