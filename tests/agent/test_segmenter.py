"""TextSegmenter: LLM fragments in, speakable segments out, never cutting words, numbers or abbreviations."""

from __future__ import annotations

import random
import re

import pytest

from chorus.agent.segmenter import SegmenterConfig as EagerConfig
from chorus.agent.segmenter import TextSegmenter


def SegmenterConfig(**kwargs: object) -> EagerConfig:
    """The rules that wait for the next character (eager first cuts are tested on their own, at the end)."""
    return EagerConfig(**{"eager_first": False, **kwargs})  # type: ignore[arg-type]


def feed(fragments: list[str], config: EagerConfig | None = None) -> list[str]:
    """Append each fragment (no idling), then flush: every segment, in order."""
    seg = TextSegmenter(config or SegmenterConfig())
    out: list[str] = []
    for fragment in fragments:
        out += seg.append(fragment, 0.0)
    last = seg.flush()
    return out + ([last] if last is not None else [])


def chars(text: str) -> list[str]:
    return list(text)


def tokens(text: str) -> list[str]:
    """LLM-like fragments: words with their leading space, punctuation split off."""
    return re.findall(r"\s*\w+|\s*[^\w\s]|\s+", text)


def test_the_example_stream() -> None:
    seg = TextSegmenter(SegmenterConfig())
    fragments = ["Hel", "lo", " wor", "ld.", " The", " price", " is", " $3", ".", "50", " today"]
    emitted = [(f, seg.append(f, 0.0)) for f in fragments]
    # "Hello world." is known to end only when " The" arrives, and not a moment before.
    assert [out for _, out in emitted] == [[]] * 4 + [["Hello world."]] + [[]] * 6
    assert seg.buffered == "The price is $3.50 today"
    assert seg.flush() == "The price is $3.50 today"
    assert seg.buffered == ""


def test_realistic_answer_token_by_token() -> None:
    answer = (
        "Sure! The flight to Boston leaves at 3:30 p.m. on Friday, and it costs $1,249.99 per person. "
        "Would you like me to book it, or should I check the morning flights first? "
        "Dr. Patel also asked, e.g. for the U.S. office, whether you need a receipt."
    )
    assert feed(tokens(answer)) == [
        "Sure!",
        "The flight to Boston leaves at 3:30 p.m. on Friday,",
        "and it costs $1,249.99 per person.",
        "Would you like me to book it,",  # 7 words: enough for a later segment
        "or should I check the morning flights first?",
        "Dr. Patel also asked, e.g. for the U.S. office,",
        "whether you need a receipt.",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "The total is $3.50 for now",
        "We sold 1,000,000 copies in 2024",
        "Version v1.2.3 is at example.com and docs.example.com/v2 today",
        "The meeting is at 3:30 p.m. tomorrow",
        "Pi is about 3.14159 and e is 2.71828",
    ],
)
def test_numbers_times_and_urls_stay_whole(text: str) -> None:
    assert feed(chars(text + " ")) == [text]
    assert feed(tokens(text)) == [text]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("We met Mr. Smith and Mrs. Jones there. Next", ["We met Mr. Smith and Mrs. Jones there.", "Next"]),
        ("Ask Dr. Who vs. Prof. Oak now. Next", ["Ask Dr. Who vs. Prof. Oak now.", "Next"]),
        ("Big cities, e.g. Paris and i.e. Rome fit. Next", ["Big cities, e.g. Paris and i.e. Rome fit.", "Next"]),
        ("I read J. R. R. Tolkien today. Next", ["I read J. R. R. Tolkien today.", "Next"]),
        ("See room No. 5 on Jan. 3 please. Next", ["See room No. 5 on Jan. 3 please.", "Next"]),
        # A soft abbreviation ends a sentence when the next word is capitalised.
        ("Bring apples, pears, etc. The rest is fine", ["Bring apples, pears,", "etc.", "The rest is fine"]),
        ("It starts at 3 p.m. See you", ["It starts at 3 p.m.", "See you"]),
        ("It starts at 3 p.m. sharp", ["It starts at 3 p.m. sharp"]),
        ("Made by Acme Inc. They ship", ["Made by Acme Inc.", "They ship"]),
        ("So did I. Then we left", ["So did I.", "Then we left"]),
    ],
)
def test_abbreviations_and_initials(text: str, expected: list[str]) -> None:
    assert feed(chars(text)) == expected
    assert feed(tokens(text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('He said "stop." Then he left', ['He said "stop."', "Then he left"]),
        ("It works (mostly.) Next one", ["It works (mostly.)", "Next one"]),
        ("She asked \u201cwhy?\u201d Nobody knew", ["She asked \u201cwhy?\u201d", "Nobody knew"]),
        ("Really?! Yes really!!! Ok", ["Really?!", "Yes really!!!", "Ok"]),
        ("Wait... what was that? Hmm\u2026 Okay then", ["Wait... what was that?", "Hmm\u2026", "Okay then"]),
        ("Well\u2026 maybe. So... We go", ["Well\u2026 maybe.", "So...", "We go"]),
        ("First line.\nSecond\n\nline here.\n\nThird", ["First line.", "Second line here.", "Third"]),
        ("Tabs\tand   spaces.   End", ["Tabs and spaces.", "End"]),
    ],
)
def test_sentence_ends(text: str, expected: list[str]) -> None:
    assert feed(chars(text)) == expected
    assert feed(tokens(text)) == expected


