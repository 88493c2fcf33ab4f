#!/usr/bin/env bash
# Cluster mode at scale: 1,000 VirtualServices x 10 RealServers converge, then
# single RealServer changes timed to the datapath (node-agent/benches/cluster_scale.rs);
# with --operator, timed to the operator's status (operator/benches/arbitration_scale.rs).
#
#   sudo scripts/cluster-bench.sh                    # the issue's figures, 3 runs
#   sudo scripts/cluster-bench.sh --changes 500      # options go to the bench
#   RUNS=1 CPUS=0-1 sudo -E scripts/cluster-bench.sh # one run, pinned to CPUs 0-1
#   scripts/cluster-bench.sh --operator              # the operator's bench (no root needed)
#
# The agent's bench needs root (it loads the BPF balancer in testing mode; nothing is
# attached); the operator's runs against the API server double only.
set -euo pipefail
cd "$(dirname "$0")/.."

package=weir-agent
bench=cluster_scale
if [[ ${1:-} == --operator ]]; then
    shift
    package=weir-operator
    bench=arbitration_scale
elif [[ $(id -u) -ne 0 ]]; then
    echo "cluster-bench: NEEDS ROOT (the bench loads BPF programs); run it with sudo" >&2
    exit 1
fi
runs=${RUNS:-3}
pin=()
if [[ -n ${CPUS:-} ]]; then
    pin=(taskset -c "$CPUS")
fi

# Build once, then run the executable itself (so every run is pinned alike).
exe=$(cargo bench -p "$package" --bench "$bench" --no-run --message-format=json 2>/dev/null |
    sed -n "s/.*\"executable\":\"\([^\"]*${bench}[^\"]*\)\".*/\1/p" | tail -n 1)
if [[ -z $exe ]]; then
    cargo bench -p "$package" --bench "$bench" --no-run # show the build error
    exit 1
fi
for run in $(seq 1 "$runs"); do
    echo "== run $run of $runs"
    "${pin[@]}" "$exe" --bench "$@"
done
