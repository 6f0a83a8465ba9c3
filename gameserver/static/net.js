// Websocket connection to the game server: JSON text frames, rid correlation, resume with backoff,
// idle pings. Knows the protocol's session rules but nothing about drawing or the DOM.
//
// Resume without losing a message: every server message but tick, pong, welcome, joined, bye and
// redirect carries `seq` (1, 2, 3 ... per session). The connection keeps the last one and sends it in
// `resume`; the server then replays what the session missed after the `joined`. A number seen twice is
// dropped; counters (replayed, gaps, duplicates, unrecovered) say what happened.

const REQUEST_TIMEOUT_MS = 10000;
const PING_IDLE_MS = 10000;          // the server closes sockets silent for 30 s
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];

export class ServerError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

export function wsUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws`;
}

/**
 * One logical session that survives socket drops.
 *
 * Callbacks: onMessage(msg) for every server message (replies included), onStatus(state, detail)
 * with state in: offline, connecting, online, reconnecting, closed.
 */
export class Connection {
  constructor(url, { onMessage, onStatus }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.ws = null;
    this.token = null;
    this.credentials = null;      // {name, secret}, used to log in again when resume fails
    this.nextRid = 1;
    this.pending = new Map();     // rid -> {resolve, reject, timer}
    this.lastSent = 0;
    this.attempt = 0;
    this.retryTimer = null;
    this.stopped = true;
    this.session = null;          // session id of the last welcome: its seq numbers are ours
    this.lastSeq = 0;
    this.replayUntil = 0;         // seq numbers up to this one are being replayed
    this.gapAnnounced = false;    // a welcome said recovered: false: the next number may jump
    this.replayed = 0;
    this.gaps = 0;
    this.duplicates = 0;
    this.unrecovered = 0;
    this.pingTimer = setInterval(() => this.pingIfIdle(), 1000);
  }

  /**
   * Start a session: resume `token` when given (page reload), else log in with the name and secret.
   * Resolves with the welcome message.
   */
  login(name, secret, token = null) {
    this.credentials = { name, secret };
    this.token = token;
    this.stopped = false;
    this.attempt = 0;
    return this.open();
  }

  /** Stop reconnecting and close the socket. */
  close(reason = "closed") {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.failPending(new ServerError("closed", reason));
    this.onStatus("closed", reason);
  }

  /** Send a request with a fresh rid; resolves with the direct reply, rejects with ServerError. */
  request(msg) {
    const rid = this.nextRid++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(rid);
        reject(new ServerError("timeout", `no reply to ${msg.t}`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(rid, { resolve, reject, timer });
      if (!this.send({ ...msg, rid })) {
        clearTimeout(timer);
        this.pending.delete(rid);
        reject(new ServerError("offline", "not connected"));
      }
    });
  }

  /** Fire-and-forget message (move, chat); returns false when the socket is not open. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    this.lastSent = performance.now();
    return true;
  }

  get online() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.token !== null;
  }

  open() {
    clearTimeout(this.retryTimer);
    this.onStatus(this.attempt === 0 ? "connecting" : "reconnecting", `attempt ${this.attempt + 1}`);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    return new Promise((resolve, reject) => {
      ws.onopen = () => this.greet().then(resolve, reject);
      ws.onmessage = (ev) => this.receive(ev.data);
      ws.onclose = () => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.failPending(new ServerError("disconnected", "connection lost"));
        reject(new ServerError("disconnected", "connection lost"));
        this.scheduleReconnect();
      };
      ws.onerror = () => {};      // onclose follows and handles it
    });
  }

  /** First frame on a new socket: resume when we hold a token, else log in. */
  async greet() {
    let welcome;
    if (this.token) {
      // Our own session: ask for what we missed. A token from a reload (no session yet): plain resume.
      const resume = { t: "resume", token: this.token, tick_format: "compact" };
      if (this.session !== null) resume.seq = this.lastSeq;
      try {
        welcome = await this.request(resume);
      } catch (err) {
        if (err.code !== "bad_token") throw err;
        this.token = null;        // grace period over: fall back to a fresh login
      }
    }
    if (!welcome) {
      const { name, secret } = this.credentials;
      try {
        welcome = await this.request({ t: "login", name, secret, tick_format: "compact" });
      } catch (err) {
        if (err.code === "auth_failed" || err.code === "bad_message") this.close(err.message);
        throw err;
      }
    }
    this.token = welcome.token;
    this.attempt = 0;
    this.onStatus("online", welcome.session);
    return welcome;
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;                     // the server only sends JSON to JSON clients; ignore noise
    }
    if (Number.isInteger(msg.seq) && !this.acceptSeq(msg.seq)) return;
    if (msg.t === "welcome") this.receiveWelcome(msg);
    if (msg.rid !== undefined && this.pending.has(msg.rid)) {
      const { resolve, reject, timer } = this.pending.get(msg.rid);
      clearTimeout(timer);
      this.pending.delete(msg.rid);
      if (msg.t === "error") reject(new ServerError(msg.code, msg.message));
      else resolve(msg);
    }
    if (msg.t === "bye") this.receiveBye(msg);
    this.onMessage(msg);
  }

  /** False for a number already seen (the message is dropped); counts gaps nobody announced. */
  acceptSeq(seq) {
    if (seq <= this.lastSeq) {
      this.duplicates += 1;
      return false;
    }
    if (seq !== this.lastSeq + 1 && !this.gapAnnounced) this.gaps += 1;
    this.gapAnnounced = false;
    if (seq <= this.replayUntil) this.replayed += 1;
    this.lastSeq = seq;
    return true;
  }

  receiveWelcome(msg) {
    if (msg.session !== this.session) {
      this.session = msg.session;
      this.lastSeq = 0;
      this.replayUntil = 0;
      this.gapAnnounced = false;
    }
    if (msg.recovered === true) this.replayUntil = this.lastSeq + (msg.replay ?? 0);
    else if (msg.recovered === false) {
      this.unrecovered += 1;
      this.gapAnnounced = true;
    }
  }

  receiveBye(msg) {
    // Another tab or device took the session over: reconnecting would just steal it back.
    if (msg.reason === "replaced") this.close(`replaced by another login`);
  }

  scheduleReconnect() {
    if (this.stopped) return;
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    const delay = base / 2 + Math.random() * base / 2;
    this.attempt += 1;
    this.onStatus("reconnecting", `retry in ${(delay / 1000).toFixed(1)} s`);
    this.retryTimer = setTimeout(() => this.open().catch(() => {}), delay);
  }

  pingIfIdle() {
    if (this.online && performance.now() - this.lastSent > PING_IDLE_MS) {
      this.request({ t: "ping" }).catch(() => {});
    }
  }

  failPending(err) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(err);
    }
    this.pending.clear();
  }
}
