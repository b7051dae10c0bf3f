"""Activation and loss functions: the one table of names, their integer codes,
and the compiled scalar formulas the kernels branch on.

Adding an activation is one entry in ``ACTIVATIONS`` plus one branch in
``activate`` and ``derivative_from_a``; tests parametrize over the table's keys.
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._config import ERROR_MODEL, FASTMATH

# name -> integer code passed to the kernels (the single place names live)
ACTIVATIONS = {"identity": 0, "sigmoid": 1, "tanh": 2, "relu": 3, "softmax": 4}
LOSSES = {"sse": 0, "bce": 1, "cross_entropy": 2}
REDUCTIONS = ("mean", "sum")

IDENTITY, SIGMOID, TANH, RELU, SOFTMAX = (ACTIVATIONS[k] for k in ACTIVATIONS)
SSE, BCE, CROSS_ENTROPY = (LOSSES[k] for k in LOSSES)

# loss -> output activations it may follow.  bce and cross_entropy are defined only
# on probabilities from these outputs, and their output delta is the cancelled
# a - y (000 eq. (6), 002 eq. (31), 004 eq. (1)); sse accepts any output.
OUTPUT_ACTIVATIONS = {
    "sse": tuple(ACTIVATIONS),
    "bce": ("sigmoid",),
    "cross_entropy": ("softmax",),
}

# Activations that act on a whole layer rather than unit by unit: last layer only.
LAST_LAYER_ONLY = ("softmax",)

# The scalars below are inlined at the Numba level (inline="always"), not left as
# calls into separately compiled functions: with separate functions, a process that
# compiled the kernels and one that loaded them from the cache produced different
# bits for the same call.


# ------------------------------------------------------------ exp, expm1
# libm's exp and tanh are scalar calls: a loop that calls them cannot be
# vectorized, and on the documents' tanh and sigmoid networks they were a third
# of the forward pass.  The exponential below is plain arithmetic that LLVM
# vectorizes with the loop around it:
#
#     x = k ln 2 + r,  k = rint(x / ln 2),  |r| <= ln(2) / 2
#     exp(x) = 2^k (1 + q),  q = expm1(r) = r + r^2/2! + ... + r^n/n!
#
# Taylor to r^13 (float64) or r^7 (float32): the first omitted term is below
# 2^-57 (2^-27) of the result on |r| <= 0.347, so the error is that of the few
# roundings of Horner's rule (tests/test_functions.py measures it in ulps).
# Two steps must not be rearranged, and the kernels are compiled with
# reassociation allowed: r = x - k ln2_hi - k ln2_lo (Cody and Waite: ln2_hi
# has few enough bits that k ln2_hi is exact; folded into k ln 2 it would cost
# |k| roundings) and expm1's 2^k q + (2^k - 1) (folded into 2^k (1 + q) - 1 it
# cancels).  Those are written as LLVM instructions that carry their own
# fast-math flags ('contract' alone), which numba's fastmath pass leaves as they
# are.  2^k is built from its exponent bits, in two halves so that 2^k may be
# subnormal (or overflow) with one rounding, like libm's; that product too is
# written as instructions of its own, or (p 2^k1) 2^k2 could become p (2^k1 2^k2).

_KEEP = ("contract",)  # allows fma only: no reordering

# Per precision: ln 2 split (fdlibm's e_exp.c / e_expf.c), the integer k as
# the low bits of k + 1.5 * 2^p (p = mantissa bits), exponent bias and width.
_EXP_CONSTANTS = {
    64: (0.6931471803691238, 1.9082149292705877e-10, 1.5 * 2.0**52, 1023, 52, ir.IntType(64)),
    32: (0.693145751953125, 1.428606765330187e-06, 1.5 * 2.0**23, 127, 23, ir.IntType(32)),
}


@intrinsic
def _reduce_ln2(typingctx, x):
    """(k, r) with k = rint(x / ln 2) (a float holding an integer) and
    r = (x - k ln2_hi) - k ln2_lo, in this order."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        (x,) = args
        hi, lo, _, _, _, _ = _EXP_CONSTANTS[sig.args[0].bitwidth]
        ty = x.type
        rint = builder.module.declare_intrinsic("llvm.rint", [ty])
        k = builder.call(rint, [builder.fmul(x, ir.Constant(ty, 1 / math.log(2)), flags=_KEEP)])
        r = builder.fsub(x, builder.fmul(k, ir.Constant(ty, hi), flags=_KEEP), flags=_KEEP)
        r = builder.fsub(r, builder.fmul(k, ir.Constant(ty, lo), flags=_KEEP), flags=_KEEP)
        return context.make_tuple(builder, sig.return_type, [k, r])

    return types.UniTuple(x, 2)(x), codegen


