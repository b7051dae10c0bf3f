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
SERIAL_BELOW = 50_000
