#!/usr/bin/env bash
# HTTP/2 proxy benchmark (issue 15): the same h2load load, in one alternating run, through
#   HAProxy 2.6 (1 thread), nginx (1 worker) and Spillway (workers: 1) as reverse proxies to one
#   HTTP/1.1 upstream (the nginx `return 200` backend of bench/proxy.sh), over h2c (prior
#   knowledge) or, with --tls, over TLS (h2 by ALPN; --h1 for TLS http/1.1 by ALPN).
# Prints req/s, p50/p99 latency and the proxy's CPU per request (utime+stime deltas from
# /proc/<pid>/stat, all of a proxy's processes summed, divided by requests answered), each as a
# ratio to HAProxy's in the same run, medians over rounds and the per-round ratios (the spread).
#
# Everything listens on 127.0.0.1; every step is bounded in time.
#   backend    nginx `return 200 "hello\n"`   127.0.0.1:18191  (bench/nginx-backend.conf)
#   spillway   target/release/spillway         127.0.0.1:18190  (bench/h2-spillway.yaml)
#   nginx      http2 listener, keepalive pool  127.0.0.1:18192  (bench/h2-nginx.conf)
#   haproxy    bind … proto h2 / ssl alpn       127.0.0.1:18194  (bench/h2-haproxy.cfg)
#   spillway-b a second binary (--ab BIN)      127.0.0.1:18196  (A/B of a change, same run)
#
# Usage: bench/h2.sh [--tls] [--h1] [--rounds N] [--duration SECS] [--warmup SECS]
#                    [--clients N] [--streams N] [--targets "haproxy nginx spillway"]
#                    [--ab BIN] [--perf SECS] [--idle N] [--out DIR]
#   --tls        TLS listeners (a throw-away CA and certificate made with openssl in --out)
#   --h1         with --tls: h2load asks for http/1.1 by ALPN (one request at a time per
#                connection: --streams is ignored; --clients 64 keeps the proxies busy)
#   --ab BIN     also run BIN as `spillway-b` (same config, own ports) and print B/A ratios
#   --perf SECS  after the rounds, `perf record -g` Spillway for SECS under the same load and
#                print the top symbols (self time) to $OUT/perf-top.txt
#   --idle N     instead of the load: memory per idle connection — per target, the RSS of its
#                processes before and after bench/hold_h2.py (with --h1: bench/hold_conns.py,
#                HTTP/1.1 keep-alive) opens N connections (one request each) and holds them
#                idle, divided by N
# SPILLWAY_BIN=PATH overrides the binary; PERF_CALL_GRAPH=dwarf gives --perf user-space stacks.
# Needs: nginx, haproxy, h2load, openssl, python3
# (apt-get install -y nginx haproxy nghttp2-client openssl python3; perf for --perf).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
BIN=${SPILLWAY_BIN:-$ROOT/target/release/spillway}
BIN_B=""

ROUNDS=5
DURATION=8
WARMUP=2
CLIENTS=16
STREAMS=16
TLS=0
H1=0
PERF=0
IDLE=0
TARGETS_ARG="haproxy nginx spillway"
OUT=""

BACKEND_PORT=18191
SPILLWAY_PORT=18190
NGINX_PORT=18192
HAPROXY_PORT=18194
SPILLWAY_B_PORT=18196
ADMIN_PORT=19921
ADMIN_B_PORT=19922

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --tls) TLS=1 ;;
        --h1) H1=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --clients|-c) CLIENTS=$2; shift ;;
        --streams|-m) STREAMS=$2; shift ;;
        --targets) TARGETS_ARG=$2; shift ;;
        --ab) BIN_B=$2; shift ;;
        --perf) PERF=$2; shift ;;
        --idle) IDLE=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
    shift
done

