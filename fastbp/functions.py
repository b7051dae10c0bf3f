"""Activation and loss functions: the one table of names, their integer codes,
and the compiled scalar formulas the kernels branch on.

Adding an activation is one entry in ``ACTIVATIONS`` plus one branch in
``activate`` and ``derivative_from_a``; tests parametrize over the table's keys.
"""

from __future__ import annotations

import math

from numba import njit, types
from numba.extending import overload

from ._config import FASTMATH

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


@njit(cache=True, fastmath=FASTMATH, inline="always")
def sigmoid(z):
    """Logistic function without overflow: exp is only taken of -|z|.

    Constants take z's type (``type(z)(1)``): a bare ``1.0`` is a float64 and would
    promote float32 code to float64 arithmetic and float64 ``exp``.
    """
    one = type(z)(1)
    if z >= 0:
        return one / (one + math.exp(-z))
    e = math.exp(z)
    return e / (one + e)


def tanh(z):
    """tanh; in compiled code a float32 version of its own (see ``_tanh_typed``)."""
    return math.tanh(z)


@overload(tanh, jit_options={"fastmath": FASTMATH}, inline="always")
def _tanh_typed(z):
    """float64: libm's tanh.  float32: libm's tanhf costs ~5x an expf here, so
    tanh|z| = (1 - e) / (1 + e) with e = exp(-2|z|) (no overflow: the exponent is
    <= 0), and below |z| = 1/8, where 1 - e would cancel, the odd series
    z - z^3/3 + 2 z^5/15 - 17 z^7/315 (next term < 2e-9 relative there).  Both
    are within a few float32 ulps of tanh."""
    if isinstance(z, types.Float) and z.bitwidth == 32:

        def tanh32(z):
            one = type(z)(1)
            x = abs(z)
            if x < type(z)(0.125):
                x2 = x * x
                t = x + x * x2 * (type(z)(-1 / 3) + x2 * (type(z)(2 / 15)
                                                         + x2 * type(z)(-17 / 315)))
            else:
                e = math.exp(type(z)(-2) * x)
                t = (one - e) / (one + e)
            return t if z >= 0 else -t

        return tanh32
    return lambda z: math.tanh(z)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def activate(code, z):
    """a = f(z) for the unit-wise activations (softmax is done per layer)."""
    if code == SIGMOID:
        return sigmoid(z)
    if code == TANH:
        return tanh(z)
    if code == RELU:
        return z if z > 0 else z * type(z)(0)  # NaN stays NaN
    return z


@njit(cache=True, fastmath=FASTMATH, inline="always")
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


@njit(cache=True, fastmath=FASTMATH, inline="always")
def log1pexp(t):
    """ln(1 + e^t) without overflow or loss of precision for large |t|."""
    if t > 0:
        return t + math.log1p(math.exp(-t))
    return math.log1p(math.exp(t))
