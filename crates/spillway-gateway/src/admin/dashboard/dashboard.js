// Spillway's live dashboard (GET /dashboard/dashboard.js, embedded in the binary).
//
// Reads GET /admin/stream — server-sent events, one JSON snapshot of counters a second — with
// fetch() and a ReadableStream, because EventSource cannot send the Authorization header the
// admin API asks for. Rates and latency quantiles come from the differences between two
// consecutive snapshots, so a missed event loses nothing; the last five minutes are kept and
// drawn as hand-made SVG charts (one path per series, nodes reused), and the tables below them
// are updated in place. Plans are switched with POST /admin/plans/{name}/activate|deactivate.
// The token is asked for only when the stream answers 401 and kept in sessionStorage (this
// tab only). Every DOM write happens in one animation frame per snapshot, and nothing reads
// layout, so 50 routes cost no re-layout storm.
'use strict';

(() => {
  const WINDOW_MS = 5 * 60 * 1000;
  const MIN_SPAN_MS = 60 * 1000; // a young page's charts span at least this, then grow to WINDOW_MS
  const MAX_SAMPLES = 360; // 5 minutes at one a second, with room for late events
  const TOP_N = 6; // series per chart besides the total: the busiest ones
  const SCORE_SAMPLES = 30; // how far back "busiest" looks
  const STALL_MS = 5000; // no snapshot for this long: reconnect
  const RETRY_MS = 2000;
  const TOKEN_KEY = 'spillway.adminToken';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const CHART_W = 600;
  const CHART_H = 150;
  const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777',
    '#65a30d', '#475569', '#ea580c', '#0d9488', '#9333ea'];
  const TOTAL = ''; // the name of a metric's total series
  const SEP = '\u0001';

  const $ = (id) => document.getElementById(id);

  // ---- numbers ---------------------------------------------------------------------------

  function fmt(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '–';
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k';
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a === 0) return '0';
    return v.toFixed(2);
  }

  // The q-quantile of a histogram given per-bucket counts (not cumulative) and the buckets'
  // upper bounds (the last count is the +Inf bucket), interpolating linearly inside a bucket
  // as Prometheus' histogram_quantile does. null when the histogram is empty.
  function quantile(q, bounds, counts) {
    let total = 0;
    for (const c of counts) total += c;
    if (total <= 0) return null;
    const rank = q * total;
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      const before = seen;
      seen += counts[i];
      if (seen >= rank && counts[i] > 0) {
        if (i >= bounds.length) return bounds[bounds.length - 1];
        const lower = i === 0 ? 0 : bounds[i - 1];
        return lower + (bounds[i] - lower) * ((rank - before) / counts[i]);
      }
    }
    return bounds[bounds.length - 1];
  }

  // A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten, at least `v`.
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // ---- samples: what one snapshot means compared with the one before ------------------------

  // A sample: { t, m } where m maps a metric to a Map(name -> value); TOTAL names the total.
  function put(m, metric, name, value) {
    let series = m.get(metric);
    if (!series) m.set(metric, (series = new Map()));
    series.set(name, value);
  }

  function add(m, metric, name, value) {
    if (value === null || !Number.isFinite(value)) return;
    const series = m.get(metric);
    const old = series && series.get(name);
    put(m, metric, name, (old || 0) + value);
  }

  const sumAnswers = (a) => (a['2xx'] || 0) + (a['3xx'] || 0) + (a['4xx'] || 0) + (a['5xx'] || 0);

  // counts of rejections by "route␁reason␁criticality"
  function rejectionCounts(snap) {
    const out = new Map();
    for (const r of (snap.policies && snap.policies.routes) || []) {
      for (const x of r.rejections || []) {
        out.set(r.route + SEP + x.reason + SEP + x.criticality, x.count);
      }
    }
    return out;
  }

  // A counter's rate between two snapshots; null when it went backwards (a reset) or is new.
  function rate(now, before, dt) {
    if (before === undefined || before === null || now < before) return null;
    return (now - before) / dt;
  }

  function derive(prev, cur) {
    const m = new Map();
    const sample = { t: cur.unix_ms, m };
    const bbrs = [];
    for (const l of (cur.policies && cur.policies.listeners) || []) {
      if (l.bbr) bbrs.push(['listener ' + l.listener, l.bbr]);
    }
    for (const r of (cur.policies && cur.policies.routes) || []) {
      if (r.bbr) bbrs.push(['route ' + r.route, r.bbr]);
    }
    // Gauges need no previous snapshot.
    put(m, 'cpu', 'gateway', 100 * (cur.cpu || 0));
    for (const [name, b] of bbrs) {
      put(m, 'cpu', name, 100 * b.cpu);
      put(m, 'bbr_in', name, b.in_flight);
      put(m, 'bbr_max', name, b.max_in_flight);
    }
    for (const c of (cur.policies && cur.policies.clusters) || []) {
      if (c.concurrency) {
        put(m, 'conc_limit', c.cluster, c.concurrency.limit);
        put(m, 'conc_in', c.cluster, c.concurrency.in_flight);
      }
      if (c.breaker) put(m, 'drop', c.cluster, c.breaker.drop_probability);
    }
    for (const l of (cur.policies && cur.policies.levels) || []) {
      put(m, 'level_in', l.name, l.in_use);
      put(m, 'level_queued', l.name, l.queued);
    }
    for (const f of cur.failback || []) put(m, 'failback', f.route, f.depth);
    for (const c of cur.clusters || []) {
      let up = 0;
      for (const e of c.endpoints || []) if (e.healthy && e.ejected_for_ms == null) up += 1;
      put(m, 'healthy', c.name, up);
    }
    if (!prev) return sample;
    const dt = (cur.unix_ms - prev.unix_ms) / 1000;
    if (!(dt > 0.2)) return null;
    // Routes: answers, 5xx, fallbacks, latency quantiles from the histogram deltas.
    const before = new Map((prev.routes || []).map((r) => [r.route, r]));
    const bounds = cur.latency_bucket_bounds_s || [];
    for (const name of ['rps', 'eps', 'degraded', 'rejected']) put(m, name, TOTAL, 0);
    for (const r of cur.routes || []) {
      const p = before.get(r.route);
      if (!p) continue;
      const rps = rate(sumAnswers(r.answers), sumAnswers(p.answers), dt);
      put(m, 'rps', r.route, rps);
      add(m, 'rps', TOTAL, rps);
      const eps = rate(r.answers['5xx'] || 0, p.answers['5xx'] || 0, dt);
      put(m, 'eps', r.route, eps);
      add(m, 'eps', TOTAL, eps);
      const d = r.degraded || {};
      const pd = p.degraded || {};
      const deg = rate((d.fallback || 0) + (d.stale || 0), (pd.fallback || 0) + (pd.stale || 0), dt);
      put(m, 'degraded', r.route, deg);
      add(m, 'degraded', TOTAL, deg);
      const nb = r.latency_buckets || [];
      const pb = p.latency_buckets || [];
      if (nb.length === pb.length && nb.length > 0) {
        const delta = nb.map((c, i) => c - pb[i]);
        if (delta.every((c) => c >= 0)) {
          const p50 = quantile(0.5, bounds, delta);
          const p99 = quantile(0.99, bounds, delta);
          put(m, 'p50', r.route, p50 === null ? null : 1000 * p50);
          put(m, 'p99', r.route, p99 === null ? null : 1000 * p99);
        }
      }
    }
    // Rejections by reason, criticality and route.
    const was = rejectionCounts(prev);
    for (const [key, count] of rejectionCounts(cur)) {
      const r = rate(count, was.has(key) ? was.get(key) : 0, dt);
      if (r === null) continue;
      const [route, reason, criticality] = key.split(SEP);
      add(m, 'rej_reason', reason, r);
      add(m, 'rej_class', criticality, r);
      add(m, 'rejected', route, r);
      add(m, 'rejected', TOTAL, r);
    }
    // Endpoints.
    const eps = new Map();
    for (const c of prev.clusters || []) {
      for (const e of c.endpoints || []) eps.set(c.name + SEP + e.address, e);
    }
    for (const c of cur.clusters || []) {
      for (const e of c.endpoints || []) {
        const p = eps.get(c.name + SEP + e.address);
        if (!p) continue;
        const key = c.name + SEP + e.address;
        put(m, 'ep_rps', key, rate(e.requests, p.requests, dt));
        put(m, 'ep_5xx', key, rate(e.server_errors, p.server_errors, dt));
        put(m, 'ep_fail', key, rate(e.failures, p.failures, dt));
      }
    }
    return sample;
  }

  // ---- charts --------------------------------------------------------------------------------

  function svg(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    return el;
  }

  function div(cls, text) {
    const el = document.createElement('div');
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  // One chart: a title, an SVG with one path per series (reused), its legend (reused).
  class Chart {
    constructor(parent, spec) {
      this.spec = spec;
      this.el = div('chart');
      this.el.dataset.chart = spec.id;
      this.el.dataset.points = '0';
      this.el.dataset.series = '0';
      const head = div('chart-head');
      const title = document.createElement('h3');
      title.textContent = spec.title;
      head.appendChild(title);
      this.el.appendChild(head);
      const plot = div('plot');
      this.yMax = div('ymax', '');
      this.yMid = div('ymid', '');
      this.svg = svg('svg', {
        viewBox: `0 0 ${CHART_W} ${CHART_H}`, preserveAspectRatio: 'none', role: 'img',
        'aria-label': spec.title,
      });
      for (const f of [0.25, 0.5, 0.75]) {
        this.svg.appendChild(svg('line', {
          x1: 0, x2: CHART_W, y1: CHART_H * f, y2: CHART_H * f, class: 'gridline',
          'vector-effect': 'non-scaling-stroke',
        }));
      }
      this.paths = [];
      this.empty = div('empty', spec.empty || 'nothing to show yet');
      this.xLeft = div('xleft', '');
      plot.append(this.svg, this.yMax, this.yMid, this.empty, this.xLeft, div('xright', 'now'));
      this.el.appendChild(plot);
      this.legend = div('legend');
      this.el.appendChild(this.legend);
      this.items = [];
      parent.appendChild(this.el);
    }

    // series: [{ label, metric, name, color, dashed }], values read from `samples`; the x axis
    // spans `span` ms up to tEnd.
    draw(series, tEnd, span) {
      const tStart = tEnd - span;
      const from = firstSampleAt(tStart);
      const value = (sample, s) => {
        const m = sample.m.get(s.metric);
        const v = m ? m.get(s.name) : undefined;
        return v === undefined || v === null || !Number.isFinite(v) ? null : v;
      };
      let top = 0;
      for (const s of series) {
        for (let k = from; k < samples.length; k++) {
          const v = value(samples[k], s);
          if (v !== null && v > top) top = v;
        }
      }
      const yTop = this.spec.max || niceCeil(top * 1.05);
      let points = 0;
      series.forEach((s, i) => {
        let path = this.paths[i];
        if (!path) {
          path = svg('path', { fill: 'none', 'vector-effect': 'non-scaling-stroke', class: 'series' });
          this.svg.appendChild(path);
          this.paths.push(path);
        }
        let d = '';
        let pen = false;
        let n = 0;
        for (let k = from; k < samples.length; k++) {
          const v = value(samples[k], s);
          if (v === null) {
            pen = false;
            continue;
          }
          const x = ((samples[k].t - tStart) / span) * CHART_W;
          const y = CHART_H - (Math.min(v, yTop) / yTop) * CHART_H;
          d += (pen ? 'L' : 'M') + x.toFixed(1) + ' ' + y.toFixed(1);
          pen = true;
          n += 1;
        }
        if (i === 0) points = n;
        if (path.getAttribute('d') !== d) path.setAttribute('d', d || 'M0 0');
        path.setAttribute('stroke', s.color);
        path.setAttribute('stroke-dasharray', s.dashed ? '4 3' : 'none');
        path.setAttribute('display', d ? 'inline' : 'none');
        let item = this.items[i];
        if (!item) {
          item = div('item');
          item.swatch = document.createElement('i');
          item.label = document.createElement('span');
          item.value = document.createElement('b');
          item.append(item.swatch, item.label, item.value);
          this.legend.appendChild(item);
          this.items.push(item);
        }
        item.swatch.style.background = s.color;
        item.swatch.className = s.dashed ? 'dashed' : '';
        setText(item.label, s.label);
        const last = samples.length ? value(samples[samples.length - 1], s) : null;
        setText(item.value, fmt(last) + (this.spec.unit || ''));
        item.hidden = false;
      });
      for (let i = series.length; i < this.paths.length; i++) {
        this.paths[i].setAttribute('display', 'none');
        this.items[i].hidden = true;
      }
      this.empty.hidden = series.length > 0;
      setText(this.xLeft, span >= 120000 ? `−${Math.round(span / 60000)} min` : `−${Math.round(span / 1000)} s`);
      setText(this.yMax, fmt(yTop) + (this.spec.unit || ''));
      setText(this.yMid, fmt(yTop / 2));
      this.el.dataset.points = String(points);
      this.el.dataset.series = String(series.length);
      this.el.dataset.ymax = String(yTop);
    }
  }

  // Which charts, from which metrics. `metrics`: [metric, label suffix]; the busiest `names`
  // (default TOP_N, by their sum over the last SCORE_SAMPLES samples) are drawn, the total
  // first. `busyOnly`: names whose values were all 0 lately are left out.
  const CHARTS = [
    { id: 'requests', title: 'Requests/s', metrics: [['rps', '']] },
    { id: 'errors', title: '5xx answers/s', metrics: [['eps', '']], busyOnly: true },
    { id: 'rejections-reason', title: 'Rejections/s by reason', metrics: [['rej_reason', '']], empty: 'no rejections' },
    { id: 'rejections-class', title: 'Rejections/s by criticality', metrics: [['rej_class', '']], empty: 'no rejections' },
    { id: 'p50', title: 'p50 latency per route', unit: ' ms', metrics: [['p50', '']], rankBy: 'rps' },
    { id: 'p99', title: 'p99 latency per route', unit: ' ms', metrics: [['p99', '']], rankBy: 'rps' },
    { id: 'degraded', title: 'Fallback and stale answers/s', metrics: [['degraded', '']], busyOnly: true, empty: 'no degraded answers' },
    { id: 'cpu', title: 'CPU: gateway and BBR (%)', unit: ' %', metrics: [['cpu', '']], max: 100 },
    { id: 'bbr', title: 'BBR in flight / max in flight (dashed)', metrics: [['bbr_in', ' in flight'], ['bbr_max', ' max']], names: 4, empty: 'no BBR configured' },
    { id: 'concurrency', title: 'Adaptive concurrency: in flight / limit (dashed)', metrics: [['conc_in', ' in flight'], ['conc_limit', ' limit']], names: 4, empty: 'no adaptive limits' },
    { id: 'levels', title: 'Limiter levels: in use / queued (dashed)', metrics: [['level_in', ' in use'], ['level_queued', ' queued']], names: 4, empty: 'no levels configured' },
    { id: 'breakers', title: 'Breaker drop probability (CRITICAL)', metrics: [['drop', '']], max: 1, empty: 'no breakers' },
    { id: 'healthy', title: 'Healthy endpoints per cluster', metrics: [['healthy', '']], empty: 'no clusters' },
    { id: 'failback', title: 'Failback queue depth', metrics: [['failback', '']], empty: 'no failback routes' },
  ];

  // ---- state ---------------------------------------------------------------------------------

  const samples = [];
  let last = null; // the last snapshot
  let lastAt = 0; // when it arrived (performance.now())
  let snapshots = 0;
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let controller = null;
  let retryTimer = null;
  let frame = 0;
  const charts = [];
  const pendingPlans = new Map(); // plan -> wanted state, until a snapshot agrees

  function fail(where, e) {
    document.body.dataset.errors = String(Number(document.body.dataset.errors || 0) + 1);
    console.error('dashboard:', where, e);
  }
  window.addEventListener('error', (e) => fail('uncaught', e.error || e.message));
  window.addEventListener('unhandledrejection', (e) => fail('unhandled', e.reason));

  function score(metric, name) {
    let s = 0;
    for (let i = Math.max(0, samples.length - SCORE_SAMPLES); i < samples.length; i++) {
      const series = samples[i].m.get(metric);
      const v = series && series.get(name);
      if (v) s += Math.abs(v);
    }
    return s;
  }

  // The index of the first sample at or after `t` (samples are in time order).
  function firstSampleAt(t) {
    let lo = 0;
    let hi = samples.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (samples[mid].t < t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  // The series a chart draws: the total (when its metric has one) and the busiest names (by
  // `rankBy`, else the first metric), the same names and colours for each of its metrics (the
  // second one dashed).
  function seriesOf(spec) {
    const lastSample = samples[samples.length - 1];
    if (!lastSample) return [];
    const names = new Set();
    for (const [metric] of spec.metrics) {
      const m = lastSample.m.get(metric);
      if (m) for (const name of m.keys()) names.add(name);
    }
    const hasTotal = names.delete(TOTAL);
    const rankBy = spec.rankBy || spec.metrics[0][0];
    const ranked = [];
    for (const name of names) {
      if (spec.busyOnly && spec.metrics.every(([metric]) => score(metric, name) === 0)) continue;
      ranked.push([score(rankBy, name), name]);
    }
    ranked.sort((a, b) => b[0] - a[0] || (a[1] < b[1] ? -1 : 1));
    const chosen = ranked.slice(0, spec.names || TOP_N).map(([, n]) => n);
    chosen.sort();
    if (hasTotal) chosen.unshift(TOTAL);
    const out = [];
    chosen.forEach((name, i) => {
      spec.metrics.forEach(([metric, suffix], j) => {
        const m = lastSample.m.get(metric);
        if (!m || !m.has(name)) return;
        const label = (name === TOTAL ? 'total' : name.split(SEP).join(' ')) + suffix;
        out.push({ label, metric, name, color: PALETTE[i % PALETTE.length], dashed: j > 0 });
      });
    });
    return out;
  }

  // ---- tables (rows keyed and reused) ---------------------------------------------------------

  // rows: [{ key, cells: [text | Node-builder], cls? }] in display order; `none` is the text
  // of the one row shown when there is none.
  function updateTable(table, rows, none) {
    const body = table.tBodies[0];
    if (rows.length === 0 && none) rows = [{ key: '\u0000none', cells: [none], cls: 'none' }];
    if (!table.rowsByKey) table.rowsByKey = new Map();
    const keep = new Set();
    let order = true;
    rows.forEach((row, i) => {
      keep.add(row.key);
      let tr = table.rowsByKey.get(row.key);
      if (!tr) {
        tr = document.createElement('tr');
        tr.dataset.key = row.key;
        table.rowsByKey.set(row.key, tr);
        order = false;
      }
      while (tr.cells.length < row.cells.length) tr.insertCell();
      if (row.cls === 'none') tr.cells[0].colSpan = table.tHead.rows[0].cells.length;
      row.cells.forEach((cell, j) => {
        const td = tr.cells[j];
        if (typeof cell === 'function') cell(td);
        else setText(td, String(cell));
      });
      if (row.cls !== undefined && tr.className !== row.cls) tr.className = row.cls;
      if (body.rows[i] !== tr) order = false;
    });
    for (const [key, tr] of table.rowsByKey) {
      if (!keep.has(key)) {
        tr.remove();
        table.rowsByKey.delete(key);
      }
    }
    if (!order) for (const row of rows) body.appendChild(table.rowsByKey.get(row.key));
  }

  function latest(metric, name) {
    const s = samples[samples.length - 1];
    const series = s && s.m.get(metric);
    const v = series ? series.get(name) : undefined;
    return v === undefined ? null : v;
  }

  // mean of the last n samples, ignoring gaps (for a calm table order)
  function recent(metric, name, n) {
    let sum = 0;
    let count = 0;
    for (let i = Math.max(0, samples.length - n); i < samples.length; i++) {
      const series = samples[i].m.get(metric);
      const v = series && series.get(name);
      if (v !== undefined && v !== null) {
        sum += v;
        count += 1;
      }
    }
    return count ? sum / count : 0;
  }

  function badge(text, state) {
    return (td) => {
      let b = td.firstChild;
      if (!b || b.nodeName !== 'SPAN') {
        td.textContent = '';
        b = document.createElement('span');
        td.appendChild(b);
      }
      b.className = 'badge';
      b.dataset.state = state;
      setText(b, text);
    };
  }

  function planButtons(name, active) {
    return (td) => {
      if (!td.firstChild) {
        for (const action of ['activate', 'deactivate']) {
          const b = document.createElement('button');
          b.type = 'button';
          b.dataset.plan = name;
          b.dataset.action = action;
          b.textContent = action === 'activate' ? 'Activate' : 'Deactivate';
          td.appendChild(b);
        }
      }
      const pending = pendingPlans.has(name);
      for (const b of td.querySelectorAll('button')) {
        b.disabled = pending || (b.dataset.action === 'activate') === active;
      }
    };
  }

  function describeAction(a) {
    const parts = [];
    if (a.route) parts.push('route ' + a.route);
    for (const k of Object.keys(a)) {
      if (k !== 'route' && a[k] !== null && a[k] !== undefined) parts.push(k + ': ' + JSON.stringify(a[k]));
    }
    return parts.join(', ');
  }

  function renderTables(snap) {
    // Plans.
    const plans = (snap.plans && snap.plans.plans) || [];
    for (const p of plans) if (pendingPlans.get(p.name) === p.active) pendingPlans.delete(p.name);
    $('plans-empty').hidden = plans.length > 0;
    updateTable($('plans'), plans.map((p) => {
      const active = pendingPlans.has(p.name) ? pendingPlans.get(p.name) : p.active;
      return {
        key: p.name,
        cls: active ? 'plan-active' : '',
        cells: [p.name, badge(active ? 'active' : 'off', active ? 'active' : 'off'),
          (p.actions || []).map(describeAction).join('; '), planButtons(p.name, p.active)],
      };
    }));
    // Routes, busiest first.
    const routes = (snap.routes || []).map((r) => r.route);
    routes.sort((a, b) => recent('rps', b, 5) - recent('rps', a, 5) || (a < b ? -1 : 1));
    updateTable($('routes'), routes.map((name) => ({
      key: name,
      cells: [name, fmt(latest('rps', name)), fmt(latest('eps', name)), fmt(latest('rejected', name) || 0),
        fmt(latest('degraded', name)), fmt(latest('p50', name)), fmt(latest('p99', name))],
    })), 'no routes');
    // Breakers and adaptive limits per cluster.
    const policyOf = new Map(((snap.policies && snap.policies.clusters) || []).map((c) => [c.cluster, c]));
    updateTable($('breakers'), (snap.clusters || []).map((c) => {
      const p = policyOf.get(c.name) || {};
      const b = p.breaker;
      const state = b ? (b.state || (b.drop_probability > 0 ? 'throttling' : 'accepting')) : 'none';
      return {
        key: c.name,
        cells: [c.name, b ? b.kind : '–', badge(state, state), b ? fmt(b.drop_probability) : '–',
          b && b.trips != null ? String(b.trips) : '–', b ? `${b.accepts}/${b.requests}` : '–',
          p.concurrency ? String(p.concurrency.limit) : '–', p.concurrency ? String(p.concurrency.in_flight) : '–'],
      };
    }), 'no clusters');
    // Endpoints.
    const endpointRows = [];
    for (const c of snap.clusters || []) {
      for (const e of c.endpoints || []) {
        const key = c.name + SEP + e.address;
        const health = e.ejected_for_ms != null ? 'ejected' : e.healthy ? 'healthy' : 'unhealthy';
        const text = e.ejected_for_ms != null ? `ejected ${fmt(e.ejected_for_ms / 1000)} s` : health;
        endpointRows.push({
          key,
          cells: [c.name, e.address, badge(text, health), String(e.in_flight), fmt(latest('ep_rps', key)),
            fmt(latest('ep_5xx', key)), fmt(latest('ep_fail', key)), fmt(e.mean_latency_ms), String(e.ejections)],
        });
      }
    }
    updateTable($('endpoints'), endpointRows, 'no endpoints');
    // Hot keys.
    const hot = [];
    for (const h of snap.hot_keys || []) {
      for (const k of h.top || []) {
        hot.push({ key: h.route + SEP + k.key, cells: [h.route, k.key, fmt(k.rate_per_sec)] });
      }
    }
    updateTable($('hotkeys'), hot, 'no hot keys');
    // Pools: levels and route bulkheads.
    const pools = [];
    for (const l of (snap.policies && snap.policies.levels) || []) pools.push(['level ' + l.name, l]);
    for (const r of (snap.policies && snap.policies.routes) || []) {
      if (r.bulkhead) pools.push(['route ' + r.route + ' bulkhead', r.bulkhead]);
    }
    updateTable($('levels'), pools.map(([name, p]) => ({
      key: name,
      cells: [name, String(p.in_use), String(p.max_concurrent), String(p.queued), String(p.codel_drops)],
    })), 'no levels or bulkheads configured');
    const bbrs = [];
    for (const l of (snap.policies && snap.policies.listeners) || []) if (l.bbr) bbrs.push(['listener ' + l.listener, l.bbr]);
    for (const r of (snap.policies && snap.policies.routes) || []) if (r.bbr) bbrs.push(['route ' + r.route, r.bbr]);
    updateTable($('bbrs'), bbrs.map(([name, b]) => ({
      key: name,
      cells: [name, fmt(100 * b.cpu) + ' %', String(b.in_flight), String(b.max_in_flight),
        badge(b.dropping ? 'shedding' : 'no', b.dropping ? 'shedding' : 'off')],
    })), 'no BBR configured');
  }

  function setFigure(id, value, text) {
    const el = $(id);
    const v = value === null || !Number.isFinite(value) ? '' : value.toFixed(3);
    if (el.dataset.value !== v) el.dataset.value = v;
    setText(el, text);
  }

  function render() {
    frame = 0;
    if (!last) return;
    try {
      const started = performance.now();
      const tEnd = last.unix_ms;
      const oldest = samples.length ? samples[0].t : tEnd;
      const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, tEnd - oldest));
      for (const chart of charts) chart.draw(seriesOf(chart.spec), tEnd, span);
      renderTables(last);
      const rps = latest('rps', TOTAL);
      setFigure('total-rps', rps, fmt(rps));
      const eps = latest('eps', TOTAL);
      setFigure('total-eps', eps, fmt(eps));
      const rej = latest('rejected', TOTAL);
      setFigure('total-rejected', rej, fmt(rej));
      const deg = latest('degraded', TOTAL);
      setFigure('total-degraded', deg, fmt(deg));
      let worst = null;
      const p99s = samples.length ? samples[samples.length - 1].m.get('p99') : null;
      if (p99s) for (const v of p99s.values()) if (v !== null && (worst === null || v > worst)) worst = v;
      setFigure('worst-p99', worst, worst === null ? '–' : fmt(worst) + ' ms');
      setFigure('cpu', 100 * (last.cpu || 0), fmt(100 * (last.cpu || 0)) + ' %');
      setText($('generation'), String(last.generation));
      setText($('updated'), new Date(last.unix_ms).toLocaleTimeString());
      document.body.dataset.renderMs = (performance.now() - started).toFixed(2);
    } catch (e) {
      fail('render', e);
    }
  }

  function schedule() {
    if (frame || document.hidden) return;
    frame = requestAnimationFrame(render);
  }
  document.addEventListener('visibilitychange', schedule);

  function onSnapshot(snap) {
    const sample = derive(last, snap);
    last = snap;
    lastAt = performance.now();
    snapshots += 1;
    document.body.dataset.snapshots = String(snapshots);
    if (sample) {
      samples.push(sample);
      const cutoff = sample.t - WINDOW_MS - 2000;
      while (samples.length > MAX_SAMPLES || (samples.length && samples[0].t < cutoff)) samples.shift();
    }
    schedule();
  }

  // ---- connection ----------------------------------------------------------------------------

  function setConnection(state, text) {
    const el = $('connection');
    el.dataset.state = state;
    setText(el, text || state);
  }

  function authHeaders() {
    return token ? { Authorization: 'Bearer ' + token } : {};
  }

  function askToken(message) {
    setConnection('locked', 'token needed');
    $('token-form').hidden = false;
    setText($('token-error'), message || '');
    $('token-input').focus();
  }

  function retryLater() {
    if (retryTimer) return;
    setConnection('retrying', 'reconnecting');
    retryTimer = setTimeout(() => {
      retryTimer = null;
      connect();
    }, RETRY_MS);
  }

  function onEvent(block) {
    let data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith('data:')) data += (data ? '\n' : '') + line.slice(line.startsWith('data: ') ? 6 : 5);
    }
    if (!data) return;
    try {
      onSnapshot(JSON.parse(data));
    } catch (e) {
      fail('snapshot', e);
    }
  }

  async function connect() {
    if (controller) controller.abort();
    const mine = (controller = new AbortController());
    setConnection('connecting');
    let resp;
    try {
      resp = await fetch('/admin/stream', { headers: authHeaders(), signal: mine.signal, cache: 'no-store' });
    } catch (e) {
      if (mine === controller) retryLater();
      return;
    }
    if (resp.status === 401) {
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      askToken(token ? 'The gateway refused this token.' : '');
      token = '';
      $('forget-token').hidden = true;
      return;
    }
    if (!resp.ok || !resp.body) {
      setConnection('error', 'stream answered ' + resp.status);
      retryLater();
      return;
    }
    $('token-form').hidden = true;
    $('forget-token').hidden = !token;
    setConnection('live');
    lastAt = performance.now();
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          onEvent(block);
        }
      }
    } catch (e) {
      // aborted or broken: reconnect below
    }
    if (mine === controller) retryLater();
  }

  // A stream that goes quiet (a proxy holding it, a suspended laptop) is reopened.
  setInterval(() => {
    if ($('connection').dataset.state === 'live' && performance.now() - lastAt > STALL_MS) {
      controller.abort();
    }
  }, 1000);

  async function switchPlan(name, action) {
    setText($('plan-error'), '');
    pendingPlans.set(name, action === 'activate');
    if (last) renderTables(last);
    let resp;
    try {
      resp = await fetch('/admin/plans/' + encodeURIComponent(name) + '/' + action, {
        method: 'POST', headers: authHeaders(), cache: 'no-store',
      });
    } catch (e) {
      pendingPlans.delete(name);
      setText($('plan-error'), `${action} ${name}: ${e}`);
      if (last) renderTables(last);
      return;
    }
    if (resp.status === 401) {
      pendingPlans.delete(name);
      askToken('The token was refused.');
      return;
    }
    let body = {};
    try {
      body = await resp.json();
    } catch (e) {
      // no JSON body: the status says enough
    }
    if (!resp.ok && !(resp.status === 500 && body.active !== undefined)) {
      pendingPlans.delete(name);
      setText($('plan-error'), `${action} ${name}: ${resp.status} ${body.error || ''}`);
    } else if (body.persisted === false) {
      setText($('plan-error'), `${name} switched but not saved: ${body.error || ''}`);
    }
    if (last) renderTables(last);
  }

  function start() {
    const box = $('charts');
    for (const spec of CHARTS) charts.push(new Chart(box, spec));
    $('plans').addEventListener('click', (e) => {
      const b = e.target.closest('button[data-plan]');
      if (b && !b.disabled) switchPlan(b.dataset.plan, b.dataset.action);
    });
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      token = $('token-input').value.trim();
      $('token-input').value = '';
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      connect();
    });
    $('forget-token').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      token = '';
      connect();
    });
    connect();
  }

  // For measurements and tests: feed a snapshot as if it came from the stream, draw at once,
  // and the pure functions behind the figures.
  window.spillwayDashboard = { ingest: onSnapshot, render, quantile, derive };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
