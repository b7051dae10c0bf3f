"""The one set of checks and conversions at the edge, shared by ``Network``,
``train``, io, the estimators and the command line: every message names the
argument and the problem, one exception type and one message per mistake
wherever it is made, and everything is raised before any compiled work starts.

Options are checked against constraint tables (as scikit-learn's
``_parameter_constraints``): ``check(TABLE, name=value, ...)`` applies each
name's constraint and returns the normalized values.  The kinds of mistake:

- a value of the wrong kind (a string for a number, a float for a count, 1
  for a bool): ``TypeError``;
- a value of the right kind out of its range or not among the options:
  ``ValueError``.

Nothing here modifies the caller's arrays: conversions return new arrays, and
arrays that already have the right dtype and layout are used read-only.
"""

from __future__ import annotations

import math
import numbers
from types import SimpleNamespace

import numpy as np

from .targets import encode_classes, head

# The largest count (epochs, batch size, patience, seed) a run accepts: the
# compiled loop counts in int64.
INT64_MAX = 2**63 - 1


def is_bool(x) -> bool:
    return isinstance(x, (bool, np.bool_))


class Bool:
    """True or False (NumPy's bools too); 1 and 0 are not bools."""

    def __call__(self, name, x):
        if not is_bool(x):
            raise TypeError(f"{name}: expected a bool, got {x!r}")
        return bool(x)


class Integer:
    """An integer in [low, high] (bools are not integers; high None: no bound);
    None too when ``none``."""

    def __init__(self, low, high=INT64_MAX, none=False):
        self.low, self.high, self.none = low, high, none

    def __call__(self, name, x):
        if x is None and self.none:
            return None
        if is_bool(x) or not isinstance(x, numbers.Integral):
            also = "None or " if self.none else ""
            raise TypeError(f"{name}: expected {also}an integer, got {x!r}")
        if x < self.low or (self.high is not None and x > self.high):
            bound = f">= {self.low}" if self.high in (None, INT64_MAX) else \
                f"in [{self.low}, {self.high}]"
            more = " (at most 2**63 - 1)" if self.high == INT64_MAX and x > INT64_MAX else ""
            raise ValueError(f"{name}: expected an integer {bound}{more}, got {x!r}")
        return int(x)


class Real:
    """A finite real number in the interval from ``low`` to ``high`` (None: no
    bound), each end closed unless named in ``open_ends`` ("low", "high")."""

    def __init__(self, low=None, high=None, open_ends=(), none=False):
        self.low, self.high, self.open, self.none = low, high, open_ends, none

    def __call__(self, name, x):
        if x is None and self.none:
            return None
        if is_bool(x) or not isinstance(x, numbers.Real):
            raise TypeError(f"{name}: expected a real number, got {x!r}")
        low, high = self.low, self.high
        ok = math.isfinite(x)
        ok = ok and (low is None or (x > low if "low" in self.open else x >= low))
        ok = ok and (high is None or (x < high if "high" in self.open else x <= high))
        if not ok:
            raise ValueError(f"{name}: expected a finite number {self.describe()}, got {x!r}")
        return float(x)

    def describe(self) -> str:
        low, high = self.low, self.high
        if high is None:
            return f"{'>' if 'low' in self.open else '>='} {low}"
        lo = "(" if "low" in self.open else "["
        hi = ")" if "high" in self.open else "]"
        return f"in {lo}{low}, {high}{hi}"


class OneOf:
    """One of a few options (strings)."""

    def __init__(self, options):
        self.options = tuple(options)

    def __call__(self, name, x):
        if not isinstance(x, str) or x not in self.options:
            raise ValueError(f"{name}: expected one of {list(self.options)}, got {x!r}")
        return x


class Callable_:
    """A callable, or None."""

    def __call__(self, name, x):
        if x is not None and not callable(x):
            raise TypeError(f"{name}: expected a callable or None, got {x!r}")
        return x


def check(table: dict, **values) -> dict:
    """Each value checked and normalized by its constraint in ``table``."""
    return {name: table[name](name, v) for name, v in values.items()}


