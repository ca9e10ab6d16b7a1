#!/usr/bin/env bash
# User-space instructions per proxied HTTP/2 request (h2c), counted by callgrind under a fixed
# load: the steady figure for small changes to the hyper path that bench/h2.sh's wall-clock
# rounds cannot separate from this shared VM's noise (see bench/proxy-instructions.sh, its
# HTTP/1.1 twin). User space only: the kernel's TCP stack is about half of the h2c path's CPU.
#
# What it does, all on 127.0.0.1 and bounded in time: starts the nginx backend (port 18191,
# bench/nginx-backend.conf), starts `spillway run` under `valgrind --tool=callgrind
# --instr-atstart=no` with bench/h2-spillway.yaml (h2c listener on 18190, one worker), warms
# the upstream pool with 3 s of `h2load -c16 -m16`, switches instrumentation on for an 8 s
# `h2load -c16 -m16` run, and prints Ir per request.
#
# Usage: bench/h2-instructions.sh [BIN]      (default target/release/spillway)
# Needs: valgrind, nginx, h2load, curl (apt-get install -y valgrind nginx nghttp2-client curl).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/spillway}
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release -p spillway)" >&2; exit 1; }
for tool in valgrind callgrind_control nginx h2load curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
for p in 18190 18191 19921; do
  if ss -Htln "sport = :$p" | grep -q .; then echo "port $p is in use (bench/h2.sh running?)" >&2; exit 1; fi
done
OUT=$(mktemp -d "${TMPDIR:-/tmp}/spillway-h2-instructions.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

mkdir -p "$OUT/backend/logs" "$OUT/backend/tmp"
sed -e 's/@BACKEND_WORKERS@/1/' -e 's/@NOFILE@/8192/' -e 's/@BACKEND_PORT@/18191/' \
  "$ROOT/bench/nginx-backend.conf" > "$OUT/backend/nginx.conf"
nginx -p "$OUT/backend/" -e "$OUT/backend/logs/error.log" -c "$OUT/backend/nginx.conf" \
  -g 'daemon off;' >/dev/null 2>&1 &
PIDS+=($!)

sed -e 's/@PORT@/18190/' -e 's/@ADMIN_PORT@/19921/' -e 's/@BACKEND_PORT@/18191/' \
  -e 's/@SPILLWAY_LISTEN@/protocol: h2c/' "$ROOT/bench/h2-spillway.yaml" > "$OUT/spillway.yaml"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
  "$BIN" run --config "$OUT/spillway.yaml" > "$OUT/spillway.log" 2>&1 &
SPILLWAY=$!
PIDS+=("$SPILLWAY")
URL=http://127.0.0.1:18190/
for _ in $(seq 120); do curl -s --http2-prior-knowledge -o /dev/null "$URL" && break; sleep 0.5; done
curl -s --http2-prior-knowledge -o /dev/null "$URL" \
  || { echo "the proxy did not start; see $OUT/spillway.log" >&2; exit 1; }

timeout 30 h2load -t1 -c16 -m16 -D3 "$URL" > /dev/null
callgrind_control -i on "$SPILLWAY" > /dev/null 2>&1
REQUESTS=$(timeout 60 h2load -t1 -c16 -m16 -D8 "$URL" | awk '/^requests:/ {print $8}')
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
