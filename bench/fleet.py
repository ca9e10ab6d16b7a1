#!/usr/bin/env python3
"""Fleet accuracy of a lease-mode global limit through real gateways (issue 12).

One `redis-server`, three `spillway run` gateways in front of one backend, each with the same
route and the same global limit `{ key: route, global: true, mode: lease, rate: CAPACITY/s }`,
and three `spillway load` clients offering skewed load: 60 / 30 / 10 % of 1.5 × CAPACITY (so
the fleet is over its limit and the busiest gateway alone is too). After a warm-up it samples,
per gateway, the 2xx and 429 counters from /metrics and its lease grant, and Redis's
`INFO commandstats`, and checks

  F1 accuracy  the fleet's admitted rate over the measured window is within ±3 % of CAPACITY;
  F2 fairness  each gateway's grant is within 10 % (or 5 req/s) of the max-min fair share of
               its measured demand;
  F3 cost      Redis commands per admitted request ≤ 0.01;
  F4 outage    then Redis is killed for 8 s and started again on the same port: no gateway
               answers a 5xx meanwhile (only 2xx and 429), every gateway reports its store down
               within 2 s of the kill, and up again within 5 s of the restart.

Writes DIR/fleet.json. Exit status 1 when a check fails.

Usage: bench/fleet.py [--build] [--out DIR] [--capacity N] [--seconds S]
Ports: gateways 18490-18492 (admin 18493-18495), backend 18496, redis 18497. Needs
redis-server (and redis-cli). Standard library only.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resilience_lib as lib  # noqa: E402

GWS, ADMINS, BACKEND, REDIS = [18490, 18491, 18492], [18493, 18494, 18495], 18496, 18497
SHARES = [0.6, 0.3, 0.1]

CONFIG = """# bench/fleet.py, gateway {n}
workers: 1
listeners:
  - {{ name: public, address: 127.0.0.1:{gw} }}
