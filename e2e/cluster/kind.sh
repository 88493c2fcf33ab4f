#!/usr/bin/env bash
# A kind cluster with freshly built weir images, then e2e/cluster/run.sh on it.
# Needs docker (a running engine) and kind; CLUSTER (weir-e2e) names the cluster,
# KEEP=1 keeps it afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-weir-e2e}
TAG=e2e-$(git rev-parse --short HEAD)
for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "SKIPPED: $tool is not installed"; exit 0; }
done
docker info >/dev/null 2>&1 || { echo "SKIPPED: no Docker engine"; exit 0; }

docker build -f deploy/Dockerfile.operator -t "weir-operator:$TAG" .
docker build -f deploy/Dockerfile.agent -t "weir-agent:$TAG" .
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 2m
kind load docker-image --name "$CLUSTER" "weir-operator:$TAG" "weir-agent:$TAG"
export KUBECONFIG=${KUBECONFIG:-$(mktemp)}
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
status=0
WEIR_OPERATOR_IMAGE="weir-operator:$TAG" WEIR_AGENT_IMAGE="weir-agent:$TAG" \
    WEIR_INTERFACE=eth0 WEIR_XDP_MODE=generic e2e/cluster/run.sh || status=$?
[ "${KEEP:-0}" = 1 ] || kind delete cluster --name "$CLUSTER"
exit "$status"
