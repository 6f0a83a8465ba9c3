// Draws the room on a canvas scaled to the room's bounds. Reads GameState, never changes it.

const COLORS = {
  floor: { town: "#20304a", forest: "#1d3b24", dungeon: "#2e2230" },
  grid: "rgba(255,255,255,0.06)",
  player: "#8fb8ff",
  me: "#ffd23f",
  mob: "#e05a47",
  dead: "#8a8a8a",
  hpBack: "#400",
  hpFront: "#4cd964",
  text: "#f2f2f2",
  target: "rgba(255,210,63,0.6)",
};
const SMOOTHING = 0.35;      // fraction of the remaining distance covered per frame

export class Renderer {
  constructor(canvas, state) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.state = state;
    this.shown = new Map();  // player id -> {x, y} drawn position, eased toward the server position
    this.target = null;      // click-to-move goal, drawn as a marker
    this.scale = 1;
  }

  /** World coordinates for a mouse event on the canvas. */
  toWorld(ev) {
    const rect = this.canvas.getBoundingClientRect();
    const [w, h] = this.state.bounds;
    const x = ((ev.clientX - rect.left) / rect.width) * w;
    const y = ((ev.clientY - rect.top) / rect.height) * h;
    return { x: Math.max(0, Math.min(w, x)), y: Math.max(0, Math.min(h, y)) };
  }

  fit() {
    const [w, h] = this.state.bounds;
    const cssWidth = this.canvas.clientWidth || 640;
    const cssHeight = (cssWidth * h) / w;
    const dpr = window.devicePixelRatio || 1;
    this.canvas.style.height = `${cssHeight}px`;
    const pw = Math.round(cssWidth * dpr);
    const ph = Math.round(cssHeight * dpr);
    if (this.canvas.width !== pw || this.canvas.height !== ph) {
      this.canvas.width = pw;
      this.canvas.height = ph;
    }
    this.scale = pw / w;
  }

  draw() {
    this.fit();
    const { ctx, state } = this;
    const s = this.scale;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = COLORS.floor[state.room] ?? "#222";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!state.room) return;
    ctx.setTransform(s, 0, 0, s, 0, 0);
    this.drawGrid();
    for (const mob of Object.values(state.mobs)) this.drawMob(mob);
    this.drawTarget();
    const players = Object.values(state.players);
    this.forgetGone(players);
    // Own player last so it is never hidden under someone else.
    players.sort((a, b) => (a.id === state.you) - (b.id === state.you));
    for (const p of players) this.drawPlayer(p, p.id === state.you);
    this.canvas.dataset.players = String(players.length);
    this.canvas.dataset.room = state.room;
  }

  drawGrid() {
    const { ctx } = this;
    const [w, h] = this.state.bounds;
    ctx.strokeStyle = COLORS.grid;
    ctx.lineWidth = 1 / this.scale;
    ctx.beginPath();
    for (let x = 0; x <= w; x += 100) {
      ctx.moveTo(x, 0);
      ctx.lineTo(x, h);
    }
    for (let y = 0; y <= h; y += 100) {
      ctx.moveTo(0, y);
      ctx.lineTo(w, y);
    }
    ctx.stroke();
  }

  drawMob(mob) {
    const { ctx } = this;
    const alive = mob.hp > 0;
    const r = 14;
    ctx.fillStyle = alive ? COLORS.mob : COLORS.dead;
    ctx.globalAlpha = alive ? 1 : 0.7;
    ctx.beginPath();
    ctx.moveTo(mob.x, mob.y - r);
    ctx.lineTo(mob.x + r, mob.y + r);
    ctx.lineTo(mob.x - r, mob.y + r);
    ctx.closePath();
    ctx.fill();
    ctx.globalAlpha = 1;
    if (!alive) {
      this.label(`${mob.kind} (dead)`, mob.x, mob.y + r + 14, 11);
      return;
    }
    const frac = mob.maxHp > 0 ? mob.hp / mob.maxHp : 0;
    ctx.fillStyle = COLORS.hpBack;
    ctx.fillRect(mob.x - 20, mob.y - r - 10, 40, 5);
    ctx.fillStyle = COLORS.hpFront;
    ctx.fillRect(mob.x - 20, mob.y - r - 10, 40 * frac, 5);
    this.label(mob.kind, mob.x, mob.y + r + 14, 11);
  }

  drawPlayer(p, isMe) {
    const { ctx } = this;
    const pos = this.ease(p);
    ctx.fillStyle = isMe ? COLORS.me : COLORS.player;
    ctx.beginPath();
    ctx.arc(pos.x, pos.y, isMe ? 12 : 10, 0, Math.PI * 2);
    ctx.fill();
    if (isMe) {
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 2 / this.scale;
      ctx.stroke();
    }
    this.label(p.name, pos.x, pos.y - 18, 13);
  }

  drawTarget() {
    if (!this.target) return;
    const { ctx } = this;
    ctx.strokeStyle = COLORS.target;
    ctx.lineWidth = 2 / this.scale;
    ctx.beginPath();
    ctx.arc(this.target.x, this.target.y, 8, 0, Math.PI * 2);
    ctx.stroke();
  }

  label(text, x, y, px) {
    const { ctx } = this;
    // Text keeps a constant on-screen size whatever the room scale.
    ctx.font = `${px / this.scale}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    ctx.fillStyle = COLORS.text;
    ctx.fillText(text, x, y);
  }

  ease(p) {
    let pos = this.shown.get(p.id);
    if (!pos || Math.hypot(p.x - pos.x, p.y - pos.y) > 200) {
      pos = { x: p.x, y: p.y };  // new or teleported: no sliding across the room
      this.shown.set(p.id, pos);
    }
    pos.x += (p.x - pos.x) * SMOOTHING;
    pos.y += (p.y - pos.y) * SMOOTHING;
    return pos;
  }

  forgetGone(players) {
    const ids = new Set(players.map((p) => p.id));
    for (const id of this.shown.keys()) if (!ids.has(id)) this.shown.delete(id);
  }
}
