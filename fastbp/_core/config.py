"""Compilation settings shared by every compiled function, in one place.

fastmath is limited to reassociation and contraction (plus the sign-of-zero and
reciprocal relaxations): it lets LLVM vectorize the sums and fuse multiply-adds.
'nnan' and 'ninf' are never enabled: they would let the compiler delete the
isfinite checks and NaN propagation the library relies on.
"""

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

# The work of a batch (``Plan._work``) below which the serial twin of a driver
# runs: a parallel launch costs what a small problem cannot repay.  Work counts
# the multiply-adds of one forward pass over the batch (N * (n_params + n_0))
# plus EXAMPLE_WORK per example for what an example costs whatever its
# layers (activations, the loss, the loops' set-up): a serial gradient measured
# 182, 428, 560 and 2378 ns per example for n_params + n_0 = 71, 721, 2474
# and 15755 (networks 4-8-3, 13-37-5, 64-32-10, 150-100-5, 1024 examples):
# by least squares 242 ns + 0.136 ns per multiply-add, the fixed part worth
# ~1800 multiply-adds.
# GNU OpenMP's threads sleep at once (``plan._passive_openmp``), so every
# parallel call wakes one: 60-100 us on this 2-core virtual machine, and the
# parallel driver wins once the serial one takes ~150-200 us.  Measured with
# asv_bench/threshold_sweep.py (2 threads, back to back, medians of 21, quiet
# machine; parallel/serial time): 4-8-3 x 16, 64, 256, 1024, 4096: 5.61,
# 6.06, 1.72, 1.03, 0.70; 13-37-5: 5.36, 2.25, 1.09, 0.72, 0.73; 64-32-10:
# 4.17, 1.72, 1.16, 0.75, 0.67; 150-100-5 x 16-1024: 1.41, 0.97, 0.67, 0.57.
# With EXAMPLE_WORK 1500 and 1.3M, every point is on its faster side but the
# two ties (1.03 and 0.97); counting weights alone, no single threshold was
# (4-8-3 turns at 73k-290k, 150-100-5 at 250k-1M).  After a 50 ms sleep or a
# 256^2 NumPy matmul the two drivers were within 0.82-1.32 of each other at
# every size (40-64-8 and the networks above, 64-4096 examples): the woken
# core, or the core OpenBLAS's spinning thread holds, is what a call waits
# for, and the task queue lets the calling thread take the work meanwhile;
# so one threshold serves all three.  Training checks the choice with a timed
# trial (fastbp.training).
EXAMPLE_WORK = 1500
SERIAL_BELOW = 1_300_000

# The specialized code of a small network (``fastbp._core.small``) runs, by
# default, batches the generic drivers run serially, and at least those below
# SMALL_BELOW multiply-adds (N * (n_params + n_0)): its per-example loops beat
# the generic parallel driver there (4-8-3 x 1024: 122 us against 191).
SMALL_BELOW = 200_000

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