die() { echo "h2.sh: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

[ "$H1" = 0 ] || [ "$TLS" = 1 ] || die "--h1 needs --tls (plain listeners here speak h2c only)"
[ "$H1" = 0 ] || STREAMS=1
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
[ "$TLS" = 0 ] || command -v openssl >/dev/null || die "openssl not found"
[ "$PERF" = 0 ] || command -v perf >/dev/null || die "perf not found (apt-get install -y linux-perf)"
if has_target spillway; then [ -x "$BIN" ] || die "$BIN not found (cargo build --release -p spillway)"; fi
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

[ -n "$OUT" ] || OUT=$(mktemp -d "${TMPDIR:-/tmp}/spillway-h2-bench.XXXXXX")
mkdir -p "$OUT"
chmod 755 "$OUT"
RESULTS=$OUT/rounds.tsv
CLK_TCK=$(getconf CLK_TCK)
SCHEME=http
[ "$TLS" = 1 ] && SCHEME=https

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

# ---- TLS material: a throw-away CA and a certificate for 127.0.0.1 / localhost ----------------
if [ "$TLS" = 1 ]; then
    CERTS=$OUT/certs
    mkdir -p "$CERTS"
    (
        cd "$CERTS"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj /CN=bench-ca -keyout ca.key -out ca.pem
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj /CN=localhost -keyout server.key -out server.csr
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext.cnf
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile ext.cnf -out server.pem
        cat server.pem server.key >haproxy.pem
    ) >"$OUT/openssl.log" 2>&1 || die "openssl failed: $(tail -5 "$OUT/openssl.log")"
fi

probe() { # port -> "hello" when the proxy answers over the benchmark's protocol
    if [ "$H1" = 1 ]; then
        curl -sk -m 1 --http1.1 "https://127.0.0.1:$1/" 2>/dev/null || true
    elif [ "$TLS" = 1 ]; then
        curl -sk -m 1 --http2 "https://127.0.0.1:$1/" 2>/dev/null || true
    else
        curl -s -m 1 --http2-prior-knowledge "http://127.0.0.1:$1/" 2>/dev/null || true
    fi
}

wait_ready() { # port plain(0|1): until GET / answers "hello", at most 15 s
    local body
    for _ in $(seq 150); do
        if [ "$2" = 1 ]; then body=$(curl -s -m 1 "http://127.0.0.1:$1/" 2>/dev/null || true)
        else body=$(probe "$1"); fi
        [ "$body" = hello ] && return 0
        sleep 0.1
    done
    die "nothing answering 'hello' on 127.0.0.1:$1 (last body: ${body:-none}); logs in $OUT"
}

render() { # template out: fill the placeholders
    local listen_nginx=http2 tls_nginx="" bind_haproxy="proto h2" listen_spillway="protocol: h2c"
    if [ "$TLS" = 1 ]; then
        listen_nginx="ssl http2"
        tls_nginx="ssl_certificate $CERTS/server.pem; ssl_certificate_key $CERTS/server.key;"
        bind_haproxy="ssl crt $CERTS/haproxy.pem alpn h2,http/1.1"
        listen_spillway="tls: { cert: $CERTS/server.pem, key: $CERTS/server.key }"
    fi
    sed -e "s|@NOFILE@|$NOFILE|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" \
        -e "s|@BACKEND_WORKERS@|1|g" \
        -e "s|@NGINX_LISTEN@|$listen_nginx|g" -e "s|@TLS@|$tls_nginx|g" \
        -e "s|@BIND@|$bind_haproxy|g" -e "s|@SPILLWAY_LISTEN@|$listen_spillway|g" \
        -e "s|@PORT@|$PORT|g" -e "s|@ADMIN_PORT@|${ADMIN:-0}|g" "$1" >"$2"
}

start_nginx() { # name template port
    local name=$1 dir=$OUT/$1
    mkdir -p "$dir/logs" "$dir/tmp"
    chmod 755 "$dir" "$dir/tmp"
    PORT=$3 render "$2" "$dir/nginx.conf"
    nginx -p "$dir/" -e "$dir/logs/error.log" -c "$dir/nginx.conf" -g 'daemon off;' \
        >"$dir/logs/stdout.log" 2>&1 &
    local pid=$!
    STARTED+=("$pid")
    printf -v "PID_$name" '%s' "$pid"
}

pids_of() { # target -> the proxy's processes (nginx: master and worker)
    case "$1" in
        spillway) echo "$PID_spillway" ;;
        spillway-b) echo "$PID_spillway_b" ;;
        haproxy) echo "$PID_haproxy" $(pgrep -P "$PID_haproxy" || true) ;;
        nginx) echo "$PID_nginx" $(pgrep -P "$PID_nginx" || true) ;;
        backend) echo "$PID_backend" $(pgrep -P "$PID_backend" || true) ;;
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

