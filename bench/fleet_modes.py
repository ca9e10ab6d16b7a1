#!/usr/bin/env python3
"""The three global-limit modes side by side through real gateways (issue 12): lease, counter
(the envoy-ratelimit baseline: one INCRBY per request) and exact (one GCRA script per request).

One `redis-server`, three `spillway run` gateways in front of one backend, each with four
routes: `/lease/`, `/counter/`, `/exact/` carry the same global limit `{ key: route, global:
true, rate: CAPACITY/s }` in that mode (names `lease`, `counter`, `exact`), and `/plain/` has
none. For each mode, in one run:

  accuracy  three `spillway load` clients offer skewed load to the mode's route — 60 / 30 / 10 %
            of 1.5 × CAPACITY — for 4 + SECONDS + 3 s, measured over SECONDS after a 4 s
            warm-up; the gateways' own 200/429
            counters give the fleet's admitted rate (vs CAPACITY), and Redis's
            `INFO commandstats` the commands per admitted request (script-internal calls
            included; the lease refreshers of idle routes cost nothing: leases start with
            traffic, and the other modes' idle routes make no calls).
  latency   below the limit (50 % of CAPACITY, same 60/30/10 split, so every request is
            admitted and proxied), alternating ROUNDS times between `/plain/` and the mode's
            route, LAT seconds each; the added p99 is the median p99 with the limit minus the
            median p99 without (each p99 the mean of the three clients' p99).

Both accuracy samples are taken at the same phase of the wall-clock second, so the measured
span is whole seconds (counter mode's windows are 1 s, aligned on the epoch).

Writes DIR/fleet_modes.json and DIR/fleet_modes_latency.svg. Every phase is at most 20 s.

Usage: bench/fleet_modes.py [--build] [--out DIR] [--capacity N] [--seconds S] [--lat S]
                            [--rounds N] [--modes lease,counter,exact]
Ports: gateways 18500-18502 (admin 18503-18505), backend 18506, redis 18507. Needs
redis-server and redis-cli. Standard library only.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resilience_lib as lib  # noqa: E402

GWS, ADMINS, BACKEND, REDIS = [18500, 18501, 18502], [18503, 18504, 18505], 18506, 18507
SHARES = [0.6, 0.3, 0.1]
MODES = ["lease", "counter", "exact"]
WARM = 4

CONFIG = """# bench/fleet_modes.py, gateway {n}
workers: 1
listeners:
  - {{ name: public, address: 127.0.0.1:{gw} }}
