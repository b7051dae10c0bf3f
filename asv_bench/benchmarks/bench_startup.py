"""Start-up cost: a fresh process imports fastbp and computes C1's gradient once.

cold: numba's cache directory is new and empty, so every kernel the call needs
      is compiled (what a user sees on the very first run after installing);
warm: the cache was filled beforehand, so the kernels are loaded from disk.
"""

import os
import shutil
import subprocess
import sys
import tempfile

from .common import BY_NAME

_w = BY_NAME["C1"]

# The timed statement: import + the first C1 gradient (seeded data, as in
# fastbp.bench.make_data's spirit, written out so the child imports only fastbp).
FIRST_GRADIENT = f"""
import numpy as np
import fastbp
net = fastbp.Network({_w.sizes!r}, {list(_w.activations)!r}, {_w.loss!r},
                     reduction={_w.reduction!r}, l2={_w.l2!r}, bias={_w.bias!r},
                     dtype={_w.dtype!r})
rng = np.random.default_rng(0)
X = rng.standard_normal(({_w.N}, {_w.sizes[0]})).astype({_w.dtype!r})
Y = rng.integers(0, 2, size=({_w.N}, {_w.sizes[-1]})).astype({_w.dtype!r})
net.loss_and_grad(net.init(0), X, Y)
"""

# Runs in the child before the timer starts: a private, empty numba cache that
# is removed when the child exits.
FRESH_CACHE = """
import atexit, os, shutil, tempfile
_cache = tempfile.mkdtemp(prefix="fastbp-numba-cold-")
os.environ["NUMBA_CACHE_DIR"] = _cache
atexit.register(shutil.rmtree, _cache, True)
"""


class Startup:
    timeout = 300  # a cold start compiles every kernel it needs
    repeat = 3
    number = 1

    def setup(self):
        self.cache = tempfile.mkdtemp(prefix="fastbp-numba-warm-")
        env = dict(os.environ, NUMBA_CACHE_DIR=self.cache)
        subprocess.run([sys.executable, "-c", FIRST_GRADIENT], env=env, check=True)

    def teardown(self):
        shutil.rmtree(self.cache, ignore_errors=True)

    def timeraw_cold_start(self):
        return FIRST_GRADIENT, FRESH_CACHE

    def timeraw_warm_start(self):
        return FIRST_GRADIENT, f"import os\nos.environ['NUMBA_CACHE_DIR'] = {self.cache!r}\n"


_s = BY_NAME["C2"]

# C2's first gradient on the specialized code of its shape (fastbp/_core/small.py),
# in a process whose numba cache already holds the generic kernels.
SMALL_GRADIENT = f"""
import numpy as np
import fastbp
net = fastbp.Network({_s.sizes!r}, {list(_s.activations)!r}, {_s.loss!r},
                     reduction={_s.reduction!r}, bias={_s.bias!r}, dtype={_s.dtype!r})
X = np.linspace(-1.0, 1.0, {_s.sizes[0]}).reshape(1, -1)
Y = np.ones((1, {_s.sizes[-1]}))
net.loss_and_grad(net.init(0), X, Y)
assert net.plan.last_driver == "small"
"""


class SmallNetworkStartup:
    """The compile cost of a small network's specialized code (``FASTBP_SMALL=always``):
    compile = its source and numba cache new (the generic kernels' cache filled);
    cached = both filled by an earlier process.  compile - cached is what a
    new shape costs once."""

    timeout = 300
    repeat = 3
    number = 1

    def setup(self):
        self.numba = tempfile.mkdtemp(prefix="fastbp-numba-small-")
        self.small = tempfile.mkdtemp(prefix="fastbp-small-")
        env = dict(os.environ, NUMBA_CACHE_DIR=self.numba, FASTBP_CACHE_DIR=self.small,
                   FASTBP_SMALL="always")
        subprocess.run([sys.executable, "-c", SMALL_GRADIENT], env=env, check=True)

    def teardown(self):
        shutil.rmtree(self.numba, ignore_errors=True)
        shutil.rmtree(self.small, ignore_errors=True)

    def _env(self, small_dir):
        return (f"import os\nos.environ['NUMBA_CACHE_DIR'] = {self.numba!r}\n"
                f"os.environ['FASTBP_CACHE_DIR'] = {small_dir}\n"
                "os.environ['FASTBP_SMALL'] = 'always'\n")

    def timeraw_compile(self):
        # a new folder for the generated source: numba compiles it afresh
        return SMALL_GRADIENT, ("import atexit, shutil, tempfile\n"
                                "_d = tempfile.mkdtemp(prefix='fastbp-small-cold-')\n"
                                "atexit.register(shutil.rmtree, _d, True)\n"
                                + self._env("_d"))

    def timeraw_cached(self):
        return SMALL_GRADIENT, self._env(repr(self.small))
