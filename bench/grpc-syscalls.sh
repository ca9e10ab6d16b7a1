#!/usr/bin/env bash
# Where a gRPC unary call's CPU goes, HAProxy against Spillway (issue 15): system calls, user
# and system time per call, under bench/grpc.sh's unary load (h2load -t1 -c16 -m16, one 64-byte
# message per call) through each proxy in turn, to the same `spillway grpc echo` upstream.
# Syscalls and context switches are counted by `perf stat -e raw_syscalls:sys_enter` on the
# proxy's process for the measured seconds; user and system time are /proc/<pid>/stat deltas.
# Everything listens on 127.0.0.1 (ports 18391-18394, 19931) and every step is bounded in time.
#
# Usage: bench/grpc-syscalls.sh [--rounds N] [--duration SECS] [--backend lean|hyper]
#        (defaults: 2 rounds, 5 s, the lean echo; see bench/grpc.sh for the two upstreams)
# SPILLWAY_BIN=PATH overrides the binary (target/release/spillway).
# Needs: haproxy, h2load, perf, python3 (apt-get install -y haproxy nghttp2-client linux-perf python3).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SPILLWAY_BIN:-$ROOT/target/release/spillway}
ROUNDS=2
DURATION=5
BACKEND=lean
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --backend) BACKEND=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
for tool in haproxy h2load perf python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release -p spillway)" >&2; exit 1; }
BACKEND_PORT=18391 SPILLWAY_PORT=18390 HAPROXY_PORT=18394 ADMIN_PORT=19931
for p in $BACKEND_PORT $SPILLWAY_PORT $HAPROXY_PORT $ADMIN_PORT; do
  if ss -Htln "sport = :$p" | grep -q .; then echo "port $p is in use" >&2; exit 1; fi
done
OUT=$(mktemp -d "${TMPDIR:-/tmp}/spillway-grpc-syscalls.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

render() { # template port out
  sed -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" -e "s|@PORT@|$2|g" -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" \
      -e "s|@HTTP2_SERVER@|# http2_server: the binary's default|g" -e "s|@NOFILE@|65536|g" "$1" >"$3"
}
render "$ROOT/bench/grpc-spillway.yaml" "$SPILLWAY_PORT" "$OUT/spillway.yaml"
render "$ROOT/bench/grpc-haproxy.cfg" "$HAPROXY_PORT" "$OUT/haproxy.cfg"
# One gRPC message: a protobuf string field of 64 bytes, length-prefixed (as bench/grpc.sh).
python3 -c 'import struct,sys; p=b"\x0a\x40"+b"x"*64; sys.stdout.buffer.write(struct.pack(">BI",0,len(p))+p)' >"$OUT/message.bin"

"$BIN" grpc echo --listen "127.0.0.1:$BACKEND_PORT" --threads 1 --server "$BACKEND" \
  >"$OUT/backend.log" 2>&1 &
PIDS+=($!)
haproxy -db -f "$OUT/haproxy.cfg" >"$OUT/haproxy.log" 2>&1 &
PIDS+=($!); PID_haproxy=$!
"$BIN" run --config "$OUT/spillway.yaml" >"$OUT/spillway.log" 2>&1 &
PIDS+=($!); PID_spillway=$!
sleep 2

load() { # port seconds out
  timeout $(($2 + 30)) h2load -t1 -c16 -m16 -D"$2" -d "$OUT/message.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:$1/bench.Echo/Say" >"$3" 2>&1
}
echo "target     round    calls  syscalls/call  ctx-switches/call  user us/call  system us/call"
for round in $(seq "$ROUNDS"); do
  for target in haproxy spillway; do
    port_var=${target^^}_PORT; port=${!port_var}; pid_var=PID_$target; pid=${!pid_var}
    load "$port" 2 /dev/null   # warm-up
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    perf stat -e raw_syscalls:sys_enter,context-switches -p "$pid" -o "$OUT/$target-$round.perf" \
      -- sleep "$DURATION" &
    perf_pid=$!
    load "$port" "$DURATION" "$OUT/$target-$round.h2load"
    wait "$perf_pid"
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    python3 - "$target" "$round" "$OUT/$target-$round.h2load" "$OUT/$target-$round.perf" \
      "$((u1 - u0))" "$((s1 - s0))" "$(getconf CLK_TCK)" <<'PY'
import re, sys
target, rnd, h2load, perf, du, ds, tck = sys.argv[1:]
calls = int(re.search(r"(\d+) succeeded", open(h2load).read()).group(1))
counts = {}
for line in open(perf):
    m = re.match(r"\s*([\d,]+)\s+(\S+)", line)
    if m:
        counts[m.group(2)] = int(m.group(1).replace(",", ""))
us = 1e6 / int(tck) / calls
print(f"{target:<10} {rnd:>5} {calls:>8} {counts.get('raw_syscalls:sys_enter', 0) / calls:>14.2f}"
      f" {counts.get('context-switches', 0) / calls:>18.3f} {int(du) * us:>13.2f} {int(ds) * us:>15.2f}")
PY
  done
done
echo "raw data: $OUT"
