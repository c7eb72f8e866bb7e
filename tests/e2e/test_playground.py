"""The web playground (``/``) in a real headless Chromium against a real `chorus serve` that requires keys.

One server for the module: one slot and a one-place queue (so a visitor can be made to wait), two tenants'
keys: the visitor's (at most one request in flight, so a second gets 429) and another tenant's for background
load. Each test opens the page in a fresh browser context (a fresh session storage) and fails on any console
error, uncaught exception or failed request of the page but the refusals it provokes on purpose. Screenshots of
every screen go to ``test-artifacts/playground/``.
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import yaml

from chorus.audio.decode import decode_audio
from tests.e2e.conftest import LONG_TEXT, Server, start_server, stop_server
from tests.e2e.consent_flow import REFERENCE_TEXT, reference, spoken
from tests.e2e.playground_browser import CHROMIUM, PageWatch, Shots, launch_args, require_browser, write_speech
from tests.e2e.test_auth import create_key

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.e2e]

SPEECH = "Hello from the playground. Every word lights up while you hear it, and the rest is still being made."
# About two minutes of speech: seconds of compute on a fast machine, so it holds the only slot while a test looks;
# and no more, so that a visitor queued behind it on a slow machine is not refused instead (the engine refuses a
# predicted wait past two minutes, whatever max_queue_wait_s says).
BUSY_TEXT = f"{LONG_TEXT} {LONG_TEXT}"[:2000].rsplit(" ", 1)[0]
# Every control the page offers has a name a screen reader reads: its <label>, aria-label or text.
UNNAMED_CONTROLS = """() => [...document.querySelectorAll('input, select, textarea, button, meter')]
  .filter((el) => !((el.labels && el.labels.length) || el.getAttribute('aria-label') || el.textContent.trim()))
  .map((el) => el.id || el.outerHTML.slice(0, 60))"""


@dataclass
class Site:
    server: Server
    visitor_key: str  # the page's key: tenant "visitor", one request in flight at most
    load_key: str  # another tenant's key, for the load the tests make
    mic: Path  # what the fake microphone plays


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_browser()
    root = tmp_path_factory.mktemp("playground")
    config = root / "cli.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(root / "data")}))
    visitor_key = create_key(config, "visitor", "--max-concurrency", "1")
    load_key = create_key(config, "load")
    settings = {
        "data_dir": str(root / "data"),
        "auth": {"mode": "required"},
        "worker": {"max_slots": 1},
        # A visitor may wait as long as the busy request below holds the slot, however slow this machine is.
        "server": {"queue_limit": 1, "max_queue_wait_s": 600, "canary_interval_s": 0},
    }
    server = start_server(root, settings)
    mic = root / "mic.wav"
    write_speech(mic, "silence", pad_s=0.1)  # the file must exist when Chromium starts
    yield Site(server, visitor_key, load_key, mic)
    stop_server(server)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=launch_args(site.mic))
        yield launched
        launched.close()


@dataclass
class Visit:
    page: Page
    watch: PageWatch
    shots: Shots
    site: Site

    def open(self, path: str = "/") -> None:
        """The page, past its key prompt."""
        self.page.goto(self.site.server.url + path)
        self.page.fill("#key-input", self.site.visitor_key)
        self.page.press("#key-input", "Enter")
        self.page.wait_for_selector("#app", state="visible")
        self.page.wait_for_selector("#voice option", state="attached")

    def text(self, selector: str) -> str:
        return (self.page.text_content(selector) or "").strip()

    def speak_and_wait(self, timeout_s: float = 60) -> None:
        self.page.click("#speak")
        self.page.wait_for_selector("#download:not([disabled])", timeout=timeout_s * 1000)


@pytest.fixture()
def visit(browser: Browser, site: Site, tmp_path: Path) -> Iterator[Visit]:
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    page = context.new_page()
    watch = PageWatch()
    watch.attach(page)
    yield Visit(page, watch, Shots(tmp_path), site)
    problems = list(watch.problems)  # before closing: closing aborts the page's polls, which is no fault
    context.close()
    assert not problems, "\n".join(problems)


# Playwright's wait_for_function evaluates strings in the page, which the page's CSP refuses (no eval): poll.
def wait_until(
    check: Callable[[], object], timeout_s: float = 30, what: str = "", seen: Callable[[], object] = lambda: ""
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}; {seen()}")
        time.sleep(0.05)


@contextlib.contextmanager
def busy_stream(url: str, key: str) -> Iterator[None]:
    """A long speech request that holds the only slot (and one of the key's requests) while nobody reads it."""
    speech = {"model": "tts-1", "input": BUSY_TEXT, "voice": "alloy", "response_format": "pcm"}
    headers = {"Authorization": f"Bearer {key}"}
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", f"{url}/v1/audio/speech", json=speech, headers=headers) as response,
    ):
        assert response.status_code == 200
        yield


