"""Compilation settings shared by every compiled function, in one place.

fastmath is limited to reassociation and contraction (plus the sign-of-zero and
reciprocal relaxations): it lets LLVM vectorize the sums and fuse multiply-adds.
'nnan' and 'ninf' are never enabled: they would let the compiler delete the
isfinite checks and NaN propagation the library relies on.
"""

FASTMATH = frozenset({"reassoc", "contract", "nsz", "arcp"})
