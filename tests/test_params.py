"""Params: one flat vector, views that alias it, the documented layout."""

import numpy as np
import pytest

from fastbp import Network, Params
from fastbp.params import layer_offsets, n_params


def test_layout_is_w_row_major_then_bias_per_layer():
    # sizes [3, 2, 1]: W1 2x3 (6), b1 (2), W2 1x2 (2), b2 (1)
    assert layer_offsets([3, 2, 1], [True, True]) == [(0, 6, 8), (8, 10, 11)]
    assert layer_offsets([3, 2, 1], [False, True]) == [(0, -1, 6), (6, 8, 9)]
    assert n_params([3, 2, 1], [False, False]) == 8
    p = Params([3, 2, 1], [True, True], np.arange(11.0))
    np.testing.assert_array_equal(p.W[1], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(p.b[1], [6, 7])
    np.testing.assert_array_equal(p.W[2], [[8, 9]])
    np.testing.assert_array_equal(p.b[2], [10])


def test_views_alias_flat_and_copy_does_not():
    p = Params.zeros([2, 3, 1], [True, False])
    assert p.b[2] is None
    p.W[1][2, 1] = 5.0
    assert p.flat[2 * 2 + 1] == 5.0
    q = p.copy()
    q.W[1][0, 0] = 7.0
    assert p.W[1][0, 0] == 0.0
    assert q != p and q.copy() == q


def test_layers_are_numbered_from_one():
    p = Params.zeros([4, 8, 3], [True, True])
    assert p.W[1].shape == (8, 4) and p.W[2].shape == (3, 8)
    assert p.W[-1] is p.W[2]
    assert [w.shape for w in p.W] == [(8, 4), (3, 8)]
    with pytest.raises(IndexError, match="numbered 1..2"):
        p.W[0]
    with pytest.raises(IndexError):
        p.W[3]


def test_equality_is_exact_and_dtype_aware():
    p = Network([2, 2], "identity", "sse").init(0)
    assert p == p.copy()
    assert p != p.astype(np.float32)
    q = p.copy()
    q.flat[0] = np.nextafter(q.flat[0], np.inf)
    assert p != q
    assert "W[1] 2x2 + b[1]" in repr(p) and "float64" in repr(p)


def test_wrong_length_or_dtype_rejected():
    with pytest.raises(ValueError, match="flat: expected 11 parameters"):
        Params([3, 2, 1], [True, True], np.zeros(10))
    with pytest.raises(TypeError, match="flat: dtype must be float32 or float64"):
        Params([3, 2, 1], [True, True], np.zeros(11, dtype=np.int64))


def test_views_survive_pickle_and_deepcopy():
    import copy
    import pickle

    p = Params([3, 2, 1], [True, False], np.arange(10.0))
    for q in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p)):
        assert q == p and q.b[2] is None
        q.W[1][0, 0] = -1.0  # still a view into q.flat, not a copy of p's
        assert q.flat[0] == -1.0 and p.flat[0] == 0.0
