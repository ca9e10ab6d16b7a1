#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind under a fixed load.
#
# Why: on this small shared VM a 1–3 % change in CPU per request is below the run-to-run noise
# of bench/proxy.sh (±5–8 %); instruction counts repeat within 0.1 % for the same binary and
# load, so they judge a request-path change that wall-clock runs cannot. They count user space
# only (~28 % of the gateway's CPU here; the kernel TCP stack is the rest), so they complement
# bench/proxy.sh, which stays the figure to compare with nginx.
#
# What it does, all on 127.0.0.1 and bounded in time: starts the nginx backend of
# bench/proxy.sh (port 18081), starts `spillway run` under `valgrind --tool=callgrind
# --instr-atstart=no` with bench/spillway.yaml, warms the pool with 3 s of `wrk -t1 -c16`,
# switches instrumentation on for an 8 s `wrk -t1 -c16` run, and prints Ir per request.
#
# Usage: bench/proxy-instructions.sh [BIN]      (default target/release/spillway)
#        bench/proxy-instructions.sh --nginx    (nginx as the proxy instead: bench/nginx-proxy.conf,
#                                                one worker, master_process off, port 18082)
# Needs: valgrind, nginx, wrk, curl (apt-get install -y valgrind nginx wrk curl).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NGINX_PROXY=0
if [ "${1:-}" = --nginx ]; then NGINX_PROXY=1; shift; fi
BIN=${1:-$ROOT/target/release/spillway}
if [ "$NGINX_PROXY" = 0 ]; then
  [ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release -p spillway)" >&2; exit 1; }
fi
for tool in valgrind callgrind_control nginx wrk curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
OUT=$(mktemp -d "${TMPDIR:-/tmp}/spillway-instructions.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Backend: the same nginx config proxy.sh uses, one worker.
mkdir -p "$OUT/backend/logs" "$OUT/backend/tmp"
sed -e 's/@BACKEND_WORKERS@/1/' -e 's/@NOFILE@/8192/' -e 's/@BACKEND_PORT@/18081/' \
  "$ROOT/bench/nginx-backend.conf" > "$OUT/backend/nginx.conf"
nginx -p "$OUT/backend/" -e "$OUT/backend/logs/error.log" -c "$OUT/backend/nginx.conf" \
  -g 'daemon off;' >/dev/null 2>&1 &
PIDS+=($!)

# The proxy under callgrind, instrumentation off until the measured run.
if [ "$NGINX_PROXY" = 1 ]; then
  mkdir -p "$OUT/proxy/logs" "$OUT/proxy/tmp"
  sed -e 's/@WORKERS@/1/' -e 's/@NOFILE@/8192/' -e 's/@BACKEND_PORT@/18081/' \
    -e 's/@NGINX_PORT@/18082/' "$ROOT/bench/nginx-proxy.conf" > "$OUT/proxy/nginx.conf"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
    nginx -p "$OUT/proxy/" -e "$OUT/proxy/logs/error.log" -c "$OUT/proxy/nginx.conf" \
    -g 'daemon off; master_process off;' > "$OUT/spillway.log" 2>&1 &
  URL=http://127.0.0.1:18082/
  BIN=nginx
else
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
    "$BIN" run --config "$ROOT/bench/spillway.yaml" > "$OUT/spillway.log" 2>&1 &
  URL=http://127.0.0.1:18080/
fi
SPILLWAY=$!
PIDS+=("$SPILLWAY")
for _ in $(seq 120); do curl -s -o /dev/null "$URL" && break; sleep 0.5; done
curl -s -o /dev/null "$URL" || { echo "the proxy did not start; see $OUT/spillway.log" >&2; exit 1; }

timeout 30 wrk -t1 -c16 -d3s "$URL" > /dev/null
callgrind_control -i on "$SPILLWAY" > /dev/null 2>&1
REQUESTS=$(timeout 60 wrk -t1 -c16 -d8s "$URL" | awk '/requests in/ {print $1}')
callgrind_control -i off "$SPILLWAY" > /dev/null 2>&1
callgrind_control -d "$SPILLWAY" > /dev/null 2>&1
sleep 1
cleanup
trap - EXIT
# Each dump file holds its count in `totals:` (and `summary:`, which may repeat it or be 0):
# take the larger of the two per file, then add the files.
IR=$(for f in "$OUT"/callgrind.out*; do
  awk '/^summary:|^totals:/ { if ($2 > m) m = $2 } END { print m + 0 }' "$f"
done | awk '{ s += $1 } END { print s }')
awk -v ir="$IR" -v n="$REQUESTS" -v bin="$BIN" \
  'BEGIN { printf "%s: %d requests, %.0f instructions, %.0f Ir/request\n", bin, n, ir, ir / n }'
echo "callgrind output: $OUT"
