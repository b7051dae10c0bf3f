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

from .config import ERROR_MODEL, FASTMATH

# name -> integer code passed to the kernels (the single place names live)
ACTIVATIONS = {"identity": 0, "sigmoid": 1, "tanh": 2, "relu": 3, "softmax": 4, "exp": 5}
LOSSES = {"sse": 0, "bce": 1, "cross_entropy": 2, "poisson": 3}
REDUCTIONS = ("mean", "sum")

IDENTITY, SIGMOID, TANH, RELU, SOFTMAX, EXP = (ACTIVATIONS[k] for k in ACTIVATIONS)
SSE, BCE, CROSS_ENTROPY, POISSON = (LOSSES[k] for k in LOSSES)

# loss -> output activations it may follow.  bce and cross_entropy are defined only
# on probabilities from these outputs, poisson on the positive means of an exp
# output, and each of the three has the cancelled output delta a - y (000 eq. (6),
# 002 eq. (31), 004 eq. (1); poisson: ``kernels._output_delta``); sse accepts any
# output.
OUTPUT_ACTIVATIONS = {
    "sse": tuple(ACTIVATIONS),
    "bce": ("sigmoid",),
    "cross_entropy": ("softmax",),
    "poisson": ("exp",),
}

# Output-only activations: softmax acts on a whole layer rather than unit by
# unit; exp is the mean of a Poisson output (an exp hidden layer overflows at
# the first large z and is no use).
LAST_LAYER_ONLY = ("softmax", "exp")

# The scalars below are inlined at the Numba level (inline="always"), not left as
# calls into separately compiled functions: with separate functions, a process that
# compiled the kernels and one that loaded them from the cache produced different
# bits for the same call.


# ------------------------------------------------------------ exp, expm1, log1p
# libm's exp, tanh and log1p are scalar calls: a loop that calls them cannot
# be vectorized, and on the documents' tanh and sigmoid networks they were a
# third of the forward pass.  The functions below are plain arithmetic that
# LLVM vectorizes with the loop around them:
#
#     x = k ln 2 + r,  k = rint(x / ln 2),  |r| <= ln(2) / 2
#     exp(x) = 2^k (1 + q),  q = expm1(r) = r + r^2/2! + ... + r^n/n!
#     expm1(x) = 2^k q + (2^k - 1)
#     ln(1 + u) = k ln 2 + 2 atanh(s) = k ln 2 + 2 (s + s^3/3 + s^5/5 + ...),
#         1 + u = 2^k m, m in [sqrt(2)/2, sqrt(2)], s = (m - 1)/(m + 1)
#
# Taylor to r^13 (float64) or r^7 (float32): the first omitted term is below
# 2^-57 (2^-27) of the result on |r| <= 0.347; for ln, |s| <= 0.172 and eleven
# (six) terms leave less than 2^-55 (2^-26).  So the error is that of a few
# roundings (tests/test_functions.py measures it in ulps against libm and
# extended precision).  2^k is built from its exponent bits, in two halves so
# that it may be subnormal (or overflow) with one rounding, like libm's.
#
# They are emitted as LLVM instructions (numba intrinsics), for two reasons.
# The kernels are compiled with reassociation allowed, and several steps must
# not be rearranged: Cody and Waite's r = x - k ln2_hi - k ln2_lo (ln2_hi has
# few enough bits that k ln2_hi is exact; folded into k ln 2 it would cost
# |k| roundings), expm1's 2^k q + (2^k - 1) (folded into 2^k (1 + q) - 1 it
# cancels), (p 2^k1) 2^k2 (as p (2^k1 2^k2) it overflows early).  Instructions
# that carry their own fast-math flags ('contract' alone: fma, no reordering)
# are left as they are by numba's fastmath pass, so everything here is
# evaluated as written.  And an intrinsic costs no numba-level inlining, which
# is slow to compile: written as inlined Python functions these cost ~3 s of
# a cold start.

_KEEP = ("contract",)

