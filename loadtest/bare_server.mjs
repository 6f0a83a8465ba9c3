// Bare baseline server on Node's `ws`: the same protocol subset and tick as loadtest/bare_server.py.
//
//   NODE_PATH=<dir with ws and @msgpack/msgpack> node loadtest/bare_server.mjs --port 23456
//
// Run by `python -m loadtest.bench_forest --servers ours,bare,node`, which installs `ws` and
// `@msgpack/msgpack` with npm into a temp dir (nothing third-party is committed). login (no hashing),
// join, move (applied as sent), ping; rooms town and forest (1000 x 1000), 250-unit grid, own cell + 8
// neighbours; a 20 Hz deadline tick encoding ONE msgpack body per cell for the players who stayed in their
// cell and a personal body for players who changed cell. Keys in the game server's order, empty lists left out.

import { createRequire } from "node:module";
import { randomUUID } from "node:crypto";

const require = createRequire(import.meta.url);
const { WebSocketServer } = require("ws");
const { Encoder, decode } = require("@msgpack/msgpack");

const encoder = new Encoder({ ignoreUndefined: true });
const pack = (obj) => encoder.encode(obj);
const CELL = 250, SIDE = 1000, TICK_RATE = 20;

// JS msgpack writes integral numbers as integers; the game sends positions as floats, and the generator
// finds its own moved entry byte for byte: positions are wrapped and written as float64 by packTick.
class F64 { constructor(v) { this.v = v; } }

class Room {
  constructor(name) {
    this.name = name; this.cols = Math.ceil(SIDE / CELL);
    this.players = new Map(); this.members = new Map(); this.near = new Map();
    this.moved = new Set(); this.prev = new Map(); this.gone = new Map();
  }
  nearOf(cell) {
    let n = this.near.get(cell);
    if (!n) {
      const row = Math.floor(cell / this.cols), col = cell % this.cols; n = [];
      for (let r = Math.max(0, row - 1); r < Math.min(this.cols, row + 2); r++)
        for (let c = Math.max(0, col - 1); c < Math.min(this.cols, col + 2); c++) n.push(r * this.cols + c);
      this.near.set(cell, n);
    }
    return n;
  }
  cellOf(x, y) {
    const last = this.cols - 1;
    return Math.min(last, Math.max(0, Math.floor(y / CELL))) * this.cols + Math.min(last, Math.max(0, Math.floor(x / CELL)));
  }
  join(cell, pid) { let m = this.members.get(cell); if (!m) this.members.set(cell, m = new Set()); m.add(pid); }
  part(cell, pid) { const m = this.members.get(cell); if (m) { m.delete(pid); if (!m.size) this.members.delete(cell); } }
  add(p, x, y) {
    p.room = this; p.x = x; p.y = y; p.cell = this.cellOf(x, y);
    this.players.set(p.pid, p); this.join(p.cell, p.pid); this.prev.set(p.pid, null);
  }
  remove(p) {
    this.players.delete(p.pid); this.part(p.cell, p.pid); this.moved.delete(p.pid);
    const old = this.prev.has(p.pid) ? this.prev.get(p.pid) : p.cell;
    this.prev.delete(p.pid);
    if (old !== null) this.gone.set(p.pid, old);
    p.room = null;
  }
  move(p, x, y) {
    x = Math.min(Math.max(x, 0), SIDE); y = Math.min(Math.max(y, 0), SIDE);
    p.x = x; p.y = y;
    const cell = this.cellOf(x, y);
    if (cell !== p.cell) {
      this.part(p.cell, p.pid); this.join(cell, p.pid);
      if (!this.prev.has(p.pid)) this.prev.set(p.pid, p.cell);
      p.cell = cell;
    }
    this.moved.add(p.pid);
  }
  view(p) {
    const out = [];
    for (const c of this.nearOf(p.cell)) for (const pid of this.members.get(c) || []) {
      const q = this.players.get(pid); out.push([q.pid, q.name, new F64(q.x), new F64(q.y)]);
    }
    return out;
  }
  tick(n, ts) {
    if (!this.moved.size && !this.prev.size && !this.gone.size) return;
    const src = new Map(), dst = new Map();
    const bucket = (m, c) => { let b = m.get(c); if (!b) m.set(c, b = [[], [], []]); return b; };
    for (const pid of this.moved) if (!this.prev.has(pid)) {
      const p = this.players.get(pid); bucket(src, p.cell)[0].push([pid, new F64(p.x), new F64(p.y)]);
    }
    for (const [pid, old] of this.prev) {
      const p = this.players.get(pid);
      if (old === null) { bucket(src, p.cell)[1].push([pid, p.name, new F64(p.x), new F64(p.y)]); continue; }
      const before = new Set(this.nearOf(old)), after = this.nearOf(p.cell);
      for (const c of after) {
        if (before.has(c)) bucket(dst, c)[0].push([pid, new F64(p.x), new F64(p.y)]);
        else bucket(dst, c)[1].push([pid, p.name, new F64(p.x), new F64(p.y)]);
      }
      for (const c of before) if (!after.includes(c)) bucket(dst, c)[2].push(pid);
    }
    for (const [pid, old] of this.gone) bucket(src, old)[2].push(pid);
    const bodies = new Map();
    for (const [cell, pids] of this.members) {
      const moved = [], joined = [], left = [];
      for (const c of [...this.nearOf(cell), -1 - cell]) {
        const b = c >= 0 ? src.get(c) : dst.get(-1 - c);
        if (b) { moved.push(...b[0]); joined.push(...b[1]); left.push(...b[2]); }
      }
      const body = { t: "tick", n, ts: new F64(ts) };
      if (moved.length) body.moved = moved;
      if (joined.length) body.joined = joined;
      if (left.length) body.left = left;
      bodies.set(cell, body);
      if (moved.length || joined.length || left.length) {
        const data = packTick(body);
        for (const pid of pids) if (!this.prev.has(pid)) this.players.get(pid).ws.send(data);
      }
    }
    for (const [pid, old] of this.prev) {
      if (old === null) continue;
      const p = this.players.get(pid), body = { ...bodies.get(p.cell) };
      const before = new Set(this.nearOf(old)), after = this.nearOf(p.cell);
      const fresh = [], gone = [];
      for (const c of after) if (!before.has(c)) for (const qid of this.members.get(c) || []) {
        const q = this.players.get(qid); fresh.push([q.pid, q.name, new F64(q.x), new F64(q.y)]);
      }
      for (const c of before) if (!after.includes(c)) for (const qid of this.members.get(c) || []) gone.push(qid);
      if (fresh.length) body.joined = [...(body.joined || []), ...fresh];
      if (gone.length) body.left = [...(body.left || []), ...gone];
      p.ws.send(packTick(body));
    }
    this.moved.clear(); this.prev.clear(); this.gone.clear();
  }
}

