"""Output heads: the output layer and loss each kind of target takes, and the
encoding of class labels as that head's targets.

One table, shared by ``Network``'s targets check, the command line and the
scikit-learn estimators, so a kind of target gets the same network
everywhere (001's binary network, 000's multi-label one, 002's softmax one).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# kind of target -> (output activation, loss)
HEADS = {
    "classes": ("softmax", "cross_entropy"),  # one of n classes: a softmax over n units
    "binary": ("sigmoid", "bce"),  # one of two classes: one unit, P(the second class)
    "labels": ("sigmoid", "bce"),  # n yes/no labels (multi-label indicators): n units
    "values": ("identity", "sse"),  # n real outputs (regression)
    "counts": ("exp", "poisson"),  # n counts or rates >= 0 (Poisson regression)
}

# loss -> the kind of target it takes by default when n classes/outputs are known
_KIND_OF_LOSS = {"cross_entropy": "classes", "bce": "binary", "sse": "values",
                 "poisson": "counts"}


class Head(NamedTuple):
    """The output layer of a network for a kind of target."""

    n_out: int
    activation: str
    loss: str


def head(kind: str, n: int) -> Head:
    """The head for ``n`` classes (``"classes"``, ``"binary"``: n = 2), labels or
    outputs of a kind of target."""
    activation, loss = HEADS[kind]
    return Head(1 if kind == "binary" else n, activation, loss)


def head_for_loss(loss: str, n: int) -> Head:
    """The head a loss gives ``n`` classes (cross_entropy: n units; bce: two
    classes as one unit) or outputs (sse)."""
    return head(_KIND_OF_LOSS[loss], n)


def encode_classes(codes: np.ndarray, h: Head, dtype) -> np.ndarray:
    """Integer class codes 0..n-1 of shape (N,) as the targets of head ``h``:
    one-hot rows (N, n) for a softmax head, the 0/1 column (N, 1) of a binary
    one (code 1 is the positive class)."""
    codes = np.asarray(codes)
    N = codes.shape[0]
    if h.activation == "softmax":
        from ._core import check_memory  # the core imports nothing of the front end's

        # N rows of n_out values from N labels: checked before it is made
        check_memory(f"Y: the one-hot rows of {N} class labels over {h.n_out} classes",
                     N * h.n_out * np.dtype(dtype).itemsize)
        Y = np.zeros((N, h.n_out), dtype=dtype)
        Y[np.arange(N), codes.astype(np.intp)] = 1
        return Y
    return codes.astype(dtype).reshape(N, 1)
