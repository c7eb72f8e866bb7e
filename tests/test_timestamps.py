"""Word timestamps (chorus.timestamps) from the real Piper voice's alignments, run through the engine."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from chorus.engine.request import RequestStatus
from chorus.models.base import PhonemeAlignment, SynthesisParams
from chorus.models.piper import PiperBackend
from chorus.timestamps import WordTime, WordTimer, split_words
from tests.engine.helpers import make_engine, run_until_idle, submit

QUIET = SynthesisParams(noise_scale=0.0, noise_w_scale=0.0)
SENTENCES = [
    "It costs $3.50 on Jan. 5th.",
    "Hello, world! Dr. Smith lives at 221B Baker St. in London.",
    'Well -- "quoted" words (in brackets), e.g. U.S.A., of the people; 50% off!',
    "Prices rose 12% in 2023, and analysts weren't surprised.",
]
LONG = " ".join(
    [
        "Good evening, and welcome to the news at ten.",
        "The weather tomorrow will be mild, with light rain in the afternoon and clear skies at night.",
        "The committee met on Thursday to review the budget, and after a long debate it approved the plan.",
        "Construction will begin in March, said Mr. Jones of 42 Elm St., at a cost of $1.2 million.",
        "Residents are invited to a public meeting next week, where questions will be answered.",
    ]
)


def speak(
    piper: PiperBackend, text: str, params: SynthesisParams = QUIET
) -> tuple[list[list[PhonemeAlignment]], np.ndarray]:
    """The request's alignments as the engine delivers them (one list per output that has any), and its audio."""
    engine = make_engine(piper)
    _, sink = submit(engine, text, "t", params=params)
    run_until_idle(engine)
    assert sink.status == RequestStatus.FINISHED_STOPPED
    return [list(o.alignments) for o in sink.outputs if o.alignments], sink.audio()


def timed(piper: PiperBackend, text: str, params: SynthesisParams = QUIET) -> tuple[list[WordTime], np.ndarray]:
    feeds, audio = speak(piper, text, params)
    timer = WordTimer(text, piper.word_phonemes)
    for f in feeds:
        timer.feed(f)
    return timer.finish(), audio


def one_window(piper: PiperBackend, text: str, feeds: list[list[PhonemeAlignment]]) -> list[WordTime]:
    """The words of one alignment over the whole request: fed without segment ends, it is a single window."""
    timer = WordTimer(text, piper.word_phonemes)
    timer.feed([a for f in feeds for a in f if a.phoneme not in ("^", "$")])
    return timer.finish()


def check_words(text: str, words: list[WordTime], num_samples: int) -> None:
    assert [w.word for w in words] == split_words(text)
    assert all(w.start_sample <= w.end_sample for w in words)
    assert all(a.end_sample <= b.start_sample for a, b in itertools.pairwise(words))
    assert words[0].start_sample >= 0 and words[-1].end_sample <= num_samples


def test_split_words() -> None:
    assert split_words('Hello, "world" -- $3.50 costs (e.g. U.S.A.) 50% ... &') == [
        "Hello",
        "world",
        "$3.50",
        "costs",
        "e.g",
        "U.S.A",
        "50%",
        "&",
    ]


def test_as_json() -> None:
    assert WordTime("Hi", 22050, 33086).as_json(22050, offset_s=1.0) == {"word": "Hi", "start_s": 2.0, "end_s": 2.5}


@pytest.mark.parametrize("text", SENTENCES)
def test_one_time_per_word_in_order(piper: PiperBackend, text: str) -> None:
    words, audio = timed(piper, text)
    check_words(text, words, audio.size)
    assert all(w.end_sample - w.start_sample >= piper.hop for w in words)  # every word here is spoken


def test_numbers_get_their_whole_expansion(piper: PiperBackend) -> None:
    words, _ = timed(piper, SENTENCES[0])
    durations = {w.word: (w.end_sample - w.start_sample) / piper.sample_rate for w in words}
    # "$3.50" is five spoken words ("dollar three point five zero"): far longer than "on" or "It".
    assert durations["$3.50"] > 4 * max(durations["on"], durations["It"])


def test_word_durations_are_plausible(piper: PiperBackend) -> None:
    words, _ = timed(piper, "one two three four five")
    assert [w.word for w in words] == ["one", "two", "three", "four", "five"]
    for w in words:
        assert 0.08 < (w.end_sample - w.start_sample) / piper.sample_rate < 1.5, w


