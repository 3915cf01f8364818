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
    # A piece may end before a closing mark that comes in the next token: only spaces may differ.
    assert "".join(" ".join(pieces).split()) == "".join(clean_for_speech(text).split())


def feed_tokens(tokens: list[str]) -> list[list[str]]:
    """What the splitter hands out after each token (as a model streams them), then at the end."""
    splitter = SentenceSplitter()
    return [*(splitter.feed(token) for token in tokens), splitter.flush()]


def test_a_sentence_ends_on_the_token_that_ends_it() -> None:
    steps = feed_tokens(["It", " is", " sunny", " outside", ".", " Enjoy", " the", " garden", "!"])
    assert steps[4] == ["It is sunny outside."]  # not only once " Enjoy" arrives
    assert steps[8] == ["Enjoy the garden!"]
    assert steps[-1] == []
    assert feed_tokens(["Is", " it", " on", "?"])[3] == ["Is it on?"]
    assert feed_tokens(["Done", '!"'])[1] == ['Done!"']  # a closing quote in the same token


def test_a_period_that_may_go_on_waits_for_the_next_token() -> None:
    cases = [
        (["It", " is", " 21", ".", "5", " degrees", "."], ["It is 21.5 degrees."]),
        (["Ask", " Dr", ".", " Smith", "."], ["Ask Dr. Smith."]),
        (["Ask", " Mr", ".", " Lee", " and", " Mrs", ".", " Lee", "."], ["Ask Mr. Lee and Mrs. Lee."]),
        (["Fruit", ",", " e", ".g", ".", " apples", "."], ["Fruit, e.g. apples."]),
        (["Fruit", ",", " e.g.", " apples", "."], ["Fruit, e.g. apples."]),
        (["Rock", " vs", ".", " paper", "."], ["Rock vs. paper."]),
    ]
    for tokens, pieces in cases:
        steps = feed_tokens(tokens)
        assert [p for step in steps[:-1] for p in step] == pieces, tokens
        assert steps[-2] == pieces[-1:], tokens  # the last sentence still ends on its own token
    assert feed_tokens(["By", " J", "."])[2] == []  # an initial
    assert feed_tokens(["It", " opens", " at", " 9", " a", ".m", "."])[6] == []


def test_a_number_at_the_end_waits_but_a_list_number_never_ends_a_piece() -> None:
    steps = feed_tokens(["There", " are", " 3", "."])
    assert steps[3] == []  # "3." may go on ("3.5"): the next token decides
    assert steps[-1] == ["There are 3."]
    steps = feed_tokens(["There", " are", " 3", ".", " Good", "."])
    assert [p for step in steps for p in step] == ["There are 3.", "Good."]
    steps = feed_tokens(["1", ".", " Open", " the", " door", ".\n", "2", ".", " Close", " it", "."])
    assert [p for step in steps for p in step] == ["1. Open the door.", "2. Close it."]
    assert steps[5] == ["1. Open the door."]


def test_an_early_cut_loses_no_closing_mark() -> None:
    pieces = [p for step in feed_tokens(["He", " said", " hi", ".", '"', " Then", " he", " left", "."]) for p in step]
    assert pieces == ["He said hi.", '" Then he left.']  # the quote is kept (it is not spoken)
    steps = feed_tokens(["Well", "?", "!"])
    assert [p for step in steps for p in step] == ["Well?", "!"]


def test_the_first_clause_also_ends_on_its_own_token() -> None:
    tokens = ["Tomorrow", " will", " be", " mostly", " sunny", " in", " the", " morning", ",", " with", " clouds", "."]
    steps = feed_tokens(tokens)
    assert steps[8] == ["Tomorrow will be mostly sunny in the morning,"]
    head = ["The", " house", " used", " a", " lot", " of", " power", " this", " afternoon", ","]
    steps = feed_tokens([*head, " about", " 1", ",", "200", " watts", "."])
    assert steps[12] == []  # "1," may be "1,200"
    assert [p for step in steps for p in step] == [
        "The house used a lot of power this afternoon,",
        "about 1,200 watts.",
    ]
