"""The compiled scalar functions against independent references, in ulps.

``fastbp._core.functions`` replaces libm's exp and tanh by arithmetic that vectorizes
(see its block comment); these tests hold it to libm-like accuracy over the
whole float range, in both precisions, compiled as the kernels compile it
(same fastmath flags and error model, in a loop that LLVM vectorizes).
References: NumPy's exp and tanh in float64 (each within 1 ulp), and for
float32 those float64 values rounded once more; the logistic function in
extended precision (np.longdouble, 64-bit mantissa on x86).
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from fastbp._core.config import ERROR_MODEL, FASTMATH
from fastbp._core.functions import exp, log1pexp, sigmoid, tanh

DTYPES = (np.float64, np.float32)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _map(code, x, out):
    """out[i] = f(x[i]) for f = exp (0), tanh (1), sigmoid (2): one loop per
    function, as in the kernels' activation loops."""
    if code == 0:
        for i in range(x.shape[0]):
            out[i] = exp(x[i])
    elif code == 1:
        for i in range(x.shape[0]):
            out[i] = tanh(x[i])
    else:
        for i in range(x.shape[0]):
            out[i] = sigmoid(x[i])


def _apply(code, x):
    out = np.empty_like(x)
    _map(code, x, out)
    return out


def _ulps(got, want, dtype):
    """|got - want| in units of the last place of ``want`` in ``dtype`` (the
    smallest subnormal's spacing below the normal range)."""
    want = want.astype(np.float64)
    spacing = np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


def _grid(dtype, lo, hi):
    """Points spread over [lo, hi] plus every scale of |x| down to the smallest
    normals, both signs."""
    rng = np.random.default_rng(2024)
    tiny = np.finfo(dtype).tiny
    scales = 10.0 ** rng.uniform(np.log10(tiny), np.log10(hi), 20_000)
    x = np.concatenate([
        rng.uniform(lo, hi, 50_000),
        rng.uniform(-1.0, 1.0, 20_000),
        scales * rng.choice([-1.0, 1.0], scales.size),
    ])
    return np.clip(x, lo, hi).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_within_one_ulp_over_the_whole_range(dtype):
    # the range reaches past both ends: underflow to subnormals and to 0, overflow to inf
    lo, hi = (-750.0, 712.0) if dtype == np.float64 else (-110.0, 90.0)
    x = _grid(dtype, lo, hi)
    got = _apply(0, x)
    with np.errstate(over="ignore", under="ignore"):
        want = np.exp(x.astype(np.float64)).astype(dtype)
    finite = np.isfinite(want) & (want > 0)
    assert _ulps(got[finite], want[finite], dtype).max() <= 1.0
    # where the result is 0 or inf it is exactly that
    np.testing.assert_array_equal(got[~finite], want[~finite])
    assert (~finite).sum() > 100 and (got == np.inf).any() and (got == 0).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_at_the_edges_of_the_range(dtype):
    f = np.finfo(dtype)
    # largest finite result, first overflow, smallest subnormal, first underflow to 0
    x = np.array([np.log(f.max) * (1 - 1e-7), np.log(f.max) * (1 + 1e-6),
                  np.log(f.smallest_subnormal), np.log(f.smallest_subnormal) - 1.0,
                  0.0, -0.0, 1.0, -1.0], dtype=dtype)
    got = _apply(0, x)
    with np.errstate(over="ignore", under="ignore"):
        want = np.exp(x.astype(np.float64)).astype(dtype)
    assert np.isfinite(got[0]) and got[1] == np.inf and got[3] == 0
    assert got[2] == f.smallest_subnormal
    np.testing.assert_array_equal(got[4:6], [1.0, 1.0])
    assert _ulps(got[[0, 6, 7]], want[[0, 6, 7]], dtype).max() <= 1.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_within_a_few_ulps_at_every_scale(dtype):
    x = _grid(dtype, -40.0, 40.0)
    got = _apply(1, x)
    want = np.tanh(x.astype(np.float64)).astype(dtype)
    # small |x| is where (1 - e) / (1 + e) would lose digits; expm1 keeps them
    assert _ulps(got, want, dtype).max() <= 4.0
    small = np.abs(x) < 1e-3
    assert small.sum() > 1000 and _ulps(got[small], want[small], dtype).max() <= 2.0
    assert np.all(np.abs(got) <= 1.0)
    np.testing.assert_array_equal(got[np.abs(x) > 20], np.sign(x[np.abs(x) > 20]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_within_a_few_ulps_against_extended_precision(dtype):
    x = _grid(dtype, -700.0 if dtype == np.float64 else -85.0, 40.0)
    got = _apply(2, x)
    xl = x.astype(np.longdouble)
    with np.errstate(over="ignore"):
        want = (1 / (1 + np.exp(-xl))).astype(dtype)
    normal = want >= np.finfo(dtype).tiny
    assert _ulps(got[normal], want[normal], dtype).max() <= 4.0
    assert np.all((got >= 0) & (got <= 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0], dtype=dtype)
    e, t, s = _apply(0, x), _apply(1, x), _apply(2, x)
    assert np.isnan(e[0]) and np.isnan(t[0]) and np.isnan(s[0])
    np.testing.assert_array_equal(e[1:], [np.inf, 0.0, 1.0])
    np.testing.assert_array_equal(t[1:], [1.0, -1.0, 0.0])
    np.testing.assert_array_equal(s[1:], [1.0, 0.0, 0.5])
    assert e.dtype == t.dtype == s.dtype == dtype


def test_tanh_and_sigmoid_are_odd_and_symmetric_exactly():
    x = np.linspace(-30, 30, 20_001)
    np.testing.assert_array_equal(_apply(1, -x), -_apply(1, x))
    # sigmoid(-z) = 1 - sigmoid(z) holds exactly where sigmoid(z) >= 1/2 (Sterbenz)
    s, s_neg = _apply(2, x), _apply(2, -x)
    np.testing.assert_allclose(s + s_neg, 1.0, rtol=0, atol=2 * np.finfo(np.float64).eps)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _log1pexp_all(x, out):
    for i in range(x.shape[0]):
        out[i] = log1pexp(x[i])


@pytest.mark.parametrize("dtype", DTYPES)
def test_log1pexp_within_a_few_ulps_against_extended_precision(dtype):
    # softplus, the bce loss's ln(1 + e^t): from e^t alone (t << 0) to t itself (t >> 0)
    x = _grid(dtype, -700.0 if dtype == np.float64 else -85.0, 700.0 if dtype == np.float64
              else 85.0)
    got = np.empty_like(x)
    _log1pexp_all(x, got)
    xl = x.astype(np.longdouble)
    want = (np.maximum(xl, 0) + np.log1p(np.exp(-np.abs(xl)))).astype(dtype)
    normal = want >= np.finfo(dtype).tiny
    assert _ulps(got[normal], want[normal], dtype).max() <= 4.0
    # e^t ~ t-digits small: ln(1 + e^t) = e^t to the last digits
    far = x < -40
    assert far.sum() > 100
    np.testing.assert_allclose(got[far], np.exp(x[far].astype(np.float64)), rtol=4e-7)
