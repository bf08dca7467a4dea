// DMS web console: talks to the management API of the server that served this page.
"use strict";

const KEY = "dms.managementKey";
const POLL_MS = 2000;
const HISTORY = 40;
const state = { history: {}, last: {}, selected: null };

const $ = (id) => document.getElementById(id);

function key() { return sessionStorage.getItem(KEY); }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, { Authorization: `Bearer ${key()}` });
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(KEY);
    showLogin("The key was refused; paste the current one.");
    throw new Error("unauthorized");
  }
  return response;
}

function showLogin(message) {
  $("login").hidden = false;
  $("app").hidden = true;
  $("forget-key").hidden = true;
  $("login-error").textContent = message || "";
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("forget-key").hidden = false;
}

function sparkline(values) {
  const width = 110, height = 26;
  if (values.length < 2) return `<svg class="spark" viewBox="0 0 ${width} ${height}"></svg>`;
  const max = Math.max(...values, 1e-9);
  const step = width / (values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`);
  return `<svg class="spark" viewBox="0 0 ${width} ${height}"><polyline points="${points.join(" ")}"/></svg>`;
}

function remember(id, model, now) {
  const previous = state.last[id];
  state.last[id] = { t: now, requests: model.requestsOk + model.requestsFailed, sum: model.latencySum, count: model.latencyCount };
  const history = state.history[id] || (state.history[id] = { rate: [], latency: [] });
  if (previous) {
    const seconds = Math.max((now - previous.t) / 1000, 1e-3);
    const done = state.last[id].requests - previous.requests;
    const count = state.last[id].count - previous.count;
    history.rate.push(done / seconds);
    history.latency.push(count > 0 ? ((state.last[id].sum - previous.sum) / count) * 1000 : 0);
    if (history.rate.length > HISTORY) { history.rate.shift(); history.latency.shift(); }
  }
  return history;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function renderModels(models) {
  const now = Date.now();
  const body = $("models").querySelector("tbody");
  body.innerHTML = "";
  for (const m of models) {
    const id = `${m.name}:${m.version}`;
    const history = remember(id, m, now);
    const rate = history.rate.length ? history.rate[history.rate.length - 1].toFixed(1) : "–";
    const latency = history.latency.length ? history.latency[history.latency.length - 1].toFixed(1) : "–";
    const status = m.status === "READY" ? "ok" : m.status === "FAILED" ? "bad" : "";
    const row = document.createElement("tr");
    row.dataset.testid = `model-row-${m.name}`;
    row.setAttribute("data-testid", `model-row-${m.name}`);
    row.innerHTML = `
      <td><strong>${escapeHtml(m.name)}</strong>${m.isDefault ? ' <span class="muted">default</span>' : ""}</td>
      <td>${escapeHtml(m.version)}</td>
      <td><span class="pill ${status}" title="${escapeHtml(m.lastError || "")}">${m.status}</span></td>
      <td><button class="small" data-action="down" title="one worker less">−</button>
          <span data-testid="workers-${escapeHtml(m.name)}">${m.readyWorkers}/${m.targetWorkers}</span>
          <button class="small" data-action="up" data-testid="scale-up-${escapeHtml(m.name)}" title="one worker more">+</button></td>
      <td>${m.queue}</td>
      <td>${sparkline(history.rate)} <span class="muted">${rate}</span></td>
      <td>${sparkline(history.latency)} <span class="muted">${latency}</span></td>
      <td><button class="quiet" data-action="try" data-testid="try-${escapeHtml(m.name)}">Try it</button>
          <button class="danger" data-action="remove" title="unregister this version">Unregister</button></td>`;
    row.querySelector('[data-action="up"]').onclick = () => scale(m, m.targetWorkers + 1);
    row.querySelector('[data-action="down"]').onclick = () => scale(m, Math.max(0, m.targetWorkers - 1));
    row.querySelector('[data-action="try"]').onclick = () => selectModel(m);
    row.querySelector('[data-action="remove"]').onclick = () => unregister(m);
    body.appendChild(row);
  }
  const healthy = models.every((m) => m.status === "READY");
  $("server-state").textContent = healthy ? "healthy" : "degraded";
  $("server-state").className = `pill ${healthy ? "ok" : "bad"}`;
}

async function refresh() {
  if (!key()) return;
  try {
    const response = await api("/console/api/summary");
    const summary = await response.json();
    showApp();
    renderModels(summary.models);
  } catch (error) {
    if (error.message !== "unauthorized") $("server-state").textContent = "unreachable";
  }
}

async function scale(model, workers) {
  const path = `/models/${encodeURIComponent(model.name)}/${encodeURIComponent(model.version)}`;
  await api(`${path}?min_worker=${workers}&synchronous=true`, { method: "PUT" });
  refresh();
}

async function unregister(model) {
  if (!confirm(`Unregister ${model.name} ${model.version}?`)) return;
  await api(`/models/${encodeURIComponent(model.name)}/${encodeURIComponent(model.version)}`, { method: "DELETE" });
  if (state.selected && state.selected.name === model.name) $("try").hidden = true;
  refresh();
}

async function register(event) {
  event.preventDefault();
  const params = new URLSearchParams({ url: $("register-url").value, initial_workers: $("register-workers").value });
  if ($("register-name").value) params.set("model_name", $("register-name").value);
  $("register-result").textContent = "registering…";
  const response = await api(`/models?${params}`, { method: "POST" });
  const body = await response.json();
  $("register-result").textContent = body.status || body.message;
  $("register-result").className = response.ok ? "muted" : "error";
  refresh();
}

function selectModel(model) {
  state.selected = model;
  $("try").hidden = false;
  $("try-model").textContent = `${model.name} ${model.version}`;
  clearAnswer();
}

function mode() { return document.querySelector('input[name="mode"]:checked').value; }

function clearAnswer() {
  $("bars").innerHTML = "";
  $("raw-answer").textContent = "";
  $("send-status").textContent = "";
}

function showFile(file) {
  state.file = file;
  $("file-name").textContent = file ? ` — ${file.name}` : "";
  const preview = $("preview");
  if (file && file.type.startsWith("image/")) {
    preview.onload = () => preview.classList.toggle("small", preview.naturalWidth < 128);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  } else {
    preview.hidden = true;
  }
}

function isLabelScores(body) {
  return body && typeof body === "object" && !Array.isArray(body) && Object.keys(body).length > 0 &&
    Object.values(body).every((v) => typeof v === "number");
}

function renderAnswer(body) {
  clearAnswer();
  if (isLabelScores(body)) {
    const entries = Object.entries(body).sort((a, b) => b[1] - a[1]);
    const max = Math.max(...entries.map((e) => e[1]), 1e-9);
    $("bars").innerHTML = entries.map(([label, score]) => `
      <div class="bar" data-testid="bar"><span class="label" data-testid="bar-label">${escapeHtml(label)}</span>
        <span class="track"><span class="fill" style="width:${((score / max) * 100).toFixed(1)}%"></span></span>
        <span class="value">${score.toFixed(3)}</span></div>`).join("");
  } else {
    $("raw-answer").textContent = typeof body === "string" ? body : JSON.stringify(body, null, 2);
  }
}

async function send() {
  if (!state.selected) return;
  const name = encodeURIComponent(state.selected.name);
  const chosen = mode();
  let path = `/console/api/predict/${name}`;
  let options;
  if (chosen === "file") {
    if (!state.file) { $("send-status").textContent = "choose a file first"; return; }
    options = { method: "POST", body: state.file, headers: { "Content-Type": state.file.type || "application/octet-stream" } };
  } else {
    if (chosen === "oip") path = `/console/api/infer/${name}`;
    options = { method: "POST", body: $("json-input").value, headers: { "Content-Type": "application/json" } };
  }
  $("send-status").textContent = "…";
  const started = performance.now();
  const response = await api(path, options);
  const text = await response.text();
  let body = text;
  try { body = JSON.parse(text); } catch (_) { /* not JSON: show as text */ }
  renderAnswer(body);
  $("send-status").textContent = `${response.status} in ${(performance.now() - started).toFixed(0)} ms`;
  $("send-status").className = response.ok ? "muted" : "error";
}

function wire() {
  $("login-form").onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("token-input").value.trim());
    refresh();
  };
  $("forget-key").onclick = () => { sessionStorage.removeItem(KEY); showLogin(); };
  $("register-form").onsubmit = register;
  $("send").onclick = send;
  $("file-input").onchange = (event) => showFile(event.target.files[0]);
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.onchange = () => {
      const file = mode() === "file";
      $("drop").hidden = !file;
      $("json-input").hidden = file;
      if (!file) $("preview").hidden = true;
    };
  }
  const drop = $("drop");
  drop.ondragover = (event) => { event.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (event) => { event.preventDefault(); drop.classList.remove("over"); showFile(event.dataTransfer.files[0]); };
  if (key()) refresh(); else showLogin();
  setInterval(refresh, POLL_MS);
}

wire();
