"""The target speakers of ``chorus bench-voices`` and their texts: a development set and a test set.

All tuning of the conversion (hyper-parameters, method changes) is judged on the **development set**; the
**test set** is evaluated only to report, so its figure says how the method does on speakers it was not tuned
for. The split was fixed before any tuning (issue #9):

* dev — the seven speakers the method was first built on (so they can no longer count as unseen), plus a second
  recording of slt (flite's clustergen voice: the same person as festival's HTS slt) and two speakers reading
  English with another language's letter-to-sound rules (Finnish, festival):

  ====================  =========  =====================  ===
  kal_diphone           festival   diphone                M
  ked_diphone           festival   diphone                M
  cmu_us_slt_arctic_hts festival   HTS                    F
  slt                   flite      clustergen             F
  suo_fi_lj_diphone     festival   diphone (Finnish)      F
  hy_fi_mv_diphone      festival   diphone (Finnish)      M
  en-us, en-gb-x-rp,    espeak-ng  formant                M
  en+m3
  en+f3                 espeak-ng  formant                F
  ====================  =========  =====================  ===

* test — six other people, three female and three male, from three synthesiser families, none in the dev set:

  ====================  =========  =====================  ===
  awb                   flite      clustergen (Scottish)  M
  rms                   flite      clustergen (US)        M
  upc_ca_ona_hts        festival   HTS (Catalan)          F
  lp_diphone            festival   diphone (Italian)      F
  czech_dita            festival   diphone (Czech)        F
  czech_machac          festival   diphone (Czech)        M
  ====================  =========  =====================  ===

  No espeak-ng voice is in the test set: its variants are one formant synthesiser with other parameters, as
  alike as one speaker (resemblyzer: en-us vs en-gb-x-rp 0.96, en+f3 vs en-029+f4 0.93), so an espeak test voice
  would be a dev voice again. flite's kal16 is festival's kal (dev) and is left out. The nearest dev speaker to a
  test speaker scores 0.75 (machac vs mv); a speaker against itself 0.93-0.98.

Texts: the dev set uses Harvard sentences from lists 1-3, the test set from lists 4-7, so no sentence (and no
recording) is shared: each set has its own reference (registered with its transcript), held-out clip (what the
result is compared with), ceiling clip and four new sentences for Piper to say.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chorus.audio.decode import decode_audio

INSTALL_HINT = "install the benchmark voices with scripts/install_bench_voices.sh"


@dataclass(frozen=True, slots=True)
class Speaker:
    name: str  # as shown in the tables
    synthesizer: str  # festival | flite | espeak
    voice: str  # the synthesizer's voice name
    sex: str  # F | M
    family: str  # how the synthesizer makes speech (diphone, HTS, clustergen, formant)


@dataclass(frozen=True, slots=True)
class SpeakerSet:
    name: str  # dev | test
    speakers: tuple[Speaker, ...]
    reference_text: str  # ~8 s: registered with its transcript
    held_out_text: str  # the clip every result is compared with
    ceiling_text: str  # the target against another clip of itself
    new_sentences: tuple[str, ...]  # what the cloned voice says


DEV = SpeakerSet(
    name="dev",
    speakers=(
        Speaker("kal (festival)", "festival", "kal_diphone", "M", "diphone"),
        Speaker("ked (festival)", "festival", "ked_diphone", "M", "diphone"),
        Speaker("slt (festival HTS)", "festival", "cmu_us_slt_arctic_hts", "F", "HTS"),
        Speaker("slt (flite)", "flite", "slt", "F", "clustergen"),
        Speaker("lj (festival, Finnish)", "festival", "suo_fi_lj_diphone", "F", "diphone"),
        Speaker("mv (festival, Finnish)", "festival", "hy_fi_mv_diphone", "M", "diphone"),
        Speaker("en-us (espeak)", "espeak", "en-us", "M", "formant"),
        Speaker("en+f3 (espeak)", "espeak", "en+f3", "F", "formant"),
        Speaker("en-gb-x-rp (espeak)", "espeak", "en-gb-x-rp", "M", "formant"),
        Speaker("en+m3 (espeak)", "espeak", "en+m3", "M", "formant"),
    ),
    reference_text=(  # Harvard list 1
        "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
        "It is easy to tell the depth of a well."
    ),
    held_out_text=(
        "The juice of lemons makes fine punch. The box was thrown beside the parked truck. "
        "The hogs were fed chopped corn and garbage."
    ),
    ceiling_text=(
        "Four hours of steady work faced us. A large size in stockings is hard to sell. "
        "The boy was there when the sun rose."
    ),
    new_sentences=(  # Harvard lists 2-3
        "A rod is used to catch pink salmon, and the source of the huge river is the clear spring.",
        "Kick the ball straight and follow through, then help the woman get back to her feet.",
        "The small pup gnawed a hole in the sock while the fish twisted and turned on the bent hook.",
        "Press the pants and sew a button on the vest before the party starts tonight.",
    ),
)

TEST = SpeakerSet(
    name="test",
    speakers=(
        Speaker("awb (flite)", "flite", "awb", "M", "clustergen"),
        Speaker("rms (flite)", "flite", "rms", "M", "clustergen"),
        Speaker("ona (festival HTS, Catalan)", "festival", "upc_ca_ona_hts", "F", "HTS"),
        Speaker("lp (festival, Italian)", "festival", "lp_diphone", "F", "diphone"),
        Speaker("dita (festival, Czech)", "festival", "czech_dita", "F", "diphone"),
        Speaker("machac (festival, Czech)", "festival", "czech_machac", "M", "diphone"),
    ),
    reference_text=(  # Harvard list 4
        "Hoist the load to your left shoulder. Take the winding path to reach the lake. "
        "Note closely the size of the gas tank."
    ),
    held_out_text=(  # list 5
        "The wide road shimmered in the hot sun. The lazy cow lay in the cool grass. "
        "Lift the square stone over the fence."
    ),
    ceiling_text=(  # list 6
        "The frosty air passed through the coat. The show was a flop from the very start. "
        "A cup of sugar makes sweet fudge."
    ),
    new_sentences=(  # list 7
        "We talked of the slide show in the circus, and he ran half way to the hardware store.",
        "Use a pencil to write the first draft before the clock struck to mark the third period.",
        "A small creek cut across the field where cars and busses stalled in snow drifts.",
        "The set of china hit the floor with a crash, and those words were the cue for the actor to leave.",
    ),
)

SETS = {s.name: s for s in (DEV, TEST)}
# --quick: one speaker of each set (fast synthesizers), so that both tables are exercised.
QUICK_SPEAKERS = ("en+f3 (espeak)", "rms (flite)")


def synthesize_target(speaker: Speaker, text: str) -> tuple[np.ndarray, int]:
    """(trimmed, level-normalised float32 speech, rate) of ``speaker`` saying ``text``, as a registration gets it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.wav"
        if speaker.synthesizer == "festival":
            cmd = [_tool("text2wave"), "-eval", f"(voice_{speaker.voice})", "-o", str(path)]
            subprocess.run(cmd, input=text.encode(), check=True, capture_output=True)
        elif speaker.synthesizer == "flite":
            if speaker.voice not in _flite_voices():  # flite falls back to its default voice without a word
                raise RuntimeError(f"flite has no voice {speaker.voice}: {INSTALL_HINT}")
            cmd = [_tool("flite"), "-voice", speaker.voice, "-t", text, "-o", str(path)]
            subprocess.run(cmd, check=True, capture_output=True)
        elif speaker.synthesizer == "espeak":
            cmd = [_tool("espeak-ng"), "-v", speaker.voice, "-w", str(path), text]
            subprocess.run(cmd, check=True, capture_output=True)
        else:
            raise ValueError(f"unknown synthesizer {speaker.synthesizer!r}")
        if not path.exists() or path.stat().st_size < 1000:
            # festival exits 0 without writing when a voice is missing
            raise RuntimeError(f"{speaker.synthesizer} made no audio for voice {speaker.voice}: {INSTALL_HINT}")
        audio, rate = decode_audio(path.read_bytes())
    return trim_normalise(audio), rate


@functools.cache
def _flite_voices() -> frozenset[str]:
    listing = subprocess.run([_tool("flite"), "-lv"], check=True, capture_output=True, text=True).stdout
    return frozenset(listing.split(":", 1)[-1].split())


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: {INSTALL_HINT}")
    return path


def trim_normalise(audio: np.ndarray, frame: int = 256) -> np.ndarray:
    """Cut leading/trailing silence (frames 40 dB under the peak frame), scale to -20 dBFS RMS (like an upload)."""
    n = audio.size // frame
    levels = 20 * np.log10(np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1)) + 1e-9)
    loud = np.flatnonzero(levels > levels.max() - 40)
    clip = audio[loud[0] * frame : (loud[-1] + 1) * frame]
    gain = 10 ** (-20 / 20) / (np.sqrt(np.mean(clip**2)) + 1e-9)
    return np.asarray(np.clip(clip * gain, -1.0, 1.0), dtype=np.float32)