def test_speed_shrinks_times(piper: PiperBackend) -> None:
    text = SENTENCES[1]
    normal, _ = timed(piper, text)
    fast, audio = timed(piper, text, SynthesisParams(speed=1.5, noise_scale=0.0, noise_w_scale=0.0))
    check_words(text, fast, audio.size)
    for a, b in zip(normal, fast, strict=True):
        assert 0.5 < b.end_sample / a.end_sample < 0.85, (a, b)


def test_silence_between_sentences_lies_between_their_words(piper: PiperBackend) -> None:
    text = "The first sentence ends right here. Another sentence follows it."
    words, audio = timed(piper, text)
    here, another = words[5], words[6]
    assert (here.word, another.word) == ("here", "Another")
    frame = piper.hop
    rms = np.sqrt(np.mean(audio[: audio.size // frame * frame].reshape(-1, frame) ** 2, axis=1))
    quiet = rms < 0.05 * rms.max()
    middle = range(len(rms) // 4, 3 * len(rms) // 4)
    # The longest quiet run in the middle half of the audio: the pause between the sentences.
    runs = [(k, len(list(g))) for k, g in itertools.groupby(middle, key=lambda i: bool(quiet[i]))]
    start, best = 0, 0
    pos = middle.start
    for is_quiet, length in runs:
        if is_quiet and length > best:
            start, best = pos, length
        pos += length
    assert best * frame > 0.1 * piper.sample_rate  # a real pause
    tolerance = 4 * frame  # quiet edges of the words themselves
    assert here.end_sample - tolerance <= start * frame
    assert (start + best) * frame <= another.start_sample + tolerance
    assert another.start_sample - here.end_sample >= 0.8 * best * frame  # the gap is the pause, not a word's


def test_long_text_over_several_segments(piper: PiperBackend) -> None:
    feeds, audio = speak(piper, LONG)
    assert len(feeds) > 4  # several segments
    timer = WordTimer(LONG, piper.word_phonemes)
    for f in feeds:
        timer.feed(f)
    words = timer.finish()
    check_words(LONG, words, audio.size)
    assert sum(w.end_sample == w.start_sample for w in words) == 0
    assert words[-1].end_sample > feeds[-1][0].start_sample  # the last segment's words are in the last segment
    assert words == one_window(piper, LONG, feeds)


def test_incremental_equals_all_at_once(piper: PiperBackend) -> None:
    feeds, _ = speak(piper, LONG)
    whole = WordTimer(LONG, piper.word_phonemes)
    whole.feed([a for f in feeds for a in f])
    expected = whole.finish()

    timer = WordTimer(LONG, piper.word_phonemes)
    got: list[WordTime] = []
    for f in feeds:
        timer.feed(f)
        upto = f[len(f) // 2].start_sample
        early = timer.ready(upto)
        assert all(w.start_sample < upto for w in early)
        got += early
        got += timer.ready()
        if f is feeds[0]:
            assert got  # words come out before the end
    got += timer.finish()
    assert got == expected
    assert timer.finish() == [] and timer.ready() == []


def test_a_word_split_across_segments_waits_for_its_rest(piper: PiperBackend) -> None:
    text = "In total we paid $1,234,567.89 for everything on the list."
    feeds, _ = speak(piper, text)
    assert len(feeds) == 2  # the first segment ends inside the number's expansion
    timer = WordTimer(text, piper.word_phonemes)
    timer.feed(feeds[0])
    words = timer.ready()
    assert [w.word for w in words] == ["In", "total", "we", "paid"]
    timer.feed(feeds[1])
    words += timer.finish()
    number = words[4]
    assert number.start_sample < feeds[1][0].start_sample < number.end_sample
    assert words == one_window(piper, text, feeds)


def test_merged_and_unspoken_words() -> None:
    reference = {"of": ["ʌ", "v"], "the": ["ð", "ə"], "people": ["p", "ˈ", "i", "ː", "p", "ə", "l"], "again": []}

    def spoken(*phonemes: str) -> list[PhonemeAlignment]:
        return [PhonemeAlignment(p, 100 * i, 100) for i, p in enumerate(["^", *phonemes, "$"])]

    timer = WordTimer("of the people, again", reference.__getitem__)
    # espeak joins "of the" into one spoken word; "again" is not spoken.
    timer.feed(spoken("ʌ", "v", "ð", "ə", " ", "p", "ˈ", "i", "ː", "p", "ə", "l", ","))
    assert timer.ready() == [WordTime("of", 100, 300), WordTime("the", 300, 500)]
    assert timer.finish() == [WordTime("people", 600, 1300), WordTime("again", 1300, 1300)]
