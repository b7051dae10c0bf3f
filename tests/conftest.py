"""Test configuration: hypothesis draws the same examples on every run, so a CI
run is reproducible (a failure found once is found again)."""

import sys
from pathlib import Path

from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))  # tests/cases.py for every test module

settings.register_profile("fastbp", derandomize=True, deadline=None)
settings.load_profile("fastbp")
