// DOM panels around the canvas: status, XP, leaderboard, chat, player list, transient notices.

import { xpProgress } from "./state.js";

const $ = (id) => document.getElementById(id);
const NOTICE_MS = 2500;

export class Panels {
  constructor(state) {
    this.state = state;
    this.noticeTimer = null;
  }

  showStatus(status, detail = "") {
    const el = $("status");
    el.dataset.state = status;
    el.textContent = detail ? `${status} (${detail})` : status;
  }

  showLogin(visible, message = "") {
    $("login").hidden = !visible;
    $("game").hidden = visible;
    $("login-error").textContent = message;
  }

  /** A short-lived line under the canvas: hits, errors, level ups. */
  notice(text, kind = "info") {
    const el = $("notice");
    el.textContent = text;
    el.dataset.kind = kind;
    el.hidden = false;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => (el.hidden = true), NOTICE_MS);
  }

  showProgress() {
    const { xp } = this.state;
    const p = xpProgress(xp);
    $("level").textContent = String(p.level);
    $("xp").textContent = `${xp} / ${p.next}`;
    $("xp").dataset.xp = String(xp);
    $("xp-fill").style.width = `${Math.round(p.fraction * 100)}%`;
    $("player-name").textContent = this.state.name ?? "";
  }

  showRoom() {
    const { room, roomFields } = this.state;
    $("room-name").textContent = room ?? "(no room)";
    $("room-fields").textContent = Object.entries(roomFields)
      .filter(([, v]) => v === null || typeof v !== "object")
      .map(([k, v]) => `${k}: ${v}`).join(", ");
    for (const button of document.querySelectorAll("#rooms button")) {
      button.classList.toggle("current", button.dataset.room === room?.split("~")[0]);
    }
  }

  showPlayers() {
    const list = $("player-list");
    const names = this.state.playerNames();
    if (list.dataset.names === names.join(",")) return;
    list.dataset.names = names.join(",");
    list.replaceChildren(...names.map((name) => item(name, name === this.state.name ? "me" : "")));
  }

  /** The room type's own messages (types this client has no view of), newest last. */
  showRaw() {
    const rows = this.state.raw.slice(-20).map((m) => item(m.text, "raw"));
    $("room-log").replaceChildren(...rows);
  }

  showLeaderboard() {
    const rows = this.state.top.map((e) => item(`${e.name}  L${e.level}  ${e.xp} xp`));
    $("leaderboard").replaceChildren(...rows);
  }

  addChat(from, text, kind = "chat") {
    const log = $("chat-log");
    const line = document.createElement("div");
    line.className = kind;
    if (from) {
      const who = document.createElement("b");
      who.textContent = `${from}: `;
      line.append(who);
    }
    line.append(text);
    log.append(line);
    while (log.childElementCount > 200) log.firstElementChild.remove();
    log.scrollTop = log.scrollHeight;
  }
}

function item(text, className = "") {
  const li = document.createElement("li");
  li.textContent = text;
  if (className) li.className = className;
  return li;
}
