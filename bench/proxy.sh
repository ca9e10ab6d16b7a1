#!/usr/bin/env bash
# Proxy benchmark: the same wrk load, in one alternating run, against
#   (a) the backend directly, (b) Spillway, (c) nginx as the equivalent reverse proxy,
# then memory with N idle keep-alive connections held open on each proxy.
#
# Why this shape (see /work/shared/PERFORMANCE.md): on a small, saturated machine req/s also
# measures how much CPU a proxy takes from wrk and the upstream, so the fair figure is the
# proxy's CPU-µs per request (utime+stime from /proc/<pid>/stat, all nginx processes summed,
# divided by requests served); alternating rounds and medians cancel drift between targets.
#
# Everything listens on 127.0.0.1; every step is bounded in time.
#   backend  nginx `return 200 "hello\n"`  127.0.0.1:18081  (bench/nginx-backend.conf)
#   spillway target/release/spillway        127.0.0.1:18080  (bench/spillway.yaml)
#   protected the same binary, admission on  127.0.0.1:18083  (bench/spillway-protected.yaml:
#            a never-tripping token bucket, BBR, criticality, deadline, bulkhead)
#   nginx    reverse proxy, keepalive pool  127.0.0.1:18082  (bench/nginx-proxy.conf)
#
# Usage: bench/proxy.sh [--build] [--no-spillway] [--no-protected] [--rounds N] [--duration SECS]
#                       [--connections N] [--threads N] [--idle N] [--no-idle]
#                       [--backend-workers N] [--warmup SECS] [--out DIR]
# SPILLWAY_BIN=PATH overrides the binary (e.g. a stand-in to test this script).
# Needs: nginx, wrk (apt-get install -y nginx wrk), curl, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
CONFIG=$BENCH/spillway.yaml
PROTECTED_CONFIG=$BENCH/spillway-protected.yaml
BIN=${SPILLWAY_BIN:-$ROOT/target/release/spillway}

ROUNDS=5
DURATION=10
WARMUP=2
CONNS=64
THREADS=1
IDLE=10000
BACKEND_WORKERS=1
BUILD=0
WITH_SPILLWAY=1
WITH_PROTECTED=1
OUT=""

BACKEND_PORT=18081
SPILLWAY_PORT=18080
PROTECTED_PORT=18083
NGINX_PORT=18082

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --build) BUILD=1 ;;
        --no-spillway) WITH_SPILLWAY=0; WITH_PROTECTED=0 ;;
        --no-protected) WITH_PROTECTED=0 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --connections|-c) CONNS=$2; shift ;;
        --threads|-t) THREADS=$2; shift ;;
        --idle) IDLE=$2; shift ;;
        --no-idle) IDLE=0 ;;
        --backend-workers) BACKEND_WORKERS=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
    shift
done

die() { echo "proxy.sh: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

for tool in nginx wrk curl python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y nginx wrk curl)"
done

