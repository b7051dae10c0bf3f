"""Compiled code specialized for one small network: its sizes as constants.

The generic drivers (``kernels``) read the network from a layout table at run
time and run every product on the packed micro-kernel.  For a network of a
few units that machinery is most of the time: packing W, masked micro-kernel
steps on a 3 x 2 matrix, loops whose bounds LLVM cannot see.  Here the
network's sizes, hidden activations and biases are written into the source of
a module made for it (``source``), so every sum over units is written out:
the weights and the gradient's running sums are local values, and each
equation runs unit by unit as one loop over the examples that LLVM
vectorizes (several examples per vector instruction, exp included).

Same bits as the generic drivers, by construction rather than by luck:

- every product entry is the same chain of fused multiply-adds over its sum
  index in order (``functions.fma``: LLVM's fma, which nothing reorders), from
  0, as the micro-kernel computes it; z + b, f(z), delta * f'(a) are the same
  formulas (``functions``) in the same order; dJ/dW and dJ/db are sums over
  the examples in order; a vector lane computes what a scalar would;
- the output layer is written out for the network's output activation and
  loss with the formulas ``kernels._output_delta`` uses (``functions.bce_term``
  .. ``functions.output_delta``, made of operations that nothing reorders), its
  sums over the units in the same order; what the generic code computes with
  loops that LLVM may vectorize (the sum of the examples' losses, the finite
  flag) is the generic code itself: ``kernels._total_loss`` and
  ``kernels._finite_flag``.

The specialized functions have the generic drivers' signatures, so the plan
and the compiled training loop (``train_kernels``) call them in the drivers'
place.  The forward pass runs over every example, then the output layer (one
loop over the examples: a^(L), J(e), delta^(L)), then the backward pass and
the gradient's sums.  A module serves one output activation and loss (they
are part of its name), so nothing is chosen at run time.

The module's source goes into a cache folder under a name that hashes it and
the core's own sources (``module_for``), and is compiled with ``cache=True``:
a second process, or a second network of the same shape, loads it from disk.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
from numba import njit

from . import functions
from .config import ERROR_MODEL, FASTMATH
from .functions import BCE, CROSS_ENTROPY, EXP, IDENTITY, POISSON, RELU, SIGMOID, SOFTMAX, SSE, TANH

__all__ = ["cache_folder", "eligible", "module_for", "source"]

# Networks this path serves: at most MAX_PARAMS parameters and MAX_WIDTH units a
# layer.  Its gradient's sums run one scalar chain per parameter, while the
# generic drivers' micro-kernel runs them several to a vector instruction:
# measured (one thread, gradients of 32 and 150 examples, time against the
# generic serial driver), 3-2-1 0.3, 6-10-2 (92 parameters) 0.6-0.7, 10-12-3
# (171) 0.72, 13-16-8-2 (378) 0.9, 8-16-4 (212) 1.0, 20-25-4 (604) 1.8.
MAX_PARAMS = 200
MAX_WIDTH = 64
# ... and at most MAX_LAYERS layers: the compile time grows faster than the
# depth (measured on a loaded 2-core box: 16 layers of 1 unit 2.7 s, 16 of 3
# 15 s, as [1, 48, 1]; 50 layers 9.5 s; 200 layers of 1 unit, 200 parameters,
# 108 s and 1.3 GB); its speed-ups were measured on networks of one or two
# hidden layers.
MAX_LAYERS = 16


# The activations as compiled functions, not inlined by numba: inlining at
# numba's level re-types the callee at every call site, and a module of a
# few hundred of them spent seconds there (4-8-3: 7.5 s to compile, 1.6 s of it
# in LLVM).  LLVM inlines them all the same (they are small), so the loops
# over the examples still vectorize; and their few operations have no
# order to choose, so their bits are the inlined ones'.
_FUNCTION = {"cache": True, "fastmath": FASTMATH, "error_model": ERROR_MODEL}
sigmoid = njit(**_FUNCTION)(functions.sigmoid.py_func)
tanh = njit(**_FUNCTION)(functions.tanh.py_func)
relu = njit(**_FUNCTION)(functions.relu.py_func)
times_derivative = njit(**_FUNCTION)(functions.times_derivative.py_func)
# the output layer's formulas (kernels._output_delta's)
bce_term = njit(**_FUNCTION)(functions.bce_term.py_func)
cross_entropy_term = njit(**_FUNCTION)(functions.cross_entropy_term.py_func)
poisson_term = njit(**_FUNCTION)(functions.poisson_term.py_func)
sse_term = njit(**_FUNCTION)(functions.sse_term.py_func)
softmax_dot = njit(**_FUNCTION)(functions.softmax_dot.py_func)
output_delta = njit(**_FUNCTION)(functions.output_delta.py_func)


def eligible(sizes, bias) -> bool:
    """Whether a network of these sizes gets specialized code (``MAX_PARAMS``,
    ``MAX_WIDTH``, ``MAX_LAYERS``)."""
    n = sum(a * b + (b if has else 0) for a, b, has in zip(sizes[:-1], sizes[1:], bias))
    return n <= MAX_PARAMS and max(sizes) <= MAX_WIDTH and len(sizes) - 1 <= MAX_LAYERS


# ---------------------------------------------------------------- the source


def _chain(terms):
    """The chain fma(w_p, v_p, ... fma(w_0, v_0, zero)) over the terms in order."""
    expr = "zero"
    for w, v in terms:
        expr = f"fma({w}, {v}, {expr})"
    return expr


def _activation(code, z):
    # the formulas of functions.activate, with the code known
    if code == SIGMOID:
        return f"sigmoid({z})"
    if code == TANH:
        return f"tanh({z})"
    if code == RELU:
        return f"relu({z})"
    return z


def _times_derivative(code, d, a):
    # functions.times_derivative, with the code known (None: f' = 1)
    return None if code == IDENTITY else f"times_derivative({code}, {d}, {a})"


def quick_scratch_need(sizes, N: int) -> int:
    """Values of ``scratch`` that ``quick_loss_grad`` needs for N examples: the
    specialized functions' and the examples' losses."""
    return scratch_need(sizes, N) + N


def scratch_need(sizes, N: int) -> int:
    """Values of ``scratch`` the specialized functions use for N examples: the
    flag's line, then every unit's activations and deltas, unit by unit
    (``source``)."""
    return SCRATCH0 + (2 * sum(sizes) + 2) * N


SCRATCH0 = 16  # scratch[0] is the gradient drivers' finite flag; a line of 64 bytes


def source(sizes, codes, bias, out_code, loss_code, cache: bool = True) -> str:
    """The module specialized for a network of ``sizes``, hidden layers'
    activation codes ``codes`` (l = 1..L-1), ``bias`` (per layer), output
    activation ``out_code`` and loss ``loss_code``: functions ``loss_grad`` and
    ``forward`` with the signatures of ``kernels.loss_grad_serial`` and
    ``kernels.forward_serial`` (their ``loss_code`` and ``fns`` are not read:
    the loss is the module's; ``layout``: the network's table, of which they
    read, for J's L2 term, the weights' places; ``scratch``: at least
    ``scratch_need(sizes, N)`` values).

    The equations run unit by unit over all the examples, each loop over the
    examples one formula that LLVM vectorizes (several examples per vector
    instruction: the activations' exp, the chains), on copies of a^(l) and
    delta^(l) stored unit-major in ``scratch`` (unit u of example e at
    ``u * N + e`` from A or D), so that consecutive examples are adjacent.
    The gradient's sums run example by example in order, their running sums
    kept in local values.  ``cache``: compiled with numba's ``cache=True``
    (off for a module in a folder of this process only, whose cache files no
    later process would read)."""
    from .plan import layer_offsets

    sizes, codes, bias = tuple(sizes), tuple(codes), tuple(bias)
    L = len(sizes) - 1
    if L < 1 or len(codes) != L - 1 or SOFTMAX in codes or EXP in codes:
        raise ValueError("source: one activation code per hidden layer, none of them "
                         "softmax or exp")
    if loss_code not in (SSE, BCE, CROSS_ENTROPY, POISSON):
        raise ValueError(f"source: unknown loss code {loss_code}")
    offsets = layer_offsets(sizes, bias)
    cols = [int(c) for c in np.cumsum((0,) + sizes)]  # layer l's first unit in acts / deltas
    S = cols[-1]
    w = [[[f"w{l}_{i}_{j}" for j in range(sizes[l - 1])] for i in range(sizes[l])]
         for l in range(L + 1)]  # w[l][i][j], l >= 1
    params = []  # (flat index, local name) of every parameter, in the flat order
    for l in range(1, L + 1):
        w_off, b_off, _ = offsets[l - 1]
        n_in = sizes[l - 1]
        for i in range(sizes[l]):
            params += [(w_off + i * n_in + j, w[l][i][j]) for j in range(n_in)]
            if b_off >= 0:
                params.append((b_off + i, f"b{l}_{i}"))
    head = [
        (f'"""Specialized for sizes {sizes}, hidden activations {codes}, bias {bias}'
         '\n(generated by fastbp._core.small.source; see that module)."""'),
        "",
        "from numba import njit",
        "",
        "from math import log",
        "",
        "from fastbp._core.functions import add_kept, exp, fma, mul_kept, sub_kept",
        "from fastbp._core.kernels import _finite_flag, _total_loss",
        "from fastbp._core.numba_private import NO_REFCOUNT",
        ("from fastbp._core.small import (bce_term, cross_entropy_term, output_delta, "
         "poisson_term, relu,"),
        "                                sigmoid, softmax_dot, sse_term, tanh, times_derivative)",
        "",
        # no reassociation (nothing here may be reordered) and no 'nsz' (under it LLVM
        # turns fma(a, b, 0) into a * b, which differs in the sign of a zero)
        'FLAGS = {"contract", "arcp"}',
        f"OPTIONS = dict(cache={bool(cache)}, nogil=True, fastmath=FLAGS, error_model='numpy',",
        "               **NO_REFCOUNT)",
    ]

    # one view per unit (a_u = scratch[A + u N : A + (u + 1) N]): indexed by the
    # loop's e alone, which numba knows is not negative, so it adds no wraparound
    # to the index and LLVM sees consecutive addresses
    def A(u):
        return f"a_{u}[e]"

    def D(u):
        return f"d_{u}[e]"

    def prologue(body, grad):
        body += ["    N = X.shape[0]",
                 "    zero = theta.dtype.type(0)",
                 f"    if scratch.shape[0] < {SCRATCH0} + {2 * S + 2} * N:  # never, from a plan",
                 "        return zero / zero",
                 f"    A = {SCRATCH0}",
                 f"    D = A + {S} * N",
                 f"    Q = A + {2 * S} * N"]
        body += [f"    a_{u} = scratch[A + {u} * N:A + {u + 1} * N]" for u in range(S)]
        body += [f"    q_{u} = scratch[Q + {u} * N:Q + {u + 1} * N]" for u in range(2)]
        if grad:
            body += [f"    d_{u} = scratch[D + {u} * N:D + {u + 1} * N]"
                     for u in range(sizes[0], S)]
        body += [f"    {name} = theta[{k}]" for k, name in params]

    def forward_pass(body):
        """a^(0) = x, the hidden layers and z^(L), unit-major from A."""
        body.append("    for e in range(N):")
        body += [f"        {A(j)} = X[e, {j}]" for j in range(sizes[0])]
        for l in range(1, L + 1):
            body.append(f"    # z^({l}) = W^({l}) a^({l - 1}) + b^({l}) "
                        f"(000 eq. before (1); 004 section 5)"
                        + (f", a^({l}) = f_{l}(z^({l})) (004 section 2)" if l < L else ""))
            for i in range(sizes[l]):
                z = _chain((w[l][i][j], A(cols[l - 1] + j)) for j in range(sizes[l - 1]))
                if bias[l - 1]:
                    z = f"{z} + b{l}_{i}"
                body.append("    for e in range(N):")
                body.append(f"        {A(cols[l] + i)} = "
                            f"{_activation(codes[l - 1], z) if l < L else z}")

    n_L, c_L = sizes[L], cols[L]
    sse, softmax = loss_code == SSE, out_code == SOFTMAX
    term = {CROSS_ENTROPY: "cross_entropy_term(y, {lse}, z)", BCE: "bce_term(z, y)",
            POISSON: "poisson_term(a, y, z)", SSE: "sse_term(a, y)"}[loss_code]

    def output_layer(body, want_loss, want_delta, write_acts):
        """a^(L), the examples' losses J(e) into ``losses`` and delta^(L) into
        the D copies: kernels._output_delta's formulas in its order, as loops
        over the examples that each write one or two arrays (a loop writing
        more would need more run-time overlap checks of its arrays than LLVM
        makes before it vectorizes, and would run scalar).  a^(L) replaces
        z^(L) in its copies; Q holds lse (softmax), then sum_k exp(z_k - m)
        or sum_m a_m (a_m - y_m)."""
        body.append("    # a^(L) = f_L(z^(L)), J(e) and delta^(L) = s dJ/dz^(L) "
                    "(000 eq. (1), (5a)-(6); 002 eq. (23)-(31); 004 eq. (1))")
        loop = "    for e in range(N):"
        lse = "q_0[e]" if softmax else "zero"
        if softmax:
            body += [loop, f"        q_0[e] = {A(c_L)}"]
            for k in range(1, n_L):
                body += [loop, f"        q_0[e] = max(q_0[e], {A(c_L + k)})"]
            for k in range(n_L):
                prev = "q_1[e]" if k else "zero"
                body += [loop, f"        q_1[e] = add_kept({prev}, exp(sub_kept({A(c_L + k)}, q_0[e])))"]
            body += [loop, "        q_0[e] = add_kept(q_0[e], log(q_1[e]))"]
        a = (f"exp(sub_kept(z, {lse}))" if softmax else "exp(z)" if out_code == EXP
             else _activation(out_code, "z"))
        for k in range(n_L):
            body += [loop, f"        z = {A(c_L + k)}"]
            if want_loss or want_delta:
                prev = "losses[e]" if k else "zero"
                body += [f"        a = {a}", f"        y = Y[e, {k}]",
                         f"        losses[e] = add_kept({prev}, {term.format(lse=lse)})",
                         f"        {A(c_L + k)} = a"]
            else:
                body.append(f"        {A(c_L + k)} = {a}")
        if write_acts:
            for k in range(n_L):
                body += [loop, f"        acts[e, {c_L + k}] = {A(c_L + k)}"]
        if want_delta and sse and softmax:
            for k in range(n_L):
                prev = "q_1[e]" if k else "zero"
                body += [loop, f"        q_1[e] = softmax_dot({A(c_L + k)}, Y[e, {k}], {prev})"]
        dot = "q_1[e]" if want_delta and sse and softmax else "zero"

        def deltas(p, s):
            for k in range(n_L):
                body.extend([p + loop, (f"{p}        {D(c_L + k)} = output_delta({out_code}, "
                                        f"{sse}, {s}, {A(c_L + k)}, Y[e, {k}], {dot})")])

        if want_loss or want_delta:
            body.append("    if weights.shape[0] > 0:  # a separate multiply: unweighted bits kept")
            if want_loss:
                body += ["    " + loop, "            losses[e] = mul_kept(losses[e], weights[e])"]
            if want_delta:
                deltas("    ", "mul_kept(scale, weights[e])")
                body.append("    else:")
                deltas("    ", "scale")

    # ------------------------------------------------------------ loss_grad
    grad = ["", "", "@njit(**OPTIONS)",
            ("def _grad(theta, layout, X, Y, weights, scale, l2, input_grad, deltas, losses, "
             "grad, scratch):")]
    prologue(grad, True)
    forward_pass(grad)
    output_layer(grad, True, True, False)
    for l in range(L, 0, -1):
        n_in, n_out = sizes[l - 1], sizes[l]
        if l > 1:
            grad.append(f"    # delta^({l - 1})_j = f'(z^({l - 1})_j) sum_i W^({l})[i, j] "
                        f"delta^({l})_i (004 eq. (4); 002 eq. (25) with (24))")
            for j in range(n_in):
                chain = _chain((w[l][i][j], D(cols[l] + i)) for i in range(n_out))
                d = _times_derivative(codes[l - 2], chain, A(cols[l - 1] + j))
                grad.append("    for e in range(N):")
                grad.append(f"        {D(cols[l - 1] + j)} = {chain if d is None else d}")
        else:
            grad.append("    if input_grad:")
            grad.append("        # dJ/dx_j = sum_i W^(1)[i, j] delta^(1)_i (004 eq. (7))")
            grad.append("        for e in range(N):")
            for j in range(n_in):
                chain = _chain((w[1][i][j], D(cols[1] + i)) for i in range(n_out))
                grad.append(f"            deltas[e, {j}] = {chain}")
    grad.append("    # dJ/dW^(l)[i, j] = sum_e delta^(l)_i a^(l-1)_j, dJ/db^(l)_i = sum_e "
                "delta^(l)_i, over e in order")
    grad.append("    # (000 eq. (7)-(8), (13)-(14); 004 eq. (5), (6))")
    for l in range(1, L + 1):
        for i in range(sizes[l]):
            grad += [f"    g{w[l][i][j]} = zero" for j in range(sizes[l - 1])]
            if bias[l - 1]:
                grad.append(f"    gb{l}_{i} = zero")
    grad.append("    for e in range(N):")
    for l in range(1, L + 1):
        for i in range(sizes[l]):
            grad.append(f"        d = {D(cols[l] + i)}")
            for j in range(sizes[l - 1]):
                g = f"g{w[l][i][j]}"
                grad.append(f"        {g} = fma({A(cols[l - 1] + j)}, d, {g})")
            if bias[l - 1]:
                grad.append(f"        gb{l}_{i} = gb{l}_{i} + d")
    grad += [f"    grad[{k}] = g{name}" for k, name in params]
    grad.append("    if l2 != 0:")
    grad.append("        # + l2 W[i, j] (004 section 9), as the generic drivers add it")
    grad += [f"        grad[{k}] += l2 * {name}" for k, name in params if name[0] == "w"]
    grad.append("    _finite_flag(grad, scratch)")
    grad.append("    return _total_loss(theta, layout, losses, scale, l2)")
    grad += _one_example(grad)
    for one in (False, True):
        grad += _entries(sizes[0], n_L, len(params), S, loss_code, one)

    # ------------------------------------------------------------ forward
    fwd = ["", "", "@njit(**OPTIONS)",
           ("def forward(theta, layout, X, Y, weights, loss_code, want_loss, scale, l2, acts, "
            "losses, scratch, fns):")]
    prologue(fwd, False)
    forward_pass(fwd)
    fwd.append("    if not want_loss:")
    part = []
    output_layer(part, False, False, True)
    fwd += ["    " + line for line in part]
    fwd.append("        return zero")
    output_layer(fwd, True, False, True)
    fwd.append("    return _total_loss(theta, layout, losses, scale, l2)")
    return "\n".join(head + grad + fwd) + "\n"


