"""Parameters of a network as ONE flat vector, with per-layer views.

Layout (shared by parameters and gradients): for each layer l = 1..L, the weight
matrix W^(l) of shape (n_l, n_{l-1}) row-major (out x in, so
z_i = sum_j W[i, j] a_j reads one contiguous row), then b^(l) of shape (n_l,) when
the layer has a bias.  Optimizers, checkpoints, finite differences and reductions
can therefore treat the parameters as one vector, ``Params.flat``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

__all__ = ["Layers", "Params", "as_flat", "layer_offsets", "n_params"]

import numpy as np

from ._checks import is_bool, widths
from ._core import check_memory, layer_offsets, n_params


def as_flat(name: str, flat, n: int, dtype=None) -> np.ndarray:
    """``flat`` as the compiled core takes a parameter vector: a 1-D
    C-contiguous float32/float64 ndarray of n values (of ``dtype`` when given:
    converted, never modified), or a clear error.  Every vector handed to
    compiled code passes here or through ``Params``, which checks the same."""
    if not isinstance(flat, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(flat).__name__}")
    if flat.dtype not in (np.float32, np.float64):
        if flat.dtype.kind == "f" and flat.dtype.newbyteorder("=") in (np.float32, np.float64):
            native = flat.dtype.newbyteorder("=").name
            raise TypeError(f"{name}: dtype must be float32 or float64 in the machine's byte "
                            f"order, got {flat.dtype.str} (convert with "
                            f"{name}.astype({native!r}))")
        raise TypeError(f"{name}: dtype must be float32 or float64, got {flat.dtype}")
    if flat.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D vector of {n} parameters, got shape "
                         f"{flat.shape}")
    if flat.shape[0] != n:
        raise ValueError(f"{name}: expected {n} parameters, got {flat.shape[0]}")
    if dtype is not None and flat.dtype != dtype or not flat.flags.c_contiguous:
        flat = np.ascontiguousarray(flat, dtype=dtype or flat.dtype)
    return flat


class Layers(Sequence):
    """Per-layer arrays numbered as in the documents: ``W[1]`` is W^(1), ``W[L]`` the last.

    Negative indices count from the end (``W[-1]`` is W^(L)); ``W[0]`` does not exist
    (layer 0 is the input, which has no weights).  Iterating yields layers 1..L.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Sequence):
        self._items = tuple(items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, l):
        if isinstance(l, slice):
            raise TypeError("layers are indexed one at a time: W[l] for l in 1..L")
        L = len(self._items)
        if l == 0 or not -L <= l <= L:
            raise IndexError(f"layer index {l} out of range: layers are numbered 1..{L}")
        return self._items[l - 1] if l > 0 else self._items[l]

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def __repr__(self) -> str:
        shapes = ", ".join(
            f"{l}: {None if a is None else a.shape}" for l, a in enumerate(self._items, 1)
        )
        return f"Layers({{{shapes}}})"


