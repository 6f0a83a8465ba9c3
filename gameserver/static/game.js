// Entry point of the web client: wires the connection, the game state, the canvas and the panels.

import { Connection, wsUrl } from "./net.js";
import { GameState, DEFAULT_ROOMS } from "./state.js";
import { Renderer } from "./render.js";
import { InputController } from "./input.js";
import { Panels } from "./ui.js";

const LEADERBOARD_POLL_MS = 5000;
const STORE = { name: "gamebackend.name", secret: "gamebackend.secret", token: "gamebackend.token" };

/** A random secret of 32 URL-safe characters (24 random bytes), made once per browser. */
function randomSecret() {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
}

function storedSecret() {
  let secret = localStorage.getItem(STORE.secret);
  if (!secret || secret.length < 16) {
    secret = randomSecret();
    localStorage.setItem(STORE.secret, secret);
  }
  return secret;
}

const state = new GameState();
const panels = new Panels(state);
const canvas = document.getElementById("world");
const renderer = new Renderer(canvas, state);
const connection = new Connection(wsUrl(), { onMessage: receive, onStatus: statusChanged });

function receive(msg) {
  const known = state.apply(msg);
  if (!known && state.raw.at(-1)?.t === msg.t) panels.showRaw();
  switch (msg.t) {
    case "welcome":
      sessionStorage.setItem(STORE.token, msg.token);
      panels.showLogin(false);
      panels.showProgress();
      setTimeout(refreshLeaderboard, 0);  // after the connection has taken the token
      if (msg.recovered === false) {      // messages were lost while away: read the profile again
        panels.addChat(null, "reconnected; some messages were lost", "system");
        setTimeout(() => connection.request({ t: "me" }).catch(() => {}), 0);
      }
      break;
    case "joined":
    case "left":
      renderer.target = null;
      input.setGoal(null);
      panels.showRoom();
      break;
    case "chat":
      panels.addChat(msg.from, msg.text);
      break;
    case "hit":
      panels.notice(msg.hp > 0 ? `hit mob ${msg.mob} for ${msg.dmg} (${msg.hp} hp left)` : `killed mob ${msg.mob}`);
      break;
    case "xp":
    case "profile":
      panels.showProgress();
      if (msg.t === "xp") {
        panels.notice(`+${msg.gained} xp`);
        refreshLeaderboard();
      }
      break;
    case "level_up":
      panels.addChat(null, `${msg.name} reached level ${msg.level}`, "system");
      break;
    case "top":
      panels.showLeaderboard();
      break;
    case "error":
      if (msg.code !== "bad_token") panels.notice(`${msg.code}: ${msg.message}`, "error");
      break;
    case "bye":
      panels.addChat(null, `disconnected by the server: ${msg.reason}`, "system");
      panels.notice(`bye: ${msg.reason}`, "error");
      break;
  }
}

function statusChanged(status, detail) {
  state.status = status;
  state.statusDetail = detail;
  const reason = status === "closed" && state.lastBye ? `bye: ${state.lastBye}, ${detail}` : detail;
  panels.showStatus(status, status === "online" ? "" : reason);
  if (status === "closed") {
    sessionStorage.removeItem(STORE.token);
    panels.showLogin(true, detail === "closed" ? "" : `Disconnected: ${reason}`);
  }
}

function attackNearest() {
  const mob = state.nearestMob();
  if (!mob) {
    panels.notice("no living mob in this room", "error");
    return;
  }
  connection.request({ t: "attack", mob: mob.id }).catch(() => {});  // errors are shown by receive()
}

function join(room) {
  return connection.request({ t: "join", room }).catch(() => {});
}

function chat(text) {
  connection.send({ t: "chat", text });
}

function refreshLeaderboard() {
  if (connection.online) connection.request({ t: "top", n: 10 }).catch(() => {});
}

const input = new InputController({
  state,
  send: (msg) => connection.send(msg),
  attack: attackNearest,
  onTarget: (point) => (renderer.target = point),
});
input.attach(canvas, (ev) => renderer.toWorld(ev));

function start(name, secret, token) {
  localStorage.setItem(STORE.name, name);
  localStorage.setItem(STORE.secret, secret);
  state.lastBye = null;
  panels.showLogin(false);
  connection.login(name, secret, token).catch(() => {});
}

function setUpForms() {
  const form = document.getElementById("login");
  const nameInput = document.getElementById("name");
  const secretInput = document.getElementById("secret");
  nameInput.value = localStorage.getItem(STORE.name) ?? "";
  secretInput.value = storedSecret();
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    start(nameInput.value.trim(), secretInput.value);
  });

  document.getElementById("logout").addEventListener("click", () => connection.close());

  const rooms = document.getElementById("rooms");
  for (const room of DEFAULT_ROOMS) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = room;
    button.dataset.room = room;
    button.addEventListener("click", () => {
      canvas.focus();           // keys go back to the game; Space must not press this button again
      join(room);
    });
    rooms.append(button);
  }

  const joinForm = document.getElementById("join-form");
  const joinInput = document.getElementById("join-room");
  joinForm.addEventListener("submit", (ev) => {   // any room by name: a room type's, an instance
    ev.preventDefault();
    const room = joinInput.value.trim();
    if (room) join(room);
    joinInput.value = "";
    canvas.focus();
  });

  const chatForm = document.getElementById("chat-form");
  const chatInput = document.getElementById("chat-input");
  chatForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = chatInput.value.trim();
    if (text) chat(text.slice(0, 200));
    chatInput.value = "";
    chatInput.blur();           // back to the game keys
  });
}

function frame() {
  renderer.draw();
  panels.showPlayers();
  requestAnimationFrame(frame);
}

setUpForms();
panels.showStatus("offline");
const savedToken = sessionStorage.getItem(STORE.token);
const savedName = localStorage.getItem(STORE.name);
if (savedToken && savedName) {
  start(savedName, storedSecret(), savedToken);  // page reload: resume the same session
} else {
  panels.showLogin(true);
}
setInterval(refreshLeaderboard, LEADERBOARD_POLL_MS);
requestAnimationFrame(frame);

// For tests and the curious: the live state and a few actions.
window.gameState = state;
window.game = { connection, moveTo: (x, y) => input.moveTo({ x, y }), attackNearest, join, chat };
