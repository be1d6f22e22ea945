// Small charts for the console: line and bar charts drawn as inline SVG,
// element by element (createElementNS), with every label set through
// textContent. No library, no HTML parsing, no inline style: colours come
// from the classes s0…s7 in style.css. Each chart scales to its container
// (viewBox, width 100%); its drawing width follows the window's, so that
// its text stays legible at 390 px.

// The SVG namespace is a name, not an address: nothing is fetched from it.
// It is written in two parts because the assets' test refuses URLs.
const SVG_NS = "http" + "://www.w3.org/2000/svg";
const COLOURS = 8;

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function html(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = String(text);
  return e;
}

// Number formats.

// compact writes 1234567 as 1.23M.
export function compact(v) {
  if (v === null || v === undefined || !isFinite(v)) return "—";
  const a = Math.abs(v);
  for (const [n, s] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (a >= n) return trim((v / n).toPrecision(3)) + s;
  }
  if (a === 0) return "0";
  if (a < 0.01) return v.toExponential(1);
  return trim(a >= 100 ? v.toFixed(0) : v.toPrecision(3));
}

// seconds writes a duration in seconds as ms or s.
export function seconds(v) {
  if (v === null || v === undefined || !isFinite(v)) return "—";
  if (v === 0) return "0";
  if (Math.abs(v) < 1) return trim((v * 1000).toPrecision(3)) + " ms";
  return trim(v.toPrecision(3)) + " s";
}

function trim(s) {
  return s.includes(".") && !s.includes("e") ? s.replace(/\.?0+$/, "") : s;
}

const pad = (n) => String(n).padStart(2, "0");

// timeLabel writes t (ms) in UTC, at a precision that suits span (ms).
export function timeLabel(t, span) {
  const d = new Date(t);
  const hm = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
  const md = pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
  if (span <= 3600e3) return hm + ":" + pad(d.getUTCSeconds());
  if (span <= 86400e3) return hm;
  if (span <= 7 * 86400e3) return md + " " + hm;
  return d.getUTCFullYear() + "-" + md;
}

