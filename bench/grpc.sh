#!/usr/bin/env bash
# gRPC proxy benchmark (issue 15): the same gRPC load, in one alternating run, through
#   HAProxy 2.6 (1 thread), nginx `grpc_pass` (1 worker) and Spillway (workers: 1), each with an
#   h2c listener, to one h2c gRPC upstream (`spillway grpc echo`: echoes every message, then
#   grpc-status 0; `--backend lean`, the default, costs ~1 us of CPU per unary call so that the
#   proxies are the bound, as nginx `return 200` is for bench/h2.sh; `--backend hyper` is an
#   upstream of a real service's weight, ~3.5 us per call, sharing the 2 cores with the rest).
#   unary   h2load POSTs one length-prefixed message per call (content-type application/grpc,
#           te: trailers): calls/s, latency, proxy CPU per call
#   stream  `spillway grpc stream` keeps clients x streams bidirectional calls open, one message
#           in flight per call (send, wait for the echo, send the next): messages/s, message
#           round-trip latency, proxy CPU per message
# Prints each as a ratio to HAProxy's in the same run (medians over rounds, and per round).
# CPU = utime+stime deltas from /proc/<pid>/stat over the round, all of a proxy's processes; the
# backend's and the load client's CPU per call and the machine's idle share are printed too (a
# proxy near 1 s of CPU per second is the bound; a machine with idle time is latency-bound).
#
# Everything listens on 127.0.0.1; every step is bounded in time.
#   backend    spillway grpc echo (1 thread)   127.0.0.1:18291
#   spillway   target/release/spillway          127.0.0.1:18290  (bench/grpc-spillway.yaml)
#   nginx      http2 listener, grpc_pass        127.0.0.1:18292  (bench/grpc-nginx.conf)
#   haproxy    bind … proto h2, server … h2    127.0.0.1:18294  (bench/grpc-haproxy.cfg)
#   spillway-b a second binary (--ab BIN) or     127.0.0.1:18296  (A/B of a change or of the
#              http2_server (--b-http2-server)                    listener's HTTP/2 server)
#
# Usage: bench/grpc.sh [--mode unary|stream|both] [--rounds N] [--duration SECS]
#                      [--warmup SECS] [--clients N] [--streams N] [--message-size BYTES]
#                      [--targets "haproxy nginx spillway"] [--ab BIN] [--out DIR]
#                      [--backend lean|hyper]
#                      [--http2-server lean|hyper] [--b-http2-server lean|hyper]
#   --http2-server NAME    Spillway's listener `http2_server` (default: the binary's default)
#   --b-http2-server NAME  run spillway-b with this `http2_server` (same binary unless --ab):
#                          the two listener HTTP/2 servers compared in one run
# SPILLWAY_BIN=PATH overrides the binary (it is also the upstream and the streaming client).
# Needs: nginx, haproxy, h2load, curl, python3
# (apt-get install -y nginx haproxy nghttp2-client curl python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
BIN=${SPILLWAY_BIN:-$ROOT/target/release/spillway}
BIN_B=""
HTTP2_SERVER=""
B_HTTP2_SERVER=""

MODE=both
ROUNDS=5
DURATION=8
WARMUP=2
CLIENTS=16
STREAMS=16
MESSAGE_SIZE=64
BACKEND=lean
TARGETS_ARG="haproxy nginx spillway"
OUT=""

BACKEND_PORT=18291
SPILLWAY_PORT=18290
NGINX_PORT=18292
HAPROXY_PORT=18294
SPILLWAY_B_PORT=18296
ADMIN_PORT=19931
ADMIN_B_PORT=19932
CALL_PATH=/bench.Echo/Say

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --mode) MODE=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --clients|-c) CLIENTS=$2; shift ;;
        --streams|-m) STREAMS=$2; shift ;;
        --message-size) MESSAGE_SIZE=$2; shift ;;
        --targets) TARGETS_ARG=$2; shift ;;
        --ab) BIN_B=$2; shift ;;
        --http2-server) HTTP2_SERVER=$2; shift ;;
        --b-http2-server) B_HTTP2_SERVER=$2; shift ;;
        --out) OUT=$2; shift ;;
        --backend) BACKEND=$2; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
    shift
