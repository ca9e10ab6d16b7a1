"""Shared harness of the resilience proofs (bench/retry_storm.py, bench/breaker_drill.py,
bench/hedging.py): start `spillway backend` and `spillway run` on fixed loopback ports, drive
the backend's faults through its /control endpoint, sample counters once a second, and draw
small SVG line charts. Standard library only; every process is bounded in time and stopped on
exit (also on Ctrl-C).
"""

import atexit
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SPILLWAY_BIN", os.path.join(ROOT, "target", "release", "spillway"))

_started = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"error: {msg}")
    sys.exit(1)


def build():
    log("building spillway (release)")
    subprocess.run(["cargo", "build", "--release", "-p", "spillway"], cwd=ROOT, check=True)


def check_binary():
    if not os.access(BIN, os.X_OK):
        die(f"{BIN} not found: pass --build")


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def require_free(ports):
    """Stops the script when one of `ports` is taken (another benchmark running?)."""
    for port in ports:
        if not port_free(port):
            die(f"port {port} is in use")


def start_redis(port, settle=0.5):
    """Starts a throw-away redis-server on 127.0.0.1:`port` (no persistence), waits `settle`
    seconds for it to listen; stopped at exit."""
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _started.append(p)
    time.sleep(settle)
    return p


def redis_calls(port):
    """Redis calls so far per command (`INFO commandstats`; INFO itself excluded)."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"],
                         capture_output=True, text=True, check=True).stdout
    calls = {}
    for name, n in re.findall(r"cmdstat_([a-z|_]+):calls=(\d+)", out):
        if name != "info":
            calls[name] = int(n)
    return calls


def start(args, log_path):
    """Starts `spillway ARGS`, output to log_path; stopped at exit."""
    out = open(log_path, "wb")
    p = subprocess.Popen([BIN] + args, stdout=out, stderr=subprocess.STDOUT)
    _started.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in _started:
        _started.remove(p)


def stop_all():
    for p in list(_started):
        stop(p)


atexit.register(stop_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))


def http(method, url, body=None, timeout=2.0):
    """(status, body bytes) of one request; status 0 on a transport error."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def wait_status(url, want=200, within=15.0):
    deadline = time.time() + within
    while time.time() < deadline:
        if http("GET", url, timeout=1.0)[0] == want:
            return
        time.sleep(0.1)
    die(f"{url} did not answer {want} within {within}s")


def control(backend_port, **settings):
    status, body = http("POST", f"http://127.0.0.1:{backend_port}/control", settings)
    if status != 200:
        die(f"backend /control refused {settings}: {status} {body[:200]!r}")


def backend_stats(port):
    status, body = http("GET", f"http://127.0.0.1:{port}/stats")
    return json.loads(body) if status == 200 else None


def metric_sum(admin_port, name, match=None):
    """Sum of the samples of `name` on the gateway's /metrics whose labels contain every
    `key="value"` of `match`."""
    status, body = http("GET", f"http://127.0.0.1:{admin_port}/metrics")
    if status != 200:
        return None
    total = 0.0
    for line in body.decode().splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name):]
        if rest and rest[0] not in "{ ":
            continue
        labels, _, value = rest.rpartition(" ")
        if match and not all(f'{k}="{v}"' in labels for k, v in match.items()):
            continue
        try:
            total += float(value)
        except ValueError:
            pass
    return total


def svg_lines(path, title, series, x_label, y_label, shade=(), y_max=None, width=760,
              height=300, hlines=()):
    """A line chart: series is [(label, color, [(x, y), ...])]; shade is [(x0, x1, color,
    label)] bands; hlines is [(y, color, label)]."""
    left, right, top, bottom = 60, 170, 30, 40
    pw, ph = width - left - right, height - top - bottom
    xs = [x for _, _, pts in series for x, _ in pts] or [0, 1]
    ys = [y for _, _, pts in series for _, y in pts] + [y for y, _, _ in hlines] or [0, 1]
    x0, x1 = min(xs), max(xs)
    y1 = y_max if y_max is not None else max(ys) * 1.1 or 1
    x1 = x1 if x1 > x0 else x0 + 1

    def sx(x):
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return top + ph - min(y, y1) / y1 * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="13" font-weight="bold">{title}</text>']
    for a, b, color, label in shade:
        out.append(f'<rect x="{sx(a):.1f}" y="{top}" width="{sx(b) - sx(a):.1f}" height="{ph}" '
                   f'fill="{color}" opacity="0.15"/>')
        out.append(f'<text x="{sx(a) + 3:.1f}" y="{top + 12}" fill="#555">{label}</text>')
    for i in range(6):
        y = y1 * i / 5
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
                   f'stroke="#ddd"/>')
        out.append(f'<text x="{left - 5}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.4g}</text>')
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        out.append(f'<text x="{sx(x):.1f}" y="{top + ph + 15}" text-anchor="middle">{x:.4g}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 5}" text-anchor="middle">{x_label}</text>')
    out.append(f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" '
               f'text-anchor="middle">{y_label}</text>')
    for y, color, label in hlines:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
                   f'stroke="{color}" stroke-dasharray="5,4"/>')
        out.append(f'<text x="{left + 5}" y="{sy(y) - 4:.1f}" fill="{color}">{label}</text>')
    for i, (label, color, pts) in enumerate(series):
        if pts:
            d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        ly = top + 10 + i * 16
        out.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 30}" y1="{ly}" y2="{ly}" '
                   f'stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{left + pw + 35}" y="{ly + 4}">{label}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))