# Per precision: ln 2 split (fdlibm's e_exp.c / e_expf.c); the integer k as the
# low bits of k + 1.5 2^m (m mantissa bits); exponent bias; integer type;
# (lowest, highest) x of exp beyond which it is 0 or inf; Taylor coefficients of
# expm1 from 1/1! up; odd-series coefficients 1/1, 1/3, ... of atanh(s)/s.
_PRECISION = {
    64: (0.6931471803691238, 1.9082149292705877e-10, 1.5 * 2.0**52, 52, 1023, ir.IntType(64),
         (-746.0, 710.0), [1 / math.factorial(n) for n in range(1, 14)],
         [1 / (2 * n + 1) for n in range(11)]),
    32: (0.693145751953125, 1.428606765330187e-06, 1.5 * 2.0**23, 23, 127, ir.IntType(32),
         (-105.0, 89.0), [1 / math.factorial(n) for n in range(1, 8)],
         [1 / (2 * n + 1) for n in range(6)]),
}


class _Emit:
    """Float arithmetic in one precision with 'contract' as the only fast-math
    flag, so that numba's fastmath pass leaves it as written."""

    def __init__(self, builder, ty):
        self.b, self.ty = builder, ty

    def c(self, value):
        """``value`` in this type (every lane of a vector type)."""
        if isinstance(self.ty, ir.VectorType):
            return ir.Constant(self.ty, [value] * self.ty.count)
        return ir.Constant(self.ty, value)

    def add(self, x, y):
        return self.b.fadd(x, y, flags=_KEEP)

    def sub(self, x, y):
        return self.b.fsub(x, y, flags=_KEEP)

    def mul(self, x, y):
        return self.b.fmul(x, y, flags=_KEEP)

    def div(self, x, y):
        return self.b.fdiv(x, y, flags=_KEEP)

    def clamp(self, x, lo, hi):
        """min(max(x, lo), hi) with NaN passed through (it compares false)."""
        b = self.b
        x = b.select(b.fcmp_ordered("<", x, self.c(lo), flags=_KEEP), self.c(lo), x)
        return b.select(b.fcmp_ordered(">", x, self.c(hi), flags=_KEEP), self.c(hi), x)

    def horner(self, x, coeffs):
        """coeffs[0] + x (coeffs[1] + x (coeffs[2] + ...))."""
        p = self.c(coeffs[-1])
        for a in reversed(coeffs[:-1]):
            p = self.add(self.c(a), self.mul(x, p))
        return p

    def reduce_ln2(self, x, P):
        """(k, r): k = rint(x / ln 2) as an integer-valued float, r = x - k ln 2."""
        rint = self.b.module.declare_intrinsic("llvm.rint", [self.ty])
        k = self.b.call(rint, [self.mul(x, self.c(1 / math.log(2)))])
        r = self.sub(x, self.mul(k, self.c(P[0])))
        return k, self.sub(r, self.mul(k, self.c(P[1])))

    def expm1_r(self, r, P):
        """q = expm1(r) = r (1 + r/2! + r^2/3! + ...) for |r| <= ln(2)/2."""
        return self.mul(r, self.horner(r, P[7]))

    def ldexp(self, p, k, P):
        """p 2^k as (p 2^k1) 2^k2, k1 = floor(k/2): integer vector instructions
        only (AVX2 has no float64 -> int64 conversion)."""
        b, magic, m, bias, ity = self.b, P[2], P[3], P[4], P[5]
        shifted = self.add(k, self.c(magic))
        ki = b.sub(b.bitcast(shifted, ity), b.bitcast(self.c(magic), ity))
        k1 = b.ashr(ki, ir.Constant(ity, 1))
        for kh in (k1, b.sub(ki, k1)):
            bits = b.shl(b.add(kh, ir.Constant(ity, bias)), ir.Constant(ity, m))
            p = self.mul(p, b.bitcast(bits, self.ty))
        return p


