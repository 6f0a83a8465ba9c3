// Tiny hand-drawn line charts for the monitor: a fixed window of samples, one or more series.

const PAD = { left: 4, right: 4, top: 16, bottom: 14 };
const MIN_SPAN = 30;           // samples shown across the width before the window fills up

export class LineChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{name: string, color: string}[]} series
   * @param {number} capacity  samples kept (one per poll)
   */
  constructor(canvas, series, capacity = 300) {
    this.canvas = canvas;
    this.series = series.map((s) => ({ ...s, values: [] }));
    this.capacity = capacity;
  }

  /** Append one sample per series (null/undefined = gap). */
  push(...values) {
    this.series.forEach((s, i) => {
      s.values.push(Number.isFinite(values[i]) ? values[i] : null);
      if (s.values.length > this.capacity) s.values.shift();
    });
    this.draw();
  }

  draw() {
    const { canvas } = this;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.round((canvas.clientWidth || 300) * dpr);
    const h = Math.round((canvas.clientHeight || 110) * dpr);
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const cw = w / dpr;
    const ch = h / dpr;
    ctx.clearRect(0, 0, cw, ch);

    const all = this.series.flatMap((s) => s.values).filter((v) => v !== null);
    const max = niceMax(Math.max(0, ...all));
    const plotW = cw - PAD.left - PAD.right;
    const plotH = ch - PAD.top - PAD.bottom;
    // The time axis grows with the data up to `capacity` samples, so a fresh page is not an empty strip.
    const longest = Math.max(...this.series.map((s) => s.values.length));
    const span = Math.min(this.capacity, Math.max(MIN_SPAN, longest));
    const xAt = (i) => PAD.left + (i / (span - 1)) * plotW;
    const yAt = (v) => PAD.top + plotH - (v / max) * plotH;

    ctx.strokeStyle = "rgba(255,255,255,0.12)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (const f of [0, 0.5, 1]) {
      ctx.moveTo(PAD.left, PAD.top + plotH * f);
      ctx.lineTo(cw - PAD.right, PAD.top + plotH * f);
    }
    ctx.stroke();

    for (const s of this.series) {
      const offset = span - s.values.length;  // newest sample sits at the right edge
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let drawing = false;
      s.values.forEach((v, i) => {
        if (v === null) {
          drawing = false;
          return;
        }
        const x = xAt(offset + i);
        const y = yAt(v);
        if (drawing) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        drawing = true;
      });
      ctx.stroke();
    }

    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "top";
    ctx.fillStyle = "#8a93a3";
    ctx.textAlign = "left";
    ctx.fillText(`last ${span} s`, PAD.left, ch - 12);
    ctx.textAlign = "right";
    ctx.fillText(`max ${formatNumber(max)}`, cw - PAD.right, 1);
    ctx.textAlign = "left";
    let x = PAD.left;
    for (const s of this.series) {
      const last = s.values.at(-1);
      const text = `${s.name} ${last === null || last === undefined ? "–" : formatNumber(last)}`;
      ctx.fillStyle = s.color;
      ctx.fillText(text, x, 1);
      x += ctx.measureText(text).width + 10;
    }
  }
}

/** A round upper bound for the y axis (1, 2, 5 × 10^k), at least 1. */
export function niceMax(v) {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

export function formatNumber(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  if (Math.abs(v) >= 1000) return `${(v / 1000).toFixed(1)}k`;
  if (Number.isInteger(v)) return String(v);
  return v.toFixed(Math.abs(v) < 10 ? 2 : 1);
}
