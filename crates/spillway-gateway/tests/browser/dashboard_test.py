#!/usr/bin/env python3
"""The live dashboard (GET /dashboard) in a real headless Chromium, driven over WebDriver.

Starts a real `spillway backend` and a real `spillway run` gateway (admin token, a plan that
makes the `api` route answer with its fallback, a rate-limited route so that rejections show),
puts them under light load from a thread, opens /dashboard in Chromium and checks what a person
would: the page asks for the token because the stream answers 401; once given, the figures and
charts move with the traffic; the rejections chart names the reason; clicking "Activate" on the
plan changes what the gateway answers and what /admin/plans says, and "Deactivate" undoes it;
the page raised no script error. A screenshot is saved to target/test-artifacts/dashboard.png.

The WebDriver client is a few calls over the standard library's urllib to Debian's
`chromedriver` (package chromium-driver), which always matches Debian's `chromium`: nothing to
download at test time. Without chromium or chromedriver the test prints SKIPPED and exits 0
(scripts/test installs both first, so under CI a skip means the install failed).

Usage: dashboard_test.py [--bin target/debug/spillway] [--artifacts target/test-artifacts]
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

TOKEN = "dashboard-test-token"
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element reference key


class Failure(Exception):
    """A check that did not hold."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eventually(what, cond, within=10.0, every=0.1):
    """Polls `cond` until it returns a truthy value (returned), for at most `within` seconds."""
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(every)
    raise Failure(f"not within {within}s: {what} (last: {last!r})")


# ---- WebDriver, the few calls this test needs -----------------------------------------------


class WebDriver:
    def __init__(self, chromedriver, chromium, profile_dir):
        port = free_port()
        self.proc = subprocess.Popen(
            [chromedriver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{port}"
        self.session = None
        eventually("chromedriver answers", self._ready, within=15)
        options = {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--window-size=1400,2600",
                f"--user-data-dir={profile_dir}",
            ],
        }
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _ready(self):
        try:
            return self._call("GET", "/status").get("ready")
        except (OSError, Failure):
            return False

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read() or b"{}").get("value") or {}
        except urllib.error.HTTPError as e:
            raise Failure(f"WebDriver {method} {path}: {e.code} {e.read()[:500]!r}") from None

    def _s(self, path):
        return f"/session/{self.session}{path}"

    def open(self, url):
        self._call("POST", self._s("/url"), {"url": url})

    def js(self, script, *args):
        return self._call("POST", self._s("/execute/sync"), {"script": script, "args": list(args)})

    def find(self, css):
        found = self._call("POST", self._s("/element"), {"using": "css selector", "value": css})
        return found[ELEMENT_KEY]

    def click(self, css):
        self._call("POST", self._s(f"/element/{self.find(css)}/click"), {})

    def type(self, css, text):
        self._call("POST", self._s(f"/element/{self.find(css)}/value"), {"text": text})

    def screenshot(self, path):
        png = base64.b64decode(self._call("GET", self._s("/screenshot")))
        with open(path, "wb") as f:
            f.write(png)

    def quit(self):
        try:
            if self.session:
                self._call("DELETE", self._s(""))
        except (OSError, Failure):
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---- the gateway under test -------------------------------------------------------------------