// A small msgpack writer for what the tick carries (maps of str keys, arrays, ints, str, float64), so
// floats stay float64 like Python's msgpack writes them; everything else goes through @msgpack/msgpack.
function packTick(obj) {
  const parts = []; let size = 0;
  const push = (buf) => { parts.push(buf); size += buf.length; };
  const write = (v) => {
    if (v instanceof F64) { const b = Buffer.allocUnsafe(9); b[0] = 0xcb; b.writeDoubleBE(v.v, 1); push(b); }
    else if (Array.isArray(v)) { push(hdr(v.length, 0x90, 0xdc)); for (const x of v) write(x); }
    else if (v !== null && typeof v === "object") {
      const keys = Object.keys(v); push(hdr(keys.length, 0x80, 0xde));
      for (const k of keys) { write(k); write(v[k]); }
    } else push(Buffer.from(pack(v)));
  };
  write(obj);
  return Buffer.concat(parts, size);
}
function hdr(n, fix, big) {
  if (n < 16) return Buffer.from([fix | n]);
  const b = Buffer.allocUnsafe(3); b[0] = big; b.writeUInt16BE(n, 1); return b;
}

const rooms = { town: new Room("town"), forest: new Room("forest") };
let nextId = 1, tickN = 0;

function place(p, room, rid) {
  if (p.room) p.room.remove(p);
  room.add(p, SIDE / 2, SIDE / 2);
  const body = { t: "joined", room: room.name, you: p.pid, players: room.view(p), mobs: [],
                 bounds: [new F64(SIDE), new F64(SIDE)] };
  if (rid !== undefined && rid !== null) body.rid = rid;
  return packTick(body);
}

const port = Number(process.argv[process.argv.indexOf("--port") + 1]);
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false, backlog: 2048 });
wss.on("connection", (ws) => {
  let p = null;
  ws.on("message", (data) => {
    const msg = decode(data), t = msg.t, rid = msg.rid;
    if (t === "move" && p && p.room) p.room.move(p, Number(msg.x), Number(msg.y));
    else if (t === "ping") ws.send(packTick({ t: "pong", rid, ts: new F64(Date.now() / 1000) }));
    else if (t === "login" && !p) {
      p = { pid: nextId++, name: String(msg.name), ws, room: null, x: 0, y: 0, cell: 0 };
      ws.send(packTick({ t: "welcome", rid, session: randomUUID(), token: "bare",
        character: { name: p.name, level: 1, xp: 0, room: "town", x: new F64(500), y: new F64(500) },
        tick_rate: new F64(TICK_RATE), protocol: 1 }));
      ws.send(place(p, rooms.town, null));
    } else if (t === "join" && p && rooms[msg.room]) ws.send(place(p, rooms[msg.room], rid));
  });
  ws.on("close", () => { if (p && p.room) p.room.remove(p); });
});

const period = 1000 / TICK_RATE;
let deadline = performance.now() + period;
function loop() {
  tickN++;
  const ts = Date.now() / 1000;
  for (const room of Object.values(rooms)) room.tick(tickN, ts);
  deadline += period;
  const now = performance.now();
  if (now > deadline + 5 * period) deadline = now + period;
  setTimeout(loop, Math.max(0, deadline - now));
}
setTimeout(loop, period);
console.log(`bare node server listening on ws://127.0.0.1:${port}/ws`);
