"""Optional extras stay optional: ``import fastbp`` never imports scikit-learn, and
``fastbp.sklearn`` without it fails with the install command in the message.

These run in a fresh interpreter (the test session may have imported sklearn),
and need no optional package themselves.
"""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def test_import_fastbp_does_not_import_sklearn():
    res = _python("import sys, fastbp\n"
                  "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_fastbp_sklearn_without_sklearn_names_the_extra():
    res = _python("import sys\n"
                  "sys.modules['sklearn'] = None  # as if not installed\n"
                  "try:\n"
                  "    import fastbp.sklearn\n"
                  "except ImportError as e:\n"
                  "    print(e)\n")
    assert res.returncode == 0, res.stderr
    assert "pip install 'fastbp[sklearn]'" in res.stdout
