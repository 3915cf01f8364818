"""Streamed text is cut into speakable pieces as soon as a sentence (or a long first clause) is complete."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from assistant.voice.sentences import SentenceSplitter, clean_for_speech


def stream(text: str, step: int = 3) -> list[list[str]]:
    splitter = SentenceSplitter()
    out = [splitter.feed(text[i : i + step]) for i in range(0, len(text), step)]
    return [*out, splitter.flush()]


def test_first_sentence_is_ready_before_the_rest_arrives() -> None:
    text = "The kitchen light is on. The oven is preheating to 180 degrees. Anything else?"
    steps = stream(text)
    first = next(i for i, pieces in enumerate(steps) if pieces)
    assert steps[first] == ["The kitchen light is on."]
    assert first < len("The kitchen light is on. ") // 3 + 1  # as soon as the space after the period arrives
    assert [p for pieces in steps for p in pieces] == [
        "The kitchen light is on.",
        "The oven is preheating to 180 degrees.",
        "Anything else?",
    ]


def test_decimals_are_not_sentence_ends() -> None:
    pieces = [p for step in stream("It is 21.5 degrees inside. Nice.") for p in step]
    assert pieces == ["It is 21.5 degrees inside.", "Nice."]


def test_a_long_first_clause_is_spoken_early_but_later_clauses_wait() -> None:
    text = "Tomorrow will be mostly sunny in the morning, with clouds later, and a chance of rain at night. Bye."
    pieces = [p for step in stream(text) for p in step]
    assert pieces == [
        "Tomorrow will be mostly sunny in the morning,",
        "with clouds later, and a chance of rain at night.",
        "Bye.",
    ]
    assert [p for step in stream("Yes, it is on.") for p in step] == ["Yes, it is on."]  # short: no early cut


def test_markdown_is_not_read_aloud() -> None:
    assert (
        clean_for_speech("**Done!** The `light.kitchen` is on.\n- item one")
        == "Done! The light.kitchen is on. item one"
    )
    pieces = [p for step in stream("## Steps\n\n1. Open the door.\n2. Close it.") for p in step]
    assert pieces == ["Steps", "1. Open the door.", "2. Close it."]


@given(st.text(max_size=300), st.integers(min_value=1, max_value=20))
def test_nothing_is_lost_or_invented(text: str, step: int) -> None:
    pieces = [p for pieces in stream(text, step) for p in pieces]
    assert " ".join(pieces).split() == clean_for_speech(text).split()