admin: {{ address: 127.0.0.1:{admin} }}
quota_store: {{ redis: redis://127.0.0.1:{redis}, instance: gw{n}, timeout: 20ms }}
clusters:
  - name: backend
    endpoints: [ {{ address: 127.0.0.1:{backend} }} ]
    timeouts: {{ request: 2s }}
routes:
  - name: plain
    match: {{ path_prefix: /plain/ }}
    cluster: backend
  - name: lease
    match: {{ path_prefix: /lease/ }}
    cluster: backend
    limits:
      - {{ name: lease, key: route, global: true, mode: lease, rate: {capacity}/s, refresh: 1s }}
  - name: counter
    match: {{ path_prefix: /counter/ }}
    cluster: backend
    limits:
      - {{ name: counter, key: route, global: true, mode: counter, rate: {capacity}/s }}
  - name: exact
    match: {{ path_prefix: /exact/ }}
    cluster: backend
    limits:
      - {{ name: exact, key: route, global: true, mode: exact, rate: {capacity}/s }}
"""


def counts(route):
    ok = [lib.metric_sum(a, "spillway_requests_total", {"route": route, "code": "200"}) or 0
          for a in ADMINS]
    refused = [lib.metric_sum(a, "spillway_requests_total", {"route": route, "code": "429"}) or 0
               for a in ADMINS]
    return ok, refused


def run_loads(out, tag, path, total_rate, seconds):
    """Three open-loop clients, 60/30/10 % of total_rate, for `seconds`; their JSON reports."""
    procs, files = [], []
    for n, (gw, share) in enumerate(zip(GWS, SHARES)):
        jf = os.path.join(out, f"{tag}-gw{n}.json")
        files.append(jf)
        procs.append(lib.start(["load", f"http://127.0.0.1:{gw}{path}", "--rate",
                                f"{share * total_rate:.0f}", "-d", f"{seconds}s", "-c", "64",
                                "--timeout", "2s", "-q", "--json", jf],
                               os.path.join(out, f"{tag}-gw{n}.txt")))
    return procs, files


def wait_loads(procs, files, seconds):
    for p in procs:
        p.wait(timeout=seconds + 30)
    reports = []
    for f in files:
        with open(f) as fh:
            reports.append(json.load(fh))
    return reports


def p99(reports):
    return statistics.mean(r["overall"]["latency_ms"]["p99"] for r in reports)


def p50(reports):
    return statistics.mean(r["overall"]["latency_ms"]["p50"] for r in reports)


def sleep_to_phase(phase):
    """Sleeps until the wall clock's fraction of a second is `phase`."""
    time.sleep((phase - time.time()) % 1.0)


def accuracy_phase(out, mode, capacity, seconds):
    total = WARM + seconds + 3  # the load outlasts the second sample
    procs, files = run_loads(out, f"{mode}-accuracy", f"/{mode}/", 1.5 * capacity, total)
    time.sleep(WARM)
    # Both samples at the same phase of the wall-clock second: the measured span is whole
    # seconds, so counter mode's 1 s windows (aligned on the epoch, and consumed in their
    # first two thirds at this load) are counted whole, not cut at an arbitrary point.
    sleep_to_phase(0.5)
    t0, c0, r0 = time.time(), counts(mode), lib.redis_calls(REDIS)
    time.sleep(seconds - 0.5)
    sleep_to_phase(0.5)
    t1, c1, r1 = time.time(), counts(mode), lib.redis_calls(REDIS)
    wait_loads(procs, files, total)
    secs = t1 - t0
    ok = [b - a for a, b in zip(c0[0], c1[0])]
    refused = [b - a for a, b in zip(c0[1], c1[1])]
    cmds = {k: r1.get(k, 0) - r0.get(k, 0) for k in r1 if r1.get(k, 0) != r0.get(k, 0)}
    admitted = sum(ok)
    return {
        "secs": secs,
        "offered_per_s": [(o + r) / secs for o, r in zip(ok, refused)],
        "admitted_per_s": [o / secs for o in ok],
        "fleet_admitted_per_s": admitted / secs,
        "error": admitted / secs / capacity - 1,
        "redis_commands": cmds,
        "commands_per_admitted": sum(cmds.values()) / max(1, admitted),
    }


def latency_phase(out, mode, capacity, lat, rounds):
    plain, limited = [], []
    for r in range(rounds):
        for route, sink in (("plain", plain), (mode, limited)):
            procs, files = run_loads(out, f"{mode}-lat{r}-{route}", f"/{route}/", 0.5 * capacity,
                                     lat)
            reports = wait_loads(procs, files, lat)
            non_200 = sum(v for rep in reports
                          for k, v in rep["overall"]["status"].items() if k != "200")
            sink.append({"p50": p50(reports), "p99": p99(reports), "non_200": non_200,
                         "p99_per_client": [rp["overall"]["latency_ms"]["p99"] for rp in reports]})
    return {
        "plain": plain,
        "limited": limited,
        "plain_p99_ms": statistics.median(x["p99"] for x in plain),
        "limited_p99_ms": statistics.median(x["p99"] for x in limited),
        "plain_p50_ms": statistics.median(x["p50"] for x in plain),
        "limited_p50_ms": statistics.median(x["p50"] for x in limited),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--capacity", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=12, help="accuracy phase, measured part")
    ap.add_argument("--lat", type=int, default=4, help="each latency slice")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if any(m not in MODES for m in modes):
        lib.die(f"--modes: choose among {MODES}")
    if WARM + args.seconds + 3 > 20 or args.lat > 20:
        lib.die("every phase is at most 20 s")
    if args.build:
        lib.build()
    lib.check_binary()
    lib.require_free(GWS + ADMINS + [BACKEND, REDIS])
    out = args.out or tempfile.mkdtemp(prefix="spillway-fleet-modes.")
    os.makedirs(out, exist_ok=True)
    redis = lib.start_redis(REDIS)
    budget = len(modes) * (WARM + args.seconds + 3 + 2 * args.rounds * args.lat + 20) + 60
    lib.start(["backend", "--concurrency", "200", "--service-time", "1ms", "--listen",
               f"127.0.0.1:{BACKEND}", "-d", f"{budget}s"], os.path.join(out, "backend.log"))
    lib.wait_status(f"http://127.0.0.1:{BACKEND}/stats")
    for n, (gw, admin) in enumerate(zip(GWS, ADMINS)):
        config = os.path.join(out, f"gw{n}.yaml")
        with open(config, "w") as f:
            f.write(CONFIG.format(n=n, gw=gw, admin=admin, redis=REDIS, backend=BACKEND,
                                  capacity=args.capacity))
        lib.start(["run", "--config", config], os.path.join(out, f"gw{n}.log"))
        lib.wait_status(f"http://127.0.0.1:{admin}/healthz")
    results = {}
    for mode in modes:
        lib.log(f"{mode}: accuracy, {1.5 * args.capacity:.0f}/s offered for "
                f"{WARM}+{args.seconds}s")
        acc = accuracy_phase(out, mode, args.capacity, args.seconds)
        lib.log(f"{mode}: latency, {0.5 * args.capacity:.0f}/s, {args.rounds} rounds of "
                f"plain/{mode} × {args.lat}s")
        lat = latency_phase(out, mode, args.capacity, args.lat, args.rounds)
        results[mode] = {"accuracy": acc, "latency": lat}

    print(f"\nFleet of 3 gateways, limit {args.capacity}/s per mode, offered "
          f"{[round(s * 1.5 * args.capacity) for s in SHARES]} req/s (accuracy, "
          f"{args.seconds}s measured) and {[round(s * 0.5 * args.capacity) for s in SHARES]} "
          f"req/s (latency, {args.rounds} × {args.lat}s per side)")
    print(f"{'mode':<8} {'admitted/s':>10} {'error':>8} {'cmds/admitted':>14} "
          f"{'p50 plain→limited':>18} {'p99 plain→limited':>18} {'added p99':>10}")
    for mode in modes:
        a, lt = results[mode]["accuracy"], results[mode]["latency"]
        added = lt["limited_p99_ms"] - lt["plain_p99_ms"]
        print(f"{mode:<8} {a['fleet_admitted_per_s']:>10.1f} {a['error']:>+8.2%} "
              f"{a['commands_per_admitted']:>14.4f} "
              f"{lt['plain_p50_ms']:>8.3f}→{lt['limited_p50_ms']:<8.3f} "
              f"{lt['plain_p99_ms']:>8.3f}→{lt['limited_p99_ms']:<8.3f} {added:>+9.3f}ms")
        non_200 = sum(x["non_200"] for x in lt["plain"] + lt["limited"])
        print(f"{'':<8} per gateway admitted/s {[round(x, 1) for x in a['admitted_per_s']]}; "
              f"commands {a['redis_commands']}; latency phase non-200 answers: {non_200}")
    with open(os.path.join(out, "fleet_modes.json"), "w") as f:
        json.dump({"capacity": args.capacity, "shares": SHARES, "results": results}, f, indent=1)
    series = []
    colors = {"lease": "#1f77b4", "counter": "#d62728", "exact": "#2ca02c"}
    for mode in modes:
        lt = results[mode]["latency"]
        series.append((f"{mode} p99", colors[mode],
                       [(i + 1, x["p99"]) for i, x in enumerate(lt["limited"])]))
        series.append((f"plain p99 ({mode} run)", "#999999",
                       [(i + 1, x["p99"]) for i, x in enumerate(lt["plain"])]))
    lib.svg_lines(os.path.join(out, "fleet_modes_latency.svg"),
                  "p99 latency per round: the mode's route vs the plain route", series,
                  "round", "p99 ms")
    print(f"raw data: {out}")


if __name__ == "__main__":
    main()