// niceTicks returns 0 and round steps up to at least max: about four.
function niceTicks(max) {
  if (!(max > 0)) return [0, 1];
  const raw = max / 4;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  for (let v = 0; v < max + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

// Geometry: the drawing's width follows the window, its height is fixed.
function frame() {
  const w = window.innerWidth < 720 ? 360 : 600;
  return { w, h: 236, left: 54, right: 12, top: 24, bottom: 40 };
}

function base(opts, f) {
  const fig = html("figure", "chart");
  if (opts.id) fig.id = opts.id;
  fig.append(html("figcaption", "chart-title", opts.title));
  const root = svg("svg", { viewBox: `0 0 ${f.w} ${f.h}`, width: "100%", role: "img", "aria-label": opts.title, class: "chart-svg" });
  root.append(svg("title", {}, opts.title));
  fig.append(root);
  return { fig, root };
}

// yAxis draws the gridlines, the tick labels and the unit; it returns the
// scale.
function yAxis(root, f, max, format, unit) {
  const ticks = niceTicks(max);
  const top = ticks[ticks.length - 1];
  const y = (v) => f.h - f.bottom - (v / top) * (f.h - f.top - f.bottom);
  const g = svg("g", { class: "axis y" });
  for (const t of ticks) {
    g.append(svg("line", { x1: f.left, x2: f.w - f.right, y1: y(t), y2: y(t), class: t === 0 ? "base" : "grid" }));
    g.append(svg("text", { x: f.left - 6, y: y(t) + 4, "text-anchor": "end" }, format(t)));
  }
  if (unit) g.append(svg("text", { x: 4, y: 11, class: "unit" }, unit));
  root.append(g);
  return y;
}

function xLabels(root, f, labels) {
  const g = svg("g", { class: "axis x" });
  for (const [x, text, anchor] of labels) {
    g.append(svg("line", { x1: x, x2: x, y1: f.h - f.bottom, y2: f.h - f.bottom + 4, class: "base" }));
    g.append(svg("text", { x, y: f.h - f.bottom + 16, "text-anchor": anchor || "middle" }, text));
  }
  root.append(g);
}

function xTitle(root, f, text) {
  root.append(svg("text", { x: f.left + (f.w - f.left - f.right) / 2, y: f.h - 4, "text-anchor": "middle", class: "axis-title" }, text));
}

function legend(series, format, latest) {
  const ul = html("ul", "legend");
  series.forEach((s, i) => {
    const li = html("li", "");
    li.append(html("span", "swatch s" + (i % COLOURS)), " " + s.name);
    if (latest) {
      const last = [...s.values].reverse().find((v) => v !== null && v !== undefined);
      li.append(html("span", "muted", " " + (last === undefined ? "—" : format(last))));
    }
    ul.append(li);
  });
  return ul;
}

function empty(root, f, text) {
  root.append(svg("text", { x: f.left + (f.w - f.left - f.right) / 2, y: f.h / 2, "text-anchor": "middle", class: "empty" }, text));
}

function finite(v) {
  return typeof v === "number" && isFinite(v);
}

// Charts on the page, redrawn when the window's width changes the
// drawing's: each entry is the figure and what draws it again.
const live = new Set();
let redrawPending = false;

window.addEventListener("resize", () => {
  if (redrawPending) return;
  redrawPending = true;
  requestAnimationFrame(() => {
    redrawPending = false;
    const w = frame().w;
    const now = Date.now();
    for (const c of [...live]) {
      if (!c.fig.isConnected) {
        if (now - c.at > 1000) live.delete(c);
      } else if (c.w !== w) {
        const fig = c.draw();
        c.fig.replaceWith(fig);
        live.delete(c);
        live.add({ fig, w, draw: c.draw, at: now });
      }
    }
  });
});

// track draws a chart and keeps it for redrawing. Charts no longer on the
// page are forgotten (a chart just drawn is not on it yet: give it time).
function track(draw) {
  const now = Date.now();
  for (const c of [...live]) if (!c.fig.isConnected && now - c.at > 1000) live.delete(c);
  const fig = draw();
  live.add({ fig, w: frame().w, draw, at: now });
  return fig;
}

// lineChart draws series over time.
//
//   opts.title   the caption
//   opts.times   the points' times (ms), ascending
//   opts.series  [{name, values}]: one value per time, null for a gap
//   opts.format  formats a value (default compact)
//   opts.unit    what the y axis counts
//   opts.empty   what to say when there is no value
//
// The figure's data-max and data-values attributes hold the largest value
// and how many values there are, and each series' group its own data-max,
// for tests.
export function lineChart(opts) {
  return track(() => drawLines(opts));
}

function drawLines(opts) {
  const f = frame();
  const format = opts.format || compact;
  const { fig, root } = base(opts, f);
  const times = opts.times || [];
  const series = opts.series || [];
  let max = 0;
  let n = 0;
  for (const s of series) {
    for (const v of s.values) {
      if (finite(v)) {
        max = Math.max(max, v);
        n++;
      }
    }
  }
  const y = yAxis(root, f, max, format, opts.unit);
  const t0 = times.length ? times[0] : 0;
  const span = times.length > 1 ? times[times.length - 1] - t0 : 0;
  const x = (t) => (span > 0 ? f.left + ((t - t0) / span) * (f.w - f.left - f.right) : f.left + (f.w - f.left - f.right) / 2);
  if (times.length) {
    const labels = [];
    const k = span > 0 ? (f.w < 500 ? 2 : 4) : 0;
    for (let i = 0; i <= k; i++) {
      const t = t0 + (span * i) / (k || 1);
      labels.push([x(t), timeLabel(t, span), i === 0 && k ? "start" : i === k && k ? "end" : "middle"]);
    }
    xLabels(root, f, labels);
  }
  xTitle(root, f, opts.xTitle || "time (UTC)");
  series.forEach((s, si) => {
    const cls = "s" + (si % COLOURS);
    const finiteValues = s.values.filter(finite);
    const g = svg("g", { class: "series " + cls, "data-series": s.name, "data-max": finiteValues.length ? Math.max(...finiteValues) : "" });
    let d = "";
    let run = [];
    const flush = () => {
      if (run.length === 1) g.append(svg("circle", { cx: run[0][0], cy: run[0][1], r: 2.5, class: "dot" }));
      run = [];
    };
    s.values.forEach((v, i) => {
      if (!finite(v) || i >= times.length) {
        flush();
        return;
      }
      const p = [x(times[i]).toFixed(1), y(v).toFixed(1)];
      d += (run.length ? " L" : " M") + p[0] + " " + p[1];
      run.push(p);
    });
    flush();
    if (d) {
      const path = svg("path", { d: d.trim(), class: "line" });
      path.append(svg("title", {}, s.name));
      g.prepend(path);
    }
    root.append(g);
  });
  if (!n) empty(root, f, opts.empty || "no data yet");
  fig.setAttribute("data-max", String(max));
  fig.setAttribute("data-values", String(n));
  fig.append(legend(series, format, true));
  return fig;
}

// barChart draws stacked bars, one per bucket.
//
//   opts.title    the caption
//   opts.times    each bucket's start (ms)
//   opts.seconds  the buckets' width, in seconds (for the labels)
//   opts.series   [{name, values}]: one value per bucket, stacked in order
//   opts.format, opts.unit, opts.empty, opts.xTitle: as lineChart's
//
// data-max holds the tallest stack, data-values the buckets with a value.
export function barChart(opts) {
  return track(() => drawBars(opts));
}

function drawBars(opts) {
  const f = frame();
  const format = opts.format || compact;
  const { fig, root } = base(opts, f);
  const times = opts.times || [];
  const series = opts.series || [];
  const totals = times.map((_, i) => series.reduce((a, s) => a + (finite(s.values[i]) ? s.values[i] : 0), 0));
  const max = Math.max(0, ...totals);
  const y = yAxis(root, f, max, format, opts.unit);
  const n = times.length;
  const plotW = f.w - f.left - f.right;
  const slot = n ? plotW / n : plotW;
  const barW = Math.min(36, Math.max(1, slot * 0.8));
  const width = (opts.seconds || 60) * 1000;
  const span = n ? times[n - 1] + width - times[0] : 0;
  if (n) {
    const want = f.w < 500 ? 3 : 6;
    const every = Math.max(1, Math.ceil(n / want));
    const labels = [];
    for (let i = 0; i < n; i += every) labels.push([f.left + slot * (i + 0.5), timeLabel(times[i], span)]);
    xLabels(root, f, labels);
  }
  xTitle(root, f, opts.xTitle || "time (UTC)");
  series.forEach((s, si) => {
    const finiteValues = s.values.filter(finite);
    const g = svg("g", { class: "series s" + (si % COLOURS), "data-series": s.name, "data-max": finiteValues.length ? Math.max(...finiteValues) : "" });
    root.append(g);
  });
  const groups = [...root.querySelectorAll("g.series")];
  times.forEach((t, i) => {
    let acc = 0;
    series.forEach((s, si) => {
      const v = s.values[i];
      if (!finite(v) || v <= 0) return;
      const y1 = y(acc);
      const y2 = y(acc + v);
      acc += v;
      const r = svg("rect", { x: (f.left + slot * i + (slot - barW) / 2).toFixed(1), y: y2.toFixed(1), width: barW.toFixed(1), height: Math.max(0.5, y1 - y2).toFixed(1), class: "bar" });
      r.append(svg("title", {}, timeLabel(t, span) + " — " + s.name + ": " + format(v)));
      groups[si].append(r);
    });
  });
  if (!(max > 0)) empty(root, f, opts.empty || "nothing in this period");
  fig.setAttribute("data-max", String(max));
  fig.setAttribute("data-values", String(totals.filter((v) => v > 0).length));
  fig.append(legend(series, format, false));
  return fig;
}
