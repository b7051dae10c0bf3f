"""Checks and conversions at the edge: every message names the argument and the
problem, and everything is raised before any compiled work starts.

Nothing here modifies the caller's arrays: conversions return new arrays, and
arrays that already have the right dtype and layout are used read-only.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .functions import BCE, CROSS_ENTROPY


def as_float_matrix(name: str, A, n_cols: int, dtype: np.dtype) -> np.ndarray:
    """A 2-D C-contiguous array of ``dtype`` with ``n_cols`` columns, all finite."""
    A = np.asarray(A)
    if A.dtype.kind != "f":
        raise TypeError(
            f"{name}: dtype must be a floating type, got {A.dtype}"
            f" (convert with {name}.astype(float))"
        )
    if A.ndim != 2:
        hint = f"; for one example use {name}.reshape(1, -1)" if A.ndim == 1 else ""
        raise ValueError(f"{name}: expected a 2-D array (N, {n_cols}), got shape {A.shape}{hint}")
    if A.shape[0] == 0:
        raise ValueError(f"{name}: no examples (N = 0)")
    if A.shape[1] != n_cols:
        raise ValueError(f"{name}: expected {n_cols} columns, got shape {A.shape}")
    A = np.ascontiguousarray(A, dtype=dtype)
    check_finite(name, A)
    return A


def check_finite(name: str, A: np.ndarray) -> None:
    # One reduction instead of isfinite + all (and no boolean temporary): a NaN or
    # inf anywhere makes the sum NaN or inf; a sum that overflows from finite
    # values alone falls through to the exact elementwise test.
    if math.isfinite(A.sum()):
        return
    if not np.isfinite(A).all():
        bad = np.argwhere(~np.isfinite(A))[0]
        where = ", ".join(str(int(k)) for k in bad)
        raise ValueError(f"{name}: contains NaN or inf (first at [{where}])")


def as_targets(Y, N: int, n_out: int, loss: str, dtype: np.dtype) -> np.ndarray:
    """Targets as an (N, n_out) C-contiguous float array, validated for ``loss``.

    Accepted forms: (N, n_out) floats; for cross_entropy integer class labels of
    shape (N,) (converted to one-hot rows); (N,) floats when n_out == 1.
    """
    Y = np.asarray(Y)
    if Y.dtype.kind in "iub" and loss == "cross_entropy":
        if Y.ndim != 1:
            raise ValueError(
                f"Y: integer class labels must be 1-D (N,) = ({N},), got shape {Y.shape}"
            )
        if Y.shape[0] != N:
            raise ValueError(f"Y: expected {N} labels (one per row of X), got {Y.shape[0]}")
        if Y.size and (Y.min() < 0 or Y.max() >= n_out):
            bad = Y[(Y < 0) | (Y >= n_out)][0]
            raise ValueError(
                f"Y: class label {int(bad)} out of range: labels must be in 0..{n_out - 1}"
            )
        onehot = np.zeros((N, n_out), dtype=dtype)
        onehot[np.arange(N), Y.astype(np.intp)] = 1
        return onehot
    if Y.dtype.kind != "f":
        what = "floating (or integer class labels for cross_entropy)"
        raise TypeError(f"Y: dtype must be {what}, got {Y.dtype}")
    if Y.ndim == 1 and n_out == 1:
        Y = Y.reshape(-1, 1)
    if Y.ndim != 2 or Y.shape != (N, n_out):
        raise ValueError(f"Y: expected shape ({N}, {n_out}), got {Y.shape}")
    Y = np.ascontiguousarray(Y, dtype=dtype)
    check_finite("Y", Y)
    if loss == "bce" and (Y.min() < 0 or Y.max() > 1):
        raise ValueError("Y: bce targets must lie in [0, 1]")
    if loss == "cross_entropy":
        if (Y < 0).any():
            raise ValueError("Y: cross_entropy target rows must be distributions (no negative entries)")
        tol = 1e-4 if dtype == np.float32 else 1e-8
        sums = Y.sum(axis=1, dtype=np.float64)
        bad = np.flatnonzero(np.abs(sums - 1.0) > tol * n_out)
        if bad.size:
            raise ValueError(
                f"Y: cross_entropy target rows must sum to 1; row {int(bad[0])} sums to"
                f" {sums[bad[0]]:.6g}"
            )
    return Y


def as_float_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype: not a NumPy dtype: {dtype!r}") from e
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype: must be float32 or float64, got {dt}")
    return dt


# Tolerance on the row sums of cross_entropy target distributions, per dtype.
ROW_SUM_TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-8}


@njit(cache=True, _nrt=False)
def inputs_clean(theta, X, Y, loss_code, tol):
    """True when theta, X and Y are all finite and Y are valid targets for
    ``loss_code``: one compiled pass in place of a NumPy pass per check.

    It screens; it does not explain: a False sends the caller to the
    checks above (``check_finite``, ``as_targets``), which find the culprit and
    raise their message.  So it must never accept what they refuse, and may
    refuse a borderline case they accept: the row sums of cross_entropy targets
    are held to half the tolerance ``as_targets`` allows (``tol`` is its
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
    elif loss_code == CROSS_ENTROPY:
        for e in range(Y.shape[0]):
            s = 0.0
            for k in range(Y.shape[1]):
                ok &= Y[e, k] >= 0
                s += np.float64(Y[e, k])
            ok &= abs(s - 1.0) <= 0.5 * tol
    return ok
