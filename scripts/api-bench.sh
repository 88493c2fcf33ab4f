#!/usr/bin/env bash
# Load benchmark of weir-agent's HTTP API (issue 3, Proof): wrk against
# GET /api/v1/vips, and curl timing PUT /api/v1/vips/reals/batch with 1,000
# weighted reals (ring recomputed and written). Loopback only.
#
# Run as root from the repo root:   scripts/api-bench.sh
# Prints one JSON line per measurement on stdout (like weir-bench); progress,
# settings and the targets go to stderr. Exits non-zero if a step fails, never
# because a target is missed.
#
# Knobs (environment): WRK_THREADS (2), WRK_CONNECTIONS (32), WRK_DURATION (10,
# seconds), WRK_WARMUP (2, seconds), BATCH_ROUNDS (21), BATCH_REALS (1000).
set -euo pipefail
cd "$(dirname "$0")/.."

WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-32}
WRK_DURATION=${WRK_DURATION:-10}
WRK_WARMUP=${WRK_WARMUP:-2}
BATCH_ROUNDS=${BATCH_ROUNDS:-21}
BATCH_REALS=${BATCH_REALS:-1000}
GET_TARGET=20000 # requests/s
BATCH_TARGET_MS=50
BODY_LIMIT_DEFAULT=65536 # weir-agent's default --body-limit (64 KiB)

say() { echo "api-bench: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/api-bench.sh: run as root (it installs packages and loads BPF programs)" >&2
  exit 1
fi

# --- 1. what is missing --------------------------------------------------------
./scripts/setup.sh wrk curl jq
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# --- 2. build and start the agent ---------------------------------------------
say "building weir-agent (release)"
cargo build --release -q -p weir-agent

work=$(mktemp -d /tmp/weir-api-bench.XXXXXX)
agent_pid=""
base=""
created=0

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    if [ "$created" -eq 1 ] && [ -n "$base" ]; then
      curl -sS -m 10 -o /dev/null -X POST "$base/api/v1/lb/close" 2>/dev/null || true
    fi
    kill -TERM "$agent_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -s "$work/agent.log" ]; then
    say "the agent's log (last lines):"
    tail -n 20 "$work/agent.log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Port 0: the kernel picks a free port, which the agent logs at start-up
# ("serving the API on http://127.0.0.1:PORT"): no race with other listeners.
# -no-logging: no access-log line per request (the GET figure is the API's,
# not the log writer's).
./target/release/weir-agent -host 127.0.0.1 -port 0 -no-logging 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 300); do
  kill -0 "$agent_pid" 2>/dev/null || die "weir-agent exited at start-up"
  base=$(grep -o 'serving the API on http://127\.0\.0\.1:[0-9]*' "$work/agent.log" | head -n1 | sed 's/^serving the API on //') || true
  [ -n "$base" ] && break
  sleep 0.1
done
[ -n "$base" ] || die "weir-agent did not report its address within 30 s"
say "weir-agent (pid $agent_pid) on $base, request logging OFF (-no-logging), body limit: default 64 KiB"

# api METHOD PATH [BODY-FILE] [EXPECTED-STATUS]: one call, checks the status
# and the envelope's success; the answer is left in $work/answer.
api() {
  local method=$1 path=$2 body=${3:-} want=${4:-200} code
  local args=(-sS -m 30 -o "$work/answer" -w '%{http_code}' -X "$method" -H 'Content-Type: application/json' -H 'Expect:')
  [ -n "$body" ] && args+=(--data-binary "@$body")
  code=$(curl "${args[@]}" "$base$path") || die "$method $path: curl failed"
  if [ "$code" != "$want" ] || [ "$(jq -r .success "$work/answer" 2>/dev/null)" != "true" ]; then
    die "$method $path: HTTP $code (expected $want): $(head -c 500 "$work/answer")"
  fi
}

# --- 3. a testing-mode balancer and a handful of VIPs with reals ---------------
# testing: the BPF program is loaded, never attached (nothing pinned). The ring
# is Katran's default 65,537 slots; lru_size is kept small (the connection
# table plays no part in these API calls, and a CI machine need not allocate 8M entries).
cat >"$work/create.json" <<'EOF'
{"testing": true, "max_vips": 64, "max_reals": 4096, "ch_ring_size": 65537, "lru_size": 100000, "hash_func": 0}
EOF
api POST /api/v1/lb/create "$work/create.json" 201
created=1

vips=("10.0.0.1 80 6" "10.0.0.2 80 6" "10.0.0.3 443 6" "10.0.0.4 443 6"
      "10.0.0.5 53 17" "10.0.0.6 8080 6" "fc00::1 80 6" "fc00::2 443 6")
