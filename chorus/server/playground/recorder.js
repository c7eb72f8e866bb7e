// Microphone recording with MediaRecorder (WebM/Opus in Chromium and Firefox, MP4 in Safari; the server reads
// any of them), with a live level for a <meter>. The browser's voice processing (echo cancellation, noise
// suppression, automatic gain) is off: the server compares voices, and processing changes them.

const TYPES = ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/mp4"];

export async function startRecording({ meter, onTick } = {}) {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
  });
  const mimeType = TYPES.find((type) => MediaRecorder.isTypeSupported(type)) || "";
  const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : {});
  const parts = [];
  recorder.addEventListener("dataavailable", (event) => {
    if (event.data.size) parts.push(event.data);
  });
  const audio = new AudioContext();
  const analyser = audio.createAnalyser();
  analyser.fftSize = 1024;
  audio.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const startedAt = performance.now();
  let live = true;
  const frame = () => {
    if (!live) return;
    analyser.getFloatTimeDomainData(samples);
    let peak = 0;
    for (const v of samples) peak = Math.max(peak, Math.abs(v));
    if (meter) meter.value = Math.min(1, peak);
    if (onTick) onTick((performance.now() - startedAt) / 1000);
    requestAnimationFrame(frame);
  };
  recorder.start(250);
  requestAnimationFrame(frame);

  return {
    mimeType: recorder.mimeType || mimeType,
    // Resolves with the recording (a Blob) once the recorder has flushed its last data.
    stop() {
      live = false;
      if (meter) meter.value = 0;
      return new Promise((resolve) => {
        recorder.addEventListener(
          "stop",
          () => {
            for (const track of stream.getTracks()) track.stop();
            audio.close();
            resolve(new Blob(parts, { type: recorder.mimeType || "audio/webm" }));
          },
          { once: true },
        );
        recorder.stop();
      });
    },
  };
}

// MediaRecorder's WebM carries no duration: a player shows 0:00 until it has read to the end. A seek far past the
// end makes it find the length, then playback goes back to the start.
export function showDuration(audio) {
  audio.addEventListener(
    "loadedmetadata",
    () => {
      if (audio.duration !== Infinity) return;
      audio.addEventListener("durationchange", () => (audio.currentTime = 0), { once: true });
      audio.currentTime = 1e9;
    },
    { once: true },
  );
}

export function extensionOf(mimeType) {
  if (mimeType.includes("mp4")) return "m4a";
  if (mimeType.includes("ogg")) return "ogg";
  return "webm";
}
