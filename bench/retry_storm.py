#!/usr/bin/env python3
"""Retry-storm proof of the gateway's retry budget (issue 11).

Clients that retry every error 3 times (`spillway load --client-retries 3`) send a steady
RATE req/s through Spillway to a backend of fixed capacity (SLOTS x SERVICE). The gateway's
route retries 3 times too. The backend's health is switched through its /control endpoint:

    0-10 s healthy | 10-25 s 50 % of answers fail (503) | 25-35 s every answer fails | 35-55 s healthy

Run twice, with the same load and schedule:
  no-budget  retries: { attempts: 3, budget: false }   (what a naive proxy does)
  budget     retries: { attempts: 3, budget: { ratio: 0.2, min_per_sec: 10 } }

Every second it samples the backend's `received` (upstream requests), the gateway's answered
requests (client attempts arriving at the gateway) and its 2xx. It prints, per phase and run,
upstream/s, gateway requests/s and the amplification upstream / gateway requests, checks

  B1 budget   in the budget run, over the whole run, upstream <= (1 + ratio) x gateway
              requests + min_per_sec x (T + window); and over each failing phase, retries
              (upstream - gateway requests) <= ratio x gateway requests of the phase and the
              window before it + min_per_sec x (T + window) (the budget counts a rolling 10 s
              window, so requests just before a phase lend it credit);
  B2 recovery in the budget run, once the backend is healthy again, every second from the 2nd
              on answers >= 99 % 2xx at the gateway;

and shows the multiplication of the no-budget run. Writes DIR/retry-storm.svg (upstream/s of
both runs over time, the phases shaded) and DIR/retry-storm.json. Exit status 1 when B1 or B2
fails.

Usage: bench/retry_storm.py [--build] [--out DIR] [--rate R] [--slots N] [--service-ms MS]
Ports: gateway 127.0.0.1:18190, backend 18191, admin 18192. Standard library only.
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resilience_lib as lib  # noqa: E402

GW, BACKEND, ADMIN = 18190, 18191, 18192
PHASES = [  # (start s, end s, label, fail_ratio)
    (0, 10, "healthy", 0.0),
    (10, 25, "50 % failing", 0.5),
    (25, 35, "all failing", 1.0),
    (35, 55, "healthy again", 0.0),
]
RATIO, MIN_PER_SEC = 0.2, 10
WINDOW = 10  # the retry budget's window, seconds (the default)

CONFIG = """# bench/retry_storm.py, run `{name}`
workers: 1
listeners:
  - {{ name: public, address: 127.0.0.1:{gw} }}
admin: {{ address: 127.0.0.1:{admin} }}
clusters:
  - name: backend
    endpoints: [ {{ address: 127.0.0.1:{backend} }} ]
    timeouts: {{ request: 2s }}
    outlier: {{ consecutive_failures: 0 }}
routes:
  - name: all
    match: {{ path_prefix: / }}
    cluster: backend
    retries: {{ attempts: 3, backoff: {{ base: 10ms, max: 100ms }}, budget: {budget} }}
