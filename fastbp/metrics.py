"""Quality measures of predictions (NumPy only, no scikit-learn)."""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy"]


def accuracy(y_true, y_pred) -> float:
    """Fraction of examples predicted exactly right.

    Parameters
    ----------
    y_true : array_like of shape (N,) or (N, n_L)
        Labels, or one-hot rows (converted to labels by argmax when ``y_pred`` is 1-D),
        or 0/1 indicator rows (multi-output ``bce``: a row counts as right when every
        entry matches).
    y_pred : array_like of shape (N,) or (N, n_L)
        As returned by ``Network.predict``.

    Returns
    -------
    float
        In [0, 1].
    """
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.ndim == 2 and p.ndim == 1:
        # one column: 0/1 targets of a single output; several: one-hot rows
        t = t[:, 0] if t.shape[1] == 1 else t.argmax(axis=1)
    if t.ndim not in (1, 2) or t.shape != p.shape:
        raise ValueError(f"y_true, y_pred: shapes {t.shape} and {p.shape} do not match")
    if t.shape[0] == 0:
        raise ValueError("y_true: no examples (N = 0)")
    right = t == p if t.ndim == 1 else (t == p).all(axis=1)
    return float(np.mean(right))
