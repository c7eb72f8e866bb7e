// The playground's shell: server config, the API key prompt, tabs, and the voice list the panels share.

import { ApiError, getJson, key, whenUnauthorized } from "./api.js";
import { initClone } from "./clone.js";
import { initServer } from "./server.js";
import { initSpeak } from "./speak.js";
import { $, setText } from "./ui.js";
import { initVerify } from "./verify.js";

const TABS = ["speak", "clone", "server", "verify"];

// What the panels share: the server's config, the voices, and events between panels
// ("voices": the list changed; "result": a new speech result; "tab": a tab was shown).
const ctx = {
  config: null,
  voices: [],
  events: new EventTarget(),
  currentTab: "speak",
  emit(name, detail) {
    this.events.dispatchEvent(new CustomEvent(name, { detail }));
  },
  on(name, handler) {
    this.events.addEventListener(name, (event) => handler(event.detail));
  },
  async refreshVoices() {
    const listed = await getJson("v1/audio/voices");
    this.voices = listed.data;
    this.emit("voices", this.voices);
    return this.voices;
  },
  showTab,
};

let started = false;

function showTab(name, { focus = false } = {}) {
  if (!TABS.includes(name)) name = "speak";
  for (const tab of TABS) {
    const button = $(`tab-${tab}`);
    const selected = tab === name;
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`panel-${tab}`).hidden = !selected;
  }
  if (focus) $(`tab-${name}`).focus();
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  ctx.currentTab = name;
  ctx.emit("tab", name);
}

function initTabs() {
  for (const tab of TABS) {
    $(`tab-${tab}`).addEventListener("click", () => showTab(tab));
  }
  document.querySelector('[role="tablist"]').addEventListener("keydown", (event) => {
    const at = TABS.indexOf(ctx.currentTab);
    const moves = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: TABS.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    showTab(TABS[(moves[event.key] + TABS.length) % TABS.length], { focus: true });
  });
  window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
}

function showKeyPanel(message = "") {
  $("app").hidden = true;
  $("key-panel").hidden = false;
  setText("key-error", message);
  $("forget-key").hidden = true;
  $("key-input").focus();
}

async function useKey(event) {
  event.preventDefault();
  const value = $("key-input").value.trim();
  if (!value) return;
  setText("key-error", "");
  try {
    await getJson("v1/audio/voices", { apiKey: value });
  } catch (err) {
    const why = err instanceof ApiError && err.status === 401 ? err.message : `the server did not answer (${err.message})`;
    setText("key-error", `That key did not work: ${why}.`);
    return;
  }
  key.set(value);
  $("key-input").value = "";
  await start();
}

async function start() {
  $("key-panel").hidden = true;
  $("app").hidden = false;
  $("forget-key").hidden = !ctx.config.keys_required;
  if (!started) {
    started = true;
    initTabs();
    initSpeak(ctx);
    initClone(ctx);
    initServer(ctx);
    initVerify(ctx);
  }
  showTab(location.hash.slice(1) || "speak");
  await ctx.refreshVoices();
}

async function main() {
  $("key-form").addEventListener("submit", useKey);
  $("forget-key").addEventListener("click", () => {
    key.clear();
    showKeyPanel("The key was removed from this tab.");
  });
  whenUnauthorized((err) => {
    key.clear();
    showKeyPanel(`The server refused the key: ${err.message}.`);
  });
  try {
    ctx.config = await getJson("playground/config.json");
  } catch (err) {
    setText("server-line", `The server did not answer: ${err.message}`);
    return;
  }
  const { model, backend, version } = ctx.config;
  setText("server-line", `${model} · ${backend} · chorus ${version}`);
  if (ctx.config.keys_required && !key.get()) {
    showKeyPanel();
    return;
  }
  await start();
}

main();
