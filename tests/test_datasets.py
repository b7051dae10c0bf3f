"""The iris data shipped with the package is Fisher's, complete and in order."""

from __future__ import annotations

import numpy as np

from fastbp.datasets import load_iris


def test_iris_shapes_and_types():
    iris = load_iris()
    assert iris.X.shape == (150, 4) and iris.X.dtype == np.float64
    assert iris.Y.shape == (150, 3) and iris.Y.dtype == np.float64
    assert iris.labels.shape == (150,) and iris.labels.dtype == np.int64
    assert iris.class_names == ("setosa", "versicolor", "virginica")
    assert len(iris.feature_names) == 4


def test_iris_values():
    iris = load_iris()
    # column sums of Fisher's table (means 5.8433, 3.0573, 3.758, 1.1993)
    np.testing.assert_allclose(iris.X.sum(axis=0), [876.5, 458.6, 563.7, 179.9], rtol=1e-13)
    np.testing.assert_allclose(
        (iris.X**2).sum(axis=0), [5223.85, 1430.4, 2582.71, 302.33], rtol=1e-13
    )
    # first flower of each species, and the last one
    np.testing.assert_array_equal(
        iris.X[[0, 50, 100, 149]],
        [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5], [5.9, 3.0, 5.1, 1.8]],
    )


def test_iris_targets():
    iris = load_iris()
    np.testing.assert_array_equal(np.bincount(iris.labels), [50, 50, 50])
    np.testing.assert_array_equal(iris.labels, np.repeat([0, 1, 2], 50))
    np.testing.assert_array_equal(iris.Y, np.eye(3)[iris.labels])
