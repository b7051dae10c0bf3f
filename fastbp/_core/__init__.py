"""The compiled core: everything that runs as compiled code, behind one boundary.

The layers of fastbp import one way: the adapters (``fastbp.cli``,
``fastbp.sklearn``) use the front end (``Network``, ``Params``, ``train``, io,
``gradcheck``, ``reference``), and the front end uses this package through the
names below and nothing else.  Inside it:

- ``config``: compilation settings and the serial/parallel threshold.
- ``functions``: the name -> code tables of activations and losses and the
  compiled scalar formulas (exp, tanh, sigmoid, softplus).
- ``kernels``: the forward, loss, backward and gradient loops and their
  serial and parallel drivers.
- ``microkernel``: the outer-product register micro-kernel (LLVM vector
  instructions at the host's width) and the packing and GEMM loops around it;
  not yet used by ``kernels``.
- ``train_kernels``: the compiled training loop and its records.
- ``screen``: the compiled input screen.
- ``sparse``: the first layer's loops over a CSR input's nonzeros, chained to
  the dense kernels of the other layers.
- ``memory``: the memory check made before large allocations.
- ``numba_private``: every use of numba's private interfaces.
- ``plan``: ``Plan``, the one object through which the front end calls any of it.
"""

import numba as _numba

if _numba.config.DISABLE_JIT:
    # the core is made of what only compiled code has (LLVM intrinsics, the
    # addresses of compiled functions): its import ended in an AttributeError
    raise ImportError("fastbp: NUMBA_DISABLE_JIT=1 is set, but fastbp's core runs only as "
                      "compiled code (unset NUMBA_DISABLE_JIT to use it)")

from .functions import ACTIVATIONS, LAST_LAYER_ONLY, LOSSES, OUTPUT_ACTIVATIONS, REDUCTIONS
from .memory import check_memory
from .plan import (
    PARALLEL,
    SERIAL,
    Drivers,
    Plan,
    Workspaces,
    layer_offsets,
    n_params,
    parallel_available,
    plan_for,
)
from .sparse import SparseInput
from .train_kernels import (
    ACC_ARGMAX,
    ACC_NONE,
    ACC_THRESHOLD,
    ADAM,
    ADAPTIVE,
    BEST_EPOCH,
    CONSTANT,
    DIVERGED,
    EARLY_STOP,
    INTERRUPTED,
    INVSCALING,
    MOMENTUM,
    MONITOR_ACCURACY,
    MONITOR_LOSS,
    MONITOR_VAL_LOSS,
    NESTEROV,
    RUNNING,
    SGD,
    WAIT,
    Batches,
    Model,
    Optimizer,
    Records,
    Stopping,
    Validation,
)

# optimizer name -> code of the compiled update (``train_kernels._update``)
OPTIMIZERS = {"sgd": SGD, "momentum": MOMENTUM, "nesterov": NESTEROV, "adam": ADAM}
# learning-rate schedule name -> code (``train_kernels.train_chunk``)
SCHEDULES = {"constant": CONSTANT, "invscaling": INVSCALING, "adaptive": ADAPTIVE}

__all__ = [
    "ACC_ARGMAX",
    "ACC_NONE",
    "ACC_THRESHOLD",
    "ACTIVATIONS",
    "BEST_EPOCH",
    "DIVERGED",
    "EARLY_STOP",
    "INTERRUPTED",
    "LAST_LAYER_ONLY",
    "LOSSES",
    "MONITOR_ACCURACY",
    "MONITOR_LOSS",
    "MONITOR_VAL_LOSS",
    "OPTIMIZERS",
    "OUTPUT_ACTIVATIONS",
    "PARALLEL",
    "REDUCTIONS",
    "RUNNING",
    "SCHEDULES",
    "SERIAL",
    "SparseInput",
    "WAIT",
    "Batches",
    "Drivers",
    "Model",
    "Optimizer",
    "Plan",
    "Records",
    "Stopping",
    "Validation",
    "Workspaces",
    "check_memory",
    "layer_offsets",
    "n_params",
    "parallel_available",
    "plan_for",
]
