// geartrain dashboard: live tables and a throughput chart from /api/events
// (server-sent events), job look-up and cancel through the JSON API.
"use strict";

const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#b83280", "#6b46c1", "#c53030", "#2c7a7b", "#975a16"];
const HISTORY = 120; // seconds of throughput kept on the chart
const series = new Map(); // function -> [{t, rate}]
let previous = null; // last snapshot, for rates

const $ = (id) => document.getElementById(id);

function text(payload) {
  if (!payload) return "";
  if ("text" in payload) return payload.text;
  return "base64: " + payload.base64;
}

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value;
  row.appendChild(td);
}

function renderFunctions(functions) {
  const body = $("functions").tBodies[0];
  body.replaceChildren();
  for (const f of functions) {
    const row = document.createElement("tr");
    row.dataset.function = f.name;
    const queued = f.queued.high + f.queued.normal + f.queued.low;
    for (const v of [f.name, queued, f.queued.high, f.queued.normal, f.queued.low, f.scheduled,
                     f.running, f.workers, f.completed, f.failed]) cell(row, v);
    body.appendChild(row);
  }
}

function renderWorkers(workers) {
  const body = $("workers").tBodies[0];
  body.replaceChildren();
  for (const w of workers) {
    const row = document.createElement("tr");
    for (const v of [w.id, w.host, w.client_id, w.functions.join(" "),
                     w.running.join(" ") || (w.sleeping ? "(asleep)" : "")]) cell(row, v);
    body.appendChild(row);
  }
}

function record(snapshot) {
  if (previous) {
    const dt = Math.max(0.001, snapshot.time - previous.time);
    const before = new Map(previous.functions.map((f) => [f.name, f.completed + f.failed]));
    for (const f of snapshot.functions) {
      const ended = f.completed + f.failed;
      const rate = Math.max(0, (ended - (before.get(f.name) ?? ended)) / dt);
      if (!series.has(f.name)) series.set(f.name, []);
      series.get(f.name).push({ t: snapshot.time, rate });
    }
  }
  for (const points of series.values()) {
    while (points.length && points[0].t < snapshot.time - HISTORY) points.shift();
  }
  previous = snapshot;
}

function drawChart(now) {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 30;
  ctx.clearRect(0, 0, w, h);
  let max = 1;
  for (const points of series.values()) for (const p of points) max = Math.max(max, p.rate);
  ctx.strokeStyle = "#ccd"; ctx.fillStyle = "#667"; ctx.font = "11px sans-serif";
  ctx.beginPath(); ctx.moveTo(pad, 5); ctx.lineTo(pad, h - pad); ctx.lineTo(w - 5, h - pad); ctx.stroke();
  ctx.fillText(max.toFixed(max < 10 ? 1 : 0) + "/s", 2, 12);
  ctx.fillText("-" + HISTORY + "s", pad, h - 10);
  const legend = $("legend");
  legend.replaceChildren();
  let i = 0;
  for (const [name, points] of series) {
    const color = COLORS[i++ % COLORS.length];
    ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
    points.forEach((p, j) => {
      const x = pad + (w - pad - 5) * (1 - (now - p.t) / HISTORY);
      const y = h - pad - (h - pad - 5) * (p.rate / max);
      if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = color;
    item.append(swatch, name);
    legend.appendChild(item);
  }
}

// the server's last two minutes of "jobs ended so far" per function, once a second
function seed(history) {
  series.clear();
  for (let i = 1; i < history.length; i++) {
    const before = history[i - 1], now = history[i];
    const dt = Math.max(0.001, now.time - before.time);
    for (const [name, ended] of Object.entries(now.ended)) {
      const rate = Math.max(0, (ended - (before.ended[name] ?? ended)) / dt);
      if (!series.has(name)) series.set(name, []);
      series.get(name).push({ t: now.time, rate });
    }
  }
}

function connect() {
  const events = new EventSource("/api/events");
  events.addEventListener("history", (e) => seed(JSON.parse(e.data)));
  events.addEventListener("snapshot", (e) => {
    const snapshot = JSON.parse(e.data);
    $("live").classList.add("on");
    const s = snapshot.server;
    $("server").textContent = `v${s.version} · pid ${s.pid} · ${s.store} · ${s.connections} connections · ` +
      `${s.jobs} jobs · ${s.results_kept} results kept`;
    record(snapshot);
    renderFunctions(snapshot.functions);
    renderWorkers(snapshot.workers);
    drawChart(snapshot.time);
    const shown = $("job-handle").textContent;
    if (shown && !$("job").hidden && !["completed", "failed", "exception", "cancelled"].includes($("job-state").textContent)) {
      lookup(shown);
    }
  });
  events.onerror = () => $("live").classList.remove("on");
}

function headers() {
  const token = $("token").value;
  return token ? { Authorization: "Bearer " + token } : {};
}

async function lookup(handle) {
  const response = await fetch("/api/jobs/" + encodeURIComponent(handle), { headers: headers() });
  const body = await response.json();
  if (!response.ok) {
    $("job").hidden = true;
    $("cancel").disabled = true;
    $("job-error").hidden = false;
    $("job-error").textContent = body.error;
    return;
  }
  $("job-error").hidden = true;
  $("job").hidden = false;
  $("job-handle").textContent = body.handle;
  $("job-function").textContent = body.function + (body.unique ? ` (unique ${body.unique})` : "");
  $("job-state").textContent = body.state;
  $("job-status").textContent = body.denominator ? `${body.numerator}/${body.denominator}` : "";
  $("job-attempts").textContent = body.attempts;
  $("job-submitted").textContent = body.submitted_at ? new Date(body.submitted_at * 1000).toISOString() : "";
  $("job-finished").textContent = body.finished_at ? new Date(body.finished_at * 1000).toISOString() : "";
  $("job-result").textContent = text(body.result);
  $("job-data").textContent = body.data.map(text).join("\n");
  $("job-warnings").textContent = body.warnings.map(text).join("\n");
  $("cancel").disabled = !["queued", "scheduled", "running"].includes(body.state);
}

$("lookup").addEventListener("submit", (e) => {
  e.preventDefault();
  lookup($("handle").value.trim());
});

$("cancel").addEventListener("click", async () => {
  const handle = $("job-handle").textContent;
  const response = await fetch("/api/jobs/" + encodeURIComponent(handle), { method: "DELETE", headers: headers() });
  if (!response.ok) {
    $("job-error").hidden = false;
    $("job-error").textContent = (await response.json()).error;
  }
  lookup(handle);
});

connect();
