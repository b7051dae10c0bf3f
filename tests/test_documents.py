"""The documents' own worked examples, each against its closed forms.

Every expected value here is computed in this file from the equations of the
document it cites, in that document's layout and notation, never by calling
``fastbp.reference``.  Each example runs against both implementations: the NumPy
reference and the compiled ``fastbp.Network`` (in float64 and float32).

Layouts (shared/seeds/README.md): 000 keeps the bias as column 0 of an out x in
matrix; 001, 002 and 003 use in x out matrices (z = W^T a + b); 004 uses out x in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from cases import spec

import fastbp
from fastbp import reference
from fastbp.datasets import load_iris
from fastbp.params import Params, n_params


def sigmoid(t):
    return 1 / (1 + np.exp(-t))


@dataclass(frozen=True)
class Impl:
    """One implementation under test: the reference or Network, in one dtype."""

    kind: str  # "reference" or "network"
    dtype: str

    def __str__(self):
        return f"{self.kind}-{self.dtype}"

    def network(self, sizes, activations, loss, **kwargs):
        if self.kind == "network":
            return fastbp.Network(sizes, activations, loss, dtype=self.dtype, **kwargs)
        return spec(sizes, activations, loss, dtype=self.dtype, **kwargs)

    def params(self, net, weights, biases=None, layout="out_in"):
        """Params from a document's matrices.  Network converts with its own
        ``params_from``; for the reference the conversion is done here."""
        if self.kind == "network":
            return net.params_from(weights, biases, layout=layout)
        p = Params(net.sizes, net.bias, np.zeros(n_params(net.sizes, net.bias), self.dtype))
        for l, w in enumerate(weights, 1):
            w = np.asarray(w)
            if layout == "bias_column":
                p.W[l][...], p.b[l][...] = w[:, 1:], w[:, 0]
                continue
            p.W[l][...] = w.T if layout == "in_out" else w
            if biases is not None and biases[l - 1] is not None:
                p.b[l][...] = biases[l - 1]
        return p

    def loss_and_grad(self, net, params, X, Y, input_grad=False):
        if self.kind == "network":
            return net.loss_and_grad(params, X, Y, input_grad=input_grad)
        return reference.loss_and_grad(net, params, X, Y, input_grad=input_grad)

    def loss(self, net, params, X, Y):
        if self.kind == "network":
            return net.loss(params, X, Y)
        return reference.loss(net, params, X, Y)

    def forward(self, net, params, X):
        if self.kind == "network":
            return net.forward(params, X)
        return reference.forward(net, params, X)

    def assert_close(self, actual, expected, what=""):
        """float64: rtol 1e-10.  float32: rtol 1e-4.  Entries far below the array's
        largest (sums with cancellation, exact zeros) are held to an absolute
        tolerance of rtol/10 times that largest entry."""
        expected = np.asarray(expected, dtype=np.float64)
        rtol = 1e-10 if self.dtype == "float64" else 1e-4
        atol = rtol / 10 * float(np.max(np.abs(expected), initial=0.0))
        actual = np.asarray(actual)
        assert actual.dtype == np.dtype(self.dtype) or actual.ndim == 0, what
        np.testing.assert_allclose(
            np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=atol, err_msg=what
        )


IMPLS = [
    Impl("reference", "float64"),
    Impl("reference", "float32"),
    Impl("network", "float64"),
    Impl("network", "float32"),
]
impls = pytest.mark.parametrize("impl", IMPLS, ids=str)


# ---------------------------------------------------------------------------
# 000: 4-8-3 sigmoid network on iris, BCE summed over outputs, mean over Sx
# ---------------------------------------------------------------------------


@impls
def test_000_iris_4_8_3(impl):
    iris = load_iris()
    x, y = iris.X, iris.Y  # Sx and Sy: 150 rows
    Sx = x.shape[0]
    rng = np.random.default_rng(2019)
    # 000's matrices w^(l): row i is unit i, column 0 its bias w_{i,0}
    w1 = rng.normal(scale=0.3, size=(8, 5))
    w2 = rng.normal(scale=0.3, size=(3, 9))

    # forward: z^(1) = w^(1) [1, x], a^(1) = sigmoid, z^(2) = w^(2) [1, a^(1)]
    x1 = np.column_stack([np.ones(Sx), x])  # the "bias first column" of (14)
    a1 = sigmoid(x1 @ w1.T)
    a1_1 = np.column_stack([np.ones(Sx), a1])  # the bias column of (8)
    a2 = sigmoid(a1_1 @ w2.T)

    # eq. (1)
    C = -np.sum(y * np.log(a2) + (1 - y) * np.log(1 - a2)) / Sx

    # eq. (7), entry by entry, and its vectorized form eq. (8)
    grad_w2_eq7 = np.empty((3, 9))
    for i in range(3):
        grad_w2_eq7[i, 0] = np.sum(a2[:, i] - y[:, i]) / Sx
        for j in range(1, 9):
            grad_w2_eq7[i, j] = np.sum((a2[:, i] - y[:, i]) * a1[:, j - 1]) / Sx
    grad_w2 = (a2 - y).T @ a1_1 / Sx
    np.testing.assert_allclose(grad_w2, grad_w2_eq7, rtol=1e-13, atol=1e-16)

    # eq. (12a), (12b), (13) entry by entry; (15) and (14) vectorized
    f2 = np.zeros((Sx, 8))
    for i in range(8):
        for k in range(3):
            f2[:, i] += (a2[:, k] - y[:, k]) * w2[k, i + 1]  # w_{k,i}, i >= 1
    g1 = a1 * (1 - a1)
    grad_w1_eq13 = np.empty((8, 5))
    for i in range(8):
        grad_w1_eq13[i, 0] = np.sum(g1[:, i] * f2[:, i]) / Sx
        for j in range(1, 5):
            grad_w1_eq13[i, j] = np.sum(g1[:, i] * f2[:, i] * x[:, j - 1]) / Sx
    f2_eq15 = (a2 - y) @ w2[:, 1:]
    grad_w1 = (g1 * f2_eq15).T @ x1 / Sx
    np.testing.assert_allclose(f2_eq15, f2, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(grad_w1, grad_w1_eq13, rtol=1e-13, atol=1e-16)

    net = impl.network((4, 8, 3), "sigmoid", "bce", reduction="mean")
    params = impl.params(net, [w1, w2], layout="bias_column")
    J, grads = impl.loss_and_grad(net, params, x, y)
    impl.assert_close(J, C, "C, eq. (1)")
    impl.assert_close(impl.loss(net, params, x, y), C, "C, eq. (1), loss()")
    impl.assert_close(impl.forward(net, params, x), a2, "a^(2)")
    # back to 000's layout: bias gradient as column 0
    impl.assert_close(np.column_stack([grads.b[2], grads.W[2]]), grad_w2, "eq. (8)")
    impl.assert_close(np.column_stack([grads.b[1], grads.W[1]]), grad_w1, "eq. (14)")


# ---------------------------------------------------------------------------
# 003: 3-2-1 sigmoid network, no bias, 1/2 (y - yhat)^2, x = [0, 0, 1], y = 0
# ---------------------------------------------------------------------------


@impls
def test_003_worked_by_hand(impl):
    # 003's layout: W_1 is 3 x 2 (input x hidden), W_2 is 2 x 1; l_1 = sigma(X . W_1)
    W_1 = np.array([[0.1, 0.4], [0.2, 0.5], [0.3, 0.6]])
    W_2 = np.array([[0.7], [-0.2]])
    X = np.array([[0.0, 0.0, 1.0]])
    y = np.array([0.0])

    # eq. (30)-(34): with x = [0, 0, 1], X . W_1 is the last row of W_1 = [0.3, 0.6]
    # l_1 = [sigma(0.3), sigma(0.6)] = [0.574442516811659, 0.6456563062257954]
    l_1 = np.array([[0.574442516811659, 0.6456563062257954]])
    # eq. (35)-(37): l_1 . W_2 = 0.7 * 0.5744425168 - 0.2 * 0.6456563062 = 0.2729785005230022
    # yhat = sigma(0.2729785005230022) = 0.5678239758665636
    yhat = 0.5678239758665636
    # L = 1/2 (y - yhat)^2 = 0.5 * 0.5678239758665636^2 = 0.16121203378445592
    L = 0.16121203378445592
    # eq. (46): Delta l_2 = (yhat - y) yhat (1 - yhat)
    #         = 0.5678239758665636 * 0.5678239758665636 * 0.4321760241334364 = 0.13934395160686275
    delta_l2 = 0.13934395160686275
    # eq. (49.1): dL/dW_2 = [l_1]^T . Delta l_2
    #           = [0.574442516811659, 0.6456563062257954]^T * 0.13934395160686275
    #           = [[0.08004509026352825], [0.089968301089393]]
    dW_2 = np.array([[0.08004509026352825], [0.089968301089393]])
    # eq. (59), (71), (79): Delta l_1 = (Delta l_2 . W_2^T) * l_1 * (1 - l_1)
    #   Delta l_2 . W_2^T = [0.09754076612480392, -0.02786879032137255]
    #   l_1 (1 - l_1)     = [0.24445831169074586, 0.22878424045665732]
    #   Delta l_1         = [0.023844651007891463, -0.006375940026121062]
    # (the errata: this is layer 1's delta; 003's closing summary swaps the labels)
    delta_l1 = np.array([[0.023844651007891463, -0.006375940026121062]])
    # eq. (78): dL/dW_1 = [X]^T . Delta l_1: only the row of x^3 = 1 is non-zero
    dW_1 = np.array([[0.0, 0.0], [0.0, 0.0], [0.023844651007891463, -0.006375940026121062]])

    # the hand values are the closed forms (to the last digit or two)
    np.testing.assert_allclose(sigmoid(X @ W_1), l_1, rtol=1e-15)
    np.testing.assert_allclose(sigmoid(l_1 @ W_2)[0, 0], yhat, rtol=1e-15)
    np.testing.assert_allclose(0.5 * (y[0] - yhat) ** 2, L, rtol=1e-15)
    np.testing.assert_allclose((yhat - y[0]) * yhat * (1 - yhat), delta_l2, rtol=1e-15)
    np.testing.assert_allclose(l_1.T * delta_l2, dW_2, rtol=1e-15)
    np.testing.assert_allclose(delta_l2 * W_2.T * l_1 * (1 - l_1), delta_l1, rtol=1e-15)
    np.testing.assert_allclose(X.T @ delta_l1, dW_1, rtol=1e-15)

    net = impl.network((3, 2, 1), "sigmoid", "sse", reduction="sum", bias=False)
    params = impl.params(net, [W_1, W_2], layout="in_out")
    J, grads, dX = impl.loss_and_grad(net, params, X, y, input_grad=True)
    impl.assert_close(J, L, "L")
    impl.assert_close(impl.forward(net, params, X), [[yhat]], "yhat")
    # fastbp's W^(l) is the transpose of 003's W_l
    impl.assert_close(grads.W[2].T, dW_2, "dL/dW_2, eq. (49.1)")
    impl.assert_close(grads.W[1].T, dW_1, "dL/dW_1, eq. (78)")
    assert grads.W[1][:, :2].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # x^1 = x^2 = 0
    # dL/dX = Delta l_1 . W_1^T (002 eq. (25) in 003's layout)
    impl.assert_close(dX, delta_l1 @ W_1.T, "dL/dX")
    # the mean over one example is the same number
    net_mean = impl.network((3, 2, 1), "sigmoid", "sse", reduction="mean", bias=False)
    impl.assert_close(impl.loss(net_mean, params, X, y), L, "L (mean)")


# ---------------------------------------------------------------------------
# 004: 150-100-5 tanh / softmax, cross-entropy + L2, one example
# ---------------------------------------------------------------------------


@impls
def test_004_tanh_softmax_l2(impl):
    rng = np.random.default_rng(2015)
    lam = 0.01
    # 004's W^(1) is 100 x 150 and W^(2) is 5 x 100 (out x in); b^(2), b^(3)
    W1 = rng.normal(scale=0.1, size=(100, 150))
    b2 = rng.normal(scale=0.1, size=100)
    W2 = rng.normal(scale=0.3, size=(5, 100))
    b3 = rng.normal(scale=0.1, size=5)
    x = rng.normal(size=150)
    i = 3  # the correct class
    y = np.zeros(5)
    y[i] = 1.0

    z2 = W1 @ x + b2
    a2 = np.tanh(z2)
    z3 = W2 @ a2 + b3
    yhat = np.exp(z3) / np.sum(np.exp(z3))
    # section 3: J = -log(yhat_i) = -z_i + log sum_j exp(z_j); section 9 with the
    # squares the erratum restores
    J_ce = -z3[i] + np.log(np.sum(np.exp(z3)))
    np.testing.assert_allclose(J_ce, -np.log(yhat[i]), rtol=1e-14)
    J_full = J_ce + lam / 2 * (np.sum(W2**2) + np.sum(W1**2))

    delta3 = yhat - y  # eq. (1)
    grad_b3 = delta3  # eq. (2)
    grad_W2 = np.outer(delta3, a2) + lam * W2  # eq. (3) + (8)
    # section 2: tau' = 1 - tau^2 = 4 sigma(2x) (1 - sigma(2x))
    tau_prime = 1 - a2**2
    np.testing.assert_allclose(tau_prime, 4 * sigmoid(2 * z2) * (1 - sigmoid(2 * z2)), rtol=1e-12)
    delta2 = tau_prime * (W2.T @ delta3)  # eq. (4)
    grad_W1 = np.outer(delta2, x) + lam * W1  # eq. (5) + (9)
    grad_b2 = delta2  # eq. (6)
    grad_x = W1.T @ delta2  # eq. (7)

    net = impl.network((150, 100, 5), ("tanh", "softmax"), "cross_entropy", reduction="sum", l2=lam)
    params = impl.params(net, [W1, W2], [b2, b3], layout="out_in")
    for Y in (np.array([i]), y[None, :]):  # class label, or 004's one-hot y
        J, grads, dX = impl.loss_and_grad(net, params, x[None, :], Y, input_grad=True)
        impl.assert_close(J, J_full, "J_full")
        impl.assert_close(grads.b[2], grad_b3, "eq. (2)")
        impl.assert_close(grads.W[2], grad_W2, "eq. (3), (8)")
        impl.assert_close(grads.W[1], grad_W1, "eq. (5), (9)")
        impl.assert_close(grads.b[1], grad_b2, "eq. (6)")
        impl.assert_close(dX[0], grad_x, "eq. (7)")
    impl.assert_close(impl.forward(net, params, x[None, :])[0], yhat, "yhat")


# ---------------------------------------------------------------------------
# 002: J-layer ReLU network with sum of squares; softmax eq. (28)-(31)
# ---------------------------------------------------------------------------


def relu(g):
    return np.where(g >= 0, g, 0.0)  # eq. (2)


def relu_prime(g):
    return (g > 0).astype(float)


def _002_problem(sizes, seed):
    """002's in x out matrices w^j (M^j x N^j), biases b^j, one input and target."""
    rng = np.random.default_rng(seed)
    w = [rng.normal(scale=0.8, size=(sizes[j - 1], sizes[j])) for j in range(1, len(sizes))]
    b = [rng.normal(scale=0.3, size=sizes[j]) for j in range(1, len(sizes))]
    x = rng.normal(size=sizes[0])
    Y = rng.uniform(size=sizes[-1])
    return w, b, x, Y


