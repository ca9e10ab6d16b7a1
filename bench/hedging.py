#!/usr/bin/env python3
"""Hedging proof (issue 11): a backend with a slow tail, with and without `strategy: forking`.

Two backends (one cluster, round robin) answer in SERVICE ms, but a share TAIL of their answers
(drawn per request) takes TAIL_MS instead. A steady RATE req/s go through Spillway, run twice
with the same load:
  plain    strategy: failfast            (one try per request)
  forking  strategy: forking, hedge: { after: AFTER, max_extra: 1 },
           retries: { budget: { ratio: RATIO, min_per_sec: 10 } }

It prints, per run, the latency quantiles the clients saw (from `spillway load --json`), the
upstream requests (both backends' `received`) per client request, and the hedges won and lost,
and checks

  H1 tail     p99 with forking <= 0.5 x p99 without;
  H2 budget   extra upstream requests (upstream - client requests) <= RATIO x client requests
              + min_per_sec x (T + 10 s window).

Writes DIR/hedging.json and DIR/hedging.svg (latency quantiles of both runs). Exit status 1 when
a check fails.

Usage: bench/hedging.py [--build] [--out DIR] [--rate R] [--after p95|DELAY] [--seconds S]
Ports: gateway 127.0.0.1:18390, backends 18391 and 18393, admin 18392. Standard library only.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resilience_lib as lib  # noqa: E402

GW, B1, ADMIN, B2 = 18390, 18391, 18392, 18393
SERVICE_MS, TAIL, TAIL_MS = 5, 0.05, 200
RATIO, MIN_PER_SEC, WINDOW = 0.1, 10, 10

CONFIG = """# bench/hedging.py, run `{name}`
workers: 1
listeners:
  - {{ name: public, address: 127.0.0.1:{gw} }}
admin: {{ address: 127.0.0.1:{admin} }}
clusters:
  - name: backend
    endpoints: [ {{ address: 127.0.0.1:{b1} }}, {{ address: 127.0.0.1:{b2} }} ]
    balance: round_robin
    timeouts: {{ request: 2s }}
    outlier: {{ consecutive_failures: 0 }}
