// Small DOM helpers: no innerHTML anywhere (text goes in as text), a few formatters.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function setText(id, text) {
  $(id).textContent = text;
}

export function seconds(value, digits = 2) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(digits)} s`;
}

export function millis(valueS) {
  return valueS === null || valueS === undefined ? "–" : `${Math.round(valueS * 1000)} ms`;
}

export function clock(date = new Date()) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// The state of one line of a checklist: pending | running | passed | failed | skipped.
const STATE_WORDS = {
  pending: "not checked yet",
  running: "checking",
  passed: "passed",
  failed: "failed",
  skipped: "not reached",
};
const MARKS = { pending: "○", running: "…", passed: "✓", failed: "✗", skipped: "–" };

export function setCheck(name, state, detail = "") {
  const item = document.querySelector(`#checks [data-check="${name}"]`);
  item.dataset.state = state;
  item.querySelector(".mark").textContent = MARKS[state];
  item.querySelector(".state").textContent = `: ${STATE_WORDS[state]}. `;
  item.querySelector(".detail").textContent = detail ? ` — ${detail}` : "";
}

// A canvas drawn at the device's pixel ratio (crisp on high-DPI screens), in CSS pixels.
export function sizeCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { g, width, height };
}

export function downloadBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// 16-bit mono WAV from s16le PCM chunks (Uint8Array each).
export function wavBlob(chunks, sampleRate) {
  const size = chunks.reduce((n, c) => n + c.byteLength, 0);
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, s) => [...s].forEach((ch, i) => header.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  header.setUint32(4, 36 + size, true);
  text(8, "WAVE");
  text(12, "fmt ");
  header.setUint32(16, 16, true);
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * 2, true);
  header.setUint16(32, 2, true);
  header.setUint16(34, 16, true);
  text(36, "data");
  header.setUint32(40, size, true);
  return new Blob([header, ...chunks], { type: "audio/wav" });
}