@intrinsic
def _ldexp(typingctx, p, k):
    """p 2^k for an integer-valued float k with |k| <= 2 emax, as (p 2^k1) 2^k2,
    k1 = floor(k / 2), k2 = k - k1: both powers are normal numbers, so the only
    rounding is the last product's (where p 2^k is subnormal, or overflows).
    k's integer comes out of the low bits of k + 1.5 2^m (m mantissa bits) and
    goes into an exponent field: integer vector instructions only (AVX2 has no
    float64 -> int64 conversion)."""
    if not isinstance(p, types.Float) or p != k:
        return None

    def codegen(context, builder, sig, args):
        p, k = args
        _, _, magic, bias, m, ity = _EXP_CONSTANTS[sig.args[0].bitwidth]
        ty = k.type
        shifted = builder.fadd(k, ir.Constant(ty, magic), flags=_KEEP)
        ki = builder.sub(builder.bitcast(shifted, ity),
                         builder.bitcast(ir.Constant(ty, magic), ity))
        k1 = builder.ashr(ki, ir.Constant(ity, 1))
        for kh in (k1, builder.sub(ki, k1)):
            bits = builder.shl(builder.add(kh, ir.Constant(ity, bias)), ir.Constant(ity, m))
            p = builder.fmul(p, builder.bitcast(bits, ty), flags=_KEEP)
        return p

    return p(p, k), codegen