h2load_args() { # seconds port log -> the h2load command line
    local args=(-t1 -c"$CLIENTS" -m"$STREAMS" -D"$1")
    [ "$H1" = 1 ] && args+=(--h1)
    [ "$H1" = 0 ] && [ "$TLS" = 1 ] && args+=(--npn-list=h2)
    [ -n "$3" ] && args+=(--log-file="$3")
    args+=("$SCHEME://127.0.0.1:$2/")
    echo "${args[@]}"
}

run_once() { # round target seconds record(0|1)
    local round=$1 target=$2 secs=$3 record=$4
    local port proxy_pids backend_pids p0 b0 p1 b1 out reqlog=""
    port=$(port_of "$target")
    proxy_pids=$(pids_of "$target")
    backend_pids=$(pids_of backend)
    out=$OUT/h2load-$target-$round.txt
    [ "$record" = 1 ] && reqlog=$OUT/requests-$target-$round.log
    p0=$(cpu_ticks $proxy_pids)
    b0=$(cpu_ticks $backend_pids)
    # shellcheck disable=SC2046
    timeout $((secs + 30)) h2load $(h2load_args "$secs" "$port" "$reqlog") >"$out" 2>&1 \
        || die "h2load failed against $target: $(tail -5 "$out")"
    p1=$(cpu_ticks $proxy_pids)
    b1=$(cpu_ticks $backend_pids)
    [ "$record" = 1 ] || return 0

    local done_ok failed rps proxy_us backend_us lat
    rps=$(awk '/^finished in/ {print $4}' "$out")
    done_ok=$(awk '/^requests:/ {print $8}' "$out")
    failed=$(awk '/^requests:/ {print $10 + $12 + $14}' "$out")
    non2xx=$(awk '/^status codes:/ {print $5 + $7 + $9}' "$out")
    [ -n "$done_ok" ] && [ "$done_ok" -gt 0 ] || die "no requests answered by $target: $(tail -5 "$out")"
    proxy_us=$(awk -v d=$((p1 - p0)) -v t="$CLK_TCK" -v n="$done_ok" 'BEGIN {printf "%.2f", d * 1e6 / t / n}')
    backend_us=$(awk -v d=$((b1 - b0)) -v t="$CLK_TCK" -v n="$done_ok" 'BEGIN {printf "%.2f", d * 1e6 / t / n}')
    # p50 / p99 from h2load's per-request log (microseconds until the end of each response).
    lat=$(python3 - "$reqlog" <<'PY'
import sys
v = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]) if l.count("\t") >= 2)
q = lambda p: v[min(len(v) - 1, int(p * len(v)))] / 1000 if v else float("nan")
print(f"{q(0.50):.3f} {q(0.99):.3f}")
PY
)
    rm -f "$reqlog"
    set -- $lat
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$rps" "$1" "$2" \
        "$proxy_us" "$backend_us" "$done_ok" "${failed:-0}" "${non2xx:-0}" >>"$RESULTS"
    log "round $round $target: $rps req/s, p50 $1 ms, p99 $2 ms, proxy ${proxy_us} us/req, backend ${backend_us} us/req"
}

