#!/usr/bin/env bash
# weir's demo: set up this machine if needed, build, and balance real TCP
# connections through the XDP datapath in network namespaces it creates (and
# removes). Run as root from the repository root: ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q -p weir-e2e --bin weir-demo
exec ./target/release/weir-demo "$@"