def test_the_page_and_its_assets_are_served_with_a_strict_policy(server: Server) -> None:
    """Without a browser: what chorus serves at / (the default keyless server of tests/e2e/conftest.py)."""
    for path in ("/", "/playground"):
        page = httpx.get(server.url + path, timeout=10)
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert 'src="playground/assets/app.js"' in page.text
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
    kinds = {"app.js": "text/javascript", "style.css": "text/css", "icon.svg": "image/svg+xml"}
    for name, kind in kinds.items():
        asset = httpx.get(f"{server.url}/playground/assets/{name}", timeout=10)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    for name in ("nope.js", "..%2F..%2Fapp.py", "__init__.py"):
        assert httpx.get(f"{server.url}/playground/assets/{name}", timeout=10).status_code == 404
    config = httpx.get(f"{server.url}/playground/config.json", timeout=10).json()
    assert config["keys_required"] is False and config["sample_rate"] == 24_000
    assert httpx.get(f"{server.url}/v1/playground/recent", timeout=10).json()["object"] == "list"


def test_the_page_asks_for_a_key_and_keeps_it_in_the_tab_only(visit: Visit) -> None:
    page = visit.page
    response = page.goto(visit.site.server.url + "/playground")
    assert response is not None and response.ok
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    page.wait_for_selector("#key-panel", state="visible")
    assert page.is_hidden("#app")
    visit.shots.take(page, "1-key")

    page.fill("#key-input", visit.site.visitor_key)
    page.press("#key-input", "Enter")
    page.wait_for_selector("#app", state="visible")
    assert page.evaluate("sessionStorage.getItem('chorus.apiKey')") == visit.site.visitor_key
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []
    assert page.evaluate(UNNAMED_CONTROLS) == []

    # Tabs by keyboard: arrows move between them (and focus follows).
    page.focus("#tab-speak")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-clone", "aria-selected") == "true" and page.is_visible("#panel-clone")
    assert page.evaluate("document.activeElement.id") == "tab-clone"
    page.keyboard.press("End")
    assert page.is_visible("#panel-verify")
    page.keyboard.press("Home")
    assert page.is_visible("#panel-speak")

    with visit.watch.navigating():  # requests in flight (the page's polls) end with the page
        page.reload()  # the same tab keeps its key
        page.wait_for_selector("#app", state="visible")
    page.click("#forget-key")
    page.wait_for_selector("#key-panel", state="visible")
    assert page.evaluate("sessionStorage.length") == 0


def test_speech_plays_as_it_streams_with_the_spoken_word_highlighted(visit: Visit) -> None:
    visit.open()
    page = visit.page
    page.fill("#text", SPEECH)
    page.focus("#text")
    page.keyboard.press("Control+Enter")  # the keyboard shortcut speaks
    peak, heard = 0.0, []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        peak = max(peak, float(page.eval_on_selector("#level", "m => m.value")))
        word = page.evaluate("document.querySelector('#words .word.now')?.textContent ?? null")
        if word and (not heard or heard[-1] != word):
            heard.append(word)
        if len(heard) == 4:
            visit.shots.take(page, "2-speak")  # mid-sentence: a highlighted word, the live waveform
        if page.is_enabled("#download") and not page.evaluate("document.querySelector('#words .word.now')"):
            break
        time.sleep(0.03)
    assert page.is_enabled("#download"), visit.text("#speak-status")
    # The Web Audio graph got sound, and the words lit up in the order they are written.
    assert peak > 0.05
    assert len(heard) >= 6, heard
    at = 0
    for word in heard:  # each found after the one before
        at = SPEECH.find(word, at)
        assert at >= 0, heard
    assert re.fullmatch(r"\d+ ms", visit.text("#ttfa"))
    received = float(visit.text("#received").removesuffix(" s"))
    assert received > 3.0
    row = page.query_selector_all("#history tbody tr")[0]
    assert [c.text_content() for c in row.query_selector_all("td")][5] == "ok"
    assert re.fullmatch(r"\d+ ms", row.query_selector_all("td")[3].text_content() or "")
    # The result is in the <audio> element too.
    wait_until(lambda: page.evaluate("document.getElementById('result').duration") > 3, what="the <audio> result")

    # Downloads: WAV from the streamed audio; MP3 encoded by the server from the same seed: the same speech.
    with page.expect_download() as wav_download:
        page.click("#download")
    wav, rate = decode_audio(Path(wav_download.value.path()).read_bytes())
    assert abs(wav.size / rate - received) < 0.01
    page.select_option("#format", "mp3")
    assert visit.text("#download") == "Download MP3"
    with page.expect_download() as mp3_download:
        page.click("#download")
    assert mp3_download.value.suggested_filename.endswith(".mp3")
    mp3, rate = decode_audio(Path(mp3_download.value.path()).read_bytes())
    assert abs(mp3.size / rate - received) < 0.1