def test_period_is_not_an_end_until_the_next_character_arrives() -> None:
    seg = TextSegmenter(SegmenterConfig())
    assert seg.append("It costs 3.", 0.0) == []
    assert seg.append("5 now.", 0.0) == []  # a decimal point after all
    assert seg.append("\n", 0.0) == ["It costs 3.5 now."]


def test_clause_marks_first_segment_versus_later() -> None:
    text = "Okay, so here we go, this is the plan, and it is a good one; we start: right now, today."
    assert feed(chars(text)) == [
        "Okay, so here we go,",  # "Okay," has 1 word < 3; the first segment is cut at 4 words
        "this is the plan, and it is a good one;",  # later: "this is the plan," has 4 < 6 words
        "we start: right now, today.",
    ]


def test_dashes_and_digit_commas() -> None:
    text = "Well — we have 1,000, 2,000 and more — much more than anyone here expected. Yes"
    assert feed(tokens(text)) == [
        "Well — we have 1,000,",
        "2,000 and more — much more than anyone here expected.",
        "Yes",
    ]


def test_start_utterance_restores_the_first_segment_threshold() -> None:
    seg = TextSegmenter(SegmenterConfig())
    assert seg.append("One two three, ", 0.0) == ["One two three,"]
    assert seg.append("four five six, seven ", 0.0) == []  # later segments need 6 words
    seg.clear()
    seg.start_utterance()
    assert seg.buffered == ""
    assert seg.append("Eight nine ten, eleven", 0.0) == ["Eight nine ten,"]
    assert seg.flush() == "eleven"
    # flush alone does not start a new utterance: the later-segment threshold still applies.
    assert seg.append("Twelve thirteen fourteen, x", 0.0) == []


def test_clear_drops_the_buffer() -> None:
    seg = TextSegmenter(SegmenterConfig())
    seg.append("This was interrupted mid", 0.0)
    seg.clear()
    assert seg.buffered == ""
    assert seg.next_due_at() is None
    assert seg.due(10.0) == []
    assert seg.append("New answer. Go", 1.0) == ["New answer."]


def test_max_words_cuts_at_a_word_boundary() -> None:
    config = SegmenterConfig(max_words=5)
    seg = TextSegmenter(config)
    assert seg.append("one two three four fiv", 0.0) == []  # "fiv" may not be complete
    assert seg.append("e", 0.0) == []
    assert seg.append(" six", 0.0) == ["one two three four five"]
    words = " ".join(f"w{i}" for i in range(23))
    expected = [" ".join(f"w{i}" for i in range(j, min(j + 5, 23))) for j in (0, 5, 10, 15, 20)]
    assert feed(tokens(words), config) == expected


def test_max_words_never_ends_on_a_title_or_initial() -> None:
    config = SegmenterConfig(max_words=5)
    assert feed(chars("we met with Dr. J. Watson and his friend at noon"), config) == [
        "we met with",
        "Dr. J. Watson and his",
        "friend at noon",
    ]


def test_punctuation_beyond_max_words_does_not_wait() -> None:
    config = SegmenterConfig(max_words=4)
    assert feed(chars("a b c d e f. g"), config) == ["a b c d", "e f.", "g"]