def widths(name: str, sizes, at_least: int = 2) -> tuple:
    """Layer widths: a sequence of at least ``at_least`` integers >= 1."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise TypeError(f"{name}: expected a sequence of layer widths, got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < at_least:
        raise ValueError(f"{name}: need at least {at_least} widths [n_0, n_1] (L >= 1), "
                         f"got {sizes}")
    for n in sizes:
        if is_bool(n) or not isinstance(n, numbers.Integral):
            raise TypeError(f"{name}: widths must be integers, got {n!r} in {sizes}")
        if n < 1:
            raise ValueError(f"{name}: widths must be >= 1, got {n} in {sizes}")
    return tuple(int(n) for n in sizes)


def refuse_masked(name: str, A) -> None:
    """A masked array is refused: NumPy's conversions drop the mask, so the
    values under it would be used as if they were data."""
    if isinstance(A, np.ma.MaskedArray):
        raise TypeError(f"{name}: masked arrays are not supported (the masked entries would "
                        f"be used as they are); pass {name}.filled(value) or drop the masked "
                        "rows")


def refuse_sparse(name: str, A) -> None:
    """A scipy.sparse matrix where only a dense array is taken: NumPy would
    wrap it in a 0-d object array, reported as a wrong dtype."""
    if is_sparse(A):
        raise TypeError(f"{name}: a scipy.sparse matrix is not accepted here; pass "
                        f"{name}.toarray()")


def as_array(name: str, A) -> np.ndarray:
    """``np.asarray(A)``, its error named: nested sequences of unequal lengths
    ended in NumPy's "setting an array element with a sequence"."""
    try:
        return np.asarray(A)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name}: not an array of numbers ({e})") from None


def as_float_matrix(name: str, A, n_cols: int, dtype: np.dtype) -> np.ndarray:
    """A 2-D C-contiguous array of ``dtype`` with ``n_cols`` columns, all finite."""
    refuse_masked(name, A)
    refuse_sparse(name, A)
    A = as_array(name, A)
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
    return convert(name, A, dtype)


def is_sparse(A) -> bool:
    """A scipy.sparse matrix or array (told by its interface: scipy is optional)."""
    return hasattr(A, "tocsr") and hasattr(A, "nnz")


def _index_array(name: str, part: str, a, length=None) -> np.ndarray:
    """One index array of a sparse matrix: 1-D, of an integer dtype (and of
    ``length`` entries when given)."""
    if not isinstance(a, np.ndarray) or a.ndim != 1 or a.dtype.kind not in "iu":
        what = f"dtype {a.dtype}, shape {a.shape}" if isinstance(a, np.ndarray) else \
            type(a).__name__
        raise ValueError(f"{name}: not a valid sparse matrix: {part} must be a 1-D array of "
                         f"integers, got {what}")
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{name}: not a valid sparse matrix: {part} has {a.shape[0]} entries, "
                         f"its data {length}")
    return a


def _check_in_range(name: str, part: str, idx: np.ndarray, n: int, what: str) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        k = int(np.flatnonzero((idx < 0) | (idx >= n))[0])
        raise ValueError(f"{name}: not a valid sparse matrix: {part}[{k}] = {int(idx[k])} is "
                         f"outside 0..{n - 1} ({what})")


def _check_compressed(name: str, A, n_major: int, n_minor: int, what: str, block=None) -> None:
    """CSR/CSC/BSR arrays that describe a matrix of A's shape: indptr of
    n_major + 1 entries from 0, non-decreasing, within indices and data, and
    indices[:nnz] in 0..n_minor - 1 (``what``: the minor axis)."""
    indptr = _index_array(name, "indptr", A.indptr)
    indices = _index_array(name, "indices", A.indices)
    data = A.data
    if not isinstance(data, np.ndarray) or data.ndim != (1 if block is None else 3) or (
            block is not None and data.shape[1:] != block):
        shape = getattr(data, "shape", type(data).__name__)
        raise ValueError(f"{name}: not a valid sparse matrix: its data has shape {shape}")
    if indptr.shape[0] != n_major + 1:
        raise ValueError(f"{name}: not a valid sparse matrix: indptr has {indptr.shape[0]} "
                         f"entries, its shape {A.shape} needs {n_major + 1}")
    if indptr[0] != 0:
        raise ValueError(f"{name}: not a valid sparse matrix: indptr[0] = {int(indptr[0])}, "
                         "not 0")
    down = np.flatnonzero(indptr[1:] < indptr[:-1])  # compared, not subtracted: no overflow
    if down.size:
        k = int(down[0])
        raise ValueError(f"{name}: not a valid sparse matrix: indptr decreases at [{k + 1}] "
                         f"({int(indptr[k])} then {int(indptr[k + 1])})")
    nnz = int(indptr[-1])
    if nnz > indices.shape[0] or nnz > data.shape[0]:
        raise ValueError(f"{name}: not a valid sparse matrix: indptr[-1] = {nnz} entries, but "
                         f"indices has {indices.shape[0]} and data {data.shape[0]}")
    _check_in_range(name, "indices", indices[:nnz], n_minor, what)