def _entries(n_0, n_L, P, S, loss_code, one: bool) -> list:
    """The lines of ``loss_grad`` and ``quick_loss_grad`` (``one``: of
    ``loss_grad1`` and ``quick_loss_grad1``, which run ``_grad1`` on a batch of
    one example, and only that: a network used on one batch size compiles one
    of the two bodies)."""
    sfx, body = ("1", "_grad1") if one else ("", "_grad")
    guard = (["    if X.shape[0] != 1:  # never, from a plan",
              "        return theta.dtype.type(0) / theta.dtype.type(0)"] if one else [])
    return [
        "", "",
        "@njit(**OPTIONS)",
        (f"def loss_grad{sfx}(theta, layout, X, Y, weights, loss_code, scale, l2, input_grad, "
         "acts, deltas, losses, grad, scratch, fns):"),
        ('    """The gradient driver (``kernels.loss_grad_serial``\'s signature)'
         + (', for one example."""' if one else '."""')),
        *guard,
        (f"    return {body}(theta, layout, X, Y, weights, scale, l2, input_grad, deltas, "
         "losses, grad, scratch)"),
        "", "",
        "@njit(**OPTIONS)",
        f"def quick_loss_grad{sfx}(theta, layout, X, Y, grad, scratch, scale, l2, tol):",
        '    """J and dJ/dtheta into ``grad`` for inputs that may not have been checked, with',
        "    no example weights and no dJ/dX: a call from Python with few arguments.",
        "    scratch[0] says what happened: 1 done and the gradient finite, 0 done and",
        "    not finite, 2 not done (a size does not match, or the inputs fail the",
        "    screen ``inputs_clean``): the caller then takes the checked path, which",
        '    names what is wrong.  The examples\' losses go after the other values."""',
        "    N = X.shape[0]",
        f"    losses_at = {SCRATCH0} + {2 * S + 2} * N",
        (f"    if (N {'!= 1' if one else '== 0'} or X.shape[1] != {n_0} or Y.shape[0] != N"
         f" or Y.shape[1] != {n_L}"),
        f"            or theta.shape[0] != {P} or grad.shape[0] != {P}",
        "            or scratch.shape[0] < losses_at + N):",
        "        if scratch.shape[0] > 0:",
        "            scratch[0] = 2",
        "        return theta.dtype.type(0)",
        *_screen(n_0, n_L, loss_code),
        "    if not ok:",
        "        scratch[0] = 2",
        "        return theta.dtype.type(0)",
        "    # no weights (an empty view); deltas: not written without dJ/dX, an empty",
        "    # writable matrix of the drivers' type (X may be read-only).  False as a",
        f"    # value, not a literal, which would make numba compile {body} a second time",
        "    no = N < 0",
        f"    return {body}(theta, layout, X, Y, grad[:0], scale, l2, no,",
        "                 grad[:0].reshape((0, 1)), scratch[losses_at:losses_at + N], grad,",
        "                 scratch)",
    ]


