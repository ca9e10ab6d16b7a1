#!/usr/bin/env python3
"""Report of bench/overload.sh: one table per run and the four criteria of issue 10.

Reads DIR/meta.json (the measured capacity), and for each run NAME found
(unprotected, protected) DIR/unloaded-NAME.json and DIR/ramp-NAME.json, as written by
`spillway load --json`. Prints, per ramp step: offered load (x capacity), goodput / capacity,
the p99 of the 2xx against the unloaded p99, the served fraction of each class, and PASS/FAIL
for each criterion:

  C1 strict order   a class loses requests (served < LOSS) only when every lower class is
                    almost wholly shed (served <= SHED);
  C2 protected      CRITICAL_PLUS and CRITICAL served >= 99 % at every step where the class's
                    offered load, with every higher class's, fits in capacity (n/a elsewhere);
  C3 goodput        2xx/s >= 95 % of capacity (of the offered load, below capacity);
  C4 latency        p99 of the 2xx <= 2x the unloaded p99.

The JSON has the 2xx latency per class only (min, p50, p90, p99, p99.9, max), so the p99 of all
2xx is computed from them: each class's distribution is interpolated linearly between those
quantiles and the classes are mixed in proportion to their 2xx counts. (The largest class p99
would be an upper bound, but a class with a handful of 2xx makes it the handful's maximum.) Writes DIR/overload-NAME.svg: served fraction per class and goodput
against offered load, and p99 of the 2xx (log scale) against the 2x line. Standard library
only. Exit status 0 even when a criterion fails: this is a report.

Usage: bench/overload_report.py DIR [--svg-dir DIR2]
"""

import argparse
import json
import math
import os
import sys

ORDER = ["CRITICAL_PLUS", "CRITICAL", "SHEDDABLE_PLUS", "SHEDDABLE"]  # highest first
SHORT = {"CRITICAL_PLUS": "C+", "CRITICAL": "CRIT", "SHEDDABLE_PLUS": "S+", "SHEDDABLE": "SHED"}
COLOR = {"CRITICAL_PLUS": "#1b7837", "CRITICAL": "#2166ac", "SHEDDABLE_PLUS": "#984ea3",
         "SHEDDABLE": "#d6604d"}
PROTECTED_SERVED = 0.99  # C2
LOSS = 0.99  # C1: a class "loses requests" below this served fraction
SHED = 0.05  # C1: a class is "almost wholly shed" at or below this served fraction
GOODPUT = 0.95  # C3
LATENCY = 2.0  # C4


def load(path):
    with open(path) as f:
        return json.load(f)


def rank(cls):
    return ORDER.index(cls) if cls in ORDER else len(ORDER)


def p99_of_2xx(classes, q=0.99):
    """The q-quantile of the 2xx of all `classes` together (see the module docs)."""
    curves = []
    for c in classes:
        if c["ok"] <= 0:
            continue
        lat = c["latency_ms"]
        knots, last = [], 0.0
        for value, frac in ((lat["min"], 0.0), (lat["p50"], 0.5), (lat["p90"], 0.9),
                            (lat["p99"], 0.99), (lat["p999"], 0.999), (lat["max"], 1.0)):
            last = max(last, value)
            knots.append((last, frac))
        curves.append((c["ok"], knots))
    if not curves:
        return None
    total = sum(n for n, _ in curves)

    def cdf(v):
        acc = 0.0
        for n, knots in curves:
            if v >= knots[-1][0]:
                frac = 1.0
            elif v < knots[0][0]:
                frac = 0.0
            else:
                frac = 0.0
                for (v0, f0), (v1, f1) in zip(knots, knots[1:]):
                    if v0 <= v < v1:
                        frac = f0 + (f1 - f0) * (v - v0) / (v1 - v0)
                        break
                    if v >= v1:
                        frac = f1
            acc += n * frac
        return acc / total

    lo = min(k[0][0] for _, k in curves)
    hi = max(k[-1][0] for _, k in curves)
    for _ in range(60):
        mid = (lo + hi) / 2
        if cdf(mid) >= q:
            hi = mid
        else:
            lo = mid
    return hi