done

die() { echo "grpc.sh: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

case "$BACKEND" in lean|hyper) ;; *) die "--backend is lean or hyper" ;; esac
case "$MODE" in unary) MODES=(unary) ;; stream) MODES=(stream) ;; both) MODES=(unary stream) ;;
    *) die "--mode is unary, stream or both" ;; esac
[ -n "$B_HTTP2_SERVER" ] && [ -z "$BIN_B" ] && BIN_B=$BIN
read -r -a TARGETS <<<"$TARGETS_ARG"
[ -n "$BIN_B" ] && TARGETS+=(spillway-b)
for t in "${TARGETS[@]}"; do
    case "$t" in haproxy|nginx|spillway|spillway-b) ;; *) die "unknown target $t" ;; esac
done
has_target() { local t; for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

for tool in nginx h2load curl python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y nginx nghttp2-client curl)"
done
has_target haproxy && { command -v haproxy >/dev/null || die "haproxy not found (apt-get install -y haproxy)"; }
[ -x "$BIN" ] || die "$BIN not found (cargo build --release -p spillway)"
if [ -n "$BIN_B" ]; then [ -x "$BIN_B" ] || die "$BIN_B not executable"; fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576

ports=("$BACKEND_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$SPILLWAY_PORT" "$ADMIN_PORT")
[ -n "$BIN_B" ] && ports+=("$SPILLWAY_B_PORT" "$ADMIN_B_PORT")
for p in "${ports[@]}"; do
    if ss -Htln "sport = :$p" | grep -q .; then
        die "port $p is already in use (another benchmark running?)"
    fi
done

[ -n "$OUT" ] || OUT=$(mktemp -d "${TMPDIR:-/tmp}/spillway-grpc-bench.XXXXXX")
mkdir -p "$OUT"
chmod 755 "$OUT"
CLK_TCK=$(getconf CLK_TCK)

STARTED=()
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]}"; do
        # Bounded wait: at most ~5 s per process, then KILL.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One gRPC message (a protobuf string field of MESSAGE_SIZE bytes, length-prefixed): h2load's
# request body for unary calls, and the readiness probe's.
MSG=$OUT/message.bin
python3 - "$MESSAGE_SIZE" "$MSG" <<'PY'
import struct, sys
size, path = int(sys.argv[1]), sys.argv[2]
n, varint = size, b""
while n >= 0x80:
    varint += bytes([(n & 0x7F) | 0x80]); n >>= 7
proto = b"\x0a" + varint + bytes([n]) + b"x" * size
open(path, "wb").write(struct.pack(">BI", 0, len(proto)) + proto)
PY

wait_ready() { # port: until a unary call through it comes back echoed with grpc-status 0, <= 15 s
    local head=$OUT/probe-$1.head body=$OUT/probe-$1.body
    for _ in $(seq 150); do
        if curl -s -m 1 --http2-prior-knowledge -X POST --data-binary "@$MSG" \
            -H 'content-type: application/grpc' -H 'te: trailers' -D "$head" -o "$body" \
            "http://127.0.0.1:$1$CALL_PATH" 2>/dev/null \
            && cmp -s "$body" "$MSG" && grep -qi '^grpc-status: *0' "$head"; then
            return 0
        fi
        sleep 0.1
    done
    die "no gRPC echo through 127.0.0.1:$1 (see $head); logs in $OUT"
}

render() { # template out: fill the placeholders (H2SERVER: Spillway's http2_server, if set)
    local h2server="# http2_server: the binary's default"
    [ -n "${H2SERVER:-}" ] && h2server="http2_server: $H2SERVER"
    sed -e "s|@NOFILE@|$NOFILE|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" \
        -e "s|@HTTP2_SERVER@|$h2server|g" \
        -e "s|@PORT@|$PORT|g" -e "s|@ADMIN_PORT@|${ADMIN:-0}|g" "$1" >"$2"
}

pids_of() { # target -> the proxy's processes (nginx: master and worker)
    case "$1" in
        spillway) echo "$PID_spillway" ;;
        spillway-b) echo "$PID_spillway_b" ;;
        haproxy) echo "$PID_haproxy" $(pgrep -P "$PID_haproxy" || true) ;;
        nginx) echo "$PID_nginx" $(pgrep -P "$PID_nginx" || true) ;;
        backend) echo "$PID_backend" ;;
    esac
}

