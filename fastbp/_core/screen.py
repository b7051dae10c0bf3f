"""The compiled input screen: one pass that says whether inputs already in the
kernels' form are valid, so a call whose inputs are clean skips the NumPy
checks of the front end (which find and name the culprit when they are not).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .functions import BCE, CROSS_ENTROPY, POISSON
from .numba_private import NO_REFCOUNT


@njit(cache=True, **NO_REFCOUNT)
def inputs_clean(theta, X, Y, loss_code, tol):
    """True when theta, X and Y are all finite and Y are valid targets for
    ``loss_code``: one compiled pass in place of a NumPy pass per check.

    It screens; it does not explain: a False sends the caller to the
    front end's checks (``fastbp._checks``), which find the culprit and
    raise their message.  So it must never accept what they refuse, and may
    refuse a borderline case they accept: the row sums of cross_entropy targets
    are held to half the tolerance the targets check allows (``tol`` is its
    per-dtype tolerance times n_out), which covers any difference in the
    rounding of the sum.

    Every test is a comparison folded into a flag, with no early exit and no
    float reduction, so the loops vectorize without any fastmath flag (a
    non-finite v is the one where v - v is not 0).
    """
    ok = True
    for k in range(theta.shape[0]):
        v = theta[k]
        ok &= v - v == 0
    for e in range(X.shape[0]):
        for j in range(X.shape[1]):
            v = X[e, j]
            ok &= v - v == 0
    for e in range(Y.shape[0]):
        for k in range(Y.shape[1]):
            v = Y[e, k]
            ok &= v - v == 0
    if not ok:
        return False
    if loss_code == BCE:
        for e in range(Y.shape[0]):
            for k in range(Y.shape[1]):
                ok &= (Y[e, k] >= 0) & (Y[e, k] <= 1)
    elif loss_code == POISSON:
        for e in range(Y.shape[0]):
            for k in range(Y.shape[1]):
                ok &= Y[e, k] >= 0
    elif loss_code == CROSS_ENTROPY:
        for e in range(Y.shape[0]):
            s = 0.0
            for k in range(Y.shape[1]):
                ok &= Y[e, k] >= 0
                s += np.float64(Y[e, k])
            ok &= abs(s - 1.0) <= 0.5 * tol
    return ok