class Params:
    """Weights and biases of a network (or gradients with the same layout).

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``[n_0, n_1, ..., n_L]``.
    bias : sequence of bool
        One flag per layer l = 1..L.
    flat : ndarray of shape (n_params,)
        The parameter vector; kept as given when it is 1-D, C-contiguous and
        float32/float64 in the machine's byte order (so ``Params.flat`` may be a
        view the caller owns), otherwise copied (a float32/float64 vector of the
        other byte order is converted to the machine's).

    Attributes
    ----------
    flat : ndarray of shape (n_params,)
        Every parameter, in the layout described in the module docstring.
    W : Layers of ndarray
        ``W[l]`` has shape ``(n_l, n_{l-1})`` (out x in) and is a view into ``flat``.
    b : Layers of (ndarray or None)
        ``b[l]`` has shape ``(n_l,)`` (a view into ``flat``), or None without bias.
    """

    __slots__ = ("_flat", "_views", "bias", "sizes")

    def __init__(self, sizes: Sequence[int], bias: Sequence[bool], flat: np.ndarray):
        sizes = widths("sizes", sizes)
        if isinstance(bias, (str, bytes)) or not hasattr(bias, "__len__"):
            raise TypeError(f"bias: expected a sequence of {len(sizes) - 1} bools, got {bias!r}")
        if len(bias) != len(sizes) - 1:
            raise ValueError(f"bias: expected {len(sizes) - 1} flags, got {len(bias)}")
        if not all(is_bool(f) for f in bias):
            raise TypeError(f"bias: expected {len(sizes) - 1} bools, got {list(bias)}")
        bias = tuple(bool(f) for f in bias)
        if isinstance(flat, np.ma.MaskedArray):
            raise TypeError("flat: expected a NumPy array, got a masked array (its masked "
                            "entries would be used as they are; pass flat.filled(value))")
        flat = np.asarray(flat)
        if flat.dtype.kind == "f" and (not flat.dtype.isnative or flat.ndim != 1
                                       or not flat.flags.c_contiguous):
            # a copy, checked before it is made: a broadcast view of one value
            # can stand for any number of parameters
            check_memory("flat: a C-contiguous copy", flat.size * flat.dtype.itemsize)
        if flat.dtype.kind == "f" and not flat.dtype.isnative:
            flat = flat.astype(flat.dtype.newbyteorder("="))
        if flat.dtype not in (np.float32, np.float64):
            raise TypeError(f"flat: dtype must be float32 or float64, got {flat.dtype}")
        if flat.ndim != 1 or not flat.flags.c_contiguous:
            flat = np.ascontiguousarray(flat.reshape(-1))
        expected = n_params(sizes, bias)
        if flat.shape[0] != expected:
            raise ValueError(
                f"flat: expected {expected} parameters for sizes {list(sizes)}, "
                f"got {flat.shape[0]}"
            )
        self.sizes = sizes
        self.bias = bias
        self._flat = flat
        self._views = None

    @property
    def flat(self) -> np.ndarray:
        return self._flat

    @flat.setter
    def flat(self, value) -> None:
        # A replaced vector is held to the same rules as one passed to __init__,
        # but never copied: an assignment that would need a copy is refused, so
        # ``p.flat = v`` always leaves ``p.flat is v``.
        n = n_params(self.sizes, self.bias)
        if isinstance(value, np.ndarray) and value.ndim == 1 and not value.flags.c_contiguous:
            raise ValueError("flat: expected a C-contiguous vector (use np.ascontiguousarray)")
        self._flat = as_flat("flat", value, n)
        self._views = None

    @classmethod
    def wrap(cls, sizes: tuple, bias: tuple, flat: np.ndarray) -> Params:
        """A Params over ``flat`` without the checks of ``__init__`` (no copy, no
        conversion): for vectors the library itself allocated with the right dtype, length and layout.
        ``sizes`` and ``bias`` must be normalized tuples."""
        self = object.__new__(cls)
        self.sizes = sizes
        self.bias = bias
        self._flat = flat
        self._views = None
        return self

    # The per-layer views are built on first use: a gradient returned by
    # ``Network.loss_and_grad`` is often only read as ``.flat`` (by an optimizer, a
    # norm, a reduction), and building 2 L views costs more than a tiny network's
    # whole gradient.  Two threads racing here build equal views; either is kept.
    def _layer_views(self) -> tuple:
        views = self._views
        if views is None:
            W, b = [], []
            flat, sizes = self._flat, self.sizes
            for l, (w_off, b_off, _) in enumerate(layer_offsets(sizes, self.bias), 1):
                n_out, n_in = sizes[l], sizes[l - 1]
                W.append(flat[w_off : w_off + n_out * n_in].reshape(n_out, n_in))
                b.append(None if b_off < 0 else flat[b_off : b_off + n_out])
            views = self._views = (Layers(W), Layers(b))
        return views

    @property
    def W(self) -> Layers:
        return self._layer_views()[0]

    @property
    def b(self) -> Layers:
        return self._layer_views()[1]

    @classmethod
    def zeros(cls, sizes: Sequence[int], bias: Sequence[bool], dtype="float64") -> Params:
        """All-zero parameters (or a gradient buffer) for this layout."""
        n = n_params(sizes, bias)
        check_memory("Params.zeros", n * np.dtype(dtype).itemsize)
        return cls(sizes, bias, np.zeros(n, dtype=dtype))

    def __reduce__(self):
        # the views are rebuilt over the unpickled vector, so they stay views
        return (Params, (self.sizes, self.bias, self.flat))

    @property
    def dtype(self) -> np.dtype:
        return self.flat.dtype

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def copy(self) -> Params:
        """A deep copy (new flat vector, new views)."""
        return Params(self.sizes, self.bias, self.flat.copy())

    def astype(self, dtype) -> Params:
        """A copy converted to ``dtype`` (float32 or float64)."""
        return Params(self.sizes, self.bias, self.flat.astype(dtype, copy=True))

    def __eq__(self, other) -> bool:
        """Exact equality: same layout, same dtype, bit-identical values."""
        if not isinstance(other, Params):
            return NotImplemented
        return (
            self.sizes == other.sizes
            and self.bias == other.bias
            and self.flat.dtype == other.flat.dtype
            and np.array_equal(self.flat, other.flat)
        )

    __hash__ = None  # mutable container

    def __repr__(self) -> str:
        layers = []
        for l in range(1, len(self.sizes)):
            shape = f"W[{l}] {self.sizes[l]}x{self.sizes[l - 1]}"
            layers.append(shape + (f" + b[{l}]" if self.bias[l - 1] else ""))
        return (
            f"Params(sizes={list(self.sizes)}, {', '.join(layers)}, "
            f"n={self.flat.size}, dtype={self.flat.dtype})"
        )
