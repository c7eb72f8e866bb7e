// Verify: drop (or choose) an audio file; POST v1/audio/verify says whether it carries this server's watermark.

import { request } from "./api.js";
import { $, el, seconds } from "./ui.js";

export function initVerify(ctx) {
  let lastResult = null;
  const drop = $("drop");

  ctx.on("result", (result) => {
    lastResult = result;
    $("verify-last").disabled = false;
  });
  $("verify-file").addEventListener("change", () => {
    const file = $("verify-file").files[0];
    if (file) check(file, file.name);
  });
  $("verify-last").addEventListener("click", () => lastResult && check(lastResult.blob, lastResult.name));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) check(file, file.name);
  });

  function verdict(kind, title, ...lines) {
    const box = $("verify-result");
    box.className = `verdict ${kind}`;
    box.replaceChildren(el("p", { class: "title" }, title), ...lines.map((line) => el("p", {}, line)));
  }

  async function check(blob, name) {
    verdict("", `Checking ${name}…`);
    const form = new FormData();
    form.append("audio", blob, name);
    let found;
    try {
      found = await (await request("v1/audio/verify", { method: "POST", form })).json();
    } catch (err) {
      verdict("bad", `Could not check ${name}`, err.message);
      return;
    }
    const score = `score ${found.score.toFixed(1)} (threshold ${found.threshold.toFixed(1)}) · ${seconds(found.duration_s, 1)} · key ${found.key_id}`;
    if (!found.watermarked) {
      verdict("none", `✗ No watermark from this server in ${name}`, score);
      return;
    }
    const whose =
      found.tenant_match === null
        ? "The clip is too short or too damaged to read whom it was made for."
        : found.tenant_match
          ? "It was made for your tenant."
          : "It was made for another tenant.";
    verdict("found", `✓ ${name} carries this server's watermark`, whose, score);
  }
}