# ---- start everything ------------------------------------------------------------------------
mode=h2c
[ "$TLS" = 1 ] && mode="TLS h2"
[ "$H1" = 1 ] && mode="TLS http/1.1"
log "results in $OUT ($mode, h2load -c$CLIENTS -m$STREAMS, $ROUNDS rounds x ${DURATION}s, load average $(cut -d' ' -f1-3 /proc/loadavg))"
start_nginx backend "$BENCH/nginx-backend.conf" "$BACKEND_PORT"
wait_ready "$BACKEND_PORT" 1
if has_target nginx; then
    start_nginx nginx "$BENCH/h2-nginx.conf" "$NGINX_PORT"
    wait_ready "$NGINX_PORT" 0
fi
if has_target haproxy; then
    mkdir -p "$OUT/haproxy"
    PORT=$HAPROXY_PORT render "$BENCH/h2-haproxy.cfg" "$OUT/haproxy/haproxy.cfg"
    haproxy -db -f "$OUT/haproxy/haproxy.cfg" >"$OUT/haproxy/haproxy.log" 2>&1 &
    PID_haproxy=$!
    STARTED+=("$PID_haproxy")
    wait_ready "$HAPROXY_PORT" 0
fi
start_spillway() { # name bin port admin
    local cfg=$OUT/$1.yaml
    PORT=$3 ADMIN=$4 render "$BENCH/h2-spillway.yaml" "$cfg"
    "$2" run --config "$cfg" >"$OUT/$1.log" 2>&1 &
    local pid=$!
    STARTED+=("$pid")
    printf -v "PID_${1//-/_}" '%s' "$pid"
    wait_ready "$3" 0
}
has_target spillway && start_spillway spillway "$BIN" "$SPILLWAY_PORT" "$ADMIN_PORT"
[ -n "$BIN_B" ] && start_spillway spillway-b "$BIN_B" "$SPILLWAY_B_PORT" "$ADMIN_B_PORT"

