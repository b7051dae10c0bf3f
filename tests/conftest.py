"""Test configuration: hypothesis draws the same examples on every run, so a CI
run is reproducible (a failure found once is found again)."""

import os
import sys
from pathlib import Path

from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))  # tests/cases.py for every test module

# Under pytest-xdist (README's command: two workers), each worker compiles into a
# numba cache folder of its own: two processes compiling the same function into
# one folder at once can leave a file the other reads half written (numba#4807).
# numba reads NUMBA_CACHE_DIR when it is first imported, which is after this.
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker:
    _base = os.environ.get("NUMBA_CACHE_DIR") or str(Path(__file__).parent / ".numba-cache")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(_base, _worker)

settings.register_profile("fastbp", derandomize=True, deadline=None)
settings.load_profile("fastbp")
