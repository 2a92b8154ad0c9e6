// The scrapy-fleet dashboard: reads /api/status and /api/history every REFRESH_MS and
// draws them. Only the DOM's textContent takes text from the crawl (host names, worker
// ids and reasons may hold anything), never innerHTML. The numbers are defined in
// docs/observing.md.
"use strict";

const REFRESH_MS = 2000;
const RATE_WINDOW_S = 60; // the ETA's and pages/s' window
const COLORS = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

const $ = (id) => document.getElementById(id);
const fmt = (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en"));

function duration(s) {
  if (!isFinite(s) || s < 0) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fillTable(id, rows, columns) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const [get, cls] of columns) cell(tr, get(r), cls);
    body.appendChild(tr);
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    cell(tr, "none").colSpan = columns.length;
    tr.className = "empty";
    body.appendChild(tr);
  }
  return body;
}

// --- charts -------------------------------------------------------------------------

function rates(points, field) {
  const out = [];
  for (let i = 1; i < points.length; i++) {
    const dt = points[i].t - points[i - 1].t;
    out.push({ t: points[i].t, v: dt > 0 ? Math.max(0, (points[i][field] - points[i - 1][field]) / dt) : 0 });
  }
  return out;
}

function axes(ctx, w, h, pad, max, label) {
  ctx.strokeStyle = "#ccc";
  ctx.fillStyle = "#666";
  ctx.font = "11px sans-serif";
  ctx.beginPath();
  ctx.moveTo(pad, 4); ctx.lineTo(pad, h - pad); ctx.lineTo(w - 4, h - pad);
  ctx.stroke();
  ctx.fillText(max.toFixed(max < 10 ? 1 : 0), 2, 12);
  ctx.fillText("0", 2, h - pad);
  ctx.fillText(label, pad + 4, h - 6);
}