def test_idle_speaks_complete_words_and_keeps_the_partial_one() -> None:
    seg = TextSegmenter(SegmenterConfig())
    assert seg.next_due_at() is None
    assert seg.append("Hello wor", 10.0) == []
    assert seg.next_due_at() == pytest.approx(10.5)
    assert seg.due(10.4) == []
    assert seg.due(10.5) == ["Hello"]  # one word is enough once the LLM stalls
    assert seg.buffered == "wor"
    assert seg.next_due_at() is None  # a partial word alone is never released by idling
    assert seg.due(99.0) == []
    assert seg.append("ld, this is", 11.0) == []
    assert seg.next_due_at() == pytest.approx(11.5)
    # the first segment has gone: the clause mark now needs 6 words
    assert seg.due(11.6) == ["world, this"]
    assert seg.flush() == "is"


def test_idle_timer_restarts_with_each_fragment() -> None:
    seg = TextSegmenter(SegmenterConfig(idle_s=1.0))
    seg.append("Still ", 0.0)
    seg.append("typing", 0.9)
    assert seg.due(1.5) == []
    assert seg.next_due_at() == pytest.approx(1.9)
    assert seg.due(1.9) == ["Still"]


@pytest.mark.parametrize(
    ("text", "spoken", "kept"),
    [
        ("Hello world.", "Hello world.", ""),  # a finished sentence goes whole
        ("Is it done?\u201d", "Is it done?\u201d", ""),
        ("It costs $3.", "It costs", "$3."),  # "3." may yet become "3.50"
        ("I spoke to Dr.", "I spoke to", "Dr."),
        ("I spoke to Dr. ", "I spoke to", "Dr. "),  # a complete title still waits for its name
        ("Meet at 3 p.m.", "Meet at 3", "p.m."),
        ("We sold 1,", "We sold", "1,"),
        ("Big cities, e.", "Big cities,", "e."),
        ("See https://example.", "See", "https://example."),
        ("Mail help@example.", "Mail", "help@example."),
        ("Open docs?", "Open docs?", ""),
        ("Open /docs?", "Open", "/docs?"),
    ],
)
def test_idle_with_a_trailing_mark(text: str, spoken: str, kept: str) -> None:
    seg = TextSegmenter(SegmenterConfig())
    seg.append(text, 0.0)
    assert seg.due(1.0) == [spoken]
    assert seg.buffered == kept


def test_idle_holds_a_lone_title() -> None:
    seg = TextSegmenter(SegmenterConfig())
    seg.append("Dr. ", 0.0)
    assert seg.next_due_at() is None
    assert seg.due(5.0) == []
    seg.append("Watson is in", 6.0)
    assert seg.due(7.0) == ["Dr. Watson is"]


def test_flush() -> None:
    seg = TextSegmenter(SegmenterConfig())
    assert seg.flush() is None
    seg.append("  \n\t ", 0.0)
    assert seg.flush() is None
    seg.append(" Half a sente", 0.0)
    assert seg.flush() == "Half a sente"
    assert seg.buffered == ""
    assert seg.flush() is None


def test_whitespace_only_segments_are_never_returned() -> None:
    seg = TextSegmenter(SegmenterConfig())
    out = [s for f in ["Hi there.", "   ", "\n\n", " ", "Bye."] for s in seg.append(f, 0.0)]
    assert out == ["Hi there."]
    assert seg.flush() == "Bye."


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        SegmenterConfig(max_words=0)
    with pytest.raises(ValueError):
        SegmenterConfig(idle_s=0.0)


PARAGRAPHS = """\
Sure! Here's what I found. The Model X costs $42,999.00, or about 3.5% less than last year; \
the Model Y is $1,299.50 more. Dr. Alvarez (from Acme Inc.) said, e.g. at the 3:30 p.m. meeting, \
that J. R. R. Tolkien's books sold 150,000,000 copies... which is a lot. Really?! Yes.

Visit https://example.com/docs?v=1.2.3 or mail help@example.com for details — it's all there: prices, \
dates (Jan. 5 to Feb. 10), and more. "That's great." she said. 'Is it?' he asked.
Well… I think so. Then again, who knows how long a sentence without any punctuation can go on and on \
before the speaker finally decides that it is time to stop and take a breath and let someone else talk
No. 7 is the U.S. office, vs. No. 8 in the U.K. The rest, i.e. everything else, follows later etc. etc.
"""