def test_verify_a_dropped_file_and_a_chosen_one(visit: Visit) -> None:
    made = httpx.post(
        f"{visit.site.server.url}/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": LONG_TEXT[:300], "response_format": "mp3"},
        headers={"Authorization": f"Bearer {visit.site.visitor_key}"},
        timeout=60,
    )
    assert made.status_code == 200
    visit.open("/#verify")
    page = visit.page
    assert page.is_visible("#panel-verify")
    # A drop, as a file manager makes it: a DataTransfer with the file.
    page.evaluate(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], name, { type: "audio/mpeg" }));
            const drop = document.getElementById("drop");
            for (const type of ["dragenter", "dragover", "drop"]) {
                drop.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
            }
        }""",
        [base64.b64encode(made.content).decode(), "found.mp3"],
    )
    page.wait_for_selector("#verify-result.found")
    assert "carries this server's watermark" in visit.text("#verify-result")
    assert "made for your tenant" in visit.text("#verify-result")
    visit.shots.take(page, "5-verify")

    unmarked = {"name": "flite.wav", "mimeType": "audio/wav", "buffer": spoken(SPEECH)}
    page.set_input_files("#verify-file", files=[unmarked])
    page.wait_for_selector("#verify-result.none")
    assert "No watermark" in visit.text("#verify-result")


def checked(page: Page, check: str) -> str | None:
    """The outcome of one of the clone tab's checks, once it has one (passed, failed, or skipped)."""

    def state() -> str | None:
        return page.get_attribute(f'#checks [data-check="{check}"]', "data-state")

    wait_until(lambda: state() in ("passed", "failed", "skipped"), timeout_s=90, what=f"the {check} check")
    return state()