# Spillway's worker count, which nginx mirrors; and the addresses the config must use.
WORKERS=$(sed -n 's/^workers:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$CONFIG")
[ -n "$WORKERS" ] || die "no 'workers: N' line in $CONFIG"
grep -q "127.0.0.1:$SPILLWAY_PORT" "$CONFIG" || die "$CONFIG must listen on 127.0.0.1:$SPILLWAY_PORT"
grep -q "127.0.0.1:$BACKEND_PORT" "$CONFIG" || die "$CONFIG must proxy to 127.0.0.1:$BACKEND_PORT"

# File descriptors: the idle test holds IDLE connections in one client and one proxy.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
if [ "$IDLE" -gt 0 ] && [ $((IDLE + 512)) -gt "$NOFILE" ]; then
    IDLE=$((NOFILE - 512))
    log "open-files limit is $NOFILE: holding $IDLE idle connections instead"
fi

ports=("$BACKEND_PORT" "$NGINX_PORT")
[ "$WITH_SPILLWAY" = 1 ] && ports+=("$SPILLWAY_PORT" 19901)
[ "$WITH_PROTECTED" = 1 ] && ports+=("$PROTECTED_PORT" 19903)
for p in "${ports[@]}"; do
    if ss -Htln "sport = :$p" | grep -q .; then
        die "port $p is already in use (another benchmark running?)"
    fi
done

if [ "$BUILD" = 1 ] && [ "$WITH_SPILLWAY" = 1 ]; then
    log "building spillway (release)"
    (cd "$ROOT" && cargo build --release -p spillway)
fi
if [ "$WITH_SPILLWAY" = 1 ] && [ ! -x "$BIN" ]; then
    die "$BIN not found: pass --build, or --no-spillway for backend + nginx only"
fi

[ -n "$OUT" ] || OUT=$(mktemp -d "${TMPDIR:-/tmp}/spillway-proxy-bench.XXXXXX")
mkdir -p "$OUT"
chmod 755 "$OUT"
RESULTS=$OUT/rounds.tsv
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

wait_http() { # port: until GET / answers 200 "hello", at most 15 s
    local body
    for _ in $(seq 150); do
        body=$(curl -s -m 1 "http://127.0.0.1:$1/" 2>/dev/null || true)
        [ "$body" = hello ] && return 0
        sleep 0.1
    done
    die "nothing answering 'hello' on 127.0.0.1:$1 (last body: ${body:-none}); logs in $OUT"
}

start_nginx() { # name template -> sets NGINX_PID_<name>
    local name=$1 template=$2 dir=$OUT/$1
    mkdir -p "$dir/logs" "$dir/tmp"
    chmod 755 "$dir" "$dir/tmp"
    sed -e "s/@WORKERS@/$WORKERS/g" -e "s/@BACKEND_WORKERS@/$BACKEND_WORKERS/g" \
        -e "s/@BACKEND_PORT@/$BACKEND_PORT/g" -e "s/@NGINX_PORT@/$NGINX_PORT/g" \
        -e "s/@NOFILE@/$NOFILE/g" "$template" >"$dir/nginx.conf"
    nginx -p "$dir/" -e "$dir/logs/error.log" -c "$dir/nginx.conf" -g 'daemon off;' \
        >"$dir/logs/stdout.log" 2>&1 &
    local pid=$!
    STARTED+=("$pid")
    printf -v "NGINX_PID_$name" '%s' "$pid"
}

pids_of() { # target -> the proxy's processes (nginx: master and workers)
    case "$1" in
        direct) ;;
        spillway) echo "$SPILLWAY_PID" ;;
        protected) echo "$PROTECTED_PID" ;;
        nginx) echo "$NGINX_PID_proxy" $(pgrep -P "$NGINX_PID_proxy" || true) ;;
        backend) echo "$NGINX_PID_backend" $(pgrep -P "$NGINX_PID_backend" || true) ;;
    esac
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

rss_kib() { # pids... -> VmRSS summed, KiB
    local total=0 pid kb
    for pid in "$@"; do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

port_of() {
    case "$1" in
        direct) echo "$BACKEND_PORT" ;;
        spillway) echo "$SPILLWAY_PORT" ;;
        protected) echo "$PROTECTED_PORT" ;;
        nginx) echo "$NGINX_PORT" ;;
    esac
}

