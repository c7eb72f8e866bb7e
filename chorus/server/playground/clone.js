// Clone a voice, with consent: a challenge phrase (POST v1/audio/voice_consents/challenges), recorded in the
// browser and checked (POST v1/audio/voice_consents), then a clip of the same voice registered with that
// consent (POST v1/audio/voices). Each check the server makes is shown with its result; voices can be deleted.

import { ApiError, request } from "./api.js";
import { extensionOf, showDuration, startRecording } from "./recorder.js";
import { $, el, seconds, setCheck, setText } from "./ui.js";

// Which check an error code belongs to (the server's codes; see the README's consent and voices sections).
const QUALITY_CODES = ["too_short", "too_long", "mostly_silence", "clipped", "not_audio", "too_large"];
const PHRASE_CODES = ["phrase_mismatch", "challenge_expired", "challenge_used", "unsupported_language"];

export function initClone(ctx) {
  let challenge = null;
  let consentId = null;
  let clip = null; // {blob, name}
  let recording = null; // the recorder running now
  let expiryTimer = null;

  ctx.on("voices", (voices) => listVoices(voices.filter((v) => v.type === "cloned")));

  $("get-phrase").addEventListener("click", getPhrase);
  $("record-consent").addEventListener("click", () =>
    record("consent-level", "consent-time", "record-consent", "stop-consent"),
  );
  $("stop-consent").addEventListener("click", stopConsent);
  $("record-clip").addEventListener("click", () => record(null, "clip-time", "record-clip", "stop-clip"));
  $("stop-clip").addEventListener("click", stopClip);
  $("clip-file").addEventListener("change", () => {
    const file = $("clip-file").files[0];
    if (file) useClip(file, file.name);
  });
  $("register").addEventListener("click", register);
  for (const name of ["recording", "phrase", "real", "clip", "speaker"]) setCheck(name, "pending");

  function status(text, kind = "") {
    const node = $("clone-status");
    node.textContent = text;
    node.className = `status ${kind}`;
  }

  function canRegister() {
    $("register").disabled = !(consentId && clip);
  }

  async function getPhrase() {
    if (!$("consent-name").value.trim()) {
      status("Write your name first: it goes on the consent record.", "error");
      $("consent-name").focus();
      return;
    }
    $("get-phrase").disabled = true;
    try {
      const response = await request("v1/audio/voice_consents/challenges", { method: "POST" });
      challenge = await response.json();
    } catch (err) {
      status(`No phrase: ${err.message}`, "error");
      return;
    } finally {
      $("get-phrase").disabled = false;
    }
    consentId = null;
    canRegister();
    for (const name of ["recording", "phrase", "real"]) setCheck(name, "pending");
    setText("phrase", challenge.phrase);
    $("get-phrase").textContent = "Get another phrase";
    $("record-consent").disabled = false;
    status("Press Record, read the six words aloud, then press Stop and check.");
    const deadline = Date.now() + (challenge.expires_at - challenge.created_at) * 1000;
    clearInterval(expiryTimer);
    const tick = () => {
      const left = Math.round((deadline - Date.now()) / 1000);
      if (left > 0) {
        setText("phrase-expiry", `Valid for ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} more, once.`);
      } else {
        clearInterval(expiryTimer);
        setText("phrase-expiry", "This phrase has expired: get another one.");
      }
    };
    tick();
    expiryTimer = setInterval(tick, 1000);
  }

  async function record(meterId, timeId, startId, stopId) {
    if (recording) return;
    $(startId).disabled = true;
    try {
      recording = await startRecording({
        meter: meterId ? $(meterId) : null,
        onTick: (s) => setText(timeId, `${s.toFixed(1)} s`),
      });
    } catch (err) {
      $(startId).disabled = false;
      status(`The microphone is not available: ${err.message}`, "error");
      return;
    }
    $(stopId).disabled = false;
    $(stopId).focus();
  }

  async function finishRecording(startId, stopId, audioId) {
    $(stopId).disabled = true;
    const running = recording;
    recording = null;
    const blob = await running.stop();
    $(startId).disabled = false;
    const audio = $(audioId);
    if (audio.src) URL.revokeObjectURL(audio.src);
    showDuration(audio);
    audio.src = URL.createObjectURL(blob);
    audio.hidden = false;
    return { blob, name: `recording.${extensionOf(running.mimeType)}` };
  }

  async function stopConsent() {
    const { blob, name } = await finishRecording("record-consent", "stop-consent", "consent-audio");
    $("record-consent").disabled = true; // a phrase is good for one attempt
    for (const check of ["recording", "phrase", "real"]) setCheck(check, "running");
    status("Checking your recording…");
    const form = new FormData();
    form.append("name", $("consent-name").value.trim());
    form.append("challenge_id", challenge.id);
    form.append("language", "en");
    form.append("recording", blob, name);
    try {
      const consent = await (await request("v1/audio/voice_consents", { method: "POST", form })).json();
      consentId = consent.id;
      setCheck("recording", "passed", "clear speech, long enough");
      setCheck("phrase", "passed", `heard “${consent.phrase}”`);
      setCheck("real", "passed", "no chorus watermark in it");
      status(`Consent recorded (${consent.id}). Now add a clip of the same voice.`, "ok");
    } catch (err) {
      refusedConsent(err);
    }
    canRegister();
  }

  function refusedConsent(err) {
    const code = err instanceof ApiError ? err.code : null;
    const why = err.message;
    if (QUALITY_CODES.includes(code)) {
      setCheck("recording", "failed", why);
      setCheck("phrase", "skipped");
      setCheck("real", "skipped");
    } else if (PHRASE_CODES.includes(code)) {
      setCheck("recording", "passed");
      setCheck("phrase", "failed", why);
      setCheck("real", "skipped");
    } else if (code === "synthetic_speech") {
      setCheck("recording", "passed");
      setCheck("phrase", "passed");
      setCheck("real", "failed", why);
    } else {
      for (const check of ["recording", "phrase", "real"]) setCheck(check, "pending");
    }
    status(`Consent refused: ${why} Get another phrase to try again.`, "error");
  }

  async function stopClip() {
    const { blob, name } = await finishRecording("record-clip", "stop-clip", "clip-audio");
    useClip(blob, name);
  }

  function useClip(blob, name) {
    clip = { blob, name };
    const audio = $("clip-audio");
    if (audio.src) URL.revokeObjectURL(audio.src);
    audio.src = URL.createObjectURL(blob);
    audio.hidden = false;
    setCheck("clip", "pending");
    setCheck("speaker", "pending");
    canRegister();
  }

  async function register() {
    const voiceName = $("voice-name").value.trim();
    if (!voiceName) {
      status("Name the voice first.", "error");
      $("voice-name").focus();
      return;
    }
    $("register").disabled = true;
    setCheck("clip", "running");
    setCheck("speaker", "running");
    status("Registering: checking the clip and comparing its speaker with the consent…");
    const form = new FormData();
    form.append("name", voiceName);
    form.append("consent", consentId);
    form.append("language", "en");
    if ($("clip-text").value.trim()) form.append("ref_text", $("clip-text").value.trim());
    form.append("audio_sample", clip.blob, clip.name);
    try {
      const voice = await (await request("v1/audio/voices", { method: "POST", form })).json();
      setCheck("clip", "passed", `${seconds(voice.duration_s, 1)} of speech`);
      setCheck("speaker", "passed", "the clip's speaker is the one who consented");
      consentId = null; // a consent authorises one voice
      status(`Voice “${voice.name}” is ready (${voice.id}). Speak with it from the list below.`, "ok");
      await ctx.refreshVoices();
    } catch (err) {
      refusedVoice(err);
    }
    canRegister();
  }

  function refusedVoice(err) {
    const code = err instanceof ApiError ? err.code : null;
    if (QUALITY_CODES.includes(code)) {
      setCheck("clip", "failed", err.message);
      setCheck("speaker", "skipped");
    } else if (code === "speaker_mismatch") {
      setCheck("clip", "passed");
      setCheck("speaker", "failed", err.message);
    } else {
      setCheck("clip", "pending");
      setCheck("speaker", "pending");
    }
    if (code === "consent_required") consentId = null;
    status(`The voice was not registered: ${err.message}`, "error");
  }

  function listVoices(voices) {
    const list = $("my-voices");
    if (!voices.length) {
      list.replaceChildren(el("li", { class: "muted" }, "None yet."));
      return;
    }
    list.replaceChildren(
      ...voices.map((voice) => {
        const remove = el("button", { type: "button", class: "danger" }, "Delete");
        remove.setAttribute("aria-label", `Delete ${voice.name}`);
        remove.addEventListener("click", () => deleteVoice(voice, remove));
        const speak = el("button", { type: "button", class: "secondary" }, "Speak with it");
        speak.setAttribute("aria-label", `Speak with ${voice.name}`);
        speak.addEventListener("click", () => ctx.emit("speak-with", voice.id));
        return el(
          "li",
          { "data-voice": voice.id },
          el("span", { class: "voice-name" }, voice.name),
          el("span", { class: "muted small" }, ` ${voice.id} · ${seconds(voice.duration_s, 1)} · consent ${voice.consent_status}`),
          el("span", { class: "actions" }, speak, remove),
        );
      }),
    );
  }

  // Two presses: "Delete", then "Really delete?" within five seconds.
  async function deleteVoice(voice, button) {
    if (button.dataset.armed !== "yes") {
      button.dataset.armed = "yes";
      button.textContent = "Really delete?";
      setTimeout(() => {
        button.dataset.armed = "";
        button.textContent = "Delete";
      }, 5000);
      return;
    }
    button.disabled = true;
    try {
      await request(`v1/audio/voices/${encodeURIComponent(voice.id)}`, { method: "DELETE" });
      status(`Deleted “${voice.name}” and its stored audio.`, "ok");
    } catch (err) {
      status(`Could not delete “${voice.name}”: ${err.message}`, "error");
    }
    await ctx.refreshVoices();
  }
}
