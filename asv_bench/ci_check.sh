#!/usr/bin/env bash
# asv smoke test for CI (about a minute): every benchmark module imports and is
# well formed (asv check), and one cheap case of each benchmark class runs once
# against the installed fastbp.  Fails when a benchmark errors (asv run exits 2)
# or when a selected benchmark is not collected (the count below no longer matches).
set -euo pipefail
cd "$(dirname "$0")"

asv machine --yes > /dev/null
asv check --python=same

select="Gradient\.time_loss_and_grad\('C1', 1\)"
select+="|GradientRates\.track_speedup_over_reference\('C2', 1\)"
select+="|Training\.time_train\('C2', 1\)"
select+="|Startup\.timeraw_warm_start"
select+="|SmallNetworkStartup\.timeraw_cached"
select+="|GradientScenarios\.track_median\('C3-1000-f64', 'idle', 1\)"
expected=6

log=$(mktemp)
trap 'rm -f "$log"' EXIT
asv run --python=same --quick --show-stderr --bench "$select" 2>&1 | tee "$log"
grep -q "Running $expected total benchmarks" "$log" || {
    echo "asv_bench/ci_check.sh: expected $expected benchmarks to be collected" >&2
    exit 1
}