@intrinsic
def _scale_expm1(typingctx, s, q):
    """s q + (s - 1), evaluated as written (expm1 = 2^k expm1(r) + 2^k - 1)."""
    if not isinstance(s, types.Float) or s != q:
        return None

    def codegen(context, builder, sig, args):
        s, q = args
        s_1 = builder.fsub(s, ir.Constant(s.type, 1.0), flags=_KEEP)
        return builder.fadd(builder.fmul(s, q, flags=_KEEP), s_1, flags=_KEEP)

    return s(s, q), codegen


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _expm1_taylor(r):
    """expm1(r) = r + r^2/2! + ... for |r| <= ln(2)/2, by Horner's rule; degree 13
    for float64, 7 for float32 (see the block comment above)."""
    f = type(r)
    if f(0.1) == 0.1:  # float64 (a float32 0.1 differs from the float64 one)
        p = f(1 / 6227020800)
        p = f(1 / 479001600) + r * p
        p = f(1 / 39916800) + r * p
        p = f(1 / 3628800) + r * p
        p = f(1 / 362880) + r * p
        p = f(1 / 40320) + r * p
        p = f(1 / 5040) + r * p
    else:
        p = f(1 / 5040)
    p = f(1 / 720) + r * p
    p = f(1 / 120) + r * p
    p = f(1 / 24) + r * p
    p = f(1 / 6) + r * p
    p = f(1 / 2) + r * p
    p = f(1) + r * p
    return r * p


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def exp(x):
    """e^x, vectorizable (see the block comment above): within 1-2 ulps of libm's
    exp for every float, 0 below the smallest subnormal, inf above the largest
    float, NaN for NaN."""
    f = type(x)
    lo, hi = (f(-746), f(710)) if f(0.1) == 0.1 else (f(-105), f(89))
    x = lo if x < lo else x  # NaN compares false: it stays NaN
    x = hi if x > hi else x
    k, r = _reduce_ln2(x)
    return _ldexp(f(1) + _expm1_taylor(r), k)


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _expm1_neg(x):
    """e^x - 1 for x <= 0 without cancellation near 0 (clamped at -64, where it
    is -1 in both precisions)."""
    f = type(x)
    x = f(-64) if x < f(-64) else x
    k, r = _reduce_ln2(x)
    return _scale_expm1(_ldexp(f(1), k), _expm1_taylor(r))


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def sigmoid(z):
    """Logistic function without overflow: exp is only taken of -|z|, and
    1 / (1 + e) or e / (1 + e) is one division picked by a select, so a loop
    over units vectorizes.

    Constants take z's type (``type(z)(1)``): a bare ``1.0`` is a float64 and would
    promote float32 code to float64 arithmetic.
    """
    one = type(z)(1)
    e = exp(-abs(z))
    num = one if z >= 0 else e
    return num / (one + e)


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def tanh(z):
    """tanh z = -m / (2 + m) with m = expm1(-2|z|), odd in z.

    Accurate at every |z| (m ~ -2|z| keeps its relative precision for small z,
    where (1 - e) / (1 + e) would cancel) and vectorizable, in both precisions.
    """
    f = type(z)
    m = _expm1_neg(f(-2) * abs(z))
    t = -m / (f(2) + m)
    return t if z >= 0 else -t


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def activate(code, z):
    """a = f(z) for the unit-wise activations (softmax is done per layer)."""
    if code == SIGMOID:
        return sigmoid(z)
    if code == TANH:
        return tanh(z)
    if code == RELU:
        return z if z > 0 else z * type(z)(0)  # NaN stays NaN
    return z


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def derivative_from_a(code, a):
    """f'(z) written in terms of a = f(z), so the forward pass need not keep z.

    sigmoid: a (1 - a)  (000 eq. (5b));  tanh: 1 - a^2  (004 section 2);
    relu: 1 if a > 0 else 0 (002 eq. (2); f'(0) taken as 0);  identity: 1.
    """
    one = type(a)(1)
    if code == SIGMOID:
        return a * (one - a)
    if code == TANH:
        return one - a * a
    if code == RELU:
        return one if a > 0 else type(a)(0)
    return one


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def _log1p_unit(u):
    """ln(1 + u) for 0 <= u <= 1, vectorizable.

    1 + u = 2^k m with k = 0 or 1 and m in [sqrt(2)/2, sqrt(2)], so that
    ln m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...) with s = (m - 1)/(m + 1),
    |s| <= 0.172; m - 1 is u itself (k = 0: no rounding of 1 + u, so small u
    keep their digits) or (u - 1)/2.  Eleven terms (float64) or six (float32)
    leave a remainder below 2^-55 (2^-26) of the result.
    """
    f = type(u)
    big = u > f(0.41421356237309503)  # 1 + u > sqrt(2)
    m1 = f(0.5) * (u - f(1)) if big else u
    s = m1 / (f(2) + m1)
    s2 = s * s
    if f(0.1) == 0.1:  # float64
        p = f(1 / 21)
        p = f(1 / 19) + s2 * p
        p = f(1 / 17) + s2 * p
        p = f(1 / 15) + s2 * p
        p = f(1 / 13) + s2 * p
        p = f(1 / 11) + s2 * p
    else:
        p = f(1 / 11)
    p = f(1 / 9) + s2 * p
    p = f(1 / 7) + s2 * p
    p = f(1 / 5) + s2 * p
    p = f(1 / 3) + s2 * p
    p = f(1) + s2 * p
    k_ln2 = f(0.6931471805599453) if big else f(0)
    return k_ln2 + f(2) * s * p


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def log1pexp(t):
    """ln(1 + e^t) = max(t, 0) + ln(1 + e^-|t|), without overflow or loss of
    precision for large |t|, vectorizable."""
    return max(t, type(t)(0)) + _log1p_unit(exp(-abs(t)))