def check_sparse_structure(name: str, A) -> None:
    """A scipy.sparse ``A`` whose index arrays describe a matrix of its shape.

    scipy trusts them (a matrix built with ``check=False``, or whose
    ``indices`` or ``indptr`` were changed afterwards, is not re-checked), and
    its conversions (``tocsr``, ``toarray``) and fastbp's sparse loops index
    with them unchecked: an index outside the shape reads or writes outside
    the arrays.  So they are checked here, read-only (scipy's own
    ``check_format`` may rewrite them), before any conversion."""
    shape = A.shape
    if len(shape) != 2:
        raise ValueError(f"{name}: expected a 2-D sparse matrix, got shape {shape}")
    M, N = int(shape[0]), int(shape[1])
    fmt = getattr(A, "format", None)
    if fmt == "csr":
        _check_compressed(name, A, M, N, f"the column count is {N}")
    elif fmt == "csc":
        _check_compressed(name, A, N, M, f"the row count is {M}")
    elif fmt == "bsr":
        R, C = A.blocksize
        if M % R or N % C:
            raise ValueError(f"{name}: not a valid sparse matrix: blocks of {R} x {C} do not "
                             f"tile its shape {shape}")
        _check_compressed(name, A, M // R, N // C, f"there are {N // C} block columns",
                          (R, C))
    elif fmt == "coo":
        coords = A.coords if hasattr(A, "coords") else (A.row, A.col)
        if len(coords) != 2:
            raise ValueError(f"{name}: not a valid sparse matrix: {len(coords)} index arrays "
                             f"for a 2-D shape")
        n = A.data.shape[0] if isinstance(A.data, np.ndarray) and A.data.ndim == 1 else None
        if n is None:
            raise ValueError(f"{name}: not a valid sparse matrix: its data has shape "
                             f"{getattr(A.data, 'shape', None)}")
        for part, idx, size, axis in (("row", coords[0], M, "rows"),
                                      ("col", coords[1], N, "columns")):
            _check_in_range(name, part, _index_array(name, part, idx, n), size,
                            f"there are {size} {axis}")


def checked_copy(name: str, A):
    """A scipy.sparse ``A`` (CSR, CSC, BSR or COO) as a new matrix of its format
    made of copies of its arrays, checked once copied (``check_sparse_structure``):
    scipy's conversions and fastbp's loops then read only arrays that were
    checked.  Checking A's own arrays and then converting A was not enough: a
    subclass whose attributes answer differently at each read (or another
    thread changing them) handed scipy's conversion or the loops indices
    outside the matrix (segfault).  Other formats (dia, lil, dok) are checked
    and returned as they are."""
    import scipy.sparse as sp  # A is a scipy matrix: scipy is installed

    from ._core import check_memory

    fmt = getattr(A, "format", None)
    shape = tuple(int(n) for n in A.shape)
    if fmt not in ("csr", "csc", "bsr", "coo") or len(shape) != 2:
        check_sparse_structure(name, A)
        return A
    if fmt == "coo":
        coords = A.coords if hasattr(A, "coords") else (A.row, A.col)
        arrays = (*coords, A.data)
    else:
        arrays = (A.indptr, A.indices, A.data)
    check_memory(f"{name}: a copy of a sparse matrix's arrays",
                 sum(a.nbytes for a in arrays if isinstance(a, np.ndarray)))
    copies = [np.array(a) for a in arrays]  # each read once
    if fmt == "coo":
        parts = SimpleNamespace(shape=shape, format=fmt, coords=tuple(copies[:-1]),
                                data=copies[-1])
    else:
        parts = SimpleNamespace(shape=shape, format=fmt, indptr=copies[0], indices=copies[1],
                                data=copies[2],
                                blocksize=tuple(A.blocksize) if fmt == "bsr" else None)
    check_sparse_structure(name, parts)
    if fmt == "coo":
        return sp.coo_matrix((parts.data, parts.coords), shape=shape)
    make = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "bsr": sp.bsr_matrix}[fmt]
    return make((parts.data, parts.indices, parts.indptr), shape=shape)


