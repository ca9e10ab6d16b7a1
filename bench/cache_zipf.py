#!/usr/bin/env python3
"""Micro-cache benchmark (issue 13): a Zipf(1.1) key distribution over 1 M keys through the
gateway, with and without `cache: { ttl: 1s }`.

It writes a traffic recording (`spillway.traffic/v1`, the format `spillway replay` plays) of
RATE req/s for SECONDS: GET /items/{k} with k drawn from Zipf(s = 1.1) over 1 000 000 keys
(seeded, so both runs replay the same requests), then replays it through `spillway run`
twice — the plain route, and the same route with the micro-cache — in front of a
`spillway backend` (200 slots × SERVICE ms). It prints the upstream requests (the backend's
`received`) and the clients' latency quantiles for both runs, and the share of upstream
requests the cache saved. Writes DIR/cache-zipf.json. A report: exit status 0.

Usage: bench/cache_zipf.py [--build] [--out DIR] [--rate R] [--seconds S] [--service-ms MS]
Ports: gateway 18590, admin 18592, backend 18591. Standard library only.
"""

import argparse
import bisect
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resilience_lib as lib  # noqa: E402

GW, BACKEND, ADMIN = 18590, 18591, 18592
KEYS, S = 1_000_000, 1.1

CONFIG = """# bench/cache_zipf.py, run `{name}`
workers: 1
listeners:
  - {{ name: public, address: 127.0.0.1:{gw} }}
admin: {{ address: 127.0.0.1:{admin} }}
clusters:
  - name: backend
    endpoints: [ {{ address: 127.0.0.1:{backend} }} ]
    timeouts: {{ request: 2s }}
routes:
  - name: items
    match: {{ path_prefix: / }}
    cluster: backend
{extra}
"""


def write_traffic(path, rate, seconds):
    """A recording of rate × seconds GETs with Zipf(S) keys over KEYS, evenly spaced."""
    rng = random.Random(11)
    cumulative, total = [], 0.0
    for k in range(1, KEYS + 1):
        total += k ** -S
        cumulative.append(total)
    n = rate * seconds
    step = 1_000_000 // rate
    distinct = set()
    with open(path, "w") as f:
        for i in range(n):
            k = bisect.bisect_left(cumulative, rng.random() * total) + 1
            distinct.add(k)
            f.write(json.dumps({
                "v": 1, "seq": i, "offset_us": i * step, "method": "GET",
                "path": f"/items/{k}", "headers": [["host", "items"]],
                "body": "", "body_encoding": "utf8", "body_len": 0, "body_truncated": False,
            }) + "\n")
    return n, len(distinct)


def run(name, extra, traffic, args, out):
    config = os.path.join(out, f"{name}.yaml")
    with open(config, "w") as f:
        f.write(CONFIG.format(name=name, gw=GW, admin=ADMIN, backend=BACKEND, extra=extra))
    backend = lib.start(["backend", "--concurrency", "200", "--service-time",
                         f"{args.service_ms}ms", "--listen", f"127.0.0.1:{BACKEND}", "-d",
                         f"{args.seconds + 60}s"], os.path.join(out, f"backend-{name}.log"))
    lib.wait_status(f"http://127.0.0.1:{BACKEND}/stats")
    gateway = lib.start(["run", "--config", config], os.path.join(out, f"gateway-{name}.log"))
    lib.wait_status(f"http://127.0.0.1:{ADMIN}/healthz")
    before = lib.backend_stats(BACKEND)["received"]
    report = os.path.join(out, f"replay-{name}.json")
    replay = lib.start(["replay", "--target", f"http://127.0.0.1:{GW}/", "-c", "128",
                        "--timeout", "2s", "--json", report, "-q", traffic],
                       os.path.join(out, f"replay-{name}.txt"))
    replay.wait(timeout=args.seconds + 60)
    upstream = lib.backend_stats(BACKEND)["received"] - before
    hits = lib.metric_sum(ADMIN, "spillway_cache_total", {"result": "hit"}) or 0
    coalesced = lib.metric_sum(ADMIN, "spillway_cache_total", {"result": "coalesced"}) or 0
    for p in (gateway, backend):
        lib.stop(p)
    time.sleep(0.5)
    with open(report) as f:
        overall = json.load(f)["overall"]
    return {"requests": overall["requests"], "latency_ms": overall["latency_ms"],
            "status": overall["status"], "upstream": upstream, "hits": hits,
            "coalesced": coalesced}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--service-ms", type=int, default=5)
    args = ap.parse_args()
    if args.build:
        lib.build()
    lib.check_binary()
    for port in (GW, BACKEND, ADMIN):
        if not lib.port_free(port):
            lib.die(f"port {port} is in use")
    out = args.out or tempfile.mkdtemp(prefix="spillway-cache-zipf.")
    os.makedirs(out, exist_ok=True)
    traffic = os.path.join(out, "zipf.jsonl")
    n, distinct = write_traffic(traffic, args.rate, args.seconds)
    lib.log(f"{n} requests over {distinct} distinct keys (Zipf {S} over {KEYS})")
    runs = {"plain": run("plain", "", traffic, args, out),
            "cached": run("cached", "    cache: { ttl: 1s, max_bytes: 64MB }", traffic, args, out)}
    print(f"\nMicro-cache: {args.rate} req/s for {args.seconds}s, Zipf({S}) over {KEYS} keys "
          f"({distinct} distinct requested); backend {args.service_ms} ms per request")
    print(f"{'run':<7} {'requests':>9} {'upstream':>9} {'hits':>7} {'coalesced':>10} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>9}")
    for name, r in runs.items():
        lat = r["latency_ms"]
        print(f"{name:<7} {r['requests']:>9} {r['upstream']:>9} {r['hits']:>7.0f} "
              f"{r['coalesced']:>10.0f} {lat['p50']:>7.2f} {lat['p99']:>7.2f} {lat['p999']:>9.2f}")
    saved = 1 - runs["cached"]["upstream"] / max(1, runs["plain"]["upstream"])
    print(f"upstream requests saved by the cache: {saved:.1%}")
    with open(os.path.join(out, "cache-zipf.json"), "w") as f:
        json.dump({"rate": args.rate, "seconds": args.seconds, "distinct": distinct,
                   "runs": runs, "saved": saved}, f, indent=1)
    print(f"raw data: {out}")


if __name__ == "__main__":
    main()