port_of() {
    case "$1" in
        spillway) echo "$SPILLWAY_PORT" ;;
        spillway-b) echo "$SPILLWAY_B_PORT" ;;
        haproxy) echo "$HAPROXY_PORT" ;;
        nginx) echo "$NGINX_PORT" ;;
    esac
}

idle_ticks() { # -> the machine's idle time so far (all cores), in clock ticks
    awk '/^cpu / {print $5; exit}' /proc/stat
}

cpu_ticks() { # pids... -> utime+stime summed, in clock ticks
    local total=0 pid rest
    for pid in "$@"; do
        # Fields after "pid (comm) ": state is 3rd, utime 14th, stime 15th.
        rest=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        set -- $rest
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}

run_load() { # mode seconds port out reqlog -> runs the load, output in out
    local mode=$1 secs=$2 port=$3 out=$4 reqlog=$5
    if [ "$mode" = unary ]; then
        local args=(-t1 -c"$CLIENTS" -m"$STREAMS" -D"$secs" -d "$MSG"
            -H 'content-type: application/grpc' -H 'te: trailers')
        [ -n "$reqlog" ] && args+=(--log-file="$reqlog")
        /usr/bin/time -f '%U %S' -o "$out.cpu" \
            timeout $((secs + 30)) h2load "${args[@]}" "http://127.0.0.1:$port$CALL_PATH" >"$out" 2>&1
    else
        /usr/bin/time -f '%U %S' -o "$out.cpu" \
            timeout $((secs + 30)) "$BIN" grpc stream --target "127.0.0.1:$port" \
            --path /bench.Echo/Chat -c "$CLIENTS" -m "$STREAMS" -d "${secs}s" \
            --message-size "$MESSAGE_SIZE" >"$out" 2>&1
    fi
}

run_once() { # mode round target seconds record(0|1)
    local mode=$1 round=$2 target=$3 secs=$4 record=$5
    local port proxy_pids backend_pids p0 b0 p1 b1 i0 i1 out reqlog=""
    port=$(port_of "$target")
    proxy_pids=$(pids_of "$target")
    backend_pids=$(pids_of backend)
    out=$OUT/$mode-$target-$round.txt
    [ "$record" = 1 ] && [ "$mode" = unary ] && reqlog=$OUT/requests-$target-$round.log
    p0=$(cpu_ticks $proxy_pids)
    b0=$(cpu_ticks $backend_pids)
    i0=$(idle_ticks)
    run_load "$mode" "$secs" "$port" "$out" "$reqlog" \
        || die "$mode load failed against $target: $(tail -5 "$out")"
    p1=$(cpu_ticks $proxy_pids)
    b1=$(cpu_ticks $backend_pids)
    i1=$(idle_ticks)
    [ "$record" = 1 ] || return 0

    local done_ok failed non2xx rate lat
    if [ "$mode" = unary ]; then
        rate=$(awk '/^finished in/ {print $4}' "$out")
        done_ok=$(awk '/^requests:/ {print $8}' "$out")
        failed=$(awk '/^requests:/ {print $10 + $12 + $14}' "$out")
        non2xx=$(awk '/^status codes:/ {print $5 + $7 + $9}' "$out")
        # p50 / p99 from h2load's per-request log (microseconds until the end of each response).
        lat=$(python3 - "$reqlog" <<'PY'
import sys
v = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]) if l.count("\t") >= 2)
q = lambda p: v[min(len(v) - 1, int(p * len(v)))] / 1000 if v else float("nan")
print(f"{q(0.50):.3f} {q(0.99):.3f}")
PY
)
        rm -f "$reqlog"
    else
        read -r rate done_ok failed lat <<<"$(python3 - "$out" <<'PY'
import json, sys
r = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
print(f'{r["messages_per_second"]:.1f} {r["messages"]} {r["calls_failed"]} '
      f'{r["latency"]["p50"]:.3f} {r["latency"]["p99"]:.3f}')
