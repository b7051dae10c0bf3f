"""Gradients the way programs call them (``fastbp bench --scenario``): single
calls after idle time or right after NumPy work, for the C3 and C4 workloads.
The tracks are medians and 90th percentiles of single calls, in seconds, so a
thread-pool stall shows as a p90 far above the median, and a regression of the
launch policy shows even where the steady-state time does not move."""

from fastbp.bench import SCENARIO_SAMPLES, mixed_matmul, single_calls

from . import common
from .common import BY_NAME, THREADS, _peers

SCENARIO_WORKLOADS = ["C3-1000-f64", "C3-1000-f32", "C3-10000-f64", "C4-256", "C4-4096"]


class GradientScenarios:
    """``net.loss_and_grad`` called once after 50 ms of sleep (idle) or right
    after a NumPy matmul of about its flops (mixed)."""

    params = (SCENARIO_WORKLOADS, ["idle", "mixed"], THREADS)
    param_names = ("workload", "scenario", "threads")
    timeout = 300
    number = 1
    repeat = 1

    def setup(self, workload, scenario, threads):
        common.set_threads(threads)
        run = common.prepare(_peers.FastbpContender(), "gradient", workload)
        before = mixed_matmul(BY_NAME[workload])
        self.times = single_calls({"fastbp": run}, scenario, SCENARIO_SAMPLES,
                                  before=before)["fastbp"]

    def track_median(self, workload, scenario, threads):
        return self.times[0]

    track_median.unit = "seconds"

    def track_p90(self, workload, scenario, threads):
        return self.times[4]

    track_p90.unit = "seconds"
