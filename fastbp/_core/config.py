"""Compilation settings shared by every compiled function, in one place.

fastmath is limited to reassociation and contraction (plus the sign-of-zero and
reciprocal relaxations): it lets LLVM vectorize the sums and fuse multiply-adds.
'nnan' and 'ninf' are never enabled: they would let the compiler delete the
isfinite checks and NaN propagation the library relies on.
"""

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

# Work (multiply-adds of one forward pass over the batch, N * number of weights)
# below which the serial twin of a kernel is used: a parallel launch costs
# microseconds that a tiny problem cannot repay.
# Measured with asv_bench/threshold_sweep.py (2 threads, omp, this 2-core box
# shared with other CPU-bound jobs; 21 interleaved samples per point; ratios
# are parallel/serial time).  The cost of a launch depends on the load, not on
# the work: ~5-25 us while a core was free (load 1.1: work 1.1k 1.56, 4.5k 1.88
# by median, 0.78 by minimum), 40-300 us with one busy core, ~20 ms while
# both were busy (load 2.0-2.5, most of the time).  Under that usual load all
# 8 points below 180k lost by median and by minimum; of the 11 from 180k to
# 16M the parallel driver won 7 by minimum (184k 0.72, 738k 0.56, 1M 0.81,
# 4M 0.66, 16M 0.88) and 5 by median.  200k keeps the problems whose parallel
# gain is at most ~0.1-0.3 ms away from the ~20 ms stalls; training checks the
# choice with a timed trial (fastbp.training).
SERIAL_BELOW = 200_000

# Compiled code uses numpy's error model: a float division by zero gives inf or
# NaN as IEEE arithmetic says instead of raising.  Under the default ('python')
# every division carries a zero test and a path that raises, and a loop with
# one is not vectorized (the activation loops divide: sigmoid, tanh).  The
# kernels never validate; their inputs were checked before the call.
ERROR_MODEL = "numpy"

# Entry points that Python or the training loop calls with arrays, and that
# allocate nothing, are compiled with numba's reference counting off
# (``numba_private.NO_REFCOUNT``: the serial drivers, the input screen,
# train_chunk).
# Called from Python, such a function takes each array without allocating the
# record numba counts references on, and the arrays and views it hands down
# carry none, so the workers' reference counting (an atomic increment and
# decrement per view) is skipped too, without touching the workers: it was
# ~30% of a training step of 003's network, and 0.35 us of each gradient
# call.  Such a function must never allocate (numba refuses to compile an
# allocation without the reference counting).  The parallel drivers keep it.
