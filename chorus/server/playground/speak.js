// Speak: text → streamed speech (POST v1/tts/generate, Server-Sent Events of s16le PCM with word timestamps),
// played as it arrives, the spoken word highlighted; queue position and ETA while waiting; a 429 retried
// after its Retry-After; the result downloadable in any format.

import { ApiError, request } from "./api.js";
import { StreamPlayer } from "./player.js";
import { $, clock, downloadBlob, el, millis, seconds, setText, wavBlob } from "./ui.js";

const MAX_RETRIES = 5;
const DEFAULT_RETRY_S = 5; // a 429 without Retry-After
const EXTENSIONS = { wav: "wav", mp3: "mp3", opus: "opus", aac: "aac", flac: "flac", pcm: "pcm" };

// Server-Sent Events from a fetch body: {event, data} with data parsed as JSON.
async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end = buffer.indexOf("\n\n");
    while (end >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) yield { event, data: JSON.parse(data) };
      end = buffer.indexOf("\n\n");
    }
  }
}

// An error event in the stream: a refusal while waiting (the server found it cannot start this request in
// time) is a 429 like one at the door, without a Retry-After.
function streamError(data) {
  const status = data.error?.type === "rate_limit_error" ? 429 : 500;
  return new ApiError(status, data, null);
}