admin: {{ address: 127.0.0.1:{admin} }}
quota_store: {{ redis: redis://127.0.0.1:{redis}, instance: gw{n} }}
clusters:
  - name: backend
    endpoints: [ {{ address: 127.0.0.1:{backend} }} ]
    timeouts: {{ request: 2s }}
routes:
  - name: all
    match: {{ path_prefix: / }}
    cluster: backend
    limits:
      - {{ name: fleet, key: route, global: true, mode: lease, rate: {capacity}/s, refresh: 1s }}
"""


def max_min(capacity, demands):
    left, share = capacity, [0.0] * len(demands)
    todo = sorted(range(len(demands)), key=lambda i: demands[i])
    while todo:
        fair = left / len(todo)
        i = todo[0]
        if demands[i] <= fair:
            share[i] = demands[i]
            left -= demands[i]
            todo.pop(0)
        else:
            for j in todo:
                share[j] = fair
            break
    return share


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--capacity", type=int, default=2000)
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args()
    if args.build:
        lib.build()
    lib.check_binary()
    lib.require_free(GWS + ADMINS + [BACKEND, REDIS])
    out = args.out or tempfile.mkdtemp(prefix="spillway-fleet.")
    os.makedirs(out, exist_ok=True)
    redis = lib.start_redis(REDIS)
    total = args.seconds + 25
    lib.start(["backend", "--concurrency", "200", "--service-time", "1ms", "--listen",
               f"127.0.0.1:{BACKEND}", "-d", f"{total + 30}s"], os.path.join(out, "backend.log"))
    lib.wait_status(f"http://127.0.0.1:{BACKEND}/stats")
    for n, (gw, admin) in enumerate(zip(GWS, ADMINS)):
        config = os.path.join(out, f"gw{n}.yaml")
        with open(config, "w") as f:
            f.write(CONFIG.format(n=n, gw=gw, admin=admin, redis=REDIS, backend=BACKEND,
                                  capacity=args.capacity))
        lib.start(["run", "--config", config], os.path.join(out, f"gw{n}.log"))
        lib.wait_status(f"http://127.0.0.1:{admin}/healthz")
    offered = [share * 1.5 * args.capacity for share in SHARES]
    loads = [lib.start(["load", f"http://127.0.0.1:{gw}/", "--rate", f"{rate:.0f}", "-d",
                        f"{total}s", "-c", "64", "--timeout", "2s", "-q"],
                       os.path.join(out, f"load{n}.txt"))
             for n, (gw, rate) in enumerate(zip(GWS, offered))]
    warm = 8
    lib.log(f"capacity {args.capacity}/s; offered {[round(o) for o in offered]}; warm-up {warm}s")
    time.sleep(warm)

    def sample():
        return {
            "t": time.time(),
            "ok": [lib.metric_sum(a, "spillway_requests_total", {"code": "200"}) or 0 for a in ADMINS],
            "refused": [lib.metric_sum(a, "spillway_requests_total", {"code": "429"}) or 0 for a in ADMINS],
            "grant": [lib.metric_sum(a, "spillway_quota_grant", {"limit": "fleet"}) or 0 for a in ADMINS],
            "redis": sum(lib.redis_calls(REDIS).values()),
        }

    first = sample()
    time.sleep(args.seconds - warm)
    last = sample()

    # F4: Redis goes away for 8 s.
    def store_up():
        return [lib.metric_sum(a, "spillway_quota_store_up", {"limit": "fleet"}) for a in ADMINS]

    def errors_5xx():
        return sum(sum(lib.metric_sum(a, "spillway_requests_total", {"code": str(c)}) or 0
                       for c in (500, 502, 503, 504)) for a in ADMINS)

    before_5xx = errors_5xx()
    redis.kill()
    redis.wait()
    killed = time.time()
    down_after = None
    while time.time() - killed < 8:
        if down_after is None and all(u == 0 for u in store_up()):
            down_after = time.time() - killed
        time.sleep(0.1)
    lib.start_redis(REDIS, settle=0)  # recovery is timed from here
    restarted = time.time()
    up_after = None
    while time.time() - restarted < 10:
        if all(u == 1 for u in store_up()):
            up_after = time.time() - restarted
            break
        time.sleep(0.1)
    outage_5xx = errors_5xx() - before_5xx
    for load in loads:
        load.wait(timeout=total + 30)
    secs = last["t"] - first["t"]
    ok = [b - a for a, b in zip(first["ok"], last["ok"])]
    refused = [b - a for a, b in zip(first["refused"], last["refused"])]
    demand = [(o + r) / secs for o, r in zip(ok, refused)]
    fleet = sum(ok) / secs
    cmds = last["redis"] - first["redis"]
    ideal = max_min(args.capacity, demand)
    failures = []
    print(f"\nFleet: 3 gateways, one lease-mode limit of {args.capacity}/s, {secs:.1f}s measured")
    print(f"{'gateway':<8} {'demand/s':>9} {'admitted/s':>11} {'grant/s':>8} {'max-min share':>14}")
    for n in range(3):
        print(f"gw{n:<6} {demand[n]:>9.0f} {ok[n] / secs:>11.1f} {last['grant'][n]:>8.1f} "
              f"{ideal[n]:>14.1f}")
    err = fleet / args.capacity - 1
    v1 = "PASS" if abs(err) <= 0.03 else "FAIL"
    print(f"F1 accuracy: fleet admitted {fleet:.1f}/s = {err:+.2%} of {args.capacity}/s  {v1}")
    fair_ok = all(abs(g - i) <= max(0.10 * i, 5.0) for g, i in zip(last["grant"], ideal))
    v2 = "PASS" if fair_ok else "FAIL"
    print(f"F2 fairness: grants {[round(g, 1) for g in last['grant']]} vs max-min "
          f"{[round(i, 1) for i in ideal]}  {v2}")
    per_req = cmds / max(1, sum(ok))
    v3 = "PASS" if per_req <= 0.01 else "FAIL"
    print(f"F3 cost: {cmds} Redis commands for {sum(ok)} admitted = {per_req:.4f} per request  {v3}")
    v4 = ("PASS" if outage_5xx == 0 and down_after is not None and down_after <= 2.0
          and up_after is not None and up_after <= 5.0 else "FAIL")
    shown = lambda x: "never" if x is None else f"{x:.1f}s"  # noqa: E731
    print(f"F4 outage: store down reported {shown(down_after)} after the kill, up "
          f"{shown(up_after)} after the restart; {outage_5xx} 5xx meanwhile  {v4}")
    for v, tag in ((v1, "F1"), (v2, "F2"), (v3, "F3"), (v4, "F4")):
        if v == "FAIL":
            failures.append(tag)
    with open(os.path.join(out, "fleet.json"), "w") as f:
        json.dump({"capacity": args.capacity, "secs": secs, "demand": demand, "ok": ok,
                   "refused": refused, "grants": last["grant"], "ideal": ideal,
                   "redis_commands": cmds, "outage": {"down_after_s": down_after,
                   "up_after_s": up_after, "errors_5xx": outage_5xx}}, f, indent=1)
    print(f"raw data: {out}")
    if failures:
        print("FAILED: " + ", ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
