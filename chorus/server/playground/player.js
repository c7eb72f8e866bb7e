// Streaming playback with Web Audio: each chunk of PCM is scheduled right after the one before it (or a little
// ahead of now, after a gap), so audio plays while the rest is still being made. An analyser feeds the live
// waveform and the level meter; position() says which second of the response is being heard (for the words).

import { sizeCanvas } from "./ui.js";

const LEAD_S = 0.08; // the first chunk (and any chunk after a gap) starts this far ahead of now

export class StreamPlayer {
  constructor(canvas, meter) {
    this.canvas = canvas;
    this.meter = meter;
    this.ctx = null;
    this.sources = new Set();
    this.segments = []; // {at: context time it starts, offset: its place in the response (s), dur}
    this.nextTime = 0;
    this.queuedS = 0;
    this.gaps = 0;
    this.onFrame = null;
    this.drawing = false;
    this.idle();
  }

  // Call from a click (browsers start audio only after a gesture).
  async begin(sampleRate) {
    if (this.ctx === null) {
      this.ctx = new AudioContext({ latencyHint: "interactive" });
      this.analyser = this.ctx.createAnalyser();
      this.analyser.fftSize = 2048;
      this.samples = new Float32Array(this.analyser.fftSize);
      this.analyser.connect(this.ctx.destination);
    }
    if (this.ctx.state === "suspended") await this.ctx.resume();
    this.stop();
    this.rate = sampleRate;
    this.segments = [];
    this.nextTime = 0;
    this.queuedS = 0;
    this.gaps = 0;
  }

  push(samples) {
    if (this.ctx === null || samples.length === 0) return;
    const buffer = this.ctx.createBuffer(1, samples.length, this.rate);
    buffer.copyToChannel(samples, 0);
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.analyser);
    const earliest = this.ctx.currentTime + LEAD_S;
    let at = this.nextTime;
    if (at < this.ctx.currentTime) {
      if (this.segments.length) this.gaps += 1; // the stream ran dry: resume a little ahead of now
      at = earliest;
    }
    if (!this.segments.length) at = earliest;
    source.start(at);
    this.sources.add(source);
    source.addEventListener("ended", () => this.sources.delete(source));
    this.segments.push({ at, offset: this.queuedS, dur: buffer.duration });
    this.queuedS += buffer.duration;
    this.nextTime = at + buffer.duration;
    this.animate();
  }

  // Seconds into the response being heard now; null before the first sample plays.
  position() {
    if (this.ctx === null) return null;
    const now = this.ctx.currentTime;
    for (let i = this.segments.length - 1; i >= 0; i -= 1) {
      const s = this.segments[i];
      if (s.at <= now) return s.offset + Math.min(now - s.at, s.dur);
    }
    return null;
  }

  get isPlaying() {
    return this.ctx !== null && this.ctx.currentTime < this.nextTime;
  }

  stop() {
    for (const source of this.sources) {
      try {
        source.stop();
      } catch {
        // not started yet: nothing to stop
      }
    }
    this.sources.clear();
    this.nextTime = this.ctx ? this.ctx.currentTime : 0;
  }

  animate() {
    if (this.drawing) return;
    this.drawing = true;
    const frame = () => {
      this.draw();
      if (this.onFrame) this.onFrame(this.position());
      if (this.isPlaying || this.sources.size) {
        requestAnimationFrame(frame);
      } else {
        this.drawing = false;
        this.idle();
        if (this.onFrame) this.onFrame(null);
      }
    };
    requestAnimationFrame(frame);
  }

  draw() {
    this.analyser.getFloatTimeDomainData(this.samples);
    let peak = 0;
    for (const v of this.samples) peak = Math.max(peak, Math.abs(v));
    this.meter.value = Math.min(1, peak);
    const { g, width, height } = sizeCanvas(this.canvas);
    g.clearRect(0, 0, width, height);
    g.strokeStyle = "#0b5cad";
    g.lineWidth = 2;
    g.beginPath();
    const step = this.samples.length / width;
    for (let x = 0; x < width; x += 1) {
      const y = height / 2 - this.samples[Math.floor(x * step)] * (height / 2 - 2);
      if (x === 0) g.moveTo(x, y);
      else g.lineTo(x, y);
    }
    g.stroke();
  }

  idle() {
    this.meter.value = 0;
    const { g, width, height } = sizeCanvas(this.canvas);
    g.clearRect(0, 0, width, height);
    g.strokeStyle = "#8c959f";
    g.lineWidth = 1;
    g.beginPath();
    g.moveTo(0, height / 2);
    g.lineTo(width, height / 2);
    g.stroke();
  }
}