def _002_forward(w, b, x, last):
    """Eq. (1), (3), (4) unit by unit: g_n = sum_m w_{m,n} x_m + b_n, y_n = f(g_n)."""
    xs, gs, ys = [], [], []
    for j in range(len(w)):
        M, N = w[j].shape
        g = np.array([sum(w[j][m, n] * x[m] for m in range(M)) + b[j][n] for n in range(N)])
        y = last(g) if j == len(w) - 1 else relu(g)
        xs.append(x)
        gs.append(g)
        ys.append(y)
        x = y  # the next layer's input
    return xs, gs, ys


def _002_backward_table1(w, xs, gs, dL_dy, last_prime):
    """Table 1 with eq. (20)-(27) in matrix form (the erratum: layers 1..J, so the
    loop stops after j = 1).  ``last_prime(g)`` is the output layer's diag (15)."""
    J = len(w)
    dW, db = [None] * J, [None] * J
    for j in range(J - 1, -1, -1):
        D = last_prime(gs[j]) if j == J - 1 else np.diag(relu_prime(gs[j]))  # eq. (15)
        dL_dg = D @ dL_dy  # eq. (24)
        dW[j] = np.outer(xs[j], dL_dg)  # eq. (26)
        db[j] = dL_dg  # eq. (27)
        dL_dy = w[j] @ dL_dg  # eq. (25), then eq. (10) for the layer below
    return dW, db, dL_dy  # the last dL_dy is dL/dx of the input (eq. (25), j = 1)


