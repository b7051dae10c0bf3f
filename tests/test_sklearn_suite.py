"""scikit-learn's own MLP test suite, run against fastbp.sklearn.

The installed scikit-learn's ``sklearn/neural_network/tests/test_mlp.py`` is
copied at test time with only its import of ``MLPClassifier`` and
``MLPRegressor`` rewritten to ``fastbp.sklearn``, so the suite follows the
installed version.  It runs in a subprocess under scikit-learn's own pytest
configuration (``-p sklearn.conftest``: its fixtures and warning filters);
every test must pass, except those that skip because an optional package
(pandas) is missing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sklearn = pytest.importorskip(
    "sklearn", reason="scikit-learn (the 'sklearn' extra) is not installed: pip install '.[sklearn]'"
)
pytest.importorskip("scipy", reason="scipy (with the 'sklearn' extra) is not installed")

ROOT = Path(__file__).resolve().parent.parent
IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"
# optional packages whose absence makes a test of the suite skip
OPTIONAL = ("pandas", "polars", "pyarrow")


def _suite(tmp_path) -> Path:
    source = Path(sklearn.__file__).parent / "neural_network" / "tests" / "test_mlp.py"
    text = source.read_text()
    assert text.count(IMPORT) == 1, f"{source}: the import line to rewrite is not there once"
    target = tmp_path / "test_mlp.py"
    target.write_text(text.replace(IMPORT, "from fastbp.sklearn import MLPClassifier, "
                                           "MLPRegressor"))
    return target


def test_scikit_learn_mlp_suite_passes(tmp_path):
    suite = _suite(tmp_path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "sklearn.conftest", "-p", "no:cacheprovider",
         "-q", "-rs", "--no-header", "-o", "addopts=", str(suite)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    out = proc.stdout + proc.stderr
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", out)}
    assert proc.returncode == 0 and not counts.get("failed") and not counts.get("error"), out
    assert counts.get("passed", 0) >= 50, out  # the suite ran (57 tests in 1.9)
    # every skip is a missing optional package
    skips = re.findall(r"^SKIPPED \[(\d+)\] ([^\n]*)", out, flags=re.MULTILINE)
    assert sum(int(n) for n, _ in skips) == counts.get("skipped", 0), out
    for _, reason in skips:
        assert any(f"could not import '{name}'" in reason for name in OPTIONAL), reason
