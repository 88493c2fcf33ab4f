#!/usr/bin/env bash
# The control-plane scenario of e2e/tests/control_plane.rs, on a real cluster:
# install weir with its Helm chart, apply e2e/manifests/web.yaml, and check
# what the test checks against the API server double — Accepted, Programmed
# n/n nodes, a SYN (simulate-packet, over the agent's REST API) landing on a
# RealServer, the REST API refusing to change the owned VIP, weight 0
# draining, a conflicting VirtualService rejected, a node selector change,
# an agent restart, deletion.
#
#   KUBECONFIG=... WEIR_OPERATOR_IMAGE=repo:tag WEIR_AGENT_IMAGE=repo:tag e2e/cluster/run.sh
#
# Optional: WEIR_INTERFACE (eth0), WEIR_DEFAULT_MAC (02:00:00:00:00:01: the
# scenario sends no real traffic), WEIR_XDP_MODE (generic: works on any NIC,
# kind's veths included), KEEP=1 to leave everything installed.
# Needs kubectl, helm (scripts/helm.sh installs it), python3, curl.
# e2e/cluster/kind.sh makes a kind cluster with freshly built images and runs this.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${KUBECONFIG:-}" ] && [ ! -f "$HOME/.kube/config" ]; then
    echo "SKIPPED: no kubeconfig (set KUBECONFIG, or use e2e/cluster/kind.sh)"
    exit 0
fi
: "${WEIR_OPERATOR_IMAGE:?set WEIR_OPERATOR_IMAGE=repository:tag}"
: "${WEIR_AGENT_IMAGE:?set WEIR_AGENT_IMAGE=repository:tag}"
NS=weir-system
APP=weir-e2e
T=120s

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
cond() { # cond KIND NAME TYPE FIELD
    kubectl -n "$APP" get "$1" "$2" -o jsonpath="{.status.conditions[?(@.type==\"$3\")].$4}"
}
until_eq() { # until_eq WANT CMD...: polls CMD until it prints WANT
    local want=$1; shift
    for _ in $(seq 1 120); do
        [ "$("$@" 2>/dev/null || true)" = "$want" ] && return 0
        sleep 1
    done
    fail "$* never printed '$want' (last: '$("$@" 2>&1 || true)')"
}

cleanup() {
    [ -n "${PF_PID:-}" ] && kill "$PF_PID" 2>/dev/null || true
    if [ "${KEEP:-0}" != 1 ]; then
        kubectl delete namespace "$APP" --ignore-not-found --wait=false >/dev/null 2>&1 || true
        helm uninstall weir -n "$NS" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

step "install (helm upgrade --install weir charts/weir)"
helm upgrade --install weir charts/weir -n "$NS" --create-namespace --wait --timeout 5m \
    --set operator.image.repository="${WEIR_OPERATOR_IMAGE%:*}" --set operator.image.tag="${WEIR_OPERATOR_IMAGE##*:}" \
    --set agent.image.repository="${WEIR_AGENT_IMAGE%:*}" --set agent.image.tag="${WEIR_AGENT_IMAGE##*:}" \
    --set agent.interface="${WEIR_INTERFACE:-eth0}" \
    --set agent.defaultMac="${WEIR_DEFAULT_MAC:-02:00:00:00:00:01}" \
    --set agent.xdpMode="${WEIR_XDP_MODE:-generic}"
until_eq weir-agent kubectl -n "$NS" get daemonset weir-agent -o jsonpath='{.metadata.name}'
kubectl -n "$NS" rollout status daemonset/weir-agent --timeout=5m
NODES=$(kubectl -n "$NS" get daemonset weir-agent -o jsonpath='{.status.desiredNumberScheduled}')
echo "agents on $NODES nodes"

step "apply e2e/manifests/web.yaml"
kubectl create namespace "$APP" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f e2e/manifests/web.yaml
kubectl -n "$APP" wait wvs/web --for=condition=Accepted --timeout=$T
kubectl -n "$APP" wait wvs/web --for=condition=Programmed --timeout=$T
until_eq "$NODES/$NODES nodes" cond wvs web Programmed message
kubectl -n "$APP" get wvs,wrs
kubectl get wbn

step "the datapath: a SYN to the VIP lands on a RealServer (simulate-packet over REST)"
POD=$(kubectl -n "$NS" get pod -l app.kubernetes.io/name=weir-agent -o jsonpath='{.items[0].metadata.name}')
PORT=18080
kubectl -n "$NS" port-forward "pod/$POD" "$PORT:8080" >/dev/null &
PF_PID=$!
until_eq 200 curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health"
syn_lands_on() { # syn_lands_on SRC_PORT: the outer destination of the simulated SYN
    local frame out
    frame=$(python3 -c '
import base64, struct, sys
sport = int(sys.argv[1])
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, bytes([198,51,100,7]), bytes([10,100,0,1]))
tcp = struct.pack("!HHIIBBHHH", sport, 80, 1, 0, 5 << 4, 0x02, 64000, 0, 0)
eth = bytes.fromhex("0200000000bb0200000000aa0800")
print(base64.b64encode(eth + ip + tcp).decode())' "$1")
    out=$(curl -s -X POST "http://127.0.0.1:$PORT/api/v1/utils/simulate-packet" -d "{\"packet\":\"$frame\"}")
    python3 -c '
import base64, json, sys
p = base64.b64decode(json.loads(sys.argv[1])["data"]["packet"])
print(".".join(str(b) for b in p[30:34]) if len(p) > 54 else "not sent")' "$out"
}
seen=$(for p in $(seq 40000 40015); do syn_lands_on "$p"; done | sort -u | tr '\n' ' ')
[ "$seen" = "10.0.0.1 10.0.0.2 " ] || fail "SYNs went to: $seen (want both reals)"
echo "SYNs spread over: $seen"

step "the REST API refuses to change a VIP a VirtualService owns"
body=$(curl -s -w ' %{http_code}' -X POST "http://127.0.0.1:$PORT/api/v1/vips/reals" \
    -d '{"vip":{"address":"10.100.0.1","port":80,"proto":6},"real":{"address":"10.0.0.9","weight":1}}')
case "$body" in
    *'"code":"CLUSTER_OWNED"'*'VirtualService weir-e2e/web'*' 409') echo "refused: $body" ;;
    *) fail "expected 409 CLUSTER_OWNED naming weir-e2e/web, got: $body" ;;