def fragments_of(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(len(text) // 8, len(text) // 2)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def check_cut_points(text: str, segments: list[str]) -> None:
    """Each segment is the next piece of the (whitespace-normalised) text, ending before a space or at the end."""
    normal = " ".join(text.split())
    pos = 0
    for segment in segments:
        assert segment and segment == segment.strip()
        assert normal.startswith(segment, pos), (segment, normal[pos : pos + 60])
        end = pos + len(segment)
        assert end == len(normal) or normal[end] == " ", f"cut inside a word: {normal[pos : end + 10]!r}"
        pos = end + 1
    assert pos >= len(normal)
    assert " ".join(segments) == normal


@pytest.mark.parametrize("seed", range(40))
def test_random_fragmentations_without_idling(seed: int) -> None:
    rng = random.Random(seed)
    config = SegmenterConfig(max_words=rng.choice([5, 8, 20]), min_words=rng.choice([2, 6]))
    whole = feed([PARAGRAPHS], config)
    segments = feed(fragments_of(PARAGRAPHS, rng), config)
    check_cut_points(PARAGRAPHS, segments)
    assert segments == whole  # where fragments break does not matter
    assert all(len(s.split()) <= config.max_words for s in segments)
    if config.max_words == 20:
        for protected in ["3:30 p.m. meeting,", "J. R. R. Tolkien's", "(from Acme Inc.)", "No. 7 is", "U.S. office"]:
            assert any(protected in s for s in segments), protected


@pytest.mark.parametrize("seed", range(40))
def test_random_fragmentations_with_idle_pauses(seed: int) -> None:
    rng = random.Random(1000 + seed)
    seg = TextSegmenter(SegmenterConfig(max_words=rng.choice([6, 20])))
    now = 0.0
    segments: list[str] = []
    previous = ""
    for fragment in fragments_of(PARAGRAPHS, rng):
        # Any pause, except one right after a sentence mark: idle speaks "it?" of "'Is it?'" (the documented trade-off).
        now += rng.choice([0.01, 0.3] if previous[-1:] in ".!?…" else [0.01, 0.05, 0.3, 0.7])
        previous = fragment
        segments += seg.due(now)
        segments += seg.append(fragment, now)
        due_at = seg.next_due_at()
        if due_at is not None:
            assert due_at == pytest.approx(now + 0.5)
    last = seg.flush()
    segments += [last] if last is not None else []
    check_cut_points(PARAGRAPHS, segments)
    assert not any(s.endswith(("Dr.", " J.", " R.", "$42,999.", "1,299.", " 3.")) for s in segments)


def test_idle_after_a_sentence_mark_cannot_take_back_a_late_quote() -> None:
    seg = TextSegmenter(SegmenterConfig())
    seg.append("'Is it?", 0.0)
    assert seg.due(1.0) == ["'Is it?"]
    seg.append("' he asked.", 2.0)
    assert seg.flush() == "' he asked."


def test_the_cut_point_check_can_fail() -> None:
    with pytest.raises(AssertionError):
        check_cut_points("Hello world today", ["Hello wor", "ld today"])
    with pytest.raises(AssertionError):
        check_cut_points("Hello world today", ["Hello", "today"])


def test_eager_first_segment_is_cut_by_the_fragment_that_ends_it() -> None:
    seg = TextSegmenter(EagerConfig())
    assert seg.append("The sun is warm today", 0.0) == []
    assert seg.append(".", 0.0) == ["The sun is warm today."]  # not waiting for the next token's space
    assert seg.append(" The sky is", 0.0) == []
    assert seg.append(" blue.", 0.0) == []  # later segments wait for what follows (nothing is gained there)
    assert seg.append(" And", 0.0) == ["The sky is blue."]


@pytest.mark.parametrize(
    ("fragments", "first"),
    [
        (["Well", ",", " I think so."], None),  # one word before the comma: fewer than first_min_words
        (["The sun is warm", ",", " and"], "The sun is warm,"),
        (["It costs $3", ".", "50 now."], None),  # "$3." may become "$3.50"
        (["Ask Dr", ".", " Smith now."], None),  # a title
        (["Call me at 3 p.m", ".", " tomorrow"], None),  # an abbreviation
        (["One thousand and 1", ",", "000 more,"], None),  # a number
    ],
)
def test_eager_first_cuts_only_where_certain(fragments: list[str], first: str | None) -> None:
    seg = TextSegmenter(EagerConfig())
    got = [s for f in fragments[:2] for s in seg.append(f, 0.0)]
    assert got == ([first] if first else [])