"""


def run(name, budget, args, out):
    config = os.path.join(out, f"{name}.yaml")
    with open(config, "w") as f:
        f.write(CONFIG.format(name=name, gw=GW, admin=ADMIN, backend=BACKEND, budget=budget))
    total = PHASES[-1][1]
    backend = lib.start(["backend", "--concurrency", str(args.slots), "--service-time",
                         f"{args.service_ms}ms", "--listen", f"127.0.0.1:{BACKEND}", "-d",
                         f"{total + 60}s", "--seed", "7"], os.path.join(out, f"backend-{name}.log"))
    lib.wait_status(f"http://127.0.0.1:{BACKEND}/stats")
    gateway = lib.start(["run", "--config", config], os.path.join(out, f"gateway-{name}.log"))
    lib.wait_status(f"http://127.0.0.1:{GW}/")
    load = lib.start(["load", f"http://127.0.0.1:{GW}/", "--rate", str(args.rate), "-d",
                      f"{total}s", "-c", "512", "--timeout", "2s", "--client-retries", "3",
                      "--json", os.path.join(out, f"load-{name}.json"), "-q"],
                     os.path.join(out, f"load-{name}.txt"))
    t0 = time.time()
    samples = []
    phase = -1
    while load.poll() is None and time.time() - t0 < total + 30:
        t = time.time() - t0
        now_phase = max(i for i, p in enumerate(PHASES) if t >= p[0])
        if now_phase != phase:
            phase = now_phase
            lib.control(BACKEND, fail_ratio=PHASES[phase][3])
            lib.log(f"{name}: {PHASES[phase][2]}")
        stats = lib.backend_stats(BACKEND) or {}
        answered = lib.metric_sum(ADMIN, "spillway_requests_total", {"route": "all"})
        ok = lib.metric_sum(ADMIN, "spillway_requests_total", {"route": "all", "code": "200"})
        samples.append({"t": t, "upstream": stats.get("received", 0), "gateway": answered or 0,
                        "ok": ok or 0, "queued": stats.get("queued", 0)})
        time.sleep(max(0.0, 1.0 - ((time.time() - t0) % 1.0)))
    load.wait(timeout=60)
    for p in (gateway, backend):
        lib.stop(p)
    time.sleep(0.5)
    return samples


def rates(samples):
    """Per-second rates between consecutive samples: (t, upstream/s, gateway/s, ok share)."""
    out = []
    for a, b in zip(samples, samples[1:]):
        dt = b["t"] - a["t"]
        if dt <= 0:
            continue
        up = (b["upstream"] - a["upstream"]) / dt
        gw = (b["gateway"] - a["gateway"]) / dt
        ok = (b["ok"] - a["ok"]) / max(1e-9, b["gateway"] - a["gateway"])
        out.append((b["t"], up, gw, ok))
    return out


def phase_totals(samples, start, end):
    inside = [s for s in samples if start <= s["t"] <= end]
    if len(inside) < 2:
        return None
    a, b = inside[0], inside[-1]
    dt = b["t"] - a["t"]
    up, gw = b["upstream"] - a["upstream"], b["gateway"] - a["gateway"]
    return {"secs": dt, "upstream": up, "gateway": gw, "upstream_per_s": up / dt,
            "gateway_per_s": gw / dt, "amplification": up / gw if gw else float("nan"),
            "ok_share": (b["ok"] - a["ok"]) / gw if gw else float("nan")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--rate", type=int, default=150)
    ap.add_argument("--slots", type=int, default=20)
    ap.add_argument("--service-ms", type=int, default=10)
    args = ap.parse_args()
    if args.build:
        lib.build()
    lib.check_binary()
    for port in (GW, BACKEND, ADMIN):
        if not lib.port_free(port):
            lib.die(f"port {port} is in use (another benchmark running?)")
    out = args.out or tempfile.mkdtemp(prefix="spillway-retry-storm.")
    os.makedirs(out, exist_ok=True)
    capacity = args.slots * 1000 / args.service_ms
    lib.log(f"backend capacity {capacity:.0f} req/s nominal; clients {args.rate} req/s, "
            "3 client retries; gateway 3 attempts")
    runs = {
        "no-budget": run("no-budget", "false", args, out),
        "budget": run("budget", f"{{ ratio: {RATIO}, min_per_sec: {MIN_PER_SEC} }}", args, out),
    }
    report = {"rate": args.rate, "capacity": capacity, "phases": PHASES, "runs": {}}
    failures = []
    print(f"\nRetry storm: {args.rate} client req/s (each retried up to 3x by the client), "
          f"backend capacity {capacity:.0f} req/s nominal")
    print(f"{'run':<10} {'phase':<14} {'gateway/s':>10} {'upstream/s':>11} {'upstream/gw':>12} "
          f"{'2xx share':>10}")
    for name, samples in runs.items():
        report["runs"][name] = {"samples": samples, "phases": []}
        for start, end, label, ratio in PHASES:
            tot = phase_totals(samples, start + 1, end)
            report["runs"][name]["phases"].append({"label": label, **(tot or {})})
            if not tot:
                failures.append(f"{name}/{label}: no samples")
                continue
            print(f"{name:<10} {label:<14} {tot['gateway_per_s']:>10.0f} "
                  f"{tot['upstream_per_s']:>11.0f} {tot['amplification']:>12.2f} "
                  f"{tot['ok_share']:>10.1%}")
            if name == "budget" and ratio > 0:
                credit = phase_totals(samples, max(0, start + 1 - WINDOW), end)
                retries = tot["upstream"] - tot["gateway"]
                bound = RATIO * credit["gateway"] + MIN_PER_SEC * (tot["secs"] + WINDOW)
                verdict = "PASS" if retries <= bound else "FAIL"
                print(f"{'':<10} B1 budget: retries {retries:.0f} <= {bound:.0f} = "
                      f"{RATIO} x {credit['gateway']:.0f} + {MIN_PER_SEC}/s x "
                      f"{tot['secs'] + WINDOW:.0f}s  {verdict}")
                if verdict == "FAIL":
                    failures.append(f"B1 {label}")
        whole = phase_totals(samples, 0, PHASES[-1][1] + 30)
        report["runs"][name]["whole"] = whole
        bound = (1 + RATIO) * whole["gateway"] + MIN_PER_SEC * (whole["secs"] + WINDOW)
        line = (f"{'':<10} whole run: upstream {whole['upstream']:.0f} = "
                f"{whole['amplification']:.3f} x gateway {whole['gateway']:.0f}")
        if name == "budget":
            verdict = "PASS" if whole["upstream"] <= bound else "FAIL"
            print(f"{line} <= {bound:.0f} = 1.2 x gateway + {MIN_PER_SEC}/s x "
                  f"{whole['secs'] + WINDOW:.0f}s  B1 {verdict}")
            if verdict == "FAIL":
                failures.append("B1 whole run")
        else:
            print(line)
        try:
            with open(os.path.join(out, f"load-{name}.json")) as f:
                overall = json.load(f)["overall"]
            logical, attempts = overall["requests"], overall["attempts"]
            print(f"{'':<10} clients: {logical} requests, {attempts} attempts with their "
                  f"retries; upstream / client request = {whole['upstream'] / logical:.2f}")
            report["runs"][name]["clients"] = {"requests": logical, "attempts": attempts}
        except (OSError, KeyError, ValueError, ZeroDivisionError) as e:
            print(f"{'':<10} (no load report: {e})")
        healthy_again = PHASES[-1][0]
        late = [r for r in rates(samples) if r[0] >= healthy_again + 2]
        worst = min((r[3] for r in late), default=float("nan"))
        if name == "budget":
            verdict = "PASS" if late and worst >= 0.99 else "FAIL"
            print(f"{'':<10} B2 recovery: worst second from {healthy_again + 2}s: {worst:.1%} 2xx"
                  f"  {verdict}")
            if verdict == "FAIL":
                failures.append("B2")
        else:
            print(f"{'':<10} (no budget) worst second from {healthy_again + 2}s: {worst:.1%} 2xx")
    series = []
    colors = {"no-budget": "#d6604d", "budget": "#2166ac"}
    for name, samples in runs.items():
        r = rates(samples)
        series.append((f"{name}: upstream/s", colors[name], [(t, up) for t, up, _, _ in r]))
        series.append((f"{name}: gateway/s", colors[name] + "80", [(t, gw) for t, _, gw, _ in r]))
    shade = [(s, e, c, label) for (s, e, label, _), c in
             zip(PHASES, ["#ffffff", "#fdae61", "#d73027", "#ffffff"]) if label != "healthy"]
    svg = os.path.join(out, "retry-storm.svg")
    lib.svg_lines(svg, f"Retry storm: {args.rate} req/s, clients and gateway retry 3x",
                  series, "seconds", "requests per second", shade=shade,
                  hlines=[(capacity, "#555", "backend capacity")])
    with open(os.path.join(out, "retry-storm.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nplot: {svg}\nraw data: {out}")
    if failures:
        print("FAILED: " + ", ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
