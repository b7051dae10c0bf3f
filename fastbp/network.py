"""``Network``: an immutable description of an MLP and its loss.

A network is a description (layer widths, activations, loss, reduction, l2, bias
flags, dtype); its parameters are data (``fastbp.params.Params``).  Every method
validates and converts its inputs here, then makes ONE call into the compiled
core through the network's plan (``fastbp._core.Plan``): the plan of its
description, shared by every equal network, which holds whatever the core keeps
between calls (layout table, scratch buffers, launch policy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _core
from ._checks import (
    ROW_SUM_TOL,
    Real,
    as_float_dtype,
    as_float_matrix,
    as_sample_weight,
    as_sparse_rows,
    as_targets,
    check_finite,
    convert,
    dense_copy,
    is_sparse,
    widths,
)
from ._core import (
    ACTIVATIONS,
    LAST_LAYER_ONLY,
    LOSSES,
    OUTPUT_ACTIVATIONS,
    REDUCTIONS,
    check_memory,
)
from .params import Params, as_flat, layer_offsets

LAYOUTS = ("out_in", "in_out", "bias_column")
# The largest parameter vector (in bytes) a network may describe: far beyond any
# machine's memory, and every offset into it fits the kernels' int64 indices.
_MAX_BYTES = 2**48
# Values ``init`` draws at a time: its float64 scratch stays small.
_DRAW = 1 << 16
# code -> name, for the description's names (the plan holds codes)
_ACTIVATION_NAMES = {code: name for name, code in ACTIVATIONS.items()}
_LOSS_NAMES = {code: name for name, code in LOSSES.items()}


class Network:
    """A fully connected network and its loss.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``[n_0, n_1, ..., n_L]`` (input first), L >= 1, each >= 1.
    activations : str or sequence of str
        f_l for l = 1..L: one name for every layer or a list of L names among
        ``"identity"``, ``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"softmax"``
        (softmax acts on a whole layer: last layer only).
    loss : {"bce", "cross_entropy", "sse"}
        ``"bce"``: sum over output units of -[y ln a + (1 - y) ln(1 - a)], sigmoid
        output (000 eq. (1), 001).  ``"cross_entropy"``: -sum_k y_k ln a_k, softmax
        output (002 eq. (29), 004 section 2).  ``"sse"``: 1/2 sum_k (a_k - y_k)^2,
        any output activation (002 eq. (5), 003).
    reduction : {"mean", "sum"}, default "mean"
        Mean over the N examples (000, 001) or their sum (002, 003, 004).
    l2 : float, default 0.0
        lambda >= 0: J += lambda/2 * sum of W^2 over every weight, not the biases
        (004 section 9), added once whatever the reduction.
    bias : bool or sequence of bool, default True
        Whether each layer has a bias b^(l) (003's network has none).
    dtype : {"float64", "float32"}, default "float64"
        Dtype of the parameters and of every array the network returns.

    Attributes
    ----------
    sizes, activations, bias : tuple
        As given, normalized (one activation name and one bias flag per layer).
    loss_name : str
        The ``loss`` argument (``loss`` itself is the method computing J).
    reduction : str
    l2 : float
    dtype : numpy.dtype

    Notes
    -----
    z^(l)_i = sum_j W^(l)[i, j] a^(l-1)_j + b^(l)_i,  a^(l)_i = f_l(z^(l)_i),  a^(0) = x;
    W^(l) has shape (n_l, n_{l-1}) (out x in).  See ``shared/seeds/README.md``.
    """

    # The description lives in the plan, which the kernels run by: every
    # attribute below reads it, so no attribute can disagree with what the
    # kernels were made for (set with object.__setattr__, a width smaller than
    # the plan's let X rows of that width through, read beyond their end).
    __slots__ = ("_plan",)

    def __init__(self, sizes, activations, loss, *, reduction="mean", l2=0.0, bias=True,
                 dtype="float64"):
        sizes = widths("sizes", sizes)
        L = len(sizes) - 1
        activations = _check_activations(activations, L)
        if not isinstance(loss, str) or loss not in LOSSES:
            raise ValueError(f"loss: unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
        if activations[-1] not in OUTPUT_ACTIVATIONS[loss]:
            need = " or ".join(OUTPUT_ACTIVATIONS[loss])
            raise ValueError(
                f"loss: {loss!r} needs a {need} output layer, got {activations[-1]!r}"
            )
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction: expected one of {list(REDUCTIONS)}, got {reduction!r}")
        l2 = Real(low=0.0)("l2", l2)
        bias = _check_bias(bias, L)
        dtype = as_float_dtype(dtype)
        n = sum(sizes[l] * sizes[l - 1] + sizes[l] * bias[l - 1] for l in range(1, L + 1))
        if n * dtype.itemsize > _MAX_BYTES:
            raise ValueError(f"sizes: {list(sizes)} has {n:.3g} parameters, "
                             f"{n * dtype.itemsize:.3g} bytes: more than any array fastbp "
                             f"addresses (2**48 bytes)")

        object.__setattr__(self, "_plan", _core.plan_for(
            sizes, [ACTIVATIONS[a] for a in activations], bias, LOSSES[loss],
            reduction == "mean", l2, dtype, ROW_SUM_TOL[dtype]))

    def __setattr__(self, name, value):
        raise AttributeError(f"Network is immutable; build a new one to change {name!r}")

    # ------------------------------------------------------------------ description

    @property
    def sizes(self) -> tuple:
        return self._plan.sizes

    @property
    def activations(self) -> tuple:
        return tuple(_ACTIVATION_NAMES[c] for c in self._plan.activation_codes)

    @property
    def loss_name(self) -> str:
        return _LOSS_NAMES[self._plan.loss_code]

    @property
    def reduction(self) -> str:
        return "mean" if self._plan.mean else "sum"

    @property
    def l2(self) -> float:
        return self._plan.l2

    @property
    def bias(self) -> tuple:
        return self._plan.bias

    @property
    def dtype(self) -> np.dtype:
        return self._plan.dtype

    @property
    def n_layers(self) -> int:
        """L, the number of layers with weights."""
        return len(self.sizes) - 1

    @property
    def plan(self):
        """The compiled core's plan of this description (``fastbp._core.Plan``),
        shared by every equal network: what ``train`` and the adapters call."""
        return self._plan

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector."""
        return self._plan.n_params

    def to_dict(self) -> dict:
        """The description as plain JSON-able data (inverse of ``from_dict``)."""
        return {
            "sizes": list(self.sizes),
            "activations": list(self.activations),
            "loss": self.loss_name,
            "reduction": self.reduction,
            "l2": self.l2,
            "bias": list(self.bias),
            "dtype": self.dtype.name,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Network:
        """Rebuild a network from ``to_dict()``'s output (validated as usual)."""
        d = dict(d)
        return cls(d.pop("sizes"), d.pop("activations"), d.pop("loss"), **d)

    def __reduce__(self):
        # Rebuilt (and re-validated) from its description: the immutable
        # __setattr__ rules out pickle's default attribute restore.
        return (Network.from_dict, (self.to_dict(),))

    def __eq__(self, other):
        if not isinstance(other, Network):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash((self.sizes, self.activations, self.loss_name, self.reduction, self.l2,
                     self.bias, self.dtype.name))

    def __repr__(self):
        acts = self.activations
        act = repr(acts[0]) if len(set(acts)) == 1 else repr(list(acts))
        extra = ""
        if self.reduction != "mean":
            extra += f", reduction={self.reduction!r}"
        if self.l2:
            extra += f", l2={self.l2!r}"
        if not all(self.bias):
            extra += f", bias={list(self.bias) if any(self.bias) else False}"
        if self.dtype != np.float64:
            extra += f", dtype={self.dtype.name!r}"
        return f"Network({list(self.sizes)}, {act}, {self.loss_name!r}{extra})"

    # ------------------------------------------------------------------ parameters

    def init(self, seed=None) -> Params:
        """Random parameters: Glorot/Xavier uniform for identity, sigmoid, tanh and
        softmax layers, He normal for relu layers; biases zero.

        Glorot: W ~ U(-r, r), r = sqrt(6 / (n_in + n_out)), times 4 for sigmoid
        (whose slope at 0 is 1/4).  He: W ~ N(0, 2 / n_in).  Drawn in float64 from
        ``numpy.random.default_rng(seed)`` then cast, so float32 and float64
        networks start from the same values.
        """
        check_memory("init", self.n_params * self.dtype.itemsize)
        rng = np.random.default_rng(seed)
        flat = np.zeros(self.n_params, dtype=self.dtype)  # the one allocation of its size
        for l, (w_off, _, _) in enumerate(layer_offsets(self.sizes, self.bias), 1):
            n_in, n_out = self.sizes[l - 1], self.sizes[l]
            act = self.activations[l - 1]
            r = np.sqrt(6.0 / (n_in + n_out)) * (4.0 if act == "sigmoid" else 1.0)
            # drawn in float64 pieces of at most _DRAW values (the generator's stream
            # does not depend on the pieces), each cast into place
            for k in range(0, n_out * n_in, _DRAW):
                m = min(_DRAW, n_out * n_in - k)
                if act == "relu":
                    W = rng.normal(0.0, np.sqrt(2.0 / n_in), size=m)
                else:
                    W = rng.uniform(-r, r, size=m)
                flat[w_off + k: w_off + k + m] = W
        return Params.wrap(self.sizes, self.bias, flat)

    def params_from(self, weights, biases=None, layout="out_in") -> Params:
        """Parameters copied from per-layer matrices, every shape validated.

        Parameters
        ----------
        weights : sequence of L array_like
            ``layout="out_in"``: W^(l) of shape (n_l, n_{l-1}), fastbp's (and 000's,
            004's) orientation.  ``"in_out"``: the transpose, shape (n_{l-1}, n_l), as
            in 001, 002 and 003 (z = W^T a + b).  ``"bias_column"``: 000's matrices of
            shape (n_l, n_{l-1} + 1) whose column 0 is the bias w_{i,0} = b_i.
        biases : sequence of L (array_like of shape (n_l,) or None), optional
            Required for the layers that have a bias, unless ``layout="bias_column"``.
        layout : {"out_in", "in_out", "bias_column"}

        Returns
        -------
        Params
            A new parameter vector of the network's dtype (the inputs are copied).
        """
        if layout not in LAYOUTS:
            raise ValueError(f"layout: expected one of {list(LAYOUTS)}, got {layout!r}")
        L = self.n_layers
        weights = _as_layer_list("weights", weights, L)
        if layout == "bias_column":
            if biases is not None:
                raise ValueError("biases: must be None with layout='bias_column' "
                                 "(column 0 of each matrix is the bias)")
            if not all(self.bias):
                raise ValueError("layout: 'bias_column' needs a bias in every layer; "
                                 f"this network has bias={list(self.bias)}")
        else:
            if biases is None:
                if any(self.bias):
                    layers = [l for l in range(1, L + 1) if self.bias[l - 1]]
                    raise ValueError(f"biases: required for layers {layers}, which have a bias")
                biases = [None] * L
            biases = _as_layer_list("biases", biases, L)

        p = Params.zeros(self.sizes, self.bias, self.dtype)
        for l in range(1, L + 1):
            n_in, n_out = self.sizes[l - 1], self.sizes[l]
            A = _as_real_array(f"weights[{l - 1}]", weights[l - 1])
            if layout == "bias_column":
                _check_shape(f"weights[{l - 1}]", A, (n_out, n_in + 1), layout)
                p.W[l][...] = A[:, 1:]
                p.b[l][...] = A[:, 0]
                continue
            shape = (n_out, n_in) if layout == "out_in" else (n_in, n_out)
            _check_shape(f"weights[{l - 1}]", A, shape, layout)
            p.W[l][...] = A if layout == "out_in" else A.T
            b = biases[l - 1]
            if self.bias[l - 1]:
                if b is None:
                    raise ValueError(f"biases[{l - 1}]: layer {l} has a bias; got None")
                b = _as_real_array(f"biases[{l - 1}]", b)
                if b.size != n_out or (b.ndim == 2 and 1 not in b.shape) or b.ndim > 2:
                    raise ValueError(f"biases[{l - 1}]: expected shape ({n_out},), got {b.shape}")
                p.b[l][...] = b.reshape(-1)
            elif b is not None:
                raise ValueError(f"biases[{l - 1}]: layer {l} has no bias; pass None")
        check_finite("weights/biases", p.flat)
        return p

    def check_params(self, params) -> np.ndarray:
        """The flat vector of ``params``, validated for this network (layout,
        length, dimensionality, finiteness) and in its dtype (converted when
        needed, never modified): what the compiled core may be handed."""
        if not isinstance(params, Params):
            raise TypeError(f"params: expected fastbp.Params, got {type(params).__name__}")
        if params.sizes != self.sizes or params.bias != self.bias:
            raise ValueError(
                f"params: built for another network (sizes {list(params.sizes)}, bias "
                f"{list(params.bias)}); this one has sizes {list(self.sizes)}, bias "
                f"{list(self.bias)}"
            )
        theta = as_flat("params.flat", params.flat, self.n_params)
        return convert("params", theta, self.dtype)

    def _ready(self, params, X, Y, targets=True):
        """Y as the kernels take it (2-D) when ``params``, X and Y need no
        conversion and pass the compiled screen, else None.

        Ready means: Params of this network, C-contiguous arrays of the network's
        dtype with the right shapes (Y may be 1-D when n_L == 1).  They are then
        screened by one compiled pass (``inputs_clean``: finite, valid targets)
        instead of a NumPy pass per check.  None sends the caller through the
        full checks and conversions (``_inputs``), which raise the error naming
        the argument.  Without ``targets`` (a call that takes none) ``Y`` is the
        plan's ``no_targets``, and only then may it have no rows: the targets of
        a call are held to X's rows (the plan's ``no_targets`` passed as them had
        its N rows read beyond its end).
        """
        plan = self._plan
        dt = plan.dtype
        if type(params) is Params and type(X) is np.ndarray and type(Y) is np.ndarray:
            theta = params.flat
            # ``Params.wrap`` and a replaced ``_flat`` bypass the setter's checks
            if type(theta) is not np.ndarray or theta.ndim != 1:
                return None
            sizes = plan.sizes
            shape = X.shape
            if Y.ndim == 1 and sizes[-1] == 1:
                Y = Y.reshape(-1, 1)
            if (X.dtype is dt and Y.dtype is dt and theta.dtype is dt
                    and len(shape) == 2 and shape[0] > 0 and shape[1] == sizes[0]
                    and Y.ndim == 2 and Y.shape[1] == sizes[-1]
                    and (Y.shape[0] == shape[0] if targets else Y is plan.no_targets)
                    and theta.shape[0] == plan.n_params
                    and params.sizes == sizes and params.bias == plan.bias
                    and theta.flags.c_contiguous and X.flags.c_contiguous
                    and Y.flags.c_contiguous
                    and plan.screen(theta, X, Y)):
                return Y
        return None

    def _inputs(self, params, X, Y=None, targets=False):
        """(theta, X, Y) validated and converted for the kernels: as they are
        when ``_ready``, else through the full checks and conversions.  Without
        ``targets`` (a call that takes none) Y stays None; with it, Y is
        required."""
        Yr = None
        if Y is not None or not targets:
            Yr = (self._ready(params, X, Y) if Y is not None
                  else self._ready(params, X, self._plan.no_targets, targets=False))
        if Yr is not None:
            return params.flat, X, (None if Y is None else Yr)
        theta = self.check_params(params)
        X = as_float_matrix("X", X, self.sizes[0], self.dtype)
        if Y is not None or targets:
            Y = as_targets(Y, X.shape[0], self.sizes[-1], self.loss_name, self.dtype)
        return theta, X, Y

    # ------------------------------------------------------------------ sparse inputs

    def _sparse(self, params, X, Y=None, targets=False):
        """(theta, X as ``SparseInput``, Y) for a scipy.sparse X, checked; None
        for a one-layer network (its only layer is the output: it runs on the
        dense X)."""
        if self.n_layers < 2:
            return None
        theta = self.check_params(params)
        Xs = as_sparse_rows("X", X, self.sizes[0], self.dtype)
        if Y is not None or targets:
            Y = as_targets(Y, Xs.shape[0], self.sizes[-1], self.loss_name, self.dtype)
        return theta, Xs, Y

    # ------------------------------------------------------------------ computation

    def loss_and_grad(self, params, X, Y, *, input_grad=False, sample_weight=None):
        """Loss and its exact gradient with respect to every parameter.

        Parameters
        ----------
        params : Params
        X : array_like or scipy.sparse matrix of shape (N, n_0)
            Inputs, one example per row (floating dtype; converted to the
            network's dtype and C order, never modified).  A sparse X (CSR, CSC,
            ...) runs layer 1 over its nonzeros only (``fastbp._core.sparse``).
        Y : array_like of shape (N, n_L), or (N,)
            Targets: floats; for ``cross_entropy`` integer class labels (N,) or rows
            that are distributions; (N,) when n_L == 1.
        input_grad : bool, default False
            Also return dJ/dX.
        sample_weight : array_like of shape (N,), optional
            Example e counts w_e >= 0 times (sum > 0): J = sum_e w_e J(e) /
            sum_e w_e for the mean (sum_e w_e J(e) for the sum), so every
            delta^(L)(e) is scaled by w_e / sum_e w_e (by w_e), and the L2 term
            is unchanged.  None: every example counts once.

        Returns
        -------
        loss : float
        grads : Params
            dJ/dW^(l) and dJ/db^(l) in the layout of ``params``.
        dX : ndarray of shape (N, n_0)
            Only with ``input_grad=True``: dJ/dx for every example (004 eq. (7)).

        Notes
        -----
        delta^(L) = dJ/dz^(L) (a - y for sigmoid+bce and softmax+cross_entropy:
        000 eq. (6), 002 eq. (31), 004 eq. (1));
        delta^(l)_j = f_l'(z^(l)_j) sum_i W^(l+1)[i, j] delta^(l+1)_i (004 eq. (4));
        dJ/dW^(l)[i, j] = sum_e delta^(l)_i(e) a^(l-1)_j(e) (+ l2 W[i, j]) (004 eq. (5), (9));
        dJ/db^(l)_i = sum_e delta^(l)_i(e) (004 eq. (6)); times 1/N for the mean.
        """
        plan = self._plan
        dt = plan.dtype
        if (plan.quick and type(params) is Params and type(X) is np.ndarray
                and type(Y) is np.ndarray and sample_weight is None and not input_grad
                and X.dtype is dt and Y.dtype is dt
                and getattr(params.flat, "dtype", None) is dt and params.flat.ndim == 1
                and params.sizes == plan.sizes and params.bias == plan.bias
                and X.ndim == 2 and 1 <= Y.ndim <= 2):
            # the specialized code of a small network checks sizes and screens
            # the inputs in its one compiled call; None: the checked path below
            quick = plan.quick_loss_and_grad(
                params.flat, X, Y.reshape(-1, 1) if Y.ndim == 1 else Y)
            if quick is not None:
                return quick[0], Params.wrap(plan.sizes, plan.bias, quick[1])
        if is_sparse(X):
            sparse = self._sparse(params, X, Y, targets=True)
            if sparse is None:
                X = dense_copy("X", X)
            else:
                if input_grad:
                    raise ValueError("input_grad: not available for a sparse X (dJ/dX "
                                     "would be dense); pass X.toarray()")
                theta, Xs, Y = sparse
                w = as_sample_weight(sample_weight, Xs.shape[0], self.dtype)
                J, grad = self._plan.sparse_loss_and_grad(theta, Xs, Y, w)
                return float(J), Params.wrap(self.sizes, self.bias, grad)
        Yr = self._ready(params, X, Y)
        if Yr is None:
            theta, X, Y = self._inputs(params, X, Y, targets=True)
        else:
            theta, Y = params.flat, Yr
        w = as_sample_weight(sample_weight, X.shape[0], self.dtype)
        J, grad, dX = self._plan.loss_and_grad(theta, X, Y, bool(input_grad), w)
        grads = Params.wrap(self.sizes, self.bias, grad)
        if input_grad:
            return J, grads, dX
        return J, grads

    def loss(self, params, X, Y, *, sample_weight=None) -> float:
        """The loss J alone (same value as ``loss_and_grad``'s, without the backward
        pass; ``sample_weight`` as there)."""
        if is_sparse(X):
            sparse = self._sparse(params, X, Y, targets=True)
            if sparse is not None:
                theta, Xs, Y = sparse
                w = as_sample_weight(sample_weight, Xs.shape[0], self.dtype)
                return float(self._plan.sparse_loss(theta, Xs, Y, w))
            X = dense_copy("X", X)
        theta, X, Y = self._inputs(params, X, Y, targets=True)
        w = as_sample_weight(sample_weight, X.shape[0], self.dtype)
        return self._plan.loss(theta, X, Y, w)

    def forward(self, params, X) -> np.ndarray:
        """Output activations a^(L), shape (N, n_L), in the network's dtype (X
        dense or scipy.sparse, as for ``loss_and_grad``)."""
        if is_sparse(X):
            sparse = self._sparse(params, X)
            if sparse is not None:
                theta, Xs, _ = sparse
                return self._plan.sparse_forward(theta, Xs)
            X = dense_copy("X", X)
        theta, X, _ = self._inputs(params, X)
        return self._plan.forward(theta, X)

    def predict_proba(self, params, X) -> np.ndarray:
        """Class probabilities of a classifier: a^(L) for every example.

        Parameters
        ----------
        params : Params
        X : array_like of shape (N, n_0)

        Returns
        -------
        ndarray of shape (N, n_L)
            ``cross_entropy`` (softmax output): row e is the distribution over the
            n_L classes.  ``bce`` (sigmoid output): entry [e, k] is P(y_k = 1 | x(e)).

        Raises
        ------
        TypeError
            For the regression loss ``sse`` (its outputs are not probabilities).
        """
        if self.loss_name == "sse":
            raise TypeError("predict_proba: this network's loss is 'sse' (regression); "
                            "use predict or forward")
        return self.forward(params, X)

    def predict(self, params, X) -> np.ndarray:
        """Predictions: classes for a classifier, a^(L) for a regression network.

        Returns
        -------
        ndarray
            ``cross_entropy``: int64 labels of shape (N,), argmax_k a_k (first on ties).
            ``bce``: int64 (a_k > 1/2) of shape (N,) for one output unit, (N, n_L) for
            several (one decision per unit).  ``sse``, ``poisson``: the outputs a^(L),
            (N, n_L).
        """
        out = self.forward(params, X)
        if self.loss_name == "cross_entropy":
            return out.argmax(axis=1).astype(np.int64)
        if self.loss_name == "bce":
            decided = (out > 0.5).astype(np.int64)
            return decided[:, 0] if self.sizes[-1] == 1 else decided
        return out


# ---------------------------------------------------------------------- helpers


def _check_activations(activations, L: int) -> tuple:
    if isinstance(activations, str):
        activations = [activations] * L
    if isinstance(activations, bytes) or not isinstance(activations, (Sequence, np.ndarray)):
        raise TypeError(f"activations: expected a name or a sequence of {L} names, "
                        f"got {activations!r}")
    activations = list(activations)
    if len(activations) != L:
        raise ValueError(f"activations: expected one name or {L} names, got {len(activations)}")
    for l, name in enumerate(activations, 1):
        if not isinstance(name, str) or name not in ACTIVATIONS:
            raise ValueError(f"activations: unknown activation {name!r} for layer {l}; "
                             f"expected one of {sorted(ACTIVATIONS)}")
        if name in LAST_LAYER_ONLY and l != L:
            raise ValueError(f"activations: {name!r} may only be the last layer's "
                             f"activation, got it for layer {l} of {L}")
    return tuple(activations)


def _check_bias(bias, L: int) -> tuple:
    if isinstance(bias, (bool, np.bool_)):
        return (bool(bias),) * L
    try:
        flags = list(bias)
    except TypeError:
        raise TypeError(f"bias: expected a bool or {L} bools, got {bias!r}") from None
    if len(flags) != L or not all(isinstance(f, (bool, np.bool_)) for f in flags):
        raise ValueError(f"bias: expected a bool or {L} bools (one per layer), got {bias!r}")
    return tuple(bool(f) for f in flags)


def _as_layer_list(name, seq, L):
    if isinstance(seq, np.ndarray) and seq.dtype != object:
        raise TypeError(f"{name}: expected a sequence of {L} per-layer arrays, got one array")
    seq = list(seq)
    if len(seq) != L:
        raise ValueError(f"{name}: expected {L} entries (one per layer), got {len(seq)}")
    return seq


def _as_real_array(name, A):
    A = np.asarray(A)
    if A.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected real numbers, got dtype {A.dtype}")
    return A


def _check_shape(name, A, shape, layout):
    if A.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} for layout={layout!r}, got {A.shape}")
