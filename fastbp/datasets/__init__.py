"""Small data sets shipped inside the package (no download at run time).

``load_iris`` returns Fisher's iris data, the data set of 000 (the 4-8-3 network of
the iris notes), in the forms that document uses: the inputs x as rows, the targets
y as one-hot rows, plus the integer labels.
"""

from __future__ import annotations

from importlib import resources
from typing import NamedTuple

import numpy as np

__all__ = ["Dataset", "load_iris"]


class Dataset(NamedTuple):
    """A classification data set.

    Attributes
    ----------
    X : ndarray of shape (N, n_0), float64
        Inputs, one example per row (a^(0) of each example).
    Y : ndarray of shape (N, n_classes), float64
        One-hot targets: ``Y[e, k] == 1.0`` exactly when example e is of class k.
    labels : ndarray of shape (N,), int64
        Class index of each example, ``labels[e] == Y[e].argmax()``.
    feature_names : tuple of str
        Name (with unit) of each column of X.
    class_names : tuple of str
        Name of each class; ``class_names[k]`` names column k of Y.
    """

    X: np.ndarray
    Y: np.ndarray
    labels: np.ndarray
    feature_names: tuple
    class_names: tuple


def load_iris() -> Dataset:
    """Fisher's iris data: 150 flowers, 4 measurements, 3 species (50 each).

    Returns
    -------
    Dataset
        ``X`` of shape (150, 4): sepal length, sepal width, petal length, petal
        width, in cm.  ``Y`` of shape (150, 3): one-hot species.  ``labels`` of
        shape (150,): 0 setosa, 1 versicolor, 2 virginica.  Rows are in the
        classic order (the 50 setosa first).

    Notes
    -----
    These are the values of Fisher (1936), "The use of multiple measurements in
    taxonomic problems", Annals of Eugenics 7(2), 179-188, as distributed with R
    and scikit-learn (not the UCI copy, which has two wrong data points).  Column
    means: 5.8433, 3.0573, 3.758, 1.1993.  The document 000 trains its 4-8-3
    sigmoid network on X against the one-hot Y (its sets Sx and Sy).
    """
    text = resources.files(__name__).joinpath("iris.csv").read_text(encoding="ascii")
    header, *rows = text.strip().splitlines()
    columns = header.split(",")
    feature_names = tuple(columns[:-1])
    class_names = ("setosa", "versicolor", "virginica")
    code = {name: k for k, name in enumerate(class_names)}
    fields = [row.split(",") for row in rows]
    X = np.array([[float(v) for v in f[:-1]] for f in fields], dtype=np.float64)
    labels = np.array([code[f[-1]] for f in fields], dtype=np.int64)
    Y = np.zeros((labels.shape[0], len(class_names)), dtype=np.float64)
    Y[np.arange(labels.shape[0]), labels] = 1.0
    return Dataset(X, Y, labels, feature_names, class_names)
