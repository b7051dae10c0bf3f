"""Running a script in a fresh interpreter, for the cases that could end the
test process or hang it."""

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, timeout, **env):
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
