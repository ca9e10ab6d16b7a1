#!/usr/bin/env bash
# User-space instructions per proxied gRPC call (unary) or per streamed gRPC message, counted by
# callgrind under a fixed load: the steady figure for changes to the HTTP/2 upstream client
# that bench/grpc.sh's wall-clock rounds cannot separate from this shared VM's noise (see
# bench/h2-instructions.sh, its h2c -> HTTP/1.1 twin). User space only (the kernel's loopback
# TCP is not counted).
#
# What it does, all on 127.0.0.1 and bounded in time: starts the gRPC echo upstream
# (`spillway grpc echo`, port 18691: the lean server of BIN, the tenth session on; hyper's before,
# 34.7 k against 34.0 k Ir per unary call), starts `spillway run` under `valgrind --tool=callgrind
# --instr-atstart=no` with bench/grpc-spillway.yaml (h2c listener on 18690, one worker, the
# cluster's `http2_client` set by --client), warms the upstream connections with 3 s of load,
# switches instrumentation on for an 8 s run, and prints Ir per call (or message).
#   unary    h2load -t1 -c16 -m16, each call a POST of one 71-byte gRPC message (as bench/grpc.sh)
#   --stream `spillway grpc stream -c16 -m16`: 256 bidirectional calls, one message in flight each
# With --annotate, also writes callgrind_annotate's inclusive and self listings next to the
# callgrind output (the top of the self listing is printed).
#
# Usage: bench/grpc-instructions.sh [BIN] [--client lean|hyper] [--stream] [--annotate]
#        (BIN default target/release/spillway; --client default: the binary's default)
# Needs: valgrind, h2load, curl, python3 (apt-get install -y valgrind nghttp2-client curl python3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/spillway
CLIENT=""
MODE=unary
ANNOTATE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --client) CLIENT=$2; shift ;;
    --stream) MODE=stream ;;
    --annotate) ANNOTATE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown argument: $1" >&2; exit 2 ;;
    *) BIN=$1 ;;
  esac
  shift
done
case "$CLIENT" in ""|lean|hyper) ;; *) echo "--client is lean or hyper" >&2; exit 2 ;; esac
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release -p spillway)" >&2; exit 1; }
for tool in valgrind callgrind_control callgrind_annotate h2load curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
PORT=18690
BACKEND_PORT=18691
ADMIN_PORT=19951
for p in $PORT $BACKEND_PORT $ADMIN_PORT; do
  if ss -Htln "sport = :$p" | grep -q .; then echo "port $p is in use (another run?)" >&2; exit 1; fi