esac

step "weight 0 drains web-a"
kubectl -n "$APP" patch wrs web-a --type merge -p '{"spec":{"weight":0}}'
drained() { curl -s "http://127.0.0.1:$PORT/api/v1/vips/reals?address=10.100.0.1&port=80&proto=6" |
    python3 -c 'import json,sys; print([r["weight"] for r in json.load(sys.stdin)["data"] if r["address"]=="10.0.0.1"])'; }
until_eq "[0]" drained
seen=$(for p in $(seq 40000 40015); do syn_lands_on "$p"; done | sort -u | tr '\n' ' ')
[ "$seen" = "10.0.0.2 " ] || fail "after draining, SYNs went to: $seen"

step "an agent restart keeps the VIP programmed"
kubectl -n "$NS" delete pod "$POD" --wait=true
kill "$PF_PID" 2>/dev/null || true; PF_PID=
kubectl -n "$NS" rollout status daemonset/weir-agent --timeout=5m
until_eq "$NODES/$NODES nodes" cond wvs web Programmed message

step "a second VirtualService on the same address loses to the older one"
kubectl -n "$APP" get wvs web -o json | python3 -c '
import json, sys
o = json.load(sys.stdin)
print(json.dumps({"apiVersion": o["apiVersion"], "kind": o["kind"],
                  "metadata": {"name": "web-copy", "namespace": o["metadata"]["namespace"]}, "spec": o["spec"]}))' |
    kubectl apply -f -
until_eq AddressConflict cond wvs web-copy Accepted reason
echo "web-copy: $(cond wvs web-copy Accepted message)"

step "a node selector no node matches unprograms the VIP; removing it programs it again"
kubectl -n "$APP" patch wvs web --type merge -p '{"spec":{"nodeSelector":{"matchLabels":{"weir-e2e/none":"x"}}}}'
until_eq "0/0 nodes" cond wvs web Programmed message
kubectl -n "$APP" patch wvs web --type json -p '[{"op":"remove","path":"/spec/nodeSelector"}]'
until_eq "$NODES/$NODES nodes" cond wvs web Programmed message

step "deleting the winner hands the address to web-copy; deleting it removes the VIP"
kubectl -n "$APP" delete wvs web
until_eq True cond wvs web-copy Accepted status
until_eq "$NODES/$NODES nodes" cond wvs web-copy Programmed message
kubectl -n "$APP" delete wvs web-copy
until_eq "" kubectl get wbn -o jsonpath='{.items[*].status.virtualServices}'

step "PASS"