PY
)"
        non2xx=0
    fi
    [ -n "$done_ok" ] && [ "$done_ok" -gt 0 ] || die "nothing answered by $target: $(tail -5 "$out")"
    local proxy_us backend_us client_us idle_pct
    client_us=$(awk -v n="$done_ok" '{printf "%.2f", ($1 + $2) * 1e6 / n}' "$out.cpu")
    idle_pct=$(awk -v d=$((i1 - i0)) -v t="$CLK_TCK" -v s="$secs" -v c="$(nproc)" \
        'BEGIN {printf "%.0f", d * 100 / t / s / c}')
    proxy_us=$(awk -v d=$((p1 - p0)) -v t="$CLK_TCK" -v n="$done_ok" 'BEGIN {printf "%.2f", d * 1e6 / t / n}')
    backend_us=$(awk -v d=$((b1 - b0)) -v t="$CLK_TCK" -v n="$done_ok" 'BEGIN {printf "%.2f", d * 1e6 / t / n}')
    set -- $lat
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$rate" "$1" "$2" \
        "$proxy_us" "$backend_us" "$done_ok" "${failed:-0}" "${non2xx:-0}" "$client_us" "$idle_pct" \
        >>"$OUT/rounds-$mode.tsv"
    log "$mode round $round $target: $rate /s, p50 $1 ms, p99 $2 ms, CPU per call or message: proxy ${proxy_us} us, backend ${backend_us} us, client ${client_us} us; machine ${idle_pct} % idle"
}

# ---- start everything ------------------------------------------------------------------------
log "results in $OUT (modes: ${MODES[*]}, backend $BACKEND, -c$CLIENTS -m$STREAMS, $ROUNDS rounds x ${DURATION}s, ${MESSAGE_SIZE}-byte messages, load average $(cut -d' ' -f1-3 /proc/loadavg))"
"$BIN" grpc echo --listen "127.0.0.1:$BACKEND_PORT" --threads 1 --server "$BACKEND" \
    >"$OUT/backend.log" 2>&1 &
PID_backend=$!
STARTED+=("$PID_backend")
wait_ready "$BACKEND_PORT"
if has_target nginx; then
    mkdir -p "$OUT/nginx/logs" "$OUT/nginx/tmp"
    chmod 755 "$OUT/nginx" "$OUT/nginx/tmp"
    PORT=$NGINX_PORT render "$BENCH/grpc-nginx.conf" "$OUT/nginx/nginx.conf"
    nginx -p "$OUT/nginx/" -e "$OUT/nginx/logs/error.log" -c "$OUT/nginx/nginx.conf" -g 'daemon off;' \
        >"$OUT/nginx/logs/stdout.log" 2>&1 &
    PID_nginx=$!
    STARTED+=("$PID_nginx")
    wait_ready "$NGINX_PORT"
fi
if has_target haproxy; then
    mkdir -p "$OUT/haproxy"
    PORT=$HAPROXY_PORT render "$BENCH/grpc-haproxy.cfg" "$OUT/haproxy/haproxy.cfg"
    haproxy -db -f "$OUT/haproxy/haproxy.cfg" >"$OUT/haproxy/haproxy.log" 2>&1 &
    PID_haproxy=$!
    STARTED+=("$PID_haproxy")
    wait_ready "$HAPROXY_PORT"
fi
start_spillway() { # name bin port admin http2_server
    local cfg=$OUT/$1.yaml
    PORT=$3 ADMIN=$4 H2SERVER=$5 render "$BENCH/grpc-spillway.yaml" "$cfg"
    "$2" run --config "$cfg" >"$OUT/$1.log" 2>&1 &
    local pid=$!
    STARTED+=("$pid")
    printf -v "PID_${1//-/_}" '%s' "$pid"
    wait_ready "$3"
}
has_target spillway && start_spillway spillway "$BIN" "$SPILLWAY_PORT" "$ADMIN_PORT" "$HTTP2_SERVER"
[ -n "$BIN_B" ] && start_spillway spillway-b "$BIN_B" "$SPILLWAY_B_PORT" "$ADMIN_B_PORT" "$B_HTTP2_SERVER"

