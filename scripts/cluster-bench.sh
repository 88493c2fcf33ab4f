#!/usr/bin/env bash
# Cluster mode at scale: 1,000 VirtualServices x 10 RealServers converge, then
# single RealServer changes timed to the datapath (node-agent/benches/cluster_scale.rs).
#
#   sudo scripts/cluster-bench.sh                    # the issue's figures, 3 runs
#   sudo scripts/cluster-bench.sh --changes 500      # options go to the bench
#   RUNS=1 CPUS=0-1 sudo -E scripts/cluster-bench.sh # one run, pinned to CPUs 0-1
#
# Needs root (it loads the BPF balancer in testing mode; nothing is attached).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "cluster-bench: NEEDS ROOT (the bench loads BPF programs); run it with sudo" >&2
    exit 1
fi
runs=${RUNS:-3}
pin=()
if [[ -n ${CPUS:-} ]]; then
    pin=(taskset -c "$CPUS")
fi

# Build once, then run the executable itself (so every run is pinned alike).
exe=$(cargo bench -p weir-agent --bench cluster_scale --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*cluster_scale[^"]*\)".*/\1/p' | tail -n 1)
if [[ -z $exe ]]; then
    cargo bench -p weir-agent --bench cluster_scale --no-run # show the build error
    exit 1
fi
for run in $(seq 1 "$runs"); do
    echo "== run $run of $runs"
    "${pin[@]}" "$exe" --bench "$@"
done