def dense_copy(name: str, A):
    """A scipy.sparse ``A`` as a dense array (the same values), after checking
    that it fits in memory and its structure (``checked_copy``)."""
    from ._core import check_memory

    if len(A.shape) == 2:
        check_memory(f"the dense copy of the sparse {name}",
                     int(A.shape[0]) * int(A.shape[1]) * A.dtype.itemsize)
    return checked_copy(name, A).toarray()


def as_sparse_rows(name: str, A, n_cols: int, dtype: np.dtype):
    """A scipy.sparse X as ``_core.sparse.SparseInput``: CSR with int64 indices
    and finite values of ``dtype``, in new arrays (the caller's are not touched),
    its structure checked before any conversion (``checked_copy``)."""
    from ._core import SparseInput  # the core imports nothing of the front end's

    from ._core import check_memory

    # scipy's CSR form (an indptr of a value per row, int64 indices and float64
    # values per nonzero) and the int64 copies made below, checked before scipy
    # allocates them: a COO matrix of 10**12 rows ended in NumPy's "Unable to
    # allocate 7.28 TiB" from inside scipy (and a smaller excess, allocated
    # lazily, could be killed by the system as it filled)
    if len(A.shape) == 2:
        check_memory(f"{name}: the CSR form of a sparse matrix of shape {A.shape}",
                     2 * (8 * (int(A.shape[0]) + 1) + 16 * int(A.nnz)))
    csr = checked_copy(name, A).tocsr()
    shape = tuple(int(n) for n in csr.shape)
    if len(shape) != 2 or shape[1] != n_cols:
        raise ValueError(f"{name}: expected {n_cols} columns, got shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name}: no examples (N = 0)")
    if csr.dtype.kind != "f":
        raise TypeError(f"{name}: dtype must be a floating type, got {csr.dtype} (convert "
                        f"with {name}.astype(float))")
    given = csr.data
    data = convert(f"{name}.data", given, dtype)  # finite, also once in dtype
    if data is given:
        data = data.copy()
    rows = SimpleNamespace(indptr=np.array(csr.indptr, dtype=np.int64),
                           indices=np.array(csr.indices, dtype=np.int64), data=data,
                           shape=shape)
    # the loops index with these copies, so the copies are what is checked: the
    # arrays they were read from can have changed since the check above (another
    # thread, or a subclass whose attributes answer differently at each read: a
    # segfault in the loops)
    _check_compressed(name, rows, shape[0], shape[1], f"the column count is {shape[1]}")
    return SparseInput(rows.indptr, rows.indices, data, shape)


def convert(name: str, A: np.ndarray, dtype) -> np.ndarray:
    """``A`` as a C-contiguous array of ``dtype`` (itself when it already is one),
    all finite: a NaN or inf is named where it is, and a finite value that the
    conversion to a narrower dtype takes out of range is named as such."""
    if A.dtype == dtype and A.flags.c_contiguous:  # no conversion: nothing out of range
        check_finite(name, A)
        return A
    from ._core import check_memory

    # the copy is checked before it is made: a broadcast or strided view can
    # stand for many times the memory it occupies (np.broadcast_to of one row)
    check_memory(f"{name}: a C-contiguous {np.dtype(dtype)} copy of shape {A.shape}",
                 A.size * np.dtype(dtype).itemsize)
    with np.errstate(over="ignore", invalid="ignore"):
        B = np.ascontiguousarray(A, dtype=dtype)
        clean = math.isfinite(B.sum())
    if not clean and np.isfinite(A).all():
        k = np.argwhere(~np.isfinite(B))[0]
        where = ", ".join(str(int(i)) for i in k)
        raise ValueError(f"{name}: {float(A[tuple(k)]):.6g} at [{where}] is beyond the range of "
                         f"{np.dtype(dtype)} (largest finite {np.finfo(dtype).max:.4g})")
    check_finite(name, B)
    return B