to_ms() { # wrk latency like 542.00us / 1.23ms / 1.01s -> ms
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

run_once() { # round target seconds record(0|1)
    local round=$1 target=$2 secs=$3 record=$4
    local port proxy_pids backend_pids p0 b0 p1 b1 out
    port=$(port_of "$target")
    proxy_pids=$(pids_of "$target")
    backend_pids=$(pids_of backend)
    out=$OUT/wrk-$target-$round.txt
    p0=$(cpu_ticks $proxy_pids)
    b0=$(cpu_ticks $backend_pids)
    timeout $((secs + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" --latency \
        "http://127.0.0.1:$port/" >"$out" 2>&1 || die "wrk failed against $target: $(cat "$out")"
    p1=$(cpu_ticks $proxy_pids)
    b1=$(cpu_ticks $backend_pids)
    [ "$record" = 1 ] || return 0

    local requests rps p50 p99 errors non2xx proxy_us backend_us
    requests=$(awk '/requests in/ {print $1}' "$out")
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    errors=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$out")
    [ -n "$requests" ] && [ "$requests" -gt 0 ] || die "no requests counted for $target: $(cat "$out")"
    proxy_us=$(awk -v d=$((p1 - p0)) -v t="$CLK_TCK" -v n="$requests" 'BEGIN {printf "%.2f", d * 1e6 / t / n}')
    backend_us=$(awk -v d=$((b1 - b0)) -v t="$CLK_TCK" -v n="$requests" 'BEGIN {printf "%.2f", d * 1e6 / t / n}')
    [ "$target" = direct ] && proxy_us=NA
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$rps" "$p50" "$p99" \
        "$proxy_us" "$backend_us" "$requests" "${errors:-0}" "${non2xx:-0}" >>"$RESULTS"
    log "round $round $target: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, proxy ${proxy_us} us/req, backend ${backend_us} us/req"
}

idle_rss() { # target -> one TSV line in $OUT/idle.tsv
    local target=$1 port pids before after line closed holder_out hpid
    port=$(port_of "$target")
    pids=$(pids_of "$target")
    before=$(rss_kib $pids)
    holder_out=$OUT/hold-$target.txt
    python3 "$BENCH/hold_conns.py" --port "$port" -n "$IDLE" --max-seconds 180 >"$holder_out" 2>&1 &
    hpid=$!
    STARTED+=("$hpid")
    for _ in $(seq 1200); do # at most 120 s to open them all
        grep -q '^READY' "$holder_out" && break
        kill -0 "$hpid" 2>/dev/null || break
        sleep 0.1
    done
    line=$(grep '^READY' "$holder_out" || true)
    [ -n "$line" ] || die "connection holder did not get ready against $target: $(tail -5 "$holder_out")"
    sleep 2
    pids=$(pids_of "$target")
    after=$(rss_kib $pids)
    kill -TERM "$hpid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$hpid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$hpid" 2>/dev/null || true
    wait "$hpid" 2>/dev/null || true
    local keep=() p
    for p in "${STARTED[@]}"; do [ "$p" = "$hpid" ] || keep+=("$p"); done
    STARTED=("${keep[@]}")
    closed=$(awk '/^CLOSED_BY_PEER/ {print $2}' "$holder_out")
    set -- $line # READY open failed non200
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$2" "$3" "$4" "${closed:-NA}" "$before" "$after" >>"$OUT/idle.tsv"
    log "idle $target: $2 open ($3 failed, $4 non-200, ${closed:-?} closed by proxy), RSS $before -> $after KiB"
    sleep 1
}

# ---- start everything ------------------------------------------------------------------------
log "results in $OUT (workers=$WORKERS, wrk -t$THREADS -c$CONNS, $ROUNDS rounds x ${DURATION}s)"
start_nginx backend "$BENCH/nginx-backend.conf"
wait_http "$BACKEND_PORT"
start_nginx proxy "$BENCH/nginx-proxy.conf"
wait_http "$NGINX_PORT"
TARGETS=(direct nginx)
if [ "$WITH_SPILLWAY" = 1 ]; then
    "$BIN" run --config "$CONFIG" >"$OUT/spillway.log" 2>&1 &
    SPILLWAY_PID=$!
    STARTED+=("$SPILLWAY_PID")
    wait_http "$SPILLWAY_PORT"
    TARGETS=(direct spillway nginx)
    if [ "$WITH_PROTECTED" = 1 ]; then
        "$BIN" run --config "$PROTECTED_CONFIG" >"$OUT/protected.log" 2>&1 &
        PROTECTED_PID=$!
        STARTED+=("$PROTECTED_PID")
        wait_http "$PROTECTED_PORT"
        TARGETS=(direct spillway protected nginx)
    fi
fi

# ---- load: warm-up, then alternating rounds (order reversed every other round) ----------------
printf 'round\ttarget\trps\tp50_ms\tp99_ms\tproxy_cpu_us_per_req\tbackend_cpu_us_per_req\trequests\tsocket_errors\tnon_2xx\n' >"$RESULTS"
for t in "${TARGETS[@]}"; do run_once 0 "$t" "$WARMUP" 0; done
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order=("${TARGETS[@]}"); else order=($(printf '%s\n' "${TARGETS[@]}" | tac)); fi
    for t in "${order[@]}"; do run_once "$r" "$t" "$DURATION" 1; done
done

# ---- memory with idle keep-alive connections --------------------------------------------------
printf 'target\topen\tfailed\tnon_200\tclosed_by_proxy\trss_before_kib\trss_after_kib\n' >"$OUT/idle.tsv"
if [ "$IDLE" -gt 0 ]; then
    for t in "${TARGETS[@]}"; do
        [ "$t" = direct ] || [ "$t" = protected ] || idle_rss "$t"
    done
fi

# ---- report -----------------------------------------------------------------------------------
python3 - "$RESULTS" "$OUT/idle.tsv" "$WORKERS" "$THREADS" "$CONNS" "$ROUNDS" "$DURATION" <<'PY'
import csv, statistics, sys
rounds_path, idle_path, workers, threads, conns, nrounds, duration = sys.argv[1:]
rows = list(csv.DictReader(open(rounds_path), delimiter="\t"))
targets = [t for t in ("direct", "spillway", "protected", "nginx") if any(r["target"] == t for r in rows)]

def med(t, key):
    vals = [float(r[key]) for r in rows if r["target"] == t and r[key] != "NA"]
    return statistics.median(vals) if vals else None

def fmt(v, spec):
    width = int(spec.split(".")[0] or 0)
    return "-".rjust(width) if v is None else format(v, spec)

print(f"\nProxy benchmark: wrk -t{threads} -c{conns}, {nrounds} alternating rounds x {duration}s, "
      f"proxy workers={workers}; medians over rounds")
print(f"{'target':<10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'proxy CPU us/req':>17} "
      f"{'backend CPU us/req':>19} {'errors':>7}")
for t in targets:
    errs = sum(int(r["socket_errors"]) + int(r["non_2xx"]) for r in rows if r["target"] == t)
    print(f"{t:<10} {fmt(med(t,'rps'),'10.0f')} {fmt(med(t,'p50_ms'),'8.3f')} "
          f"{fmt(med(t,'p99_ms'),'8.3f')} {fmt(med(t,'proxy_cpu_us_per_req'),'17.2f')} "
          f"{fmt(med(t,'backend_cpu_us_per_req'),'19.2f')} {errs:>7}")

idle = {r["target"]: r for r in csv.DictReader(open(idle_path), delimiter="\t")}
if idle:
    print(f"\nRSS with idle keep-alive connections held open (all processes of the proxy summed)")
    print(f"{'target':<10} {'conns open':>10} {'RSS before KiB':>15} {'RSS after KiB':>14} {'KiB/conn':>9} {'closed by proxy':>16}")
    for t, r in idle.items():
        opened, before, after = int(r["open"]), int(r["rss_before_kib"]), int(r["rss_after_kib"])
        per = (after - before) / opened if opened else None
        print(f"{t:<10} {opened:>10} {before:>15} {after:>14} {fmt(per,'9.2f')} {r['closed_by_proxy']:>16}")

if "spillway" in targets and "nginx" in targets:
    print("\nSpillway / nginx:")
    for key, name in (("rps", "req/s"), ("p50_ms", "p50"), ("p99_ms", "p99"),
                      ("proxy_cpu_us_per_req", "proxy CPU/request")):
        s, n = med("spillway", key), med("nginx", key)
        print(f"  {name:<20} {s / n:.2f}x" if s is not None and n else f"  {name:<20} -")
    if "spillway" in idle and "nginx" in idle:
        s, n = int(idle["spillway"]["rss_after_kib"]), int(idle["nginx"]["rss_after_kib"])
        print(f"  {'RSS with idle conns':<20} {s / n:.2f}x" if n else "")

if "protected" in targets and "spillway" in targets:
    print("\nProtected / bare Spillway (goal: req/s >= 0.95x, CPU/request within 5 %):")
    for key, name in (("rps", "req/s"), ("p50_ms", "p50"), ("p99_ms", "p99"),
                      ("proxy_cpu_us_per_req", "proxy CPU/request")):
        p, s = med("protected", key), med("spillway", key)
        print(f"  {name:<20} {p / s:.2f}x" if p is not None and s else f"  {name:<20} -")
    if "nginx" in targets:
        for key, name in (("rps", "req/s"), ("proxy_cpu_us_per_req", "proxy CPU/request")):
            p, n = med("protected", key), med("nginx", key)
            print(f"  protected / nginx {name:<10} {p / n:.2f}x" if p is not None and n else "")
PY
log "raw data: $RESULTS, $OUT/idle.tsv, wrk outputs in $OUT"