function drawRates(points) {
  const canvas = $("rate-chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  const series = [[rates(points, "pages"), "#1f77b4"], [rates(points, "items"), "#2ca02c"]];
  const n = series[0][0].length;
  const max = Math.max(1, ...series.flatMap(([s]) => s.map((p) => p.v)));
  axes(ctx, w, h, pad, max, n ? `last ${duration(points[points.length - 1].t - points[0].t)}` : "waiting for data");
  for (const [s, color] of series) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    s.forEach((p, i) => {
      const x = pad + (n > 1 ? (i / (n - 1)) * (w - pad - 6) : 0);
      const y = h - pad - (p.v / max) * (h - pad - 8);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
  canvas.dataset.points = String(n);
  canvas.dataset.lastPagesPerS = n ? series[0][0][n - 1].v.toFixed(2) : "0";
}

function drawErrors(points) {
  const canvas = $("error-chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  const kinds = [...new Set(points.flatMap((p) => Object.keys(p.errors_by_kind || {})))].sort();
  const bars = [];
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1].errors_by_kind || {}, b = points[i].errors_by_kind || {};
    bars.push(kinds.map((k) => Math.max(0, (b[k] || 0) - (a[k] || 0))));
  }
  const max = Math.max(1, ...bars.map((b) => b.reduce((x, y) => x + y, 0)));
  axes(ctx, w, h, pad, max, kinds.length ? "" : "no failed requests");
  const bw = bars.length ? (w - pad - 6) / bars.length : 0;
  bars.forEach((b, i) => {
    let y = h - pad;
    b.forEach((v, k) => {
      const bh = (v / max) * (h - pad - 8);
      ctx.fillStyle = COLORS[k % COLORS.length];
      ctx.fillRect(pad + i * bw, y - bh, Math.max(1, bw - 1), bh);
      y -= bh;
    });
  });
  canvas.dataset.points = String(bars.length);
  const legend = $("error-kinds");
  legend.replaceChildren();
  const last = points.length ? points[points.length - 1].errors_by_kind || {} : {};
  kinds.forEach((k, i) => {
    const li = document.createElement("li");
    const swatch = document.createElement("i");
    swatch.style.background = COLORS[i % COLORS.length];
    li.append(swatch, `${k}: ${fmt(last[k])}`);
    legend.appendChild(li);
  });
}

// --- numbers and tables -------------------------------------------------------------

function windowRate(points, field) {
  if (points.length < 2) return 0;
  const last = points[points.length - 1];
  let first = points[0];
  for (const p of points) if (last.t - p.t <= RATE_WINDOW_S) { first = p; break; }
  const dt = last.t - first.t;
  return dt > 0 ? Math.max(0, (last[field] - first[field]) / dt) : 0;
}

function showStatus(status, points) {
  const s = status.stats || {};
  const state = (status.state || {}).status || "no crawl";
  $("spider").textContent = status.spider;
  document.title = `${status.spider}: ${state} – scrapy-fleet`;
  $("state").textContent = state;
  $("state").className = `badge ${state}`;
  $("where").textContent = `Redis ${status.redis || ""} · ${fmt(status.seen)} URLs seen`;
  const done = (s.acked || 0) + (s.invalid || 0);
  const pending = s.pending || 0, leased = s.leased || 0;
  $("done").textContent = fmt(done);
  $("pending").textContent = fmt(pending);
  $("leased").textContent = fmt(leased);
  $("pages").textContent = fmt(s.pages || 0);
  $("items").textContent = fmt(s.items || 0);
  $("errors").textContent = fmt(s.errors || 0);
  const total = done + pending + leased;
  $("bar-done").style.width = total ? `${(100 * done) / total}%` : "0";
  $("bar-leased").style.width = total ? `${(100 * leased) / total}%` : "0";
  $("rate").textContent = windowRate(points, "pages").toFixed(1);
  const perS = windowRate(points, "acked");
  const eta = $("eta");
  if (state === "done") eta.textContent = "done";
  else if (!pending && !leased) eta.textContent = "–";
  else eta.textContent = perS > 0 ? duration((pending + leased) / perS) : "–";
  eta.title = "the queued and leased requests over the rate requests finished at in the last minute; new links make it grow";

  const workers = status.workers || [];
  $("workers-count").textContent = `${workers.filter((w) => w.alive).length} alive of ${workers.length}`;
  const body = fillTable("workers", workers, [
    [(w) => w.id], [(w) => w.host || "?"], [(w) => w.pid ?? "?"], [(w) => w.launch || "–"],
    [(w) => w.restarts ?? 0, "n"], [(w) => fmt(w.pages || 0), "n"], [(w) => fmt(w.items || 0), "n"],
    [(w) => fmt(w.errors || 0), "n"], [(w) => `${w.last_heartbeat_s.toFixed(1)} s ago`],
    [(w) => (w.alive ? "alive" : "dead")], [(w) => [w.state, w.why].filter(Boolean).join(": ")],
  ]);
  workers.forEach((w, i) => {
    const tr = body.children[i];
    tr.dataset.pages = String(w.pages || 0);
    if (!w.alive) tr.className = "dead";
  });

  const idle = $("idle");
  idle.replaceChildren();
  const reasons = workers.filter((w) => w.alive && w.state === "idle").map((w) => `${w.id} idles: ${w.why}`);
  const waiting = status.waiting;
  if (waiting) {
    reasons.push(`queued work waits for its hosts: ${waiting.capped_hosts} at the per-host limit of ${waiting.cap}, ` +
      `${waiting.delayed_hosts} in their download delay or backoff`);
  }
  for (const text of reasons) {
    const p = document.createElement("p");
    p.textContent = text;
    idle.appendChild(p);
  }

  const hosts = status.hosts || { busiest: [], slowest: [], most_errors: [] };
  fillTable("busiest", hosts.busiest, [[(h) => h.host], [(h) => fmt(h.queued), "n"],
    [(h) => fmt(h.in_flight), "n"], [(h) => fmt(h.errors), "n"]]);
  fillTable("slowest", hosts.slowest, [[(h) => h.host], [(h) => `${h.delay_s.toFixed(1)} s`, "n"],
    [(h) => (h.backoff_s ? `${h.backoff_s.toFixed(0)} s (${h.backoffs}×)` : "–"), "n"],
    [(h) => fmt(h.queued), "n"]]);
  fillTable("failing", hosts.most_errors, [[(h) => h.host], [(h) => fmt(h.errors), "n"],
    [(h) => fmt(h.queued), "n"]]);
}

async function refresh() {
  try {
    const [answer, history] = await Promise.all([fetch("/api/status"), fetch("/api/history")]);
    const points = history.ok ? (await history.json()).points : [];
    drawRates(points);
    drawErrors(points);
    if (!answer.ok) throw new Error(await answer.text());
    showStatus(await answer.json(), points);
    $("problem").hidden = true;
    $("updated").textContent = new Date().toLocaleTimeString();
  } catch (err) {
    $("problem").hidden = false;
    $("problem").textContent = `Cannot read the crawl: ${err.message}`;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