def unloaded_p99(report):
    """The p99 of the 2xx of the unloaded run."""
    return p99_of_2xx(report["overall"]["classes"])


def analyse(name, ramp, unloaded, capacity):
    base = unloaded_p99(unloaded)
    rows = []
    for step in ramp["steps"]:
        classes = sorted(step["classes"], key=lambda c: rank(c["class"]))
        offered = step["target_rate"] or step["achieved_rate"]
        ok = sum(c["ok"] for c in classes)
        goodput = ok / step["duration_s"]
        p99 = p99_of_2xx(classes)
        served = {c["class"]: c["served_fraction"] for c in classes}

        # C1: for every class that loses requests, every lower class must be almost wholly shed.
        c1_bad = [f"{SHORT.get(lo['class'], lo['class'])} {lo['served_fraction']:.0%} while "
                  f"{SHORT.get(hi['class'], hi['class'])} {hi['served_fraction']:.1%}"
                  for i, hi in enumerate(classes) if hi["sent"] and hi["served_fraction"] < LOSS
                  for lo in classes[i + 1:] if lo["sent"] and lo["served_fraction"] > SHED]
        # C2: classes above SHEDDABLE whose cumulative offered load fits in capacity.
        c2 = []
        cumulative = 0.0
        for c in classes:
            cumulative += c["offered_rate"] or 0.0
            if rank(c["class"]) >= ORDER.index("SHEDDABLE_PLUS"):
                continue
            if cumulative <= capacity * (1 + 1e-9):
                c2.append((c["class"], c["served_fraction"] >= PROTECTED_SERVED,
                           cumulative / capacity))
        c3_goal = GOODPUT * min(offered, capacity)
        rows.append({
            "step": step["step"],
            "x": offered / capacity,
            "offered": offered,
            "goodput": goodput,
            "goodput_x": goodput / capacity,
            "p99": p99,
            "p99_x": p99 / base if p99 is not None else None,
            "served": served,
            "behind": step["behind"],
            "missed": step["missed"],
            "timeouts": sum(c["timeouts"] for c in classes),
            "rejected": sum(c["rejected"]["429"] + c["rejected"]["503"] + c["rejected"]["504"]
                            for c in classes),
            # Nothing served at all: there is no order to judge.
            "c1": None if ok == 0 else not c1_bad,
            "c1_why": c1_bad,
            "c2": None if not c2 else all(good for _, good, _ in c2),
            "c2_detail": c2,
            "c3": goodput >= c3_goal,
            "c4": p99 is not None and p99 <= LATENCY * base,
        })
    return base, rows


def verdict(v):
    return "n/a" if v is None else ("PASS" if v else "FAIL")


def print_run(name, capacity, base, rows, classes, run):
    about = (f"{run.get('config', '?')}, {run.get('connections', '?')} connections, "
             f"started {run.get('started', '?')}; ") if run else ""
    print(f"\n== {name}: {about}capacity {capacity:.0f} req/s, unloaded p99 of 2xx "
          f"{base:.2f} ms (C4 bound {LATENCY * base:.1f} ms)")
    head = (f"{'step':>4} {'offered':>8} {'req/s':>7} {'goodput':>8} {'p99 2xx':>9} {'/unl':>5} "
            + " ".join(f"{SHORT.get(c, c):>6}" for c in classes)
            + f" {'t/o':>6} {'refused':>7} {'behind':>6} {'missed':>6}  C1   C2   C3   C4")
    print(head)
    for r in rows:
        p99 = "-" if r["p99"] is None else f"{r['p99']:.1f}ms"
        p99x = "-" if r["p99_x"] is None else f"{r['p99_x']:.2f}"
        served = " ".join(f"{r['served'].get(c, 0):>6.1%}" for c in classes)
        print(f"{r['step']:>4} {r['x']:>7.1f}x {r['offered']:>7.0f} {r['goodput_x']:>7.1%} "
              f"{p99:>9} {p99x:>5} {served} {r['timeouts']:>6} {r['rejected']:>7} "
              f"{r['behind']:>6} {r['missed']:>6}  {verdict(r['c1']):<4} {verdict(r['c2']):<4} "
              f"{verdict(r['c3']):<4} {verdict(r['c4']):<4}")
    for r in rows:
        for why in r["c1_why"]:
            print(f"  step {r['step']} ({r['x']:.1f}x) C1: {why}")
        for cls, good, cum in r["c2_detail"]:
            if not good:
                print(f"  step {r['step']} ({r['x']:.1f}x) C2: {cls} served "
                      f"{r['served'][cls]:.1%} with {cum:.2f}x capacity offered by it and above")
    summary = []
    all_pass = True
    for key, label in (("c1", "C1 order"), ("c2", "C2 protected"), ("c3", "C3 goodput"),
                       ("c4", "C4 p99")):
        checked = [r for r in rows if r[key] is not None]
        passed = sum(1 for r in checked if r[key])
        all_pass &= passed == len(checked)
        summary.append(f"{label} {passed}/{len(checked)}")
    print(f"SUMMARY {name}: {'ALL PASS' if all_pass else 'FAIL'} -- " + ", ".join(summary)
          + " steps pass")
    return all_pass


