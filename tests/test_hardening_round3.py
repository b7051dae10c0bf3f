"""Third round of adversarial cases, on the code added since the second: the
sparse first layer (index arrays that do not describe the matrix), the
optimizer state a run continues from, sample weights and learning rates out
of the dtype's range, the specialized code of small networks (its cache
folder and numba's cache of it), and forks while another thread holds one of
the core's locks.

Cases that could end the interpreter or hang before their fix run in a
subprocess with a timeout.
"""

import os
import re
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import fastbp
from fastbp import Network

sp = pytest.importorskip("scipy.sparse")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(script, timeout, **env):
    """(returncode, stdout, stderr) of ``script`` in a fresh interpreter (with
    ``env`` added to the environment); a run past ``timeout`` seconds fails
    the test instead of hanging it."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(textwrap.dedent(script))
    try:
        res = subprocess.run([sys.executable, f.name],
                             env=dict(os.environ, PYTHONPATH=ROOT, **env), cwd=ROOT,
                             capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the script ran past {timeout} s (hung)")
    finally:
        os.unlink(f.name)
    return res.returncode, res.stdout, res.stderr


@pytest.fixture(scope="module")
def data():
    net = Network([5, 4, 2], "tanh", "sse")
    rng = np.random.default_rng(0)
    X = sp.random(6, 5, density=0.5, format="csr", random_state=0)
    return net, net.init(0), X, rng.normal(size=(6, 2))


# ---------------------------------------------------------------- sparse structure

# Each case: a hand-made matrix whose index arrays scipy does not re-check, and
# the message.  Before the check, the first four read or wrote outside the
# arrays (segfault), the next two returned values from rows never computed.
SPARSE_CASES = r'''
import numpy as np, scipy.sparse as sp, fastbp
net = fastbp.Network([5, 4, 2], "tanh", "sse")
one = fastbp.Network([5, 2], "identity", "sse")
p, p1 = net.init(0), one.init(0)
X0 = sp.random(6, 5, density=0.5, format="csr", random_state=0)
Y = np.zeros((6, 2))

def csr(**change):
    X = X0.copy()
    for k, v in change.items():
        getattr(X, k)[v[0]] = v[1]
    return X

def shorter():
    X = X0.copy(); X.indptr = X.indptr[:3]; return X

def down():
    X = X0.copy(); X.indptr[2] = X.indptr[4] + 3; return X

def csc():
    X = X0.tocsc(); X.indices[0] = 10**7; return X

def coo():
    X = X0.tocoo(); X.row[0] = 10**7; return X

def bsr():
    X = sp.bsr_matrix(sp.random(6, 6, density=.5, format="csr", random_state=1),
                      blocksize=(2, 2))
    X.indices[0] = 10**6
    return X

cases = {"column": lambda: csr(indices=(0, 10**7)), "negative": lambda: csr(indices=(0, -10**7)),
         "beyond": lambda: csr(indptr=(-1, 10**7)), "csc": csc, "coo": coo,
         "short": shorter, "down": down}
calls = {"loss_and_grad": lambda X: net.loss_and_grad(p, X, Y),
         "forward": lambda X: net.forward(p, X),
         "one_layer": lambda X: one.loss(p1, X, Y),
         "sgd": lambda X: fastbp.train(net, p, X, Y, epochs=1),
         "lbfgs": lambda X: fastbp.train(net, p, X, Y, epochs=1, optimizer="lbfgs")}
for case, make in cases.items():
    for call, f in calls.items():
        X = make()
        before = [a.copy() for a in (X.data, getattr(X, "indices", X.data))]
        try:
            f(X)
            print(case, call, "ACCEPTED")
        except ValueError as e:
            print(case, call, e)
        same = all(np.array_equal(a, b) for a, b in zip(before, (X.data, getattr(X, "indices", X.data))))
        print(case, call, "unmodified" if same else "MODIFIED")
B = bsr()
net6 = fastbp.Network([6, 4, 2], "tanh", "sse")
try:
    net6.loss(net6.init(0), B, Y)
    print("bsr ACCEPTED")
except ValueError as e:
    print("bsr", e)
'''

SPARSE_MESSAGES = {
    "column": r"X: not a valid sparse matrix: indices\[0\] = 10000000 is outside 0\.\.4 "
              r"\(the column count is 5\)",
    "negative": r"X: not a valid sparse matrix: indices\[0\] = -10000000 is outside 0\.\.4",
    "beyond": r"X: not a valid sparse matrix: indptr\[-1\] = 10000000 entries, but indices "
              r"has 15 and data 15",
    "csc": r"X: not a valid sparse matrix: indices\[0\] = 10000000 is outside 0\.\.5 "
           r"\(the row count is 6\)",
    "coo": r"X: not a valid sparse matrix: row\[0\] = 10000000 is outside 0\.\.5 "
           r"\(there are 6 rows\)",
    "short": r"X: not a valid sparse matrix: indptr has 3 entries, its shape \(6, 5\) needs 7",
    "down": r"X: not a valid sparse matrix: indptr decreases at \[3\] \(10 then 6\)",
}


def test_sparse_index_arrays_that_do_not_fit_the_shape_are_refused():
    """scipy does not re-check index arrays changed after construction; its
    conversions and the sparse loops index with them: they segfaulted
    (indices out of range, indptr beyond the entries) or used rows never
    computed (a short or decreasing indptr).  Every entry point refuses them
    by name now, and leaves the matrix as it was."""
    rc, out, err = _python(SPARSE_CASES, 300)
    assert rc == 0, err[-2000:]
    lines = out.splitlines()
    for case, pattern in SPARSE_MESSAGES.items():
        for call in ("loss_and_grad", "forward", "one_layer", "sgd", "lbfgs"):
            said = [ln for ln in lines if ln.startswith(f"{case} {call} ")]
            assert len(said) == 2, (case, call, out)
            assert re.search(pattern, said[0]), said[0]
            assert said[1].endswith("unmodified"), said[1]
    assert any(re.search(r"bsr X: not a valid sparse matrix: indices\[0\] = 1000000 is "
                         r"outside 0\.\.2 \(there are 3 block columns\)", ln) for ln in lines), out


def test_valid_sparse_forms_still_give_the_dense_results(data):
    """Unsorted indices, duplicates (summed, as scipy means them), explicit
    zeros, empty rows and int64 indices are valid CSR: same J as the dense X."""
    net, p, X, Y = data
    J = net.loss(p, X.toarray(), Y)
    dup = sp.csr_matrix((np.r_[X.data[:1] / 2, X.data[:1] / 2, X.data[1:]],
                         np.r_[X.indices[:1], X.indices], np.r_[0, X.indptr[1:] + 1]),
                        shape=X.shape)
    zeros = sp.csr_matrix((np.r_[X.data, 0.0], np.r_[X.indices, 3], np.r_[X.indptr[:-1],
                          X.indptr[-1] + 1]), shape=X.shape)
    rev = X.copy()
    for e in range(6):  # each row's entries in reverse order
        a, b = rev.indptr[e], rev.indptr[e + 1]
        rev.indices[a:b] = rev.indices[a:b][::-1].copy()
        rev.data[a:b] = rev.data[a:b][::-1].copy()
    wide = X.copy()
    wide.indices, wide.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    for M in (dup, zeros, rev, wide):
        assert net.loss(p, M, Y) == pytest.approx(J, rel=1e-12)
    assert net.loss(p, sp.csr_matrix((6, 5)), Y) == net.loss(p, np.zeros((6, 5)), Y)


def test_sparse_targets_and_weights_are_named(data):
    """They used to be wrapped by NumPy into 0-d object arrays and reported as
    a wrong dtype ("got object")."""
    net, p, X, Y = data
    with pytest.raises(TypeError, match=r"Y: a scipy.sparse matrix is not accepted here; "
                                        r"pass Y.toarray\(\)"):
        net.loss(p, X, sp.csr_matrix(Y))
    with pytest.raises(TypeError, match="sample_weight: a scipy.sparse matrix is not accepted"):
        net.loss(p, X, Y, sample_weight=sp.csr_matrix(np.ones((1, 6))))
    with pytest.raises(TypeError, match=r"validation\[0\]: a scipy.sparse matrix is not "
                                        "accepted"):
        fastbp.train(net, p, X.toarray(), Y, epochs=1, validation=(X, Y))