def start_backend(binary):
    proc = subprocess.Popen(
        [binary, "backend", "--listen", "127.0.0.1:0", "--concurrency", "64",
         "--service-time", "2ms", "--duration", "120s"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise Failure(f"spillway backend did not start: {line!r}")
    return proc, line.removeprefix("listening on ")


CONFIG = """
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:{public}" }}]
admin: {{ address: "127.0.0.1:{admin}", token: {token} }}
clusters:
  - {{ name: app, endpoints: [{{ address: "{backend}" }}], timeouts: {{ request: 5s }} }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    cluster: app
    fallback: {{ status: 200, body: "from fallback" }}
  - name: search
    match: {{ path_prefix: /search }}
    cluster: app
    limits: [{{ key: route, algorithm: token_bucket, rate: 10/s, burst: 5 }}]
  - name: catalog
    cluster: app
plans:
  - name: drill
    actions: [{{ route: api, fallback: true }}]
"""


def http_get(port, path, token=None):
    """One request on a fresh connection: (status, headers dict, body text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


class Load(threading.Thread):
    """Light steady traffic on three routes (about 40 requests/s each) until stopped or 90 s."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.sent = 0
        self.fallbacks = 0  # /api answers marked x-spillway-degraded: fallback

    def run(self):
        conn = None
        deadline = time.monotonic() + 90
        while not self.stop.is_set() and time.monotonic() < deadline:
            for path in ("/api/items", "/search/q", "/catalog/1"):
                try:
                    conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    resp.read()
                    self.sent += 1
                    if path.startswith("/api") and resp.getheader("x-spillway-degraded") == "fallback":
                        self.fallbacks += 1
                except (OSError, http.client.HTTPException):
                    conn = None
            self.stop.wait(0.025)


def plan_active(admin_port, name):
    status, _, body = http_get(admin_port, "/admin/plans", TOKEN)
    if status != 200:
        raise Failure(f"/admin/plans answered {status}: {body}")
    return next(p["active"] for p in json.loads(body)["plans"] if p["name"] == name)


# ---- the test -----------------------------------------------------------------------------------

PAGE_STATE = """
const q = (s) => document.querySelector(s);
const data = (id, key) => { const c = q(`[data-chart="${id}"]`); return c ? c.dataset[key] : null; };
const path = q('[data-chart="requests"] path.series');
const legend = q('[data-chart="rejections-reason"] .legend');
const badge = q('#plans tr[data-key="drill"] .badge');
return {
  snapshots: Number(document.body.dataset.snapshots),
  errors: Number(document.body.dataset.errors),
  connection: q('#connection').dataset.state,
  tokenForm: !q('#token-form').hidden,
  rps: q('#total-rps').dataset.value,
  degraded: q('#total-degraded').dataset.value,
  rejected: q('#total-rejected').dataset.value,
  requestsPoints: Number(data('requests', 'points')),
  requestsSeries: Number(data('requests', 'series')),
  requestsPath: path ? path.getAttribute('d') : null,
  p99Series: Number(data('p99', 'series')),
  rejectionLegend: legend ? legend.textContent : '',
  routes: [...document.querySelectorAll('#routes tbody tr')].map((tr) => tr.dataset.key),
  plan: badge ? badge.textContent : null,
};
"""


# Known inputs for the page's own functions (window.spillwayDashboard): quantiles of a
# histogram, and rates between two snapshots 2 s apart, including a counter that went back.
MATHS = """
const d = window.spillwayDashboard;
const bounds = [0.001, 0.01, 0.1];
const snap = (ms, ok, err, back, rl, ov, buckets) => ({
  unix_ms: ms, cpu: 0, latency_bucket_bounds_s: bounds,
  routes: [
    { route: 'a', answers: { '2xx': ok, '3xx': 0, '4xx': 0, '5xx': err }, latency_buckets: buckets },
    { route: 'b', answers: { '2xx': back, '3xx': 0, '4xx': 0, '5xx': 0 }, latency_buckets: [0, 0, 0, 0] },
  ],
  policies: { routes: [{ route: 'a', rejections: [
    { reason: 'rate_limited', criticality: 'CRITICAL', count: rl },
    { reason: 'overloaded', criticality: 'SHEDDABLE', count: ov }] }] },
  clusters: [], failback: [],
});
const s = d.derive(snap(1000, 100, 10, 500, 4, 0, [5, 5, 5, 0]),
                   snap(3000, 190, 20, 100, 10, 2, [5, 5, 105, 0]));
const get = (metric, name) => { const m = s.m.get(metric); return m && m.has(name) ? m.get(name) : undefined; };
return {
  p50: d.quantile(0.5, bounds, [0, 10, 0, 0]),
  p99: d.quantile(0.99, bounds, [0, 10, 0, 0]),
  inf: d.quantile(0.5, bounds, [0, 0, 0, 3]),
  empty: d.quantile(0.5, bounds, [0, 0, 0, 0]),
  rps: get('rps', 'a'), eps: get('eps', 'a'), reset: get('rps', 'b'),
  rejected: Object.fromEntries(s.m.get('rej_reason')),
  p99route: get('p99', 'a'),
};
"""

def run(binary, artifacts, chromium, chromedriver):
    os.makedirs(artifacts, exist_ok=True)
    work = tempfile.mkdtemp(prefix="spillway-dashboard-")
    procs = []
    driver = None
    load = None
    try:
        backend, backend_addr = start_backend(binary)
        procs.append(backend)
        public, admin = free_port(), free_port()
        config = os.path.join(work, "gateway.yaml")
        with open(config, "w") as f:
            f.write(CONFIG.format(public=public, admin=admin, token=TOKEN, backend=backend_addr))
        log = open(os.path.join(artifacts, "dashboard-gateway.log"), "w")
        gateway = subprocess.Popen([binary, "run", "--no-watch", "-c", config],
                                   stdout=log, stderr=subprocess.STDOUT)
        procs.append(gateway)

        def ready():
            if gateway.poll() is not None:
                raise Failure(f"the gateway exited with {gateway.returncode} (see {log.name})")
            try:
                return http_get(admin, "/readyz")[0] == 200
            except OSError:
                return False

        eventually("the gateway is ready", ready, within=15)
        load = Load(public)
        load.start()

        driver = WebDriver(chromedriver, chromium, os.path.join(work, "profile"))

        def page_when(what, pred, within=10.0):
            """The page's state once `pred` holds for it."""
            return eventually(what, lambda: (lambda s: s if pred(s) else None)(driver.js(PAGE_STATE)),
                              within=within)
        driver.open(f"http://127.0.0.1:{admin}/dashboard")

        # 1. The stream answers 401 without the token: the page asks for it, and nothing else.
        s = page_when("the page asks for the token", lambda s: s["tokenForm"])
        check(s["connection"] == "locked", f"locked before the token: {s}")
        check(s["snapshots"] == 0, f"no data without the token: {s}")
        driver.type("#token-input", TOKEN)
        driver.click("#token-submit")

        # 2. Live data: figures and charts move with the traffic.
        s = page_when("three snapshots and traffic on the page",
                      lambda s: s["snapshots"] >= 3 and float(s["rps"] or 0) > 0)
        check(s["connection"] == "live" and not s["tokenForm"], f"live after the token: {s}")
        first = s
        later = page_when("two more snapshots", lambda s: s["snapshots"] >= first["snapshots"] + 2,
                          within=6)
        check(later["requestsPoints"] > first["requestsPoints"],
              f"the requests chart gained points: {first['requestsPoints']} -> {later['requestsPoints']}")
        check(later["requestsPath"] != first["requestsPath"], "the requests chart was redrawn")
        check(later["requestsSeries"] >= 4, f"total + three routes drawn: {later['requestsSeries']}")
        check(later["p99Series"] >= 3, f"p99 per route drawn: {later['p99Series']}")
        check(float(later["rejected"] or 0) > 0, f"the rate limit's refusals show: {later}")
        check("rate_limited" in later["rejectionLegend"], f"by reason: {later['rejectionLegend']!r}")
        check(sorted(later["routes"]) == ["api", "catalog", "search"], f"routes table: {later['routes']}")
        # A burst of 150 extra requests on top of the steady load must show in the figure (at
        # least 75 of them fall in one second, wherever the snapshot ticks cut it).
        steady = float(later["rps"])
        burst = http.client.HTTPConnection("127.0.0.1", public, timeout=5)
        for _ in range(150):
            burst.request("GET", "/catalog/burst")
            burst.getresponse().read()
        burst.close()
        peak = page_when("the burst in the requests/s figure",
                         lambda s: float(s["rps"] or 0) >= steady + 60, within=5)
        check(peak["requestsPath"] != later["requestsPath"], "the requests chart shows the burst")
        print(f"  live: {peak['snapshots']} snapshots, requests/s {steady:.0f} steady, "
              f"{float(peak['rps']):.0f} with the burst; chart points "
              f"{first['requestsPoints']} -> {peak['requestsPoints']}")

        # The arithmetic behind the figures, on known numbers.
        maths = driver.js(MATHS)
        check(abs(maths["p50"] - 0.0055) < 1e-12 and abs(maths["p99"] - 0.00991) < 1e-12,
              f"quantiles interpolate inside the bucket: {maths}")
        check(maths["inf"] == 0.1 and maths["empty"] is None, f"quantile edges: {maths}")
        check(maths["rps"] == 50 and maths["eps"] == 5 and maths["reset"] is None, f"rates: {maths}")
        check(maths["rejected"] == {"rate_limited": 3, "overloaded": 1}, f"rejections: {maths}")
        check(abs(maths["p99route"] - 99.1) < 1e-9, f"p99 from the histogram's deltas, in ms: {maths}")

        # 3. The plan's button switches the gateway's behaviour.
        check(s["plan"] == "off" and not plan_active(admin, "drill"), "the plan starts off")
        check(http_get(public, "/api/x")[2] != "from fallback", "the backend answers /api")
        before = load.fallbacks
        driver.click('button[data-plan="drill"][data-action="activate"]')
        eventually("/admin/plans shows the plan active", lambda: plan_active(admin, "drill"), within=5)
        status, headers, body = http_get(public, "/api/x")
        check(status == 200 and body == "from fallback" and headers.get("x-spillway-degraded") == "fallback",
              f"/api answers from the fallback: {status} {headers} {body!r}")
        eventually("the load sees fallback answers", lambda: load.fallbacks > before + 10, within=5)
        s = page_when("the page shows the plan active and the fallbacks",
                      lambda s: s["plan"] == "active" and float(s["degraded"] or 0) > 0, within=6)
        driver.screenshot(os.path.join(artifacts, "dashboard.png"))
        print(f"  plan on: {load.fallbacks - before} fallback answers seen, page fallbacks/s {s['degraded']}")

        driver.click('button[data-plan="drill"][data-action="deactivate"]')
        eventually("/admin/plans shows the plan off", lambda: not plan_active(admin, "drill"), within=5)
        status, headers, body = http_get(public, "/api/x")
        check(status == 200 and body != "from fallback" and "x-spillway-degraded" not in headers,
              f"/api is proxied again: {status} {body!r}")
        s = page_when("the page shows the plan off", lambda s: s["plan"] == "off", within=6)
        check(s["errors"] == 0, f"no script error on the page: {s['errors']}")
        print(f"  plan off: /api proxied again; {load.sent} requests sent; screenshot "
              f"{os.path.join(artifacts, 'dashboard.png')}")
    except Exception:
        if driver:
            try:
                driver.screenshot(os.path.join(artifacts, "dashboard-failure.png"))
                print("  page state:", json.dumps(driver.js(PAGE_STATE))[:2000], file=sys.stderr)
            except Exception as e:  # noqa: BLE001 - best effort while reporting a failure
                print(f"  (no page state: {e})", file=sys.stderr)
        raise
    finally:
        if load:
            load.stop.set()
            load.join(timeout=10)
        if driver:
            driver.quit()
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)


def check(cond, what):
    if not cond:
        raise Failure(what)


def main():
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default=os.path.join(root, "target", "debug", "spillway"))
    parser.add_argument("--artifacts", default=os.path.join(root, "target", "test-artifacts"))
    args = parser.parse_args()
    chromium = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        print(f"dashboard browser test: SKIPPED, no {'chromium' if not chromium else 'chromedriver'} "
              "(Debian packages chromium and chromium-driver)")
        return 0
    if not os.access(args.bin, os.X_OK):
        print(f"dashboard browser test: {args.bin} is not built (cargo build -p spillway)", file=sys.stderr)
        return 1
    started = time.monotonic()
    print(f"dashboard browser test: {chromium} via {chromedriver}")
    try:
        run(args.bin, args.artifacts, chromium, chromedriver)
    except Exception as e:  # noqa: BLE001 - any error fails the test with its message
        print(f"dashboard browser test FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        print("dashboard browser test: 0 passed, 1 failed")
        return 1
    print(f"dashboard browser test: 1 passed, 0 failed ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
