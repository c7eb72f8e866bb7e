"""A fixed corpus of plain English sentences and deterministic ~10 s texts built from it.

Every system in a run gets exactly the same text for the same request index, so differences in the results come
from the servers, not from the words. Sentences avoid digits and abbreviations so that every phonemizer reads
them the same way, and their lengths vary so that some requests are shorter than others, as in real traffic.
"""

from __future__ import annotations

SENTENCES: tuple[str, ...] = (
    "The morning train was late again, so she read the paper on the platform.",
    "Please remember to water the tomatoes before you leave for the weekend.",
    "A light rain began to fall just as the concert in the park was ending.",
    "He opened the old wooden box and found a stack of letters from his grandmother.",
    "The library will stay open late on Thursdays throughout the winter.",
    "We followed the river for an hour until the path turned toward the hills.",
    "Nobody expected the small bakery on the corner to become so popular.",
    "Your package has been delivered to the front desk of your building.",
    "The children built a tall tower of blocks and then knocked it down, laughing.",
    "If the weather holds, we will have dinner outside on the terrace tonight.",
    "She tuned the guitar carefully before playing the first quiet chords.",
    "The museum has a new exhibition about the history of ocean travel.",
    "Turn left at the next intersection and continue straight for half a mile.",
    "Fresh snow covered the mountain road, and the plows were still out working.",
    "I think the meeting went well, although it ran a little longer than planned.",
    "The cat watched the birds from the windowsill for most of the afternoon.",
    "Our flight was smooth, and the view of the coastline at sunset was beautiful.",
    "Could you send me the notes from yesterday's discussion when you have a moment?",
    "The garden looks wonderful this year thanks to all the careful pruning.",
    "A quiet street can feel completely different after the shops have closed.",
    "He spent the whole evening fixing the bicycle chain in the garage.",
    "The soup needs a little more salt and perhaps a squeeze of lemon.",
    "Thank you for calling; all of our agents are currently helping other customers.",
    "The old lighthouse still guides the fishing boats safely back to the harbor.",
    "They painted the kitchen a pale yellow that catches the morning light.",
    "Remember that the store closes early on holidays, so plan your shopping ahead.",
    "The scientist explained her results slowly so that everyone could follow along.",
    "After a long week, a walk through the forest was exactly what we needed.",
    "The bus stopped suddenly, and everyone grabbed the rails to keep their balance.",
    "Her favorite book tells the story of a sailor who never wanted to leave home.",
    "The committee will announce its decision at the end of next month.",
    "Warm bread, strong coffee, and a good conversation make a perfect breakfast.",
    "The wind picked up in the afternoon, and the waves grew taller by the hour.",
    "Please keep your seatbelt fastened while the sign above you is illuminated.",
    "My neighbor has been teaching his parrot to whistle a cheerful little tune.",
    "The bridge was closed for repairs, so the traffic moved slowly around the town.",
    "She wrote a short note of thanks and left it on the table by the door.",
    "Every autumn the valley fills with color as the leaves begin to change.",
    "The printer on the second floor is out of paper again, I'm afraid.",
    "We could hear the distant sound of a marching band coming up the avenue.",
    "The recipe says to let the dough rest for an hour before shaping it.",
    "At night the city lights shimmer on the surface of the calm, dark water.",
    "The kettle is on, so the tea will be ready soon.",
    "Nobody answered the phone, so I left a message.",
    "The last bus leaves the station at midnight.",
    "It smelled like rain all afternoon.",
    "We finally found the keys under the sofa cushion.",
    "The lecture starts in ten minutes, in the main hall.",
    "Her dog refuses to walk in the snow.",
    "The apples from the orchard were sweet and crisp.",
)

# Measured: the bundled voice (en_US-joe-medium, default speed) speaks about 19 to 20 characters of this corpus
# per second, so ~200 characters (three sentences) is ~10 s of audio.
CHARS_PER_SECOND = 19.3
TEN_SECOND_CHARS = 200
# A stride coprime with the corpus size walks every sentence before any repeats, so neighbouring request
# indices get different sentence mixes (and different lengths) rather than shifted copies of each other.
_STRIDE = 7


def text_for(index: int, target_chars: int = TEN_SECOND_CHARS, max_sentences: int = 3) -> str:
    """The text of request ``index``: 2-3 whole sentences, about ``target_chars`` characters, always the same."""
    n = len(SENTENCES)
    start = (index * 11) % n
    parts: list[str] = []
    length = -1  # no space before the first sentence
    for k in range(max_sentences):
        sentence = SENTENCES[(start + k * _STRIDE) % n]
        longer = length + 1 + len(sentence)
        # Whole sentences only, so the prosody is natural; stop when one more would land farther from the target.
        if len(parts) >= 2 and abs(longer - target_chars) >= abs(length - target_chars):
            break
        parts.append(sentence)
        length = longer
    return " ".join(parts)


def expected_audio_seconds(text: str) -> float:
    """A rough duration estimate, for labels and sanity checks only (the measured audio is what counts)."""
    return len(text) / CHARS_PER_SECOND