# ---- load: per mode, warm-up, then alternating rounds (order reversed every other round) -------
for mode in "${MODES[@]}"; do
    printf 'round\ttarget\trate\tp50_ms\tp99_ms\tproxy_cpu_us\tbackend_cpu_us\tcount\tfailed\tnon_2xx\tclient_cpu_us\tidle_pct\n' >"$OUT/rounds-$mode.tsv"
    for t in "${TARGETS[@]}"; do run_once "$mode" 0 "$t" "$WARMUP" 0; done
    for r in $(seq "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then order=("${TARGETS[@]}"); else order=($(printf '%s\n' "${TARGETS[@]}" | tac)); fi
        for t in "${order[@]}"; do run_once "$mode" "$r" "$t" "$DURATION" 1; done
    done
done
log "load average after the rounds: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- report -----------------------------------------------------------------------------------
for mode in "${MODES[@]}"; do
python3 - "$OUT/rounds-$mode.tsv" "$mode" "$CLIENTS" "$STREAMS" "$ROUNDS" "$DURATION" "$MESSAGE_SIZE" "$BACKEND" <<'PY'
import csv, statistics, sys
path, mode, clients, streams, nrounds, duration, size, backend = sys.argv[1:]
rows = list(csv.DictReader(open(path), delimiter="\t"))
targets = [t for t in ("haproxy", "nginx", "spillway", "spillway-b") if any(r["target"] == t for r in rows)]
unit = "calls" if mode == "unary" else "messages"
keys = (("rate", f"{unit}/s"), ("p50_ms", "p50"), ("p99_ms", "p99"), ("proxy_cpu_us", "CPU/" + unit[:-1]))

def vals(t, key):
    return {r["round"]: float(r[key]) for r in rows if r["target"] == t}

def med(t, key):
    v = list(vals(t, key).values())
    return statistics.median(v) if v else None

load = (f"h2load -t1 -c{clients} -m{streams}, one {size}-byte message per call" if mode == "unary"
        else f"spillway grpc stream -c{clients} -m{streams}, {size}-byte messages, one in flight per call")
print(f"\ngRPC {mode} ({load}), {backend} echo upstream, {nrounds} alternating rounds x {duration}s, "
      "one worker each; medians over rounds")
print(f"{'target':<11} {unit + '/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'proxy CPU us/' + unit[:-1]:>22} "
      f"{'backend CPU us':>15} {'client CPU us':>14} {'idle %':>7} {'failed':>7} {'non-2xx':>8}")
for t in targets:
    failed = sum(int(r["failed"]) for r in rows if r["target"] == t)
    non2xx = sum(int(r["non_2xx"]) for r in rows if r["target"] == t)
    print(f"{t:<11} {med(t,'rate'):>11.0f} {med(t,'p50_ms'):>8.3f} {med(t,'p99_ms'):>8.3f} "
          f"{med(t,'proxy_cpu_us'):>22.2f} {med(t,'backend_cpu_us'):>15.2f} {med(t,'client_cpu_us'):>14.2f} "
          f"{med(t,'idle_pct'):>7.0f} {failed:>7} {non2xx:>8}")

def ratios(a, b, title):
    if a not in targets or b not in targets:
        return
    print(f"\n{title}  (ratio of medians; per round in brackets)")
    for key, name in keys:
        va, vb = vals(a, key), vals(b, key)
        per = [va[r] / vb[r] for r in sorted(va, key=int) if r in vb and vb[r]]
        print(f"  {name:<16} {med(a, key) / med(b, key):.2f}x  [" + ", ".join(f"{x:.2f}" for x in per) + "]")

ratios("spillway", "haproxy", f"Spillway / HAProxy, {mode} (goal: rate >= 1.1x, CPU <= 0.9x, p99 <= 1.0x):")
ratios("nginx", "haproxy", f"nginx / HAProxy, {mode}:")
ratios("spillway", "nginx", f"Spillway / nginx, {mode}:")
ratios("spillway-b", "spillway", f"B / A (spillway-b against spillway), {mode}:")
ratios("spillway-b", "haproxy", f"Spillway B / HAProxy, {mode}:")
PY
done
log "raw data: $OUT/rounds-*.tsv, load outputs in $OUT"
