"""The one table of test cases, written by hand without importing the tables
under test (fastbp's activation, loss and pair tables are compared WITH it in
test_cases.py, so a pair the library gains or drops shows up there, never as
silently lost coverage).  It drives the kernel, reference, determinism and
``fastbp check`` tests.

``Spec`` carries exactly the public attributes of ``fastbp.Network`` that
``fastbp.reference`` reads (the loss's name is ``loss_name``, as on Network), so the reference can be tested on its own, without
the compiled core.  ``random_problem`` draws parameters and data kept away from
ReLU kinks, where finite differences are meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fastbp.params import Params, n_params

# activations of hidden layers, and every valid (output activation, loss) pair
HIDDEN_ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu")
OUTPUT_PAIRS = (
    ("sigmoid", "bce"),
    ("softmax", "cross_entropy"),
    ("identity", "sse"),
    ("sigmoid", "sse"),
    ("tanh", "sse"),
    ("relu", "sse"),
    ("softmax", "sse"),
    ("exp", "sse"),
    ("exp", "poisson"),
)

LOSSES = ("sse", "bce", "cross_entropy", "poisson")
REDUCTIONS = ("mean", "sum")
DTYPES = ("float64", "float32")
# agreement with the reference, per dtype
RTOL = {"float64": 1e-10, "float32": 1e-4}

# Networks whose gradients must be bit-identical for any thread count and
# driver: (sizes, activations, loss, N), each big enough for the parallel path
# with the threshold at 0, with widths that leave partial register tiles.
DETERMINISM_CASES = (
    ([13, 37, 19, 5], ["tanh", "relu", "softmax"], "cross_entropy", 203),
    ([9, 33, 3], ["sigmoid", "sigmoid"], "bce", 157),
    ([7, 30, 30, 2], ["relu", "tanh", "identity"], "sse", 301),
    ([8, 29, 3], ["tanh", "exp"], "poisson", 171),
)


@dataclass(frozen=True)
class Spec:
    """The hyper-parameters of a network, with ``fastbp.Network``'s attribute names."""

    sizes: tuple
    activations: tuple
    loss_name: str
    reduction: str = "mean"
    l2: float = 0.0
    bias: tuple = ()
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float64))

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1


def spec(sizes, activations, loss, *, reduction="mean", l2=0.0, bias=True, dtype="float64"):
    L = len(sizes) - 1
    if isinstance(activations, str):
        activations = (activations,) * L
    bias = (bool(bias),) * L if isinstance(bias, bool) else tuple(bool(f) for f in bias)
    return Spec(tuple(sizes), tuple(activations), loss, reduction, float(l2), bias, np.dtype(dtype))


def random_targets(net, rng, N):
    """Targets valid for the loss: soft labels in (0, 1) for bce, integer labels
    for cross_entropy, unbounded reals for sse."""
    n_L = net.sizes[-1]
    if net.loss_name == "bce":
        return rng.uniform(0.0, 1.0, size=(N, n_L))
    if net.loss_name == "cross_entropy":
        return rng.integers(0, n_L, size=N)
    if net.loss_name == "poisson":
        return rng.poisson(1.5, size=(N, n_L)).astype(np.float64)
    return rng.normal(size=(N, n_L))


def kink_margin(net, params, X):
    """Smallest |z| over the relu units that can move (inf if none)."""
    margin = np.inf
    a = np.asarray(X, dtype=np.float64)
    for l in range(1, net.n_layers + 1):
        z = a @ params.W[l].T.astype(np.float64)
        if params.b[l] is not None:
            z = z + params.b[l]
        name = net.activations[l - 1]
        if name == "relu":
            # z is exactly 0, whatever the parameters, for an example whose input to
            # a bias-free layer is all zeros (every relu unit below it is off):
            # the differences see a flat 0 on both sides there, not a kink.
            live = np.any(a != 0, axis=1) | (params.b[l] is not None)
            if live.any():
                margin = min(margin, float(np.abs(z[live]).min()))
            a = np.maximum(z, 0)
        elif name == "sigmoid":
            a = 1 / (1 + np.exp(-z))
        elif name == "tanh":
            a = np.tanh(z)
        elif name == "exp":
            a = np.exp(z)
        elif name == "softmax":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            a = e / e.sum(axis=1, keepdims=True)
        else:
            a = z
    return margin


def random_problem(net, seed, N=5, margin=1e-2):
    """Params, X, Y for ``net``; redrawn until every relu z is >= margin from 0."""
    rng = np.random.default_rng(seed)
    for _ in range(200):
        flat = np.empty(n_params(net.sizes, net.bias))
        params = Params(net.sizes, net.bias, flat)
        for l in range(1, net.n_layers + 1):
            n_in = net.sizes[l - 1]
            params.W[l][...] = rng.normal(scale=1.5 / np.sqrt(n_in), size=params.W[l].shape)
            if params.b[l] is not None:
                params.b[l][...] = rng.normal(scale=0.5, size=params.b[l].shape)
        X = rng.normal(size=(N, net.sizes[0]))
        if kink_margin(net, params, X) >= margin:
            return params, X, random_targets(net, rng, N)
    raise RuntimeError("could not draw a problem away from the ReLU kinks")
