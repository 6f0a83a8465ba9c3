// Keyboard and mouse input turned into `move` and `attack` messages.
//
// The server moves a player toward the target of each `move` by at most 300 units/s times the time since
// the previous accepted move (capped at 1 s). Sending targets that lie exactly one interval's travel ahead
// of a locally predicted position gives smooth motion with no jump after standing still.

export const SPEED = 300;            // units/s, the server's default speed limit
const MOVE_INTERVAL_MS = 100;        // at most ~10 moves per second
const MAX_STEP_S = 0.15;             // never ask for more than this many seconds of travel at once
const RESYNC_DISTANCE = 60;          // prediction this far from the server position snaps back to it
const ATTACK_REPEAT_MS = 250;        // the server's default attack cooldown

const KEY_DIRECTIONS = {
  ArrowUp: [0, -1], KeyW: [0, -1],
  ArrowDown: [0, 1], KeyS: [0, 1],
  ArrowLeft: [-1, 0], KeyA: [-1, 0],
  ArrowRight: [1, 0], KeyD: [1, 0],
};

export class InputController {
  /**
   * @param {object} opts  state (GameState), send(msg) for moves, attack() to attack the nearest mob,
   *                       onTarget(point|null) when the click-to-move goal changes.
   */
  constructor({ state, send, attack, onTarget }) {
    this.state = state;
    this.send = send;
    this.attack = attack;
    this.onTarget = onTarget;
    this.held = new Set();
    this.goal = null;
    this.predicted = null;
    this.lastMoveAt = 0;
    this.lastAttackAt = 0;
    this.timer = setInterval(() => this.step(), MOVE_INTERVAL_MS);
  }

  /** Attach to the page; keys are ignored while the user types in a form field. */
  attach(canvas, toWorld) {
    window.addEventListener("keydown", (ev) => this.keyDown(ev));
    window.addEventListener("keyup", (ev) => this.held.delete(ev.code));
    window.addEventListener("blur", () => this.held.clear());
    canvas.addEventListener("click", (ev) => this.moveTo(toWorld(ev)));
  }

  keyDown(ev) {
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLTextAreaElement) return;
    if (ev.code in KEY_DIRECTIONS) {
      this.held.add(ev.code);
      this.setGoal(null);
      ev.preventDefault();
    } else if (ev.code === "Space") {
      ev.preventDefault();
      const now = performance.now();
      if (now - this.lastAttackAt >= ATTACK_REPEAT_MS) {
        this.lastAttackAt = now;
        this.attack();
      }
    }
  }

  /** Walk to a point (click-to-move); also used by tests. */
  moveTo(point) {
    this.setGoal(point);
  }

  setGoal(point) {
    this.goal = point;
    this.onTarget(point);
  }

  direction() {
    let dx = 0;
    let dy = 0;
    for (const code of this.held) {
      dx += KEY_DIRECTIONS[code][0];
      dy += KEY_DIRECTIONS[code][1];
    }
    const len = Math.hypot(dx, dy);
    return len ? [dx / len, dy / len, Infinity] : null;
  }

  goalDirection(from) {
    if (!this.goal) return null;
    const dx = this.goal.x - from.x;
    const dy = this.goal.y - from.y;
    const len = Math.hypot(dx, dy);
    if (len < 1) return null;
    return [dx / len, dy / len, len];
  }

  step() {
    const me = this.state.me;
    const now = performance.now();
    if (!me) {
      this.predicted = null;
      return;
    }
    if (!this.predicted || Math.hypot(this.predicted.x - me.x, this.predicted.y - me.y) > RESYNC_DISTANCE) {
      this.predicted = { x: me.x, y: me.y };
    }
    const dir = this.direction() ?? this.goalDirection(this.predicted);
    if (!dir) {
      if (this.goal && Math.hypot(this.goal.x - me.x, this.goal.y - me.y) < 2) this.setGoal(null);
      this.predicted = { x: me.x, y: me.y };
      this.lastMoveAt = 0;
      return;
    }
    const elapsed = this.lastMoveAt ? (now - this.lastMoveAt) / 1000 : MOVE_INTERVAL_MS / 1000;
    const dist = Math.min(SPEED * Math.min(elapsed, MAX_STEP_S), dir[2]);
    const [w, h] = this.state.bounds;
    const x = Math.max(0, Math.min(w, this.predicted.x + dir[0] * dist));
    const y = Math.max(0, Math.min(h, this.predicted.y + dir[1] * dist));
    if (this.send({ t: "move", x, y })) {
      this.predicted = { x, y };
      this.lastMoveAt = now;
    }
  }
}
