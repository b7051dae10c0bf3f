"""Reading a user's CSV file for the command line: a header row, numeric feature
columns, and a target that is a class column or numeric columns.

Every problem is a ``DataError`` whose one-line message names the file, and the
line and column when there is one.
"""

from __future__ import annotations

import csv
import math
import os
from typing import NamedTuple

import numpy as np


class DataError(ValueError):
    """A CSV file that cannot be used: missing, empty, malformed or non-numeric."""


class Table(NamedTuple):
    path: str
    header: list
    rows: list  # lists of stripped fields, one per header column
    line_nos: list  # line of the file each row came from (1-based)


def read_table(path) -> Table:
    """The header and data rows of a CSV file; every row has as many fields as the header."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not a CSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = [(r, line_no) for line_no, r in _numbered(csv.reader(_lines(f, path)))]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") \
            from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    lines = [(r, n) for r, n in lines if any(field.strip() for field in r)]
    if not lines:
        raise DataError(f"{path}: empty file (expected a header row, then data rows)")
    (header, _), body = lines[0], lines[1:]
    header = [h.strip() for h in header]
    for k, name in enumerate(header):
        if not name:
            raise DataError(f"{path}: column {k + 1} of the header row has no name")
        if name in header[:k]:
            raise DataError(f"{path}: column name {name!r} appears twice in the header row")
    if not body:
        raise DataError(f"{path}: no data rows after the header row")
    rows = []
    for r, line_no in body:
        if len(r) != len(header):
            raise DataError(f"{path}, line {line_no}: expected {len(header)} fields like "
                            f"the header, got {len(r)}")
        rows.append([field.strip() for field in r])
    return Table(path, header, rows, [n for _, n in body])


# The longest line read (in characters): a file of one endless line (/dev/zero,
# a binary file without a newline) was read into memory until the system
# ended the process.
LINE_LIMIT = 1 << 24


def _lines(f, path):
    """The lines of ``f``, none read beyond ``LINE_LIMIT`` characters."""
    n = 0
    while line := f.readline(LINE_LIMIT + 1):
        n += 1
        if len(line) > LINE_LIMIT:
            raise DataError(f"{path}, line {n}: longer than {LINE_LIMIT} characters (not a "
                            "CSV file?)")
        yield line


def _numbered(reader):
    for r in reader:
        yield reader.line_num, r


def column_indices(table: Table, names, what) -> list[int]:
    """Positions of ``names`` in the header, with a clear error for a missing one."""
    out = []
    for name in names:
        if name not in table.header:
            raise DataError(f"{table.path}: no column {name!r} ({what}); the columns are: "
                            f"{', '.join(table.header)}")
        out.append(table.header.index(name))
    return out


def numeric(table: Table, cols) -> np.ndarray:
    """The columns ``cols`` as a float64 matrix (N, len(cols)); every cell a finite number."""
    X = np.empty((len(table.rows), len(cols)), dtype=np.float64)
    for e, r in enumerate(table.rows):
        for j, c in enumerate(cols):
            x = _number(r[c])
            if x is None:
                raise DataError(f"{table.path}, line {table.line_nos[e]}, column "
                                f"{table.header[c]!r}: not a finite number: {r[c]!r}")
            X[e, j] = x
    return X


def _number(text):
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def is_numeric_column(table: Table, c) -> bool:
    return all(_number(r[c]) is not None for r in table.rows)


def class_labels(table: Table, c, classes=None, unseen_ok=False):
    """Integer labels of column ``c`` and the sorted class names.

    A column whose values are all numbers has one class per numeric value
    (``1`` and ``1.0`` are one class, named as first written) and sorts by
    value; any other column has one class per distinct string.  With
    ``classes`` given (a trained model's), a value outside them is a DataError,
    or with ``unseen_ok`` the label -1 (the names of such values are returned
    third, in order of appearance).
    """
    values = [r[c] for r in table.rows]
    numbers = [_number(v) for v in values]
    numeric = all(x is not None for x in numbers)
    if classes is None:
        if numeric:
            first = {}
            for v, x in zip(values, numbers):
                first.setdefault(x, v)
            classes = [first[x] for x in sorted(first)]
        else:
            classes = sorted(set(values))
    as_number = numeric and all(_number(name) is not None for name in classes)
    index = {(_number(name) if as_number else name): k for k, name in enumerate(classes)}
    labels = np.empty(len(values), dtype=np.int64)
    unseen = []
    for e, v in enumerate(values):
        k = index.get(numbers[e] if as_number else v)
        if k is None:
            if not unseen_ok:
                raise DataError(f"{table.path}, line {table.line_nos[e]}, column "
                                f"{table.header[c]!r}: class {v!r} was not seen in training "
                                f"(classes: {', '.join(classes)})")
            if v not in unseen:
                unseen.append(v)
            k = -1
        labels[e] = k
    if unseen_ok:
        return labels, list(classes), unseen
    return labels, list(classes)