def _screen(n_0, n_L, loss_code) -> list:
    """Lines setting ``ok``: the test of ``screen.inputs_clean`` for this network's
    loss, with the rows' widths written out, so that each loop over the examples
    vectorizes (the generic screen's inner loops of a few values do not): theta,
    X and Y finite, and Y valid targets (bce: in [0, 1]; poisson: >= 0;
    cross_entropy: >= 0 with row sums within half the tolerance ``tol`` of 1)."""
    out = ["    ok = True", "    for k in range(theta.shape[0]):",
           "        ok &= theta[k] - theta[k] == 0",
           "    for e in range(N):"]
    out += [f"        ok &= X[e, {j}] - X[e, {j}] == 0" for j in range(n_0)]
    out.append("    for e in range(N):")
    for k in range(n_L):
        y = f"Y[e, {k}]"
        out.append(f"        ok &= {y} - {y} == 0")
        if loss_code == BCE:
            out.append(f"        ok &= ({y} >= 0) & ({y} <= 1)")
        elif loss_code in (POISSON, CROSS_ENTROPY):
            out.append(f"        ok &= {y} >= 0")
    if loss_code == CROSS_ENTROPY:
        out.append("        s = 0.0")
        out += [f"        s += float(Y[e, {k}])" for k in range(n_L)]
        out.append("        ok &= abs(s - 1.0) <= 0.5 * tol")
    return out