function pcmFromBase64(b64) {
  const binary = atob(b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  const ints = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  const floats = new Float32Array(ints.length);
  for (let i = 0; i < ints.length; i += 1) floats[i] = ints[i] / 32768;
  return { bytes, floats };
}

// The input text with each timed word wrapped in a span as its timestamp arrives; highlight(t) marks the word
// being heard at t seconds and every word before it as said.
class Transcript {
  constructor(node) {
    this.node = node;
    this.words = [];
    this.current = null;
  }

  reset(text) {
    this.node.replaceChildren();
    this.rest = document.createTextNode(text);
    this.node.append(this.rest);
    this.words = [];
    this.current = null;
  }

  add(words) {
    for (const word of words || []) {
      const text = this.rest.data;
      const at = text.indexOf(word.word);
      if (at < 0) continue;
      const span = el("span", { class: "word" }, word.word);
      this.rest.before(document.createTextNode(text.slice(0, at)), span);
      this.rest.data = text.slice(at + word.word.length);
      this.words.push({ ...word, span });
    }
  }

  highlight(t) {
    let now = null;
    for (const word of this.words) {
      if (t === null || word.start_s > t) break;
      now = word;
    }
    if (now === this.current) return;
    if (this.current) this.current.span.classList.remove("now");
    for (const word of this.words) word.span.classList.toggle("said", t === null || word.start_s <= t);
    if (now && t !== null) now.span.classList.add("now");
    this.current = t === null ? null : now;
  }
}

export function initSpeak(ctx) {
  const player = new StreamPlayer($("wave"), $("level"));
  const transcript = new Transcript($("words"));
  player.onFrame = (t) => transcript.highlight(t);
  let job = null;
  let last = null; // the finished job whose result can be downloaded

  ctx.on("voices", (voices) => fillVoices(voices));
  ctx.on("speak-with", (voiceId) => {
    $("voice").value = voiceId;
    ctx.showTab("speak");
    $("text").focus();
  });

  $("text").maxLength = ctx.config.max_input_chars;
  $("speed").addEventListener("input", () => setText("speed-out", `${Number($("speed").value).toFixed(2)}×`));
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("speak-form").requestSubmit();
    }
  });
  $("speak-form").addEventListener("submit", (event) => {
    event.preventDefault();
    start();
  });
  $("stop").addEventListener("click", () => {
    if (job) job.controller.abort();
    player.stop();
  });
  $("format").addEventListener("change", () => labelDownload());
  $("download").addEventListener("click", () => download());

  function fillVoices(voices) {
    const select = $("voice");
    const chosen = select.value;
    const builtin = el("optgroup", { label: "Built-in" });
    const cloned = el("optgroup", { label: "Your cloned voices" });
    for (const voice of voices) {
      const label = voice.type === "cloned" ? `${voice.name} (cloned)` : voice.name;
      (voice.type === "cloned" ? cloned : builtin).append(el("option", { value: voice.id }, label));
    }
    select.replaceChildren(builtin, ...(cloned.children.length ? [cloned] : []));
    if (voices.some((v) => v.id === chosen)) select.value = chosen;
  }

  function status(text, kind = "") {
    const node = $("speak-status");
    node.textContent = text;
    node.className = `status ${kind}`;
  }

  async function start() {
    const text = $("text").value.trim();
    if (!text) {
      status("Type something to say first.", "error");
      return;
    }
    if (job) job.controller.abort();
    await player.begin(ctx.config.sample_rate);
    const select = $("voice");
    job = {
      id: `pg-${crypto.randomUUID()}`,
      text,
      voice: select.value,
      voiceName: select.selectedOptions[0]?.textContent || select.value,
      speed: Number($("speed").value),
      // A seed makes the audio reproducible: a download in another format is the same speech, re-encoded.
      seed: crypto.getRandomValues(new Uint32Array(1))[0],
      chunks: [],
      receivedS: 0,
      retries: 0,
      row: addHistoryRow(text, select.selectedOptions[0]?.textContent || select.value),
    };
    transcript.reset(text);
    for (const id of ["ttfa", "received", "queued"]) setText(id, "–");
    $("result").hidden = true;
    $("download").disabled = true;
    $("stop").disabled = false;
    await run(job);
  }

  async function run(current) {
    current.controller = new AbortController();
    current.sentAt = performance.now();
    current.firstAt = null;
    current.queuedAt = null;
    status("Sending…");
    ctx.emit("activity");
    try {
      const body = {
        text: current.text,
        voice: current.voice,
        speed: current.speed,
        seed: current.seed,
        response_format: "pcm",
        timestamps: true,
      };
      const response = await request("v1/tts/generate", {
        method: "POST",
        json: body,
        headers: { "X-Request-Id": current.id },
        signal: current.controller.signal,
      });
      for await (const { event, data } of sseEvents(response)) {
        if (event === "queued") onQueued(current, data);
        else if (event === "audio") onAudio(current, data);
        else if (event === "done") onDone(current, data);
        else if (event === "error") throw streamError(data);
      }
    } catch (err) {
      await onError(current, err);
    } finally {
      if (job === current && !current.retrying) $("stop").disabled = true;
    }
  }

  function onQueued(current, data) {
    if (current.queuedAt === null) {
      current.queuedAt = performance.now();
      ctx.emit("activity");
    }
    const place = data.queue_position === 0 ? "you are next" : `${data.queue_position} ahead of you`;
    const eta = data.eta_s === null ? "" : `; first audio in about ${data.eta_s.toFixed(1)} s`;
    status(`Waiting for a free slot: ${place}${eta}.`, "waiting");
    setText("queued", data.queue_position === 0 ? "next in line" : `${data.queue_position} ahead`);
  }

  function onAudio(current, data) {
    const { bytes, floats } = pcmFromBase64(data.audio);
    if (current.firstAt === null) {
      current.firstAt = performance.now();
      const ttfa = (current.firstAt - current.sentAt) / 1000;
      setText("ttfa", millis(ttfa));
      const waited = current.queuedAt === null ? null : (current.firstAt - current.queuedAt) / 1000;
      setText("queued", waited === null ? "no wait" : `waited ${seconds(waited, 1)}`);
      current.row.cells[3].textContent = millis(ttfa);
      status("Speaking…", "playing");
      ctx.emit("activity");
    }
    current.chunks.push(bytes);
    current.receivedS += floats.length / data.sample_rate;
    setText("received", seconds(current.receivedS));
    transcript.add(data.words);
    if (job === current) player.push(floats);
  }

  function onDone(current, data) {
    transcript.add(data.words);
    current.blob = wavBlob(current.chunks, ctx.config.sample_rate);
    const audio = $("result");
    if (audio.src) URL.revokeObjectURL(audio.src);
    audio.addEventListener("loadedmetadata", () => (audio.hidden = false), { once: true }); // shown with its length
    audio.src = URL.createObjectURL(current.blob);
    last = current;
    labelDownload();
    $("download").disabled = false;
    current.row.cells[4].textContent = seconds(data.audio_seconds);
    const retries = current.retries === 1 ? "1 retry" : `${current.retries} retries`;
    current.row.cells[5].textContent = current.retries ? `ok (after ${retries})` : "ok";
    status(`Done: ${seconds(data.audio_seconds)} of audio, first audio after ${millis((current.firstAt - current.sentAt) / 1000)}.`, "ok");
    ctx.emit("result", { blob: current.blob, name: `chorus-${current.id.slice(3, 11)}.wav` });
    ctx.emit("activity");
  }

  async function onError(current, err) {
    ctx.emit("activity");
    if (err.name === "AbortError") {
      current.row.cells[5].textContent = "stopped";
      if (job === current) status("Stopped.");
      return;
    }
    if (err instanceof ApiError && err.status === 429 && current.retries < MAX_RETRIES) {
      current.retries += 1;
      current.retrying = true;
      current.row.cells[5].textContent = `busy, retry ${current.retries}`;
      const waitS = Math.max(1, Math.min(60, err.retryAfterS || DEFAULT_RETRY_S));
      const why =
        err.code === "key_concurrency_limit"
          ? "Your API key already has as many requests running as it may."
          : "The server is at capacity right now.";
      const cancelled = await countdown(current, waitS, why);
      current.retrying = false;
      if (!cancelled) await run(current);
      else current.row.cells[5].textContent = "stopped";
      return;
    }
    const code = err instanceof ApiError ? err.code || err.type : null;
    current.row.cells[5].textContent = `failed${code ? `: ${code}` : ""}`;
    status(`That did not work: ${err.message}`, "error");
  }

  // "Busy: trying again in N s" (a friendly 429); resolves true when the visitor pressed Stop meanwhile.
  function countdown(current, waitS, why) {
    return new Promise((resolve) => {
      let left = Math.ceil(waitS);
      const tick = () => {
        if (current.controller.signal.aborted) {
          clearInterval(timer);
          status("Stopped.");
          resolve(true);
          return;
        }
        if (left <= 0) {
          clearInterval(timer);
          resolve(false);
          return;
        }
        status(`${why} Trying again in ${left} s… (Stop gives up.)`, "waiting");
        left -= 1;
      };
      const timer = setInterval(tick, 1000);
      tick();
    });
  }

  function addHistoryRow(text, voiceName) {
    const row = el(
      "tr",
      {},
      el("td", {}, clock()),
      el("td", {}, voiceName),
      el("td", {}, String(text.length)),
      el("td", {}, "…"),
      el("td", {}, "…"),
      el("td", {}, "running"),
    );
    $("history").tBodies[0].prepend(row);
    while ($("history").tBodies[0].rows.length > 20) $("history").tBodies[0].lastElementChild.remove();
    return row;
  }

  function labelDownload() {
    const fmt = $("format").value;
    $("download").textContent = `Download ${$("format").selectedOptions[0].textContent}`;
    $("download").dataset.format = fmt;
  }

  async function download() {
    if (!last) return;
    const fmt = $("format").value;
    const name = `chorus-${last.id.slice(3, 11)}.${EXTENSIONS[fmt]}`;
    if (fmt === "wav") {
      downloadBlob(last.blob, name);
      return;
    }
    if (fmt === "pcm") {
      downloadBlob(new Blob(last.chunks, { type: "application/octet-stream" }), name);
      return;
    }
    // The same request and seed through POST v1/audio/speech: the same audio, encoded by the server.
    status(`Encoding as ${fmt.toUpperCase()} on the server (the same seed gives the same speech)…`);
    $("download").disabled = true;
    try {
      const response = await request("v1/audio/speech", {
        method: "POST",
        json: {
          model: "chorus",
          input: last.text,
          voice: last.voice,
          speed: last.speed,
          seed: last.seed,
          response_format: fmt,
        },
      });
      downloadBlob(await response.blob(), name);
      status(`Downloaded ${name}.`, "ok");
    } catch (err) {
      status(`The download did not work: ${err.message}`, "error");
    } finally {
      $("download").disabled = false;
    }
  }

  labelDownload();
}
