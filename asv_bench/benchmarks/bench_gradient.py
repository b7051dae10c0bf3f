"""Loss and gradient of every workload (``fastbp.bench.WORKLOADS``)."""

from . import common
from .common import BY_NAME, GRADIENT, THREADS, _peers


class Gradient:
    """``net.loss_and_grad`` on each workload, with 1 and 2 threads."""

    params = (GRADIENT, THREADS)
    param_names = ("workload", "threads")
    timer = common.timer
    timeout = 300  # C5 with one thread and untuned kernels takes seconds per call

    def setup(self, workload, threads):
        common.set_threads(threads)
        self.run = common.prepare(_peers.FastbpContender(), "gradient", workload)

    def time_loss_and_grad(self, workload, threads):
        self.run()

    def peakmem_loss_and_grad(self, workload, threads):
        self.run()


class GradientRates:
    """Quality signals: speedup over ``fastbp.reference`` (same inputs, timed
    round-robin) and the GFLOP/s reached (6 N n_weights flops per gradient)."""

    params = (GRADIENT, THREADS)
    param_names = ("workload", "threads")
    timer = common.timer
    timeout = 300  # C5 with one thread and untuned kernels takes seconds per call
    number = 1
    repeat = 1

    def setup(self, workload, threads):
        common.set_threads(threads)
        self.fastbp = common.prepare(_peers.FastbpContender(), "gradient", workload)
        self.reference = common.prepare(common.reference_contender(), "gradient", workload)

    def track_speedup_over_reference(self, workload, threads):
        t = common.median_seconds({"fastbp": self.fastbp, "reference": self.reference})
        return t["reference"] / t["fastbp"]

    track_speedup_over_reference.unit = "x"

    def track_gflops(self, workload, threads):
        t = common.median_seconds({"fastbp": self.fastbp})["fastbp"]
        return BY_NAME[workload].flops / t / 1e9

    track_gflops.unit = "GFLOP/s"