@impls
def test_002_relu_sum_of_squares(impl):
    sizes = (4, 5, 3, 2)
    w, b, x, Y = _002_problem(sizes, 1)
    xs, gs, ys = _002_forward(w, b, x, relu)
    # keep clear of the kink at g = 0, where the convention f'(0) = 0 would decide
    assert min(np.abs(g).min() for g in gs) > 1e-2
    assert (gs[-1] > 0).any()  # some output unit is active: the example is not trivial
    L = 0.5 * np.sum((ys[-1] - Y) ** 2)  # eq. (5)

    # eq. (6)-(13), element by element, layer J first
    J = len(w)
    dL_dy = ys[-1] - Y  # eq. (6)
    dW_elem, db_elem = [None] * J, [None] * J
    for j in range(J - 1, -1, -1):
        M, N = w[j].shape
        fp = relu_prime(gs[j])  # dy_n/dg_n
        dW_elem[j] = np.array(
            [[dL_dy[n] * fp[n] * xs[j][m] for n in range(N)] for m in range(M)]
        )  # eq. (8), (12) with x_m (the erratum)
        db_elem[j] = np.array([dL_dy[n] * fp[n] for n in range(N)])  # eq. (9), (13)
        dL_dx = np.array(
            [sum(dL_dy[n] * fp[n] * w[j][m, n] for n in range(N)) for m in range(M)]
        )  # eq. (7), (11)
        dL_dy = dL_dx  # eq. (10)
    dx_elem = dL_dy

    dW, db, dx = _002_backward_table1(w, xs, gs, ys[-1] - Y, lambda g: np.diag(relu_prime(g)))
    for j in range(J):
        np.testing.assert_allclose(dW[j], dW_elem[j], rtol=1e-14, atol=1e-16)
        np.testing.assert_allclose(db[j], db_elem[j], rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(dx, dx_elem, rtol=1e-14, atol=1e-16)

    net = impl.network(sizes, "relu", "sse", reduction="sum")
    params = impl.params(net, w, b, layout="in_out")
    Jv, grads, dX = impl.loss_and_grad(net, params, x[None, :], Y[None, :], input_grad=True)
    impl.assert_close(Jv, L, "L, eq. (5)")
    impl.assert_close(impl.forward(net, params, x[None, :])[0], ys[-1], "y^J")
    for j in range(J):
        impl.assert_close(grads.W[j + 1].T, dW[j], f"eq. (26), layer {j + 1}")
        impl.assert_close(grads.b[j + 1], db[j], f"eq. (27), layer {j + 1}")
    impl.assert_close(dX[0], dx, "eq. (25), input")


def _softmax_jacobian(g):
    """Eq. (30): dz_n/dy_i = z_i - z_i^2 (n = i), -z_n z_i (n != i); rows n, columns i."""
    z = np.exp(g - g.max()) / np.sum(np.exp(g - g.max()))  # eq. (28)
    return np.array(
        [
            [z[i] - z[i] ** 2 if n == i else -z[n] * z[i] for i in range(len(z))]
            for n in range(len(z))
        ]
    )


@impls
@pytest.mark.parametrize("loss", ["cross_entropy", "sse"])
def test_002_softmax_output(impl, loss):
    sizes = (4, 6, 3)
    w, b, x, Y = _002_problem(sizes, 2)

    def softmax(g):
        return np.exp(g - g.max()) / np.sum(np.exp(g - g.max()))  # eq. (28)

    xs, gs, ys = _002_forward(w, b, x, softmax)
    assert np.abs(gs[0]).min() > 1e-2
    z = ys[-1]
    jac = _softmax_jacobian(gs[-1])
    if loss == "cross_entropy":
        Y = np.eye(3)[1]  # one-hot, so eq. (32) holds
        L = -np.sum(Y * np.log(z))  # eq. (29)
        dL_dz = -Y / z
        # eq. (31): sum_n (dz_n/dy_i) dL/dz_n collapses to z - Y
        np.testing.assert_allclose(jac.T @ dL_dz, z - Y, rtol=1e-13, atol=1e-16)
    else:
        L = 0.5 * np.sum((z - Y) ** 2)  # eq. (5) on the softmax output
        dL_dz = z - Y  # eq. (6)
    # eq. (24) with the full Jacobian (30) in place of the diagonal (15)
    dW, db, dx = _002_backward_table1(w, xs, gs, dL_dz, lambda g: _softmax_jacobian(g).T)

    net = impl.network(sizes, ("relu", "softmax"), loss, reduction="sum")
    params = impl.params(net, w, b, layout="in_out")
    target = np.array([1]) if loss == "cross_entropy" else Y[None, :]
    Jv, grads, dX = impl.loss_and_grad(net, params, x[None, :], target, input_grad=True)
    impl.assert_close(Jv, L, "L")
    impl.assert_close(impl.forward(net, params, x[None, :])[0], z, "z, eq. (28)")
    for j in range(len(w)):
        impl.assert_close(grads.W[j + 1].T, dW[j], f"eq. (26), layer {j + 1}")
        impl.assert_close(grads.b[j + 1], db[j], f"eq. (27), layer {j + 1}")
    impl.assert_close(dX[0], dx, "eq. (25), input")


# ---------------------------------------------------------------------------
# 001: 3 layers, two different hidden activations, sigmoid output, 2-class NLL
# ---------------------------------------------------------------------------


@impls
def test_001_three_layers_nll(impl):
    rng = np.random.default_rng(1)
    lam = (3, 4, 3, 1)  # 001's widths lambda^[0..3]
    # 001's layout: z^[l] = W^[l]T a^[l-1] + b^[l], W^[l] of shape lambda^[l-1] x lambda^[l]
    W = {l: rng.normal(scale=0.9, size=(lam[l - 1], lam[l])) for l in (1, 2, 3)}
    b = {l: rng.normal(scale=0.3, size=lam[l]) for l in (1, 2, 3)}
    m = 6
    X = rng.normal(size=(m, 3))
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])  # 2 classes: y and 1 - y are selectors

    act = {1: np.tanh, 2: relu}
    act_prime = {1: lambda z: 1 - np.tanh(z) ** 2, 2: relu_prime}

    dW = {l: np.zeros_like(W[l]) for l in (1, 2, 3)}
    db = {l: np.zeros_like(b[l]) for l in (1, 2, 3)}
    J = 0.0
    for e in range(m):
        a0 = X[e]
        z1 = W[1].T @ a0 + b[1]
        a1 = act[1](z1)
        z2 = W[2].T @ a1 + b[2]
        assert np.abs(z2).min() > 1e-2  # clear of relu's kink
        a2 = act[2](z2)
        z3 = W[3].T @ a2 + b[3]
        yhat = sigmoid(z3[0])
        J -= y[e] * np.log(yhat) + (1 - y[e]) * np.log(1 - yhat)
        # the factor from the loss, (1 - y)/(1 - yhat) - y/yhat, times the factor
        # from act^[3] = sigma, sigma(z^[3]) (1 - sigma(z^[3])): scalars here
        s3 = ((1 - y[e]) / (1 - yhat) - y[e] / yhat) * yhat * (1 - yhat)
        # layer 3: theta = w_{i,1}^[3] selects a_i^[2]; theta = b_1^[3] gives 1
        dW[3][:, 0] += s3 * a2
        db[3][0] += s3
        # layer 2: ... . W^[3] . act^[2]'(z^[2]), then a_i^[1] or 1
        v2 = (W[3][:, 0] * s3) * act_prime[2](z2)
        dW[2] += np.outer(a1, v2)
        db[2] += v2
        # layer 1: ... . W^[2] . act^[1]'(z^[1]), then a_i^[0] or 1
        v1 = (W[2] @ v2) * act_prime[1](z1)
        dW[1] += np.outer(a0, v1)
        db[1] += v1
    J /= m  # the mean over the m examples, eq. (2)
    for l in (1, 2, 3):
        dW[l] /= m
        db[l] /= m

    net = impl.network(lam, ("tanh", "relu", "sigmoid"), "bce", reduction="mean")
    params = impl.params(net, [W[1], W[2], W[3]], [b[1], b[2], b[3]], layout="in_out")
    Jv, grads = impl.loss_and_grad(net, params, X, y)  # y of shape (m,): n_L = 1
    impl.assert_close(Jv, J, "J")
    for l in (1, 2, 3):
        impl.assert_close(grads.W[l].T, dW[l], f"dJ/dw^[{l}]")
        impl.assert_close(grads.b[l], db[l], f"dJ/db^[{l}]")