def check_finite(name: str, A: np.ndarray) -> None:
    # One reduction instead of isfinite + all (and no boolean temporary): a NaN or
    # inf anywhere makes the sum NaN or inf; a sum that overflows from finite
    # values alone falls through to the exact elementwise test.
    with np.errstate(over="ignore", invalid="ignore"):
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
    if Y is None:
        raise TypeError(f"Y: expected the targets, an array of shape ({N}, {n_out})"
                        f"{f' or ({N},)' if n_out == 1 or loss == 'cross_entropy' else ''}, "
                        "got None")
    refuse_masked("Y", Y)
    refuse_sparse("Y", Y)
    Y = as_array("Y", Y)
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
        return encode_classes(Y, head("classes", n_out), dtype)
    if Y.dtype.kind != "f":
        what = "floating (or integer class labels for cross_entropy)"
        raise TypeError(f"Y: dtype must be {what}, got {Y.dtype}")
    if Y.ndim == 1 and n_out == 1:
        Y = Y.reshape(-1, 1)
    if Y.ndim != 2 or Y.shape != (N, n_out):
        raise ValueError(f"Y: expected shape ({N}, {n_out}), got {Y.shape}")
    Y = convert("Y", Y, dtype)
    if loss == "bce" and (Y.min() < 0 or Y.max() > 1):
        raise ValueError("Y: bce targets must lie in [0, 1]")
    if loss == "poisson" and Y.min() < 0:
        raise ValueError("Y: poisson targets must be counts or rates >= 0")
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


def as_sample_weight(sample_weight, N: int, dtype: np.dtype, name: str = "sample_weight"):
    """The examples' weights as a new C-contiguous (N,) array of ``dtype``, or
    None for None: finite, >= 0, with a positive sum (the weighted mean divides
    by it)."""
    if sample_weight is None:
        return None
    refuse_masked(name, sample_weight)
    refuse_sparse(name, sample_weight)
    w = as_array(name, sample_weight)
    if w.ndim == 0:
        w = np.full(N, w)
    if w.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected real numbers, got dtype {w.dtype}")
    if w.shape != (N,):
        raise ValueError(f"{name}: expected shape ({N},), one weight per example, "
                         f"got {w.shape}")
    given = w
    w = convert(name, w, dtype)  # finite, also once in dtype
    if w is given:
        w = w.copy()  # the caller's array is never aliased
    if N and w.min() < 0:
        raise ValueError(f"{name}: weights must be >= 0, got {float(w.min())!r} at "
                         f"[{int(np.argmin(w))}]")
    with np.errstate(over="ignore"):
        total = float(w.sum(dtype=np.float64)) if N else 1.0
    if N and not total > 0:
        raise ValueError(f"{name}: every weight is zero; at least one must be > 0")
    # the weighted mean scales by 1 / (sum of a batch's weights), in dtype: every
    # such sum (a positive weight at least, the total at most) must have a finite
    # reciprocal there
    big = float(np.finfo(dtype).max)
    if total > big:
        raise ValueError(f"{name}: the weights sum to {total:.4g}, beyond the range of "
                         f"{np.dtype(dtype)} ({big:.4g}); scale them down")
    if N:
        low = float(w[w > 0].min())
        if 1.0 / low > big:
            raise ValueError(f"{name}: weight {low:.4g} is too small for {np.dtype(dtype)} "
                             f"(1 / weight overflows; positive weights must be >= "
                             f"{1 / big:.4g}); scale them up")
    return w


def as_float_dtype(dtype, name: str = "dtype") -> np.dtype:
    """float32 or float64 (anything else, a dtype or not, is the wrong type)."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"{name}: not a NumPy dtype: {dtype!r}") from e
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{name}: must be float32 or float64, got {dt}")
    return dt


# Tolerance on the row sums of cross_entropy target distributions, per dtype.
ROW_SUM_TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-8}