def _one_example(lines):
    """``_grad`` (its lines) for a batch of one example, as ``_grad1``: every loop
    over the examples unrolled to its one iteration and the unit-major copies
    turned into local values, so the example's values stay in registers.  A
    batch of one is per-example SGD (003's network): there the loops' set-up
    costs more than their one iteration.  The operations are the same, so are
    the bits."""
    out, loop_at = [], []
    for line in lines:
        if not line.strip():
            out.append(line)
            continue
        indent = len(line) - len(line.lstrip())
        while loop_at and indent <= loop_at[-1]:
            loop_at.pop()
        if line.strip() == "for e in range(N):":
            loop_at.append(indent)
            continue
        if re.match(r"\s+[adq]_\d+ = scratch\[", line):
            continue  # the copies become local values
        line = line[4 * len(loop_at):]
        line = re.sub(r"\b([adq]_\d+)\[e\]", r"\1", line)
        line = line.replace("[e]", "[0]").replace("[e, ", "[0, ")
        out.append(line.replace("def _grad(", "def _grad1(", 1))
    return out


# ---------------------------------------------------------------- the modules

_modules = {}
_lock = threading.Lock()


def _after_fork_in_child():
    # a fork while another thread makes a module (holding _lock) would leave the
    # child's lock held for ever by a thread it does not have: a new one (that
    # thread's module, unfinished there, is made again on first use)
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _core_stamp() -> str:
    """A hash of the sources the generated code depends on: a changed core never
    loads code compiled against the old one (numba's cache checks only the
    generated file itself)."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in ("small.py", "kernels.py", "functions.py", "config.py", "numba_private.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()


_STAMP = None


def cache_folder() -> Path:
    """Where the generated modules live: ``FASTBP_CACHE_DIR``, else a folder in
    numba's cache folder when ``NUMBA_CACHE_DIR`` is set, else the user's cache
    folder (``XDG_CACHE_HOME`` or ~/.cache) under fastbp/small."""
    env = os.environ.get("FASTBP_CACHE_DIR")
    if env:
        return Path(env) / "small"
    numba_dir = os.environ.get("NUMBA_CACHE_DIR")
    if numba_dir:
        return Path(numba_dir) / "fastbp_small"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastbp" / "small"


def _write_once(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds it (rewriting would
    change its time stamp, which invalidates numba's cache of it); atomically,
    so a concurrent process never reads half a file.  False if not writable."""
    data = text.encode()
    try:
        # read only a regular file of the right size (a FIFO would block the
        # read, a huge file fill the memory); anything else is replaced
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode) and st.st_size == len(data) and path.read_bytes() == data:
            return True
    except OSError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return True
    except OSError:  # e.g. a full disk: no partial file left behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