v=0
for spec in "${vips[@]}"; do
  read -r addr port proto <<<"$spec"
  v=$((v + 1))
  printf '{"address":"%s","port":%d,"proto":%d,"flags":0}' "$addr" "$port" "$proto" >"$work/vip.json"
  api POST /api/v1/vips "$work/vip.json" 201
  # 16 reals each, through the batch endpoint.
  {
    printf '{"vip":{"address":"%s","port":%d,"proto":%d},"action":0,"reals":[' "$addr" "$port" "$proto"
    for r in $(seq 16); do
      [ "$r" -gt 1 ] && printf ','
      if [[ $addr == *:* ]]; then # IPv6 VIP, IPv6 reals (no IPv6-in-IPv4)
        printf '{"address":"fd00:1::%x:%x","weight":%d,"flags":0}' "$v" "$r" $((r * 10))
      else
        printf '{"address":"10.1.%d.%d","weight":%d,"flags":0}' "$v" "$r" $((r * 10))
      fi
    done
    printf ']}'
  } >"$work/reals.json"
  api PUT /api/v1/vips/reals/batch "$work/reals.json"
done
# The VIP of the batch measurement: no reals before each add.
BATCH_VIP='{"address":"10.0.0.100","port":80,"proto":6}'
printf '{"address":"10.0.0.100","port":80,"proto":6,"flags":0}' >"$work/vip.json"
api POST /api/v1/vips "$work/vip.json" 201