def _unary_intrinsic(emit):
    """A numba intrinsic f(x) for float32 and float64 x, its body emitted by
    ``emit(e, x, P)`` (e an ``_Emit``, P the precision's constants)."""

    def typer(typingctx, x):
        if not isinstance(x, types.Float):
            return None

        def codegen(context, builder, sig, args):
            return emit(_Emit(builder, args[0].type), args[0], _PRECISION[sig.args[0].bitwidth])

        return x(x), codegen

    typer.__name__ = emit.__name__
    typer.__doc__ = emit.__doc__
    return intrinsic(typer)


def _binary_intrinsic(emit):
    """A numba intrinsic f(x, y) for float32 or float64 x and y of one type, its
    body emitted by ``emit(e, x, y)`` (e an ``_Emit``)."""

    def typer(typingctx, x, y):
        if not (isinstance(x, types.Float) and x == y):
            return None

        def codegen(context, builder, sig, args):
            return emit(_Emit(builder, args[0].type), *args)

        return x(x, y), codegen

    typer.__name__ = emit.__name__
    typer.__doc__ = emit.__doc__
    return intrinsic(typer)


@_unary_intrinsic
def exp(e, x, P):
    """e^x within 1 ulp of libm's: 0 below the smallest subnormal, inf above the
    largest float, NaN for NaN."""
    x = e.clamp(x, *P[6])
    k, r = e.reduce_ln2(x, P)
    return e.ldexp(e.add(e.c(1), e.expm1_r(r, P)), k, P)


@_unary_intrinsic
def _expm1_neg(e, x, P):
    """e^x - 1 for x <= 0, without cancellation near 0 (clamped at -64, where it
    is -1 in both precisions)."""
    x = e.clamp(x, -64.0, 0.0)
    k, r = e.reduce_ln2(x, P)
    s = e.ldexp(e.c(1), k, P)
    return e.add(e.mul(s, e.expm1_r(r, P)), e.sub(s, e.c(1)))


@_unary_intrinsic
def _log1p_unit(e, u, P):
    """ln(1 + u) for 0 <= u <= 1; m - 1 is u itself when 1 + u <= sqrt(2) (no
    rounding of 1 + u, so small u keep their digits), else (u - 1)/2."""
    b = e.b
    big = b.fcmp_ordered(">", u, e.c(math.sqrt(2) - 1), flags=_KEEP)
    m1 = b.select(big, e.mul(e.c(0.5), e.sub(u, e.c(1))), u)
    s = e.div(m1, e.add(e.c(2), m1))
    series = e.mul(e.mul(e.c(2), s), e.horner(e.mul(s, s), P[8]))
    return e.add(b.select(big, e.c(math.log(2)), e.c(0)), series)


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
    return where_ge(z, one, e) / (one + e)


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def tanh(z):
    """tanh z = -m / (2 + m) with m = expm1(-2|z|), odd in z.

    Accurate at every |z| (m ~ -2|z| keeps its relative precision for small z,
    where (1 - e) / (1 + e) would cancel) and vectorizable, in both precisions.
    """
    f = type(z)
    m = _expm1_neg(f(-2) * abs(z))
    t = -m / (f(2) + m)
    return where_ge(z, t, -t)


def emit_relu(e, z):
    """relu(z) = z if z > 0 else z 0 (NaN stays NaN), in the type of ``e`` (an
    ``_Emit``, scalar or vector): the one definition, emitted by ``relu`` (one
    value) and by the forward micro-kernel's store (a register block)."""
    b = e.b
    return b.select(b.fcmp_ordered(">", z, e.c(0), flags=_KEEP), z, e.mul(z, e.c(0)))


@_unary_intrinsic
def _relu_kept(e, z, P):
    """relu(z) (``emit_relu``)."""
    return emit_relu(e, z)


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def relu(z):
    """z if z > 0 else 0 (z * 0: NaN stays NaN)."""
    return _relu_kept(z)


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def activate(code, z):
    """a = f(z) for the unit-wise activations (softmax is done per layer)."""
    if code == SIGMOID:
        return sigmoid(z)
    if code == TANH:
        return tanh(z)
    if code == RELU:
        return relu(z)
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


