"""fastbp: exact backpropagation gradients of fully connected networks, fast.

The per-example forward and backward equations of the documents in
``shared/seeds/`` are compiled loops (Numba); ``fastbp.reference`` is an
independent vectorized NumPy oracle they are checked against.
"""

from . import metrics
from .gradcheck import gradcheck
from .io import ModelFileError, load, save
from .network import Network
from .params import Params
from .training import EarlyStopping, History, OptimizerState, train

__version__ = "0.1.0"

__all__ = [
    "EarlyStopping",
    "History",
    "ModelFileError",
    "Network",
    "OptimizerState",
    "Params",
    "__version__",
    "gradcheck",
    "load",
    "metrics",
    "save",
    "train",
]
