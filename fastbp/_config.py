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
# Measured with asv_bench/threshold_sweep.py (2 threads, omp, 2-core shared box,
# load average 2.0-2.5 from two other CPU-bound processes; 21 interleaved
# samples per point, parallel/serial time): a launch cost 40-300 us whenever a
# core was free and ~20 ms while both were busy.  All 8 points below a work of
# 180k lost, by median and by minimum (by minimum: 4.5k 1.55, 46k 1.61,
# 158k 5.61).  Of the 11 points from 180k to 16M, the parallel driver won 7 by
# minimum (184k 0.72, 738k 0.56, 1M 0.81, 4M 0.66, 16M 0.88) and 5 by median.
# Training re-checks the choice with a timed trial (fastbp.training).
SERIAL_BELOW = 200_000