def svg(name, capacity, base, rows, classes, path):
    """Two panels: served fraction per class and goodput/capacity; p99 of the 2xx (log)."""
    w, h = 640, 470
    left, right = 58, 150
    top1, bot1 = 34, 234
    top2, bot2 = 280, 430
    xmax = max(10.0, math.ceil(max(r["x"] for r in rows)))
    pw = w - left - right

    def px(x):
        return left + pw * x / xmax

    def py1(y):
        return bot1 - (bot1 - top1) * min(max(y, 0.0), 1.05) / 1.05

    lo, hi = math.log10(10), math.log10(2000)

    def py2(ms):
        v = min(max(math.log10(max(ms, 1e-3)), lo), hi)
        return bot2 - (bot2 - top2) * (v - lo) / (hi - lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="13" font-weight="bold">Overload, {name}: '
           f'capacity {capacity:.0f} req/s, 50 % SHEDDABLE / 40 % CRITICAL / 10 % '
           f'CRITICAL_PLUS</text>']
    # Axes and grids.
    for top, bot in ((top1, bot1), (top2, bot2)):
        out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{bot - top}" '
                   f'fill="none" stroke="#888"/>')
        for x in range(0, int(xmax) + 1):
            out.append(f'<line x1="{px(x):.1f}" y1="{top}" x2="{px(x):.1f}" y2="{bot}" '
                       f'stroke="#eee"/>')
            out.append(f'<text x="{px(x):.1f}" y="{bot + 13}" text-anchor="middle">{x}x</text>')
    for y in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<line x1="{left}" y1="{py1(y):.1f}" x2="{left + pw}" y2="{py1(y):.1f}" '
                   f'stroke="#eee"/>')
        out.append(f'<text x="{left - 4}" y="{py1(y) + 4:.1f}" text-anchor="end">{y:.0%}</text>')
    out.append(f'<line x1="{left}" y1="{py1(GOODPUT):.1f}" x2="{left + pw}" '
               f'y2="{py1(GOODPUT):.1f}" stroke="#000" stroke-dasharray="3,3"/>')
    out.append(f'<text x="{left}" y="{top1 - 5}">served fraction per class; goodput / capacity '
               f'(dashed: 95 %)</text>')
    for ms in (10, 20, 50, 100, 200, 500, 1000, 2000):
        out.append(f'<line x1="{left}" y1="{py2(ms):.1f}" x2="{left + pw}" y2="{py2(ms):.1f}" '
                   f'stroke="#eee"/>')
        out.append(f'<text x="{left - 4}" y="{py2(ms) + 4:.1f}" text-anchor="end">{ms}ms</text>')
    out.append(f'<line x1="{left}" y1="{py2(LATENCY * base):.1f}" x2="{left + pw}" '
               f'y2="{py2(LATENCY * base):.1f}" stroke="#000" stroke-dasharray="3,3"/>')
    out.append(f'<text x="{left}" y="{top2 - 5}">p99 of the 2xx (log; dashed: 2x '
               f'unloaded p99 = {LATENCY * base:.0f} ms)</text>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 8}" text-anchor="middle">offered load '
               f'(x capacity)</text>')

    def line(points, color, width, dash=""):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        d = f' stroke-dasharray="{dash}"' if dash else ""
        return (f'<polyline points="{pts}" fill="none" stroke="{color}" '
                f'stroke-width="{width}"{d}/>')

    series = [(c, COLOR.get(c, "#666"), 1.8,
               [(px(r["x"]), py1(r["served"].get(c, 0))) for r in rows]) for c in classes]
    series.append(("goodput", "#000", 2.6, [(px(r["x"]), py1(r["goodput_x"])) for r in rows]))
    for label, color, width, pts in series:
        out.append(line(pts, color, width))
        out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{color}"/>' for x, y in pts)
    p99 = [(px(r["x"]), py2(r["p99"])) for r in rows if r["p99"] is not None]
    out.append(line(p99, "#000", 2))
    out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#000"/>' for x, y in p99)
    # Legend.
    lx = left + pw + 12
    for i, (label, color, width, _) in enumerate(series):
        y = top1 + 14 + 18 * i
        out.append(f'<line x1="{lx}" y1="{y - 4}" x2="{lx + 18}" y2="{y - 4}" stroke="{color}" '
                   f'stroke-width="{width}"/>')
        out.append(f'<text x="{lx + 23}" y="{y}">{label}</text>')
    out.append(f'<line x1="{lx}" y1="{top2 + 10}" x2="{lx + 18}" y2="{top2 + 10}" '
               f'stroke="#000" stroke-width="2"/>')
    out.append(f'<text x="{lx + 23}" y="{top2 + 14}">p99 of 2xx</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--svg-dir", help="where to write overload-NAME.svg (default: DIR)")
    args = ap.parse_args()
    meta = load(os.path.join(args.dir, "meta.json"))
    capacity = float(meta["capacity"])
    print(f"Overload proof: backend {meta['slots']} slots x {meta['service_ms']} ms "
          f"({meta['nominal_capacity']} req/s nominal, {capacity:.0f} measured), ramp "
          f"{meta['ramp']} x capacity, {meta['step_secs']} s per step, client timeout "
          f"{meta['timeout_s']} s")
    print(f"Criteria: C1 a class below {LOSS:.0%} served only when every lower class is at most "
          f"{SHED:.0%} served; C2 CRITICAL_PLUS/CRITICAL >= {PROTECTED_SERVED:.0%} where they "
          f"fit; C3 goodput >= {GOODPUT:.0%} of min(offered, capacity); C4 p99 of 2xx <= "
          f"{LATENCY:g}x unloaded p99")
    verdicts = {}
    for name in ("unprotected", "protected"):
        ramp_path = os.path.join(args.dir, f"ramp-{name}.json")
        unloaded_path = os.path.join(args.dir, f"unloaded-{name}.json")
        if not (os.path.exists(ramp_path) and os.path.exists(unloaded_path)):
            continue
        ramp, unloaded = load(ramp_path), load(unloaded_path)
        base, rows = analyse(name, ramp, unloaded, capacity)
        present = {c["class"] for s in ramp["steps"] for c in s["classes"]}
        classes = [c for c in ORDER if c in present]
        run_path = os.path.join(args.dir, f"run-{name}.json")
        run = load(run_path) if os.path.exists(run_path) else None
        verdicts[name] = print_run(name, capacity, base, rows, classes, run)
        svg_path = os.path.join(args.svg_dir or args.dir, f"overload-{name}.svg")
        svg(name, capacity, base, rows, classes, svg_path)
        print(f"plot: {svg_path}")
    if not verdicts:
        print(f"no ramp-*.json / unloaded-*.json in {args.dir}", file=sys.stderr)
        return 0
    print("\nOVERALL: " + ", ".join(f"{n} {'ALL PASS' if v else 'FAIL'}"
                                    for n, v in verdicts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