routes:
  - name: all
    match: {{ path_prefix: / }}
    cluster: backend
{policy}
"""


def run(name, policy, args, out):
    config = os.path.join(out, f"{name}.yaml")
    with open(config, "w") as f:
        f.write(CONFIG.format(name=name, gw=GW, admin=ADMIN, b1=B1, b2=B2, policy=policy))
    backends = []
    for i, port in enumerate((B1, B2)):
        backends.append(lib.start(
            ["backend", "--concurrency", "1000", "--service-time", f"{SERVICE_MS}ms",
             "--tail-ratio", str(TAIL), "--tail-time", f"{TAIL_MS}ms", "--listen",
             f"127.0.0.1:{port}", "-d", f"{args.seconds + 60}s", "--seed", str(11 + i)],
            os.path.join(out, f"backend{i + 1}-{name}.log")))
        lib.wait_status(f"http://127.0.0.1:{port}/stats")
    gateway = lib.start(["run", "--config", config], os.path.join(out, f"gateway-{name}.log"))
    lib.wait_status(f"http://127.0.0.1:{GW}/")
    before = sum(lib.backend_stats(p)["received"] for p in (B1, B2))
    report = os.path.join(out, f"load-{name}.json")
    load = lib.start(["load", f"http://127.0.0.1:{GW}/", "--rate", str(args.rate), "-d",
                      f"{args.seconds}s", "-c", "256", "--timeout", "2s", "--json", report, "-q"],
                     os.path.join(out, f"load-{name}.txt"))
    load.wait(timeout=args.seconds + 60)
    upstream = sum(lib.backend_stats(p)["received"] for p in (B1, B2)) - before
    won = lib.metric_sum(ADMIN, "spillway_hedges_total", {"outcome": "won"}) or 0
    lost = lib.metric_sum(ADMIN, "spillway_hedges_total", {"outcome": "lost"}) or 0
    lib.stop(gateway)
    for b in backends:
        lib.stop(b)
    time.sleep(0.5)
    with open(report) as f:
        overall = json.load(f)["overall"]
    return {"requests": overall["requests"], "latency_ms": overall["latency_ms"],
            "status": overall["status"], "upstream": upstream, "hedges_won": won,
            "hedges_lost": lost, "secs": overall["duration_s"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--after", default="p95")
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args()
    if args.build:
        lib.build()
    lib.check_binary()
    for port in (GW, B1, ADMIN, B2):
        if not lib.port_free(port):
            lib.die(f"port {port} is in use (another benchmark running?)")
    out = args.out or tempfile.mkdtemp(prefix="spillway-hedging.")
    os.makedirs(out, exist_ok=True)
    forking = (f"    strategy: forking\n    hedge: {{ after: {args.after}, max_extra: 1 }}\n"
               f"    retries: {{ budget: {{ ratio: {RATIO}, min_per_sec: {MIN_PER_SEC} }} }}")
    runs = {"plain": run("plain", "    strategy: failfast", args, out),
            "forking": run("forking", forking, args, out)}
    print(f"\nHedging: {args.rate} req/s for {args.seconds}s; backends answer in {SERVICE_MS} ms, "
          f"{TAIL:.0%} of answers in {TAIL_MS} ms; hedge after {args.after}")
    print(f"{'run':<8} {'requests':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} "
          f"{'upstream/req':>13} {'hedges won/lost':>16}")
    for name, r in runs.items():
        lat = r["latency_ms"]
        print(f"{name:<8} {r['requests']:>9} {lat['p50']:>8.1f} {lat['p90']:>8.1f} "
              f"{lat['p99']:>8.1f} {lat['p999']:>9.1f} {r['upstream'] / r['requests']:>13.3f} "
              f"{r['hedges_won']:>7.0f}/{r['hedges_lost']:<8.0f}")
    failures = []
    p_plain, p_fork = runs["plain"]["latency_ms"]["p99"], runs["forking"]["latency_ms"]["p99"]
    v1 = "PASS" if p_fork <= 0.5 * p_plain else "FAIL"
    print(f"H1 tail: p99 {p_fork:.1f} ms with forking = {p_fork / p_plain:.2f} x {p_plain:.1f} ms "
          f"without (<= 0.5)  {v1}")
    f = runs["forking"]
    extra = f["upstream"] - f["requests"]
    bound = RATIO * f["requests"] + MIN_PER_SEC * (f["secs"] + WINDOW)
    v2 = "PASS" if extra <= bound else "FAIL"
    print(f"H2 budget: extra upstream {extra} = {extra / f['requests']:.1%} of requests <= "
          f"{bound:.0f} = {RATIO} x {f['requests']} + {MIN_PER_SEC}/s x {f['secs'] + WINDOW:.0f}s"
          f"  {v2}")
    for v, tag in ((v1, "H1"), (v2, "H2")):
        if v == "FAIL":
            failures.append(tag)
    keys = ["p50", "p90", "p99", "p999"]
    series = [(name, color, [(i, runs[name]["latency_ms"][k]) for i, k in enumerate(keys)])
              for name, color in (("plain", "#d6604d"), ("forking", "#2166ac"))]
    svg = os.path.join(out, "hedging.svg")
    lib.svg_lines(svg, f"Hedging: latency quantiles (0 = p50, 1 = p90, 2 = p99, 3 = p99.9), "
                  f"{TAIL:.0%} tail of {TAIL_MS} ms", series, "quantile", "milliseconds")
    with open(os.path.join(out, "hedging.json"), "w") as fh:
        json.dump({"rate": args.rate, "after": args.after, "runs": runs}, fh, indent=1)
    print(f"\nplot: {svg}\nraw data: {out}")
    if failures:
        print("FAILED: " + ", ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