def _remove(folder: str, pid: int) -> None:
    # only by the process that made it: a forked child that exits normally runs
    # its parent's exit handlers too
    if os.getpid() == pid:
        shutil.rmtree(folder, ignore_errors=True)


def _private_copy(name: str, sizes, codes, bias, out_code, loss_code) -> Path:
    """The module written to a temporary folder of this process (removed at
    exit), compiled without numba's cache: when the cache folder cannot be
    written, each process would otherwise leave a folder of its own behind,
    and numba a cache folder for it, one more every run."""
    folder = tempfile.mkdtemp(prefix="fastbp-small-")
    atexit.register(_remove, folder, os.getpid())
    path = Path(folder) / f"{name}.py"
    path.write_text(source(sizes, codes, bias, out_code, loss_code, cache=False))
    return path


# What making a module costs, for the plan's choice of when to (``Plan._tier_cost``).
# Measured on the 2-core machine, a fresh process, first gradient (quick and
# driver entries) plus first forward pass: 3-2-1 2.6 s (8 parameters), 4-8-3
# 7.1 s (67); loading both from numba's cache 0.3-0.4 s.
LOAD_S = 0.35


def compile_seconds(n_params: int) -> float:
    """About how long compiling a module of ``n_params`` parameters takes (the
    two measurements above, on a line)."""
    return 2.0 + 0.076 * n_params


