"""fastbp on a Dask cluster: data-parallel gradients and training over row
chunks of dask arrays, bit-identical for any number of workers.

The rule: the same chunking gives the same bits.  Each row chunk's loss and
gradient SUMS come from fastbp's compiled kernels on a worker
(``reduction="sum"``); they are added by a binary tree in chunk order
(``tree``), never in the order workers finish; the mean divides once and the
L2 term is added once.  ``chunked_loss_and_grad`` computes the same on one
machine.  ``train`` trains over the cluster: the data persisted on the workers
once, the optimizer (sgd, momentum, nesterov, adam, or scipy's L-BFGS) on the
client, with ``fastbp.train``'s History, callback, validation and early
stopping.  See docs/distributed.md.

Needs the ``dask`` extra: ``pip install "fastbp[dask]"`` (dask[array],
distributed).
"""

from ._chunks import Partial, tree
from ._gradient import chunked_loss_and_grad, loss_and_grad
from ._train import train

__all__ = ["Partial", "chunked_loss_and_grad", "loss_and_grad", "train", "tree"]
