// Live monitor: polls /api/stats (admin token as a Bearer header) every second and /health every few
// seconds, shows the latest numbers and charts of the last five minutes.

import { LineChart, formatNumber } from "./chart.js";

const STATS_POLL_MS = 1000;
const HEALTH_POLL_MS = 5000;
const HISTORY = 300;                       // samples: five minutes at one per second
const TOKEN_KEY = "gamebackend.admin_token";

const $ = (id) => document.getElementById(id);

const charts = {
  sessions: new LineChart($("chart-sessions"),
    [{ name: "sessions", color: "#8fb8ff" }, { name: "players", color: "#ffd23f" }], HISTORY),
  messages: new LineChart($("chart-messages"),
    [{ name: "in/s", color: "#4cd964" }, { name: "out/s", color: "#8fb8ff" }], HISTORY),
  tick: new LineChart($("chart-tick"),
    [{ name: "tick ms", color: "#ffd23f" }, { name: "lag ms", color: "#ff6b5a" }], HISTORY),
  datastore: new LineChart($("chart-datastore"),
    [{ name: "ops/s", color: "#c38fff" }, { name: "CAS retries/s", color: "#ff6b5a" }], HISTORY),
};

let token = null;
let pollTimer = null;
let lastCasRetries = null;

function setStatus(state, text) {
  const el = $("monitor-status");
  el.dataset.state = state;
  el.textContent = text;
}

/** Token from ?token= (then removed from the address bar), else from this tab's sessionStorage. */
function initialToken() {
  const url = new URL(window.location.href);
  const fromQuery = url.searchParams.get("token");
  if (fromQuery) {
    sessionStorage.setItem(TOKEN_KEY, fromQuery);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search);
    return fromQuery;
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function askForToken(message = "") {
  clearTimeout(pollTimer);
  token = null;
  $("monitor").hidden = true;
  $("token-form").hidden = false;
  $("token-error").textContent = message;
}

function begin(newToken) {
  token = newToken;
  $("token-form").hidden = true;
  $("monitor").hidden = false;
  setStatus("connecting", "connecting");
  pollStats();
}

async function pollStats() {
  clearTimeout(pollTimer);
  if (!token) return;
  try {
    const res = await fetch("/api/stats", { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
    if (res.status === 401 || res.status === 403) {
      const body = await res.json().catch(() => ({}));
      sessionStorage.removeItem(TOKEN_KEY);
      setStatus("error", "unauthorized");
      askForToken(`Unauthorized: ${body.error ?? "the server refused this admin token"}.`);
      return;
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    show(await res.json());
    setStatus("live", `live · ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    setStatus("error", `stats unavailable (${err.message}), retrying`);
  }
  pollTimer = setTimeout(pollStats, STATS_POLL_MS);
}

async function pollHealth() {
  try {
    const res = await fetch("/health", { cache: "no-store" });
    const body = await res.json().catch(() => ({}));
    $("m-health").textContent = res.ok ? (body.status ?? "ok") : `HTTP ${res.status}`;
  } catch {
    $("m-health").textContent = "down";
  }
}

function show(stats) {
  window.monitorState = stats;
  const rooms = stats.rooms ?? [];
  const players = stats.players ?? rooms.reduce((n, r) => n + (r.players ?? 0), 0);
  const ds = stats.datastore ?? {};
  $("m-sessions").textContent = formatNumber(stats.sessions);
  $("m-players").textContent = formatNumber(players);
  $("m-in").textContent = formatNumber(stats.messages_in_per_s);
  $("m-out").textContent = formatNumber(stats.messages_out_per_s);
  $("m-ops").textContent = formatNumber(ds.ops_per_s);
  $("m-cas").textContent = formatNumber(ds.cas_retries);
  $("m-uptime").textContent = stats.uptime_s == null ? "–" : formatDuration(stats.uptime_s);
  showRooms(rooms);
  const instances = Object.entries(stats.instances ?? {}).filter(([, n]) => n > 1);
  $("m-instances").textContent = instances.length
    ? instances.map(([room, n]) => `${room}: ${n}`).join(", ") : "one per room";

  const worst = (key) => {
    const values = rooms.map((r) => r[key]).filter(Number.isFinite);
    return values.length ? Math.max(...values) : null;
  };
  let casRate = null;
  if (Number.isFinite(ds.cas_retries) && lastCasRetries !== null) casRate = ds.cas_retries - lastCasRetries;
  if (Number.isFinite(ds.cas_retries)) lastCasRetries = ds.cas_retries;
  charts.sessions.push(stats.sessions, players);
  charts.messages.push(stats.messages_in_per_s, stats.messages_out_per_s);
  charts.tick.push(worst("tick_ms"), worst("tick_lag_ms"));
  charts.datastore.push(ds.ops_per_s, ds.cas_retries_per_s ?? casRate);
}

function showRooms(rooms) {
  const rows = rooms.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.room = r.name;
    tr.dataset.players = String(r.players ?? 0);
    for (const v of [r.name, r.players, r.mobs_alive, r.tick_ms, r.tick_lag_ms]) {
      const td = document.createElement("td");
      td.textContent = typeof v === "string" ? v : formatNumber(v);
      tr.append(td);
    }
    return tr;
  });
  $("rooms-table").tBodies[0].replaceChildren(...rows);
}

function formatDuration(s) {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, value);
  begin(value);
});

const saved = initialToken();
if (saved) begin(saved);
else askForToken();
pollHealth();
setInterval(pollHealth, HEALTH_POLL_MS);