def _select_intrinsic(predicate):
    """A numba intrinsic f(x, a, b) = a if ``x predicate 0`` else b, for float x,
    a and b of one type: one compare and one select, no branch (numba turns a
    conditional expression into blocks of its own, and straight-line code of
    hundreds of them, as ``small`` generates, takes minutes to compile)."""

    def typer(typingctx, x, a, b):
        if not (isinstance(x, types.Float) and x == a == b):
            return None

        def codegen(context, builder, sig, args):
            x, a, b = args
            test = builder.fcmp_ordered(predicate, x, ir.Constant(x.type, 0.0), flags=_KEEP)
            return builder.select(test, a, b)

        return x(x, a, b), codegen

    return intrinsic(typer)


where_ge = _select_intrinsic(">=")


@_binary_intrinsic
def add_kept(e, x, y):
    """x + y, never reassociated with the operations around it."""
    return e.add(x, y)


@_binary_intrinsic
def sub_kept(e, x, y):
    """x - y, never reassociated with the operations around it."""
    return e.sub(x, y)


@_binary_intrinsic
def mul_kept(e, x, y):
    """x y, never reassociated with the operations around it."""
    return e.mul(x, y)


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c with one rounding (LLVM's ``llvm.fma``): the micro-kernel's step,
    as a scalar that no optimization reorders or splits."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        T = args[0].type
        name = f"llvm.fma.f{a.bitwidth}"
        fn = builder.module.globals.get(name) or ir.Function(
            builder.module, ir.FunctionType(T, [T, T, T]), name)
        return builder.call(fn, list(args))

    return a(a, a, a), codegen


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def fixed_sum(x, lo, hi, square):
    """sum of x[k] (``square``: of x[k]^2) over lo <= k < hi in one fixed order:
    four running sums over k mod 4, then (s0 + s1) + (s2 + s3).  Written with
    ``add_kept`` and ``fma``, which the compiler does not reorder: a plain
    loop under reassociation is vectorized as LLVM sees fit in each function
    that contains it, so two functions inlining the same sum could give
    different bits (the generic drivers and ``small``'s specialized ones must
    not).  Compiled once, not inlined: inlined at numba's level it cost seconds
    of every specialized module's compile."""
    z = x.dtype.type(0)
    s0 = s1 = s2 = s3 = z
    k = lo
    while k + 4 <= hi:
        if square:
            s0 = fma(x[k], x[k], s0)
            s1 = fma(x[k + 1], x[k + 1], s1)
            s2 = fma(x[k + 2], x[k + 2], s2)
            s3 = fma(x[k + 3], x[k + 3], s3)
        else:
            s0 = add_kept(s0, x[k])
            s1 = add_kept(s1, x[k + 1])
            s2 = add_kept(s2, x[k + 2])
            s3 = add_kept(s3, x[k + 3])
        k += 4
    while k < hi:
        s0 = fma(x[k], x[k], s0) if square else add_kept(s0, x[k])
        k += 1
    return add_kept(add_kept(s0, s1), add_kept(s2, s3))


def emit_times_derivative(e, code, d, a):
    """d f'(z) written from a = f(z), for the unit-wise activation ``code`` (a
    Python int), in the type of ``e`` (an ``_Emit``: a scalar, or a vector of
    which each lane is computed as the scalar is): sigmoid d (a (1 - a)), tanh
    d (1 - a a), relu a > 0 ? d : d 0 (NaN stays NaN), else d; in the order
    written.  The one definition of these formulas: ``times_derivative`` (one
    value) and the backward micro-kernel's store (``microkernel``, a register
    block) both emit them here, so the two give the same bits."""
    if code == SIGMOID:
        return e.mul(d, e.mul(a, e.sub(e.c(1), a)))
    if code == TANH:
        return e.mul(d, e.sub(e.c(1), e.mul(a, a)))
    if code == RELU:
        b = e.b
        return b.select(b.fcmp_ordered(">", a, e.c(0), flags=_KEEP), d, e.mul(d, e.c(0)))
    return d


@_binary_intrinsic
def _times_sigmoid_prime(e, d, a):
    """d (a (1 - a)), in this order."""
    return emit_times_derivative(e, SIGMOID, d, a)


@_binary_intrinsic
def _times_tanh_prime(e, d, a):
    """d (1 - a a), in this order."""
    return emit_times_derivative(e, TANH, d, a)


@_binary_intrinsic
def _times_relu_prime(e, d, a):
    """d if a > 0 else d 0."""
    return emit_times_derivative(e, RELU, d, a)


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def times_derivative(code, d, a):
    """d f'(z), f'(z) written from a = f(z) as in ``derivative_from_a``, the
    products evaluated in the order written: under reassociation LLVM would
    pick an order from the code around them (d (a (1 - a)) became (d a)(1 - a)
    in one function and something else in another), and the generic kernels and
    the specialized ones (``small``) must give the same bits."""
    if code == SIGMOID:
        return _times_sigmoid_prime(d, a)
    if code == TANH:
        return _times_tanh_prime(d, a)
    if code == RELU:
        return _times_relu_prime(d, a)  # d times f' = 1 or 0; NaN stays NaN
    return d


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def log1pexp(t):
    """ln(1 + e^t) = max(t, 0) + ln(1 + e^-|t|), without overflow or loss of
    precision for large |t|, vectorizable."""
    return max(t, type(t)(0)) + _log1p_unit(exp(-abs(t)))


# ------------------------------------------------------------ the output layer
# One unit's loss term and delta, each written with operations the compiler does
# not reorder (the ``*_kept`` ones, ``fma``), so that the generic drivers'
# output layer (``kernels._output_delta``) and a specialized module's
# (``small``), vectorized over the examples, give the same bits.


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def bce_term(z, y):
    """softplus(z) - y z = (max(z, 0) - y z) + ln(1 + e^-|z|): the unit's binary
    cross-entropy -[y ln a + (1 - y) ln(1 - a)] with a = sigmoid(z) (000 eq. (1)),
    without taking ln of a rounded 0."""
    return add_kept(sub_kept(max(z, type(z)(0)), mul_kept(y, z)), _log1p_unit(exp(-abs(z))))


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def cross_entropy_term(y, lse, z):
    """y (lse - z) = -y ln a for a = exp(z - lse), the softmax (002 eq. (29))."""
    return mul_kept(y, sub_kept(lse, z))


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def poisson_term(a, y, z):
    """a - y z = a - y ln a for a = e^z: Poisson's negative log-likelihood less ln y!."""
    return sub_kept(a, mul_kept(y, z))


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def sse_term(a, y):
    """(1/2 (a - y)) (a - y) (002 eq. (5))."""
    r = sub_kept(a, y)
    return mul_kept(mul_kept(type(a)(0.5), r), r)


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def softmax_dot(a, y, dot):
    """dot + a (a - y): the running sum_m a_m (a_m - y_m) of sse after a softmax."""
    return fma(a, sub_kept(a, y), dot)


@njit(cache=True, fastmath=FASTMATH, inline="always", error_model=ERROR_MODEL)
def output_delta(code, sse, s, a, y, dot):
    """delta^(L)_k = s dJ/dz_k for the example's scale s: s (a - y) for the three
    cancelling pairs (bce after sigmoid, cross-entropy after softmax, Poisson after
    exp: 000 eq. (5a)-(6), 002 eq. (31), 004 eq. (1)); for sse, s (a - y) f'(z)
    (002 eq. (23)-(24)), with f' = a for exp and, after a softmax, the Jacobian of
    002 eq. (30): (s a) ((a - y) - dot)."""
    r = sub_kept(a, y)
    if not sse:
        return mul_kept(s, r)
    if code == SOFTMAX:
        return mul_kept(mul_kept(s, a), sub_kept(r, dot))
    if code == EXP:
        return mul_kept(mul_kept(s, r), a)
    return times_derivative(code, mul_kept(s, r), a)
