#!/usr/bin/env bash
# Overload proof of the gateway's admission control (issue 10): a backend of fixed capacity,
# Spillway in front, open-loop load stepping from 0.5x to 10x the backend's capacity with a mix
# of 50 % SHEDDABLE, 40 % CRITICAL and 10 % CRITICAL_PLUS requests, run twice:
#   (a) unprotected: the gateway as a plain proxy, no admission policy (bench/overload-unprotected.yaml)
#   (b) protected:   the same with the route's bulkhead (bench/overload-protected.yaml)
# then bench/overload_report.py prints one table per run, checks the four criteria of the
# issue (strict class order, CRITICAL/CRITICAL_PLUS >= 99 % served while they fit, goodput >=
# 95 % of capacity, p99 of the 2xx <= 2x the unloaded p99) and draws one SVG per run.
#
# Capacity is measured, not assumed: N slots x SERVICE nominally serve N/SERVICE req/s, but the
# backend's sleep overshoots by about a timer tick, so the script first measures what the
# backend really serves (closed loop, 2N connections, straight to the backend) and expresses
# every rate as a multiple of that figure.
#
# Everything listens on 127.0.0.1 and every step is bounded in time; each run starts a fresh
# backend (the unprotected run leaves thousands of abandoned requests in its FIFO queue).
#   backend  spillway backend -c N --service-time S  127.0.0.1:18091
#   gateway  spillway run (workers: 1)                127.0.0.1:18090, admin 127.0.0.1:18092
# Default ramp: 20 steps of 5 s (0.5x, 1x, ... 10x), so about 4.5 minutes for both runs.
#
# Usage: bench/overload.sh [--build] [--out DIR] [--only protected|unprotected]
#                          [--ramp FROM:TO:STEP] (multiples of capacity) [--step-secs S]
#                          [--concurrency N] [--service-time MS] [--timeout SECS]
#                          [--connections-unprotected N] [--connections-protected N]
#                          [--capacity REQ_PER_S] [--protected-config FILE]
# --capacity skips the measurement (e.g. to rerun one run into the DIR of an earlier one:
# --only protected --capacity <figure of meta.json> --out DIR).
# SPILLWAY_BIN=PATH overrides the binary. Needs: curl, python3 (standard library only).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
BIN=${SPILLWAY_BIN:-$ROOT/target/release/spillway}

RAMP=0.5:10:0.5
STEP_SECS=5
SLOTS=10
SERVICE_MS=20
TIMEOUT=1
# Open loop: the connections bound the requests in flight. Unprotected at 10x every request
# stays about TIMEOUT in flight (10 x capacity x 1 s, plus room for reconnects); protected,
# at most the bulkhead's slots and queue plus refusals that take at most max_wait. Each run
# gets what it needs and no more: `spillway load` with thousands of mostly idle connections
# times ~1 % of responses 70-130 ms late (straight to the backend at 0.5x: p99 22 ms with 600
# connections, 93-105 ms with 6000), which would blur the protected run's latency.
CONNS_UNPROTECTED=6000
CONNS_PROTECTED=1000
CAPACITY=""
ONLY=""
BUILD=0
OUT=""
PROTECTED_CONFIG=$BENCH/overload-protected.yaml
UNPROTECTED_CONFIG=$BENCH/overload-unprotected.yaml
MIX='x-spillway-criticality: SHEDDABLE=50,CRITICAL=40,CRITICAL_PLUS=10'

GATEWAY_PORT=18090
BACKEND_PORT=18091
ADMIN_PORT=18092

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --build) BUILD=1 ;;
        --out) OUT=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --ramp) RAMP=$2; shift ;;
        --step-secs) STEP_SECS=$2; shift ;;
        --concurrency) SLOTS=$2; shift ;;
        --service-time) SERVICE_MS=$2; shift ;;
        --timeout) TIMEOUT=$2; shift ;;
        --connections-unprotected) CONNS_UNPROTECTED=$2; shift ;;
        --connections-protected) CONNS_PROTECTED=$2; shift ;;
        --capacity) CAPACITY=$2; shift ;;
        --protected-config) PROTECTED_CONFIG=$2; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
    shift
done

die() { echo "overload.sh: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

for tool in curl python3; do command -v "$tool" >/dev/null || die "$tool not found"; done
case "$ONLY" in ""|protected|unprotected) ;; *) die "--only takes protected or unprotected" ;; esac
IFS=: read -r R_FROM R_TO R_STEP <<<"$RAMP"
[ -n "${R_STEP:-}" ] || die "--ramp is FROM:TO:STEP in multiples of capacity, e.g. 0.5:10:0.5"
for cfg in "$PROTECTED_CONFIG" "$UNPROTECTED_CONFIG"; do
    grep -q "127.0.0.1:$GATEWAY_PORT" "$cfg" || die "$cfg must listen on 127.0.0.1:$GATEWAY_PORT"
    grep -q "127.0.0.1:$BACKEND_PORT" "$cfg" || die "$cfg must proxy to 127.0.0.1:$BACKEND_PORT"
done
for p in "$GATEWAY_PORT" "$BACKEND_PORT" "$ADMIN_PORT"; do
    if ss -Htln "sport = :$p" | grep -q .; then die "port $p is already in use (another benchmark running?)"; fi
done
# The unprotected run holds thousands of client connections, and more upstream, in one gateway.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] || [ "$NOFILE" -ge $((2 * CONNS_UNPROTECTED + 512)) ] ||
    die "open-files limit $NOFILE is too low for $CONNS_UNPROTECTED connections (needs $((2 * CONNS_UNPROTECTED + 512)))"

if [ "$BUILD" = 1 ]; then
    log "building spillway (release)"
    (cd "$ROOT" && cargo build --release -p spillway)