def test_clone_a_voice_with_a_recorded_consent_speak_with_it_and_delete_it(visit: Visit) -> None:
    visit.open("/#clone")
    page = visit.page
    page.fill("#consent-name", "Sally Tester")
    page.click("#get-phrase")
    wait_until(lambda: len(visit.text("#phrase").split()) == 6, what="the phrase")
    phrase = visit.text("#phrase")
    # The fake microphone will play flite's slt reading the phrase: Chromium opens the file when capture starts.
    seconds = write_speech(visit.site.mic, phrase)
    page.click("#record-consent")
    page.wait_for_selector("#stop-consent:not([disabled])")
    time.sleep(seconds + 0.3)
    page.click("#stop-consent")
    assert checked(page, "phrase") == "passed", visit.text("#checks")
    assert page.get_attribute('#checks [data-check="real"]', "data-state") == "passed"
    # The recording can be played back, at its length (MediaRecorder's WebM says none).
    consent_s = "document.getElementById('consent-audio').duration"
    wait_until(lambda: 0 < page.evaluate(consent_s) < seconds + 2, what="the recording's length")

    # The clip: another recording of the same speaker, uploaded, with its transcript.
    clip = {"name": "sally.wav", "mimeType": "audio/wav", "buffer": reference()}
    page.set_input_files("#clip-file", files=[clip])
    page.fill("#clip-text", REFERENCE_TEXT)
    page.fill("#voice-name", "sally")
    page.click("#register")
    assert checked(page, "speaker") == "passed", visit.text("#checks")
    assert page.get_attribute('#checks [data-check="clip"]', "data-state") == "passed"
    page.wait_for_selector("#my-voices li[data-voice]")
    voice_id = page.get_attribute("#my-voices li[data-voice]", "data-voice")
    assert voice_id and "sally" in visit.text("#my-voices")
    visit.shots.take(page, "3-clone")

    page.click("#my-voices button:text('Speak with it')")
    assert page.is_visible("#panel-speak") and page.input_value("#voice") == voice_id
    page.fill("#text", "Now in my own voice, with my consent on record.")
    visit.speak_and_wait()
    cells = page.query_selector_all("#history tbody tr")[0].query_selector_all("td")
    assert cells[1].text_content() == "sally (cloned)" and cells[5].text_content() == "ok"

    page.click("#tab-clone")
    page.click("#my-voices button.danger")
    assert visit.text("#my-voices button.danger") == "Really delete?"
    page.click("#my-voices button.danger")
    page.wait_for_selector("#my-voices li[data-voice]", state="detached")
    assert "Deleted" in visit.text("#clone-status")
    headers = {"Authorization": f"Bearer {visit.site.visitor_key}"}
    gone = httpx.get(f"{visit.site.server.url}/v1/audio/voices/{voice_id}", headers=headers, timeout=10)
    assert gone.status_code == 404


def finished(visit: Visit) -> int:
    text = visit.text("#st-finished")
    return int(text) if text.isdigit() else -1


def test_the_server_tab_follows_the_stats_live(visit: Visit) -> None:
    visit.open("/#server")
    page = visit.page
    wait_until(lambda: finished(visit) >= 0, what="the first stats")
    before = finished(visit)
    url, key = visit.site.server.url, visit.site.visitor_key
    made = httpx.post(
        f"{url}/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": "Counted on the server tab.", "response_format": "wav"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert made.status_code == 200
    wait_until(lambda: finished(visit) > before, what="the finished count to go up")
    wait_until(lambda: "wav" in visit.text("#recent"), what="the request in the recent requests")
    assert re.search(r"\d+ ms", visit.text("#st-ttfa"))
    with busy_stream(url, visit.site.load_key):
        wait_until(lambda: visit.text("#st-slots") == "1 / 1", what="a running slot")
        time.sleep(1.5)  # a little history on the chart
        visit.shots.take(page, "4-server")


def test_a_waiting_visitor_sees_the_queue_position_and_eta(visit: Visit) -> None:
    visit.open()
    page = visit.page
    page.fill("#text", "Waiting my turn, politely.")
    with busy_stream(visit.site.server.url, visit.site.load_key):
        page.click("#speak")
        wait_until(
            lambda: "Waiting for a free slot" in visit.text("#speak-status"),
            what="the queue message",
            seen=lambda: visit.text("#speak-status"),
        )
        status = visit.text("#speak-status")
        assert "you are next" in status and re.search(r"first audio in about \d+\.\d s", status), status
        visit.shots.take(page, "6-queue")
    page.wait_for_selector("#download:not([disabled])", timeout=60_000)
    waited = visit.text("#queued")
    assert re.fullmatch(r"waited \d+\.\d s", waited), (waited, visit.text("#history"), visit.text("#speak-status"))


def test_a_429_is_shown_as_a_friendly_retry(visit: Visit) -> None:
    visit.open()
    page = visit.page
    page.fill("#text", "Second in line for this key.")
    # The visitor's key may have one request in flight: a second one is refused with 429 and Retry-After.
    with visit.watch.allowing(429, r"/v1/tts/generate$"), busy_stream(visit.site.server.url, visit.site.visitor_key):
        page.click("#speak")
        wait_until(lambda: "Trying again in" in visit.text("#speak-status"), what="the friendly 429")
        assert "Your API key already has as many requests running" in visit.text("#speak-status")
        visit.shots.take(page, "7-busy")
    page.wait_for_selector("#download:not([disabled])", timeout=60_000)
    result = page.query_selector_all("#history tbody tr")[0].query_selector_all("td")[5].text_content() or ""
    assert re.fullmatch(r"ok \(after \d retr(y|ies)\)", result), result