def _named(key):
    """(name, path in the cache folder, source) of the module of ``key``."""
    global _STAMP
    if _STAMP is None:
        _STAMP = _core_stamp()
    text = source(*key)
    digest = hashlib.sha256((_STAMP + text).encode()).hexdigest()[:20]
    name = f"net_{digest}"
    return name, cache_folder() / f"{name}.py", text


def generated(sizes, codes, bias, out_code, loss_code) -> bool:
    """Whether the module of this network is in the cache folder already: an
    earlier process made it, and compiled it into numba's cache (unless it
    stopped first: then this one compiles it)."""
    key = (tuple(sizes), tuple(codes), tuple(bias), int(out_code), int(loss_code))
    if key in _modules:
        return True
    try:
        return _named(key)[1].is_file()
    except (OSError, ValueError):
        return False


def module_for(sizes, codes, bias, out_code, loss_code):
    """The imported specialized module of this network (``source``), made and
    imported once per process; its compiled code is loaded from numba's cache
    when an earlier process compiled it."""
    key = (tuple(sizes), tuple(codes), tuple(bias), int(out_code), int(loss_code))
    mod = _modules.get(key)
    if mod is not None:
        return mod
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            name, path, text = _named(key)
            if not _write_once(path, text):  # no writable cache: this process only
                path = _private_copy(name, *key)
            spec = importlib.util.spec_from_file_location(f"fastbp._small.{name}", path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod
            spec.loader.exec_module(mod)
            _modules[key] = mod
    return mod
