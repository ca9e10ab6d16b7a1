#!/usr/bin/env bash
# Measures the accuracy of `spillway load` on this machine, for BENCHMARKS.md:
#   1. open loop: the achieved rate at --rate 2000 for 10 s against a fast local server
#      (target: within ±2 %);
#   2. closed loop: throughput of `spillway load --closed` against the same server, next to
#      Debian's `wrk` with the same connections and threads (target: within 10 % of wrk).
# Everything runs on loopback, each run is bounded by a duration and by `timeout`, and the
# server is stopped by its PID at the end.
#
# Usage: scripts/load-accuracy.sh [SECONDS] [CONNECTIONS] [ROUNDS]
# Closed-loop runs alternate spillway and wrk ROUNDS times and compare medians: the machine is
# shared, so one pair of runs can differ by 10 % on noise alone.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${1:-10}"
CONNS="${2:-16}"
THREADS=2
ROUNDS="${3:-3}"
PORT=18931
URL="http://127.0.0.1:${PORT}/"
OUT="$(mktemp -d)"

if ! command -v wrk >/dev/null 2>&1; then
  echo "load-accuracy: installing wrk"
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq wrk >/dev/null
fi

# The bench profile (release with thin LTO) keeps the build short on a small machine.
echo "== building (cargo --profile bench)"
cargo build -q --profile bench -p spillway --bin spillway
cargo build -q --profile bench -p spillway-load --example hello_server
BIN=target/release/spillway
SERVER=target/release/examples/hello_server

"$SERVER" "127.0.0.1:${PORT}" 2>"$OUT/server.log" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true; rm -rf "$OUT"' EXIT
for _ in $(seq 50); do
  curl -fsS "$URL" >/dev/null 2>&1 && break
  sleep 0.1
done

field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

echo "== open loop: --rate 2000 for ${SECS}s"
timeout $((SECS + 30)) "$BIN" load "$URL" --rate 2000 --duration "${SECS}s" --threads "$THREADS" \
  --quiet --json "$OUT/open.json" >/dev/null
achieved=$(field "$OUT/open.json" "round(d['overall']['achieved_rate'], 1)")
throughput=$(field "$OUT/open.json" "round(d['overall']['throughput'], 1)")
p50=$(field "$OUT/open.json" "d['overall']['latency_ms']['p50']")
p99=$(field "$OUT/open.json" "d['overall']['latency_ms']['p99']")
missed=$(field "$OUT/open.json" "d['overall']['missed']")
lag50=$(field "$OUT/open.json" "d['overall']['send_lag_ms']['p50']")
lag99=$(field "$OUT/open.json" "d['overall']['send_lag_ms']['p99']")
steps=$(field "$OUT/open.json" "' '.join('%.0f' % p['sent_rate'] for p in d['timeline'])")
err=$(python3 -c "print(round(($achieved - 2000) / 20, 2))")
echo "achieved ${achieved} rps (error ${err} %), responses ${throughput}/s, missed ${missed}, p50 ${p50} ms, p99 ${p99} ms"
echo "send lag behind schedule: p50 ${lag50} ms, p99 ${lag99} ms"
echo "sent rate per timeline interval: ${steps}"

echo "== closed loop: ${CONNS} connections, ${THREADS} threads, ${SECS}s, ${ROUNDS} alternating rounds"
ours_all=()
wrk_all=()
for round in $(seq "$ROUNDS"); do
  timeout $((SECS + 30)) "$BIN" load "$URL" --closed --connections "$CONNS" --duration "${SECS}s" \
    --threads "$THREADS" --quiet --json "$OUT/closed.json" >/dev/null
  ours=$(field "$OUT/closed.json" "round(d['overall']['throughput'], 0)")
  ours_p50=$(field "$OUT/closed.json" "d['overall']['latency_ms']['p50']")
  timeout $((SECS + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency "$URL" >"$OUT/wrk.txt"
  theirs=$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk.txt")
  wrk_p50=$(awk '$1 == "50%" {print $2}' "$OUT/wrk.txt")
  echo "round ${round}: spillway load --closed ${ours} req/s (p50 ${ours_p50} ms), wrk ${theirs} req/s (p50 ${wrk_p50})"
  ours_all+=("$ours")
  wrk_all+=("$theirs")
done
python3 - "${ours_all[*]}" "${wrk_all[*]}" <<'PY'
import statistics, sys
ours = [float(x) for x in sys.argv[1].split()]
wrk = [float(x) for x in sys.argv[2].split()]
o, w = statistics.median(ours), statistics.median(wrk)
print(f"median: spillway {o:.0f} req/s, wrk {w:.0f} req/s, spillway/wrk = {o / w:.3f}")
PY