done
OUT=$(mktemp -d "${TMPDIR:-/tmp}/spillway-grpc-instructions.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# One gRPC message: a protobuf string field of 64 bytes, length-prefixed (bench/grpc.sh's).
MSG=$OUT/message.bin
python3 - 64 "$MSG" <<'PY'
import struct, sys
size, path = int(sys.argv[1]), sys.argv[2]
proto = b"\x0a" + bytes([size]) + b"x" * size
open(path, "wb").write(struct.pack(">BI", 0, len(proto)) + proto)
PY

"$BIN" grpc echo --listen "127.0.0.1:$BACKEND_PORT" --threads 1 > "$OUT/backend.log" 2>&1 &
PIDS+=($!)

client_line="# http2_client: the binary's default"
[ -n "$CLIENT" ] && client_line="http2_client: $CLIENT"
sed -e "s|@NOFILE@|8192|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" -e "s|@PORT@|$PORT|g" \
  -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" -e "s|@HTTP2_SERVER@|# http2_server: the binary's default|" \
  -e "s|^    protocol: http2\$|    protocol: http2\n    $client_line|" \
  "$ROOT/bench/grpc-spillway.yaml" > "$OUT/spillway.yaml"
grep -q "^    $client_line\$" "$OUT/spillway.yaml" \
  || { echo "could not set the cluster's http2_client in $OUT/spillway.yaml" >&2; exit 1; }
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
  "$BIN" run --config "$OUT/spillway.yaml" > "$OUT/spillway.log" 2>&1 &
SPILLWAY=$!
PIDS+=("$SPILLWAY")

URL=http://127.0.0.1:$PORT/bench.Echo/Say
probe() { # a unary call through the proxy comes back echoed with grpc-status 0
  curl -s -m 2 --http2-prior-knowledge -X POST --data-binary "@$MSG" \
    -H 'content-type: application/grpc' -H 'te: trailers' -D "$OUT/probe.head" \
    -o "$OUT/probe.body" "$URL" 2>/dev/null \
    && cmp -s "$OUT/probe.body" "$MSG" && grep -qi '^grpc-status: *0' "$OUT/probe.head"
}
for _ in $(seq 120); do probe && break; sleep 0.5; done
probe || { echo "no gRPC echo through the proxy; see $OUT/spillway.log" >&2; exit 1; }

load() { # seconds -> prints the count of calls (unary) or messages (stream) that completed
  if [ "$MODE" = unary ]; then
    timeout $(($1 + 60)) h2load -t1 -c16 -m16 -D"$1" -d "$MSG" \
      -H 'content-type: application/grpc' -H 'te: trailers' "$URL" > "$OUT/load.txt" 2>&1
    awk '/^requests:/ {print $8}' "$OUT/load.txt"
  else
    timeout $(($1 + 60)) "$BIN" grpc stream --target "127.0.0.1:$PORT" --path /bench.Echo/Chat \
      -c 16 -m 16 -d "${1}s" --message-size 64 > "$OUT/load.txt" 2>&1
    python3 -c 'import json, sys
r = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
assert r["calls_failed"] == 0, r
print(r["messages"])' "$OUT/load.txt"
  fi
}
load 3 > /dev/null || { echo "warm-up load failed: $(tail -3 "$OUT/load.txt")" >&2; exit 1; }
callgrind_control -i on "$SPILLWAY" > /dev/null 2>&1
COUNT=$(load 8) || { echo "load failed: $(tail -3 "$OUT/load.txt")" >&2; exit 1; }
callgrind_control -i off "$SPILLWAY" > /dev/null 2>&1
callgrind_control -d "$SPILLWAY" > /dev/null 2>&1
sleep 1
cleanup
trap - EXIT
[ -n "$COUNT" ] && [ "$COUNT" -gt 0 ] || { echo "nothing completed: $(tail -3 "$OUT/load.txt")" >&2; exit 1; }
# Each dump file holds its count in `totals:` (and `summary:`, which may repeat it or be 0):
# take the larger of the two per file, then add the files.
IR=$(for f in "$OUT"/callgrind.out*; do
  awk '/^summary:|^totals:/ { if ($2 > m) m = $2 } END { print m + 0 }' "$f"
done | awk '{ s += $1 } END { print s }')
UNIT=call
[ "$MODE" = stream ] && UNIT=message
awk -v ir="$IR" -v n="$COUNT" -v bin="$BIN" -v unit="$UNIT" -v client="${CLIENT:-default}" \
  'BEGIN { printf "%s (http2_client %s): %d %ss, %.0f instructions, %.0f Ir/%s\n", bin, client, n, unit, ir, ir / n, unit }'
if [ "$ANNOTATE" = 1 ]; then
  # The dump with the load in it is the largest file.
  DUMP=$(ls -S "$OUT"/callgrind.out* | head -1)
  callgrind_annotate --inclusive=yes --threshold=99 "$DUMP" > "$OUT/inclusive.txt" 2>/dev/null || true
  callgrind_annotate --threshold=99 "$DUMP" > "$OUT/self.txt" 2>/dev/null || true
  echo "self cost, top entries ($OUT/self.txt; inclusive in $OUT/inclusive.txt):"
  grep -m 25 -E '^ *[0-9,]+ \(' "$OUT/self.txt" | cut -c1-160 || true
fi
echo "callgrind output: $OUT"