fi
[ -x "$BIN" ] || die "$BIN not found: pass --build"

[ -n "$OUT" ] || OUT=$(mktemp -d "${TMPDIR:-/tmp}/spillway-overload.XXXXXX")
mkdir -p "$OUT"

STARTED=()
stop() { # pid: TERM, at most ~5 s, then KILL
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do stop "$pid"; done
    STARTED=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_200() { # port: until GET / answers 200, at most 15 s
    for _ in $(seq 150); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -m 1 "http://127.0.0.1:$1/" 2>/dev/null)" = 200 ] && return 0
        sleep 0.1
    done
    die "nothing answering 200 on 127.0.0.1:$1; logs in $OUT"
}

# Longest a run may take: baseline + ramp + slack. Processes exit on their own after it.
STEPS=$(python3 -c "import math; print(int(math.floor(($R_TO - $R_FROM) / $R_STEP + 1e-9)) + 1)")
RUN_SECS=$((STEPS * STEP_SECS + 60))

start_backend() { # name
    "$BIN" backend --concurrency "$SLOTS" --service-time "${SERVICE_MS}ms" \
        --listen "127.0.0.1:$BACKEND_PORT" -d "${RUN_SECS}s" >"$OUT/backend-$1.log" 2>&1 &
    BACKEND_PID=$!
    STARTED+=("$BACKEND_PID")
    wait_200 "$BACKEND_PORT"
}

# ---- capacity: what the backend really serves ------------------------------------------------
NOMINAL=$((SLOTS * 1000 / SERVICE_MS))
if [ -z "$CAPACITY" ]; then
    start_backend capacity
    timeout 60 "$BIN" load "http://127.0.0.1:$BACKEND_PORT/" --closed -c $((2 * SLOTS)) -d 4s \
        --timeout "${TIMEOUT}s" --json "$OUT/capacity.json" -q >"$OUT/capacity.txt" 2>&1 ||
        die "capacity measurement failed: $(cat "$OUT/capacity.txt")"
    cleanup
    CAPACITY=$(python3 -c "import json; print(round(json.load(open('$OUT/capacity.json'))['overall']['goodput']))")
    [ "$CAPACITY" -gt 0 ] || die "the backend served nothing: $(cat "$OUT/capacity.txt")"
    log "backend capacity: $CAPACITY req/s measured ($NOMINAL nominal: $SLOTS slots x ${SERVICE_MS} ms)"
else
    log "backend capacity: $CAPACITY req/s as given ($NOMINAL nominal)"
fi
rate() { python3 -c "print(round($1 * $CAPACITY, 3))"; }
FROM=$(rate "$R_FROM"); TO=$(rate "$R_TO"); STEP=$(rate "$R_STEP")
BASE_RATE=$(rate 0.1)
log "ramp $FROM:$TO:$STEP req/s, $STEPS steps x ${STEP_SECS}s; client timeout ${TIMEOUT}s"
cat >"$OUT/meta.json" <<EOF
{"capacity": $CAPACITY, "nominal_capacity": $NOMINAL, "slots": $SLOTS, "service_ms": $SERVICE_MS,
 "ramp": "$RAMP", "step_secs": $STEP_SECS, "timeout_s": $TIMEOUT, "unloaded_rate": $BASE_RATE}
EOF

run() { # name config connections
    local name=$1 config=$2 conns=$3
    log "run $name: $(basename "$config"), $conns connections"
    cp "$config" "$OUT/$name.yaml"
    printf '{"config": "%s", "connections": %s, "started": "%s"}\n' "$(basename "$config")" \
        "$conns" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$OUT/run-$name.json"
    start_backend "$name"
    "$BIN" run --config "$config" >"$OUT/gateway-$name.log" 2>&1 &
    local gw=$!
    STARTED+=("$gw")
    wait_200 "$GATEWAY_PORT"
    # Unloaded: 0.1x capacity, so nothing ever waits for a slot.
    timeout 60 "$BIN" load "http://127.0.0.1:$GATEWAY_PORT/" --rate "$BASE_RATE" -d 10s -c 64 \
        --timeout "${TIMEOUT}s" --mix "$MIX" --json "$OUT/unloaded-$name.json" -q \
        >"$OUT/unloaded-$name.txt" 2>&1 || die "unloaded run failed: $(cat "$OUT/unloaded-$name.txt")"
    timeout $((RUN_SECS + 60)) "$BIN" load "http://127.0.0.1:$GATEWAY_PORT/" \
        --ramp "$FROM:$TO:$STEP:${STEP_SECS}s" -c "$conns" --timeout "${TIMEOUT}s" --mix "$MIX" \
        --json "$OUT/ramp-$name.json" --plot "$OUT/timeline-$name.svg" -q \
        >"$OUT/ramp-$name.txt" 2>&1 || die "ramp failed: $(tail -5 "$OUT/ramp-$name.txt")"
    curl -s -m 2 "http://127.0.0.1:$BACKEND_PORT/stats" >"$OUT/backend-stats-$name.json" || true
    curl -s -m 2 "http://127.0.0.1:$ADMIN_PORT/admin/policies" >"$OUT/policies-$name.json" || true
    cleanup
    sleep 1
}

[ "$ONLY" = protected ] || run unprotected "$UNPROTECTED_CONFIG" "$CONNS_UNPROTECTED"
[ "$ONLY" = unprotected ] || run protected "$PROTECTED_CONFIG" "$CONNS_PROTECTED"

python3 "$BENCH/overload_report.py" "$OUT"
log "raw data in $OUT (ramp-*.json, unloaded-*.json, timeline-*.svg from spillway load, overload-*.svg)"
