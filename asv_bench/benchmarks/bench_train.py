"""Training runs through ``fastbp.train``: full-batch gradient descent (C1: 1000
epochs, C2: 10,000 steps) and Adam on mini-batches (C6: 5 epochs of batches of
32), as the workload table says.

Skipped (NotImplementedError in setup) at commits that have no ``fastbp.train``.
"""

from . import common
from .common import BY_NAME, THREADS, TRAIN, _peers


class Training:
    params = (TRAIN, THREADS)
    param_names = ("workload", "threads")
    timer = common.timer
    timeout = 300  # the reference loop of 10,000 steps takes seconds
    number = 1

    def setup(self, workload, threads):
        common.set_threads(threads)
        self.run = common.prepare(_peers.FastbpContender(), "train", workload)

    def time_train(self, workload, threads):
        self.run()

    def peakmem_train(self, workload, threads):
        self.run()


class TrainingRates:
    params = (TRAIN, THREADS)
    param_names = ("workload", "threads")
    timer = common.timer
    timeout = 300  # the reference loop of 10,000 steps takes seconds
    number = 1
    repeat = 1

    def setup(self, workload, threads):
        common.set_threads(threads)
        self.fastbp = common.prepare(_peers.FastbpContender(), "train", workload)
        self.reference = common.prepare(common.reference_contender(), "train", workload)

    def track_speedup_over_reference(self, workload, threads):
        t = common.median_seconds({"fastbp": self.fastbp, "reference": self.reference},
                                  repeat=3)
        return t["reference"] / t["fastbp"]

    track_speedup_over_reference.unit = "x"

    def track_gflops(self, workload, threads):
        w = BY_NAME[workload]
        t = common.median_seconds({"fastbp": self.fastbp}, repeat=3)["fastbp"]
        return w.steps * w.flops / t / 1e9

    track_gflops.unit = "GFLOP/s"