api GET /api/v1/vips
nvips=$(jq '.data | length' "$work/answer")
list_bytes=$(curl -sS -o /dev/null -w '%{size_download}' "$base/api/v1/vips")
[ "$nvips" -eq $((${#vips[@]} + 1)) ] || die "GET /api/v1/vips lists $nvips VIPs, expected $((${#vips[@]} + 1))"
say "$nvips VIPs, $((${#vips[@]} * 16)) reals; GET /api/v1/vips answers $list_bytes bytes"

# --- 4. GET /api/v1/vips under wrk ---------------------------------------------
# 2 threads: one event loop per core (more only contend). wrk and the agent's
# 2 tokio workers share the 2 cores, so the figure is a lower bound for the
# agent alone. 32 keep-alive connections keep both workers busy; 64 adds
# queueing latency without adding throughput on 2 cores.
url="$base/api/v1/vips"
say "warm-up: wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${WRK_WARMUP}s (discarded)"
wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${WRK_WARMUP}s" "$url" >/dev/null || die "wrk warm-up failed"
say "measuring: wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${WRK_DURATION}s --latency $url"
wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${WRK_DURATION}s" --latency "$url" >"$work/wrk.txt" || die "wrk failed"
sed 's/^/  wrk| /' "$work/wrk.txt" >&2
if grep -q 'Non-2xx or 3xx responses' "$work/wrk.txt"; then
  die "wrk saw error responses: $(grep 'Non-2xx' "$work/wrk.txt")"
fi
if grep -q 'Socket errors: connect [1-9]' "$work/wrk.txt"; then
  die "wrk could not connect: $(grep 'Socket errors' "$work/wrk.txt")"
fi
rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt")
requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
# Latency Distribution lines: "     50%  611.00us" (us, ms or s) -> ms.
pct_ms() {
  awk -v p="$1%" '$1 == p {
      v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
      if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000
      printf "%.3f", v; found = 1 }
    END { if (!found) exit 1 }' "$work/wrk.txt"
}
p50=$(pct_ms 50) && p90=$(pct_ms 90) && p99=$(pct_ms 99) || die "cannot read wrk's latency distribution"
[ -n "$rps" ] && [ -n "$requests" ] || die "cannot read wrk's requests/s"

jq -cn --argjson rps "$rps" --argjson p50 "$p50" --argjson p90 "$p90" --argjson p99 "$p99" \
  --argjson requests "$requests" --argjson target "$GET_TARGET" --argjson vips "$nvips" \
  --arg method "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${WRK_DURATION}s --latency, keep-alive over loopback, after a ${WRK_WARMUP}s warm-up; GET /api/v1/vips listing $nvips VIPs ($list_bytes bytes); weir-agent -no-logging (request logging off), default tokio runtime; wrk and the agent share the machine's $(nproc) cores" \
  '{case: "api_get_vips", requests_per_s: $rps, p50_ms: $p50, p90_ms: $p90, p99_ms: $p99,
    requests: $requests, target_requests_per_s: $target, meets_target: ($rps >= $target), method: $method}'

# --- 5. batches of 1,000 reals: add, then delete, BATCH_ROUNDS times ----------
# Weighted reals (1..100), none known before the add, on a VIP with no reals:
# every add allocates 1,000 real indices, writes them, recomputes the ring of
# 65,537 slots and writes it (every slot changes); the delete empties it again.
{
  printf '{"vip":%s,"action":0,"reals":[' "$BATCH_VIP"
  for ((i = 0; i < BATCH_REALS; i++)); do
    [ "$i" -gt 0 ] && printf ','
    printf '{"address":"10.200.%d.%d","weight":%d,"flags":0}' $((i / 250)) $((i % 250 + 1)) $((i % 100 + 1))
  done
  printf ']}'
} >"$work/add.json"
sed 's/"action":0/"action":1/' "$work/add.json" >"$work/del.json"
body_bytes=$(stat -c %s "$work/add.json")
[ "$body_bytes" -le "$BODY_LIMIT_DEFAULT" ] || die "a $BATCH_REALS-real body is $body_bytes bytes, over the default 64 KiB body limit: start the agent with --body-limit"
say "batch: $BATCH_ROUNDS x (add $BATCH_REALS reals, delete them); body $body_bytes bytes, under the default 64 KiB limit (not raised)"

# timed FILE: one PUT, end to end (connect, send, server work, answer) by curl's
# time_total; prints milliseconds.
timed() {
  local out code t
  out=$(curl -sS -m 30 -o "$work/answer" -w '%{http_code} %{time_total}' -X PUT \
    -H 'Content-Type: application/json' -H 'Expect:' --data-binary "@$1" "$base/api/v1/vips/reals/batch") ||
    die "PUT /api/v1/vips/reals/batch: curl failed"
  read -r code t <<<"$out"
  if [ "$code" != 200 ] || [ "$(jq -r .success "$work/answer" 2>/dev/null)" != "true" ]; then
    die "PUT /api/v1/vips/reals/batch: HTTP $code: $(head -c 500 "$work/answer")"
  fi
  awk -v t="$t" 'BEGIN { printf "%.3f\n", t * 1000 }'
}
count_reals() {
  # Query parameters, as katran's reference client sends them.
  curl -sS -m 30 -G "$base/api/v1/vips/reals" -d address=10.0.0.100 -d port=80 -d proto=6 |
    jq -e 'if .success == true then .data | length else error("failed") end' ||
    die "GET /api/v1/vips/reals failed"
}
: >"$work/add.ms"
: >"$work/del.ms"
for ((round = 1; round <= BATCH_ROUNDS; round++)); do
  timed "$work/add.json" >>"$work/add.ms"
  if [ "$round" -eq 1 ] || [ "$round" -eq "$BATCH_ROUNDS" ]; then
    n=$(count_reals)
    [ "$n" -eq "$BATCH_REALS" ] || die "after the add the VIP has $n reals, expected $BATCH_REALS"
  fi
  timed "$work/del.json" >>"$work/del.ms"
  if [ "$round" -eq 1 ] || [ "$round" -eq "$BATCH_ROUNDS" ]; then
    n=$(count_reals)
    [ "$n" -eq 0 ] || die "after the delete the VIP has $n reals, expected 0"
  fi
done
say "add (ms): $(tr '\n' ' ' <"$work/add.ms")"
say "delete (ms): $(tr '\n' ' ' <"$work/del.ms")"
median() { sort -n "$1" | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maximum() { sort -n "$1" | tail -n1; }
minimum() { sort -n "$1" | head -n1; }

jq -cn --argjson median "$(median "$work/add.ms")" --argjson max "$(maximum "$work/add.ms")" \
  --argjson min "$(minimum "$work/add.ms")" --argjson del_median "$(median "$work/del.ms")" \
  --argjson del_max "$(maximum "$work/del.ms")" --argjson rounds "$BATCH_ROUNDS" --argjson reals "$BATCH_REALS" \
  --argjson body "$body_bytes" --argjson target "$BATCH_TARGET_MS" \
  --arg method "PUT /api/v1/vips/reals/batch action 0 with $BATCH_REALS weighted reals (new addresses) on a VIP without reals, ring of 65537 slots recomputed and written; $BATCH_ROUNDS rounds each followed by action 1 deleting them; end to end per request (new loopback connection, $body_bytes-byte body, answer) by curl time_total; default 64 KiB body limit; weir-agent -no-logging; meets_target: every add (max_ms) under target_ms" \
  '{case: "api_batch_1000_reals", median_ms: $median, max_ms: $max, min_ms: $min,
    delete_median_ms: $del_median, delete_max_ms: $del_max, rounds: $rounds, reals: $reals, body_bytes: $body,
    target_ms: $target, meets_target: ($max < $target), method: $method}'

# --- 6. summary, and a clean stop -----------------------------------------------
say "GET /api/v1/vips: $rps requests/s (target >= $GET_TARGET), p50 $p50 ms, p99 $p99 ms"
say "batch of $BATCH_REALS reals: add median $(median "$work/add.ms") ms, max $(maximum "$work/add.ms") ms (target < $BATCH_TARGET_MS ms)"

api POST /api/v1/lb/close
created=0
kill -TERM "$agent_pid"
wait "$agent_pid" || die "weir-agent exited with status $? on SIGTERM"
agent_pid=""
say "done: balancer closed, agent stopped"
