// Watch the server: GET v1/stats (slots, queue, TTFA percentiles, audio-s/s) every second while this tab is
// shown, with the tenant's recent requests (GET v1/playground/recent). Otherwise the header line is refreshed
// every ten seconds and whenever this page queues, starts or ends a request. Nothing is polled while the browser
// tab is hidden.

import { getJson } from "./api.js";
import { $, clock, el, millis, seconds, setText, sizeCanvas } from "./ui.js";

const FAST_MS = 1000;
const SLOW_MS = 10000;
const HISTORY_S = 120;
const COLORS = { slots: "#0b5cad", queue: "#b35900", rate: "#1a7f37" };

export function initServer(ctx) {
  const history = []; // {t (ms), slots, waiting, rate}
  let timer = null;
  let busy = false;

  ctx.on("tab", () => schedule(0));
  ctx.on("activity", () => schedule(0)); // a request of this page queued, started or ended: show it now
  document.addEventListener("visibilitychange", () => schedule(0));

  function schedule(delayMs) {
    clearTimeout(timer);
    if (document.visibilityState === "hidden") return;
    timer = setTimeout(poll, delayMs);
  }

  async function poll() {
    if (busy) return;
    busy = true;
    const watching = ctx.currentTab === "server";
    try {
      const stats = await getJson("v1/stats");
      show(stats);
      if (watching) showRecent((await getJson("v1/playground/recent?limit=15")).data);
      setText("st-updated", clock());
    } catch (err) {
      setText("server-line", `Server stats unavailable: ${err.message}`);
    } finally {
      busy = false;
      schedule(watching ? FAST_MS : SLOW_MS);
    }
  }

  function show(stats) {
    const { model, backend } = ctx.config;
    setText(
      "server-line",
      `${model} · ${backend} · ${stats.active_slots} of ${stats.max_slots} slots busy · ${stats.waiting} waiting`,
    );
    setText("st-slots", `${stats.active_slots} / ${stats.max_slots}`);
    setText("st-waiting", `${stats.waiting} / ${stats.queue_limit}`);
    setText("st-rate", stats.audio_s_per_s.toFixed(2));
    setText("st-steps", stats.steps_per_s.toFixed(1));
    const finished = stats.requests_finished || {};
    const total = Object.values(finished).reduce((a, b) => a + b, 0);
    setText("st-finished", String(total));
    $("st-finished").title = Object.entries(finished)
      .map(([k, v]) => `${k.replace("finished_", "")}: ${v}`)
      .join(", ");
    setText("st-audio", seconds(stats.total_audio_s, 1));
    const ttfa = stats.ttfa_s || {};
    const cells = $("st-ttfa").tBodies[0].rows[0].cells;
    ["p50", "p90", "p95", "p99"].forEach((p, i) => {
      cells[i].textContent = millis(ttfa[p]);
    });
    cells[4].textContent = String(ttfa.count ?? 0);
    const now = Date.now();
    history.push({ t: now, slots: stats.active_slots, waiting: stats.waiting, rate: stats.audio_s_per_s });
    while (history.length && history[0].t < now - HISTORY_S * 1000) history.shift();
    if (ctx.currentTab === "server") draw(stats.max_slots);
  }

  function draw(maxSlots) {
    const canvas = $("load-chart");
    const { g, width, height } = sizeCanvas(canvas);
    g.clearRect(0, 0, width, height);
    const top = Math.max(maxSlots, 1, ...history.map((h) => Math.max(h.waiting, h.rate)));
    const now = Date.now();
    const x = (t) => width - ((now - t) / (HISTORY_S * 1000)) * width;
    const y = (v) => height - 4 - (v / top) * (height - 18);
    g.strokeStyle = "#d0d7de";
    g.lineWidth = 1;
    for (const v of [0, top / 2, top]) {
      g.beginPath();
      g.moveTo(0, y(v));
      g.lineTo(width, y(v));
      g.stroke();
    }
    g.fillStyle = "#57606a";
    g.font = "11px system-ui, sans-serif";
    g.fillText(`${top.toFixed(top < 10 ? 1 : 0)}`, 2, y(top) - 3);
    for (const [field, color] of [
      ["slots", COLORS.slots],
      ["waiting", COLORS.queue],
      ["rate", COLORS.rate],
    ]) {
      g.strokeStyle = color;
      g.lineWidth = 2;
      g.beginPath();
      history.forEach((h, i) => (i ? g.lineTo(x(h.t), y(h[field])) : g.moveTo(x(h.t), y(h[field]))));
      g.stroke();
    }
    const last = history[history.length - 1];
    if (last) {
      canvas.setAttribute(
        "aria-label",
        `Load chart: now ${last.slots} running, ${last.waiting} waiting, ${last.rate.toFixed(2)} audio seconds per second`,
      );
    }
  }

  function showRecent(rows) {
    const body = $("recent").tBodies[0];
    if (!rows.length) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No requests yet.")));
      return;
    }
    body.replaceChildren(
      ...rows.map((r) =>
        el(
          "tr",
          {},
          el("td", {}, clock(new Date(`${r.at}${r.at.endsWith("Z") || r.at.includes("+") ? "" : "Z"}`))),
          el("td", {}, ctx.voices.find((v) => v.id === r.voice)?.name || r.voice || "–"),
          el("td", {}, String(r.text_chars ?? "–")),
          el("td", {}, r.format || "–"),
          el("td", {}, millis(r.first_byte_s)),
          el("td", {}, seconds(r.total_s)),
          el("td", {}, seconds(r.audio_seconds)),
          el("td", { class: r.outcome === "ok" ? "ok" : "warn" }, r.outcome || "–"),
        ),
      ),
    );
  }

  schedule(0);
}
