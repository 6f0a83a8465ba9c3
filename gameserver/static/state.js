// The client's view of the game, updated only from server messages. Plain objects and arrays so that
// tests can read it through `window.gameState` (page.evaluate serialises it as is).

export const DEFAULT_ROOMS = ["town", "forest", "dungeon"];

/** Level for an XP total: 1 + floor(sqrt(xp / 100)). */
export function levelFor(xp) {
  return 1 + Math.floor(Math.sqrt(Math.max(0, xp) / 100));
}

/** XP at which `level` starts: 100 * (level - 1)^2. */
export function xpForLevel(level) {
  return 100 * (level - 1) ** 2;
}

/** Progress inside the current level as {level, start, next, fraction}. */
export function xpProgress(xp) {
  const level = levelFor(xp);
  const start = xpForLevel(level);
  const next = xpForLevel(level + 1);
  return { level, start, next, fraction: (xp - start) / (next - start) };
}

// Protocol v1 server messages this client has a view of; anything else is a room type's own message.
const KNOWN = new Set(["welcome", "joined", "left", "tick", "chat", "hit", "xp", "level_up", "profile",
  "top", "pong", "error", "bye", "redirect"]);
const JOINED_FIELDS = new Set(["t", "rid", "room", "you", "players", "mobs", "bounds"]);

function isPair(value) {
  return Array.isArray(value) && value.length === 2 && value.every(Number.isFinite);
}

/** The entries of `value` that are arrays of at least `size` items (a room type's lists may differ). */
function listOf(value, size) {
  return Array.isArray(value) ? value.filter((e) => Array.isArray(e) && e.length >= size) : [];
}

export class GameState {
  constructor() {
    this.status = "offline";
    this.statusDetail = "";
    this.session = null;
    this.name = null;
    this.level = 1;
    this.xp = 0;
    this.tickRate = null;
    this.room = null;
    this.you = null;
    this.bounds = [1000, 1000];
    this.players = {};          // id -> {id, name, x, y}: players inside our area of interest
    this.mobs = {};             // id -> {id, kind, x, y, hp, maxHp}
    this.lastTick = 0;
    this.lastHit = null;
    this.lastError = null;
    this.lastBye = null;
    this.top = [];
    this.chat = [];             // {from, text, ts}, last 100
    this.scale = 1;             // tick positions are divided by this (10 with compact ticks)
    this.roomFields = {};       // what the room type added to its `joined` (beyond room, you, players ...)
    this.raw = [];              // messages of the room type this client has no view of: {t, text}, last 50
  }

  get me() {
    return this.players[this.you] ?? null;
  }

  playerNames() {
    return Object.values(this.players).map((p) => p.name).sort();
  }

  /** Apply one server message; returns true when the world view changed. A message type this client
   * does not know (a room type's own) is kept, as JSON, in `raw`. */
  apply(msg) {
    const handler = KNOWN.has(msg.t) ? this[`on_${msg.t}`] : null;
    if (!handler) {
      if (!KNOWN.has(msg.t)) {
        this.raw.push({ t: msg.t, text: JSON.stringify(msg) });
        if (this.raw.length > 50) this.raw.shift();
      }
      return false;
    }
    handler.call(this, msg);
    return true;
  }

  on_welcome(msg) {
    const c = msg.character;
    this.scale = msg.tick_format === "compact" ? 10 : 1;   // compact ticks: positions in tenths
    this.session = msg.session;
    this.tickRate = msg.tick_rate;
    this.name = c.name;
    this.setXp(c.xp);
  }

  /** A `joined` of any room type: the built-in game's players, mobs and bounds when it has them. */
  on_joined(msg) {
    this.room = msg.room;
    this.you = msg.you;
    this.bounds = isPair(msg.bounds) ? msg.bounds : [1000, 1000];
    this.players = {};
    for (const entry of listOf(msg.players, 4)) {
      const [id, name, x, y] = entry;
      this.players[id] = { id, name, x, y };
    }
    this.mobs = {};
    for (const entry of listOf(msg.mobs, 5)) {
      const [id, kind, x, y, hp] = entry;
      this.mobs[id] = { id, kind, x, y, hp, maxHp: hp };
    }
    this.roomFields = {};
    for (const [key, value] of Object.entries(msg)) {
      if (!JOINED_FIELDS.has(key)) this.roomFields[key] = value;
    }
  }

  on_left() {
    this.room = null;
    this.you = null;
    this.players = {};
    this.mobs = {};
    this.roomFields = {};
  }

  on_tick(msg) {
    this.lastTick = msg.n;
    const k = this.scale;
    for (const [id, name, x, y] of listOf(msg.joined, 4)) this.players[id] = { id, name, x: x / k, y: y / k };
    for (const id of Array.isArray(msg.left) ? msg.left : []) delete this.players[id];
    for (const [id, x, y] of listOf(msg.moved, 3)) {
      const p = this.players[id];
      if (p) Object.assign(p, { x: x / k, y: y / k });
    }
    for (const [id, hp] of listOf(msg.mobs, 2)) this.setMobHp(id, hp);
  }

  on_hit(msg) {
    this.lastHit = { mob: msg.mob, dmg: msg.dmg, hp: msg.hp };
    this.setMobHp(msg.mob, msg.hp);
  }

  on_xp(msg) {
    this.setXp(msg.xp);
  }

  on_profile(msg) {
    this.setXp(msg.character.xp);
  }

  on_top(msg) {
    this.top = msg.entries;
  }

  on_chat(msg) {
    this.chat.push({ from: msg.from, text: msg.text, ts: msg.ts });
    if (this.chat.length > 100) this.chat.shift();
  }

  on_error(msg) {
    this.lastError = { code: msg.code, message: msg.message };
  }

  on_bye(msg) {
    this.lastBye = msg.reason;
  }

  setXp(xp) {
    this.xp = xp;
    this.level = levelFor(xp);
  }

  setMobHp(id, hp) {
    const mob = this.mobs[id];
    if (!mob) return;
    mob.hp = hp;
    // Max hp is not on the wire: the highest hp seen (a respawn restores it) is the best estimate.
    mob.maxHp = Math.max(mob.maxHp, hp);
  }

  /** Nearest living mob to the own player, or null. */
  nearestMob() {
    const me = this.me;
    if (!me) return null;
    let best = null;
    let bestDist = Infinity;
    for (const mob of Object.values(this.mobs)) {
      if (mob.hp <= 0) continue;
      const d = Math.hypot(mob.x - me.x, mob.y - me.y);
      if (d < bestDist) {
        best = mob;
        bestDist = d;
      }
    }
    return best;
  }
}