# ---- idle memory (--idle N): RSS per held HTTP/2 connection, then stop ------------------------
rss_kib() { # pids... -> VmRSS summed, KiB
    local total=0 p v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
if [ "$IDLE" != 0 ]; then
    tls_flag=(); [ "$TLS" = 1 ] && tls_flag=(--tls)
    printf '
Memory per idle connection (%s, %s connections, one request each)
' "$mode" "$IDLE"
    printf '%-11s %12s %12s %10s %12s %8s
' target "RSS before" "RSS held" "KiB/conn" "open/failed" closed
    for t in "${TARGETS[@]}"; do
        port=$(port_of "$t")
        # shellcheck disable=SC2046
        before=$(rss_kib $(pids_of "$t"))
        holder_out=$OUT/hold-$t.txt
        holder_script=hold_h2.py; [ "$H1" = 1 ] && holder_script=hold_conns.py
        python3 "$BENCH/$holder_script" --port "$port" -n "$IDLE" --max-seconds 120 "${tls_flag[@]}" >"$holder_out" 2>&1 &
        holder=$!
        for _ in $(seq 600); do grep -q '^READY' "$holder_out" 2>/dev/null && break; sleep 0.1; done
        sleep 2
        # shellcheck disable=SC2046
        held=$(rss_kib $(pids_of "$t"))
        ready=$(grep '^READY' "$holder_out" | cut -d' ' -f2-3 | tr ' ' /)
        kill -TERM "$holder" 2>/dev/null || true
        wait "$holder" 2>/dev/null || true
        closed=$(grep '^CLOSED_BY_PEER' "$holder_out" | cut -d' ' -f2)
        printf '%-11s %9s KiB %9s KiB %10.1f %12s %8s\n' "$t" "$before" "$held" \
            "$(echo "($held - $before) / $IDLE" | bc -l)" "${ready:-?}" "${closed:-?}"
        sleep 1
    done
    exit 0
fi

# ---- load: warm-up, then alternating rounds (order reversed every other round) ----------------
printf 'round\ttarget\trps\tp50_ms\tp99_ms\tproxy_cpu_us_per_req\tbackend_cpu_us_per_req\trequests\tfailed\tnon_2xx\n' >"$RESULTS"
for t in "${TARGETS[@]}"; do run_once 0 "$t" "$WARMUP" 0; done
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order=("${TARGETS[@]}"); else order=($(printf '%s\n' "${TARGETS[@]}" | tac)); fi
    for t in "${order[@]}"; do run_once "$r" "$t" "$DURATION" 1; done
done
log "load average after the rounds: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- profile (optional): perf record -g on Spillway under the same load ------------------------
if [ "$PERF" != 0 ] && has_target spillway; then
    log "perf record -g on spillway for ${PERF}s"
    # shellcheck disable=SC2046
    timeout $((PERF + 30)) h2load $(h2load_args $((PERF + 2)) "$SPILLWAY_PORT" "") >"$OUT/h2load-perf.txt" 2>&1 &
    loadpid=$!
    sleep 1
    timeout $((PERF + 30)) perf record --call-graph "${PERF_CALL_GRAPH:-fp}" -F 999 -p "$PID_spillway" -o "$OUT/perf.data" -- sleep "$PERF" \
        >"$OUT/perf-record.log" 2>&1 || log "perf record failed: $(tail -2 "$OUT/perf-record.log")"
    wait "$loadpid" || true
    perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | head -40 >"$OUT/perf-top.txt" || true
    log "top symbols (self) in $OUT/perf-top.txt:"
    head -20 "$OUT/perf-top.txt" >&2
fi

# ---- report -----------------------------------------------------------------------------------
python3 - "$RESULTS" "$mode" "$CLIENTS" "$STREAMS" "$ROUNDS" "$DURATION" <<'PY'
import csv, statistics, sys
path, mode, clients, streams, nrounds, duration = sys.argv[1:]
rows = list(csv.DictReader(open(path), delimiter="\t"))
targets = [t for t in ("haproxy", "nginx", "spillway", "spillway-b") if any(r["target"] == t for r in rows)]
keys = (("rps", "req/s"), ("p50_ms", "p50"), ("p99_ms", "p99"), ("proxy_cpu_us_per_req", "CPU/request"))

def vals(t, key):
    return {r["round"]: float(r[key]) for r in rows if r["target"] == t}

def med(t, key):
    v = list(vals(t, key).values())
    return statistics.median(v) if v else None

print(f"\nHTTP/2 proxy benchmark ({mode}): h2load -t1 -c{clients} -m{streams}, {nrounds} alternating "
      f"rounds x {duration}s, one worker each; medians over rounds")
print(f"{'target':<11} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'proxy CPU us/req':>17} "
      f"{'backend CPU us/req':>19} {'failed':>7} {'non-2xx':>8}")
for t in targets:
    failed = sum(int(r["failed"]) for r in rows if r["target"] == t)
    non2xx = sum(int(r["non_2xx"]) for r in rows if r["target"] == t)
    print(f"{t:<11} {med(t,'rps'):>9.0f} {med(t,'p50_ms'):>8.3f} {med(t,'p99_ms'):>8.3f} "
          f"{med(t,'proxy_cpu_us_per_req'):>17.2f} {med(t,'backend_cpu_us_per_req'):>19.2f} "
          f"{failed:>7} {non2xx:>8}")

def ratios(a, b, title):
    if a not in targets or b not in targets:
        return
    print(f"\n{title}  (ratio of medians; per round in brackets)")
    for key, name in keys:
        va, vb = vals(a, key), vals(b, key)
        per = [va[r] / vb[r] for r in sorted(va, key=int) if r in vb and vb[r]]
        print(f"  {name:<12} {med(a, key) / med(b, key):.2f}x  [" + ", ".join(f"{x:.2f}" for x in per) + "]")

ratios("spillway", "haproxy", "Spillway / HAProxy (goal: req/s >= 1.1x, CPU/request <= 0.9x, p99 <= 1.0x):")
ratios("nginx", "haproxy", "nginx / HAProxy:")
ratios("spillway", "nginx", "Spillway / nginx:")
ratios("spillway-b", "spillway", "B / A (spillway-b against spillway, same config):")
ratios("spillway-b", "haproxy", "Spillway B / HAProxy:")
PY
log "raw data: $RESULTS, h2load outputs in $OUT"
