"""The state machine: every transition, and what the listener hears in each state."""

from __future__ import annotations

import pytest

from assistant.daemon.state import TRANSITIONS, Event, Hearing, State, StateMachine

E, S = Event, State


def run(events: list[Event], wake_mode: str = "wakeword", muted: bool = False) -> tuple[StateMachine, list[State]]:
    seen: list[State] = []
    machine = StateMachine(wake_mode, muted, seen.append)
    for event in events:
        machine.handle(event)
    return machine, seen


def test_a_spoken_request_goes_round_and_rests() -> None:
    machine, seen = run([E.WAKE, E.SPEECH, E.UTTERANCE, E.ANSWER, E.SPEAK, E.DONE])
    assert seen == [S.LISTENING, S.TRANSCRIBING, S.THINKING, S.SPEAKING, S.IDLE]
    assert machine.hearing() is Hearing.WAKE_WORD


def test_barge_in_goes_to_listening_not_idle() -> None:
    """The wake word during a reply: the published state says listening, and the listener takes
    the new request (it used to say idle while the device listened)."""
    machine, _ = run([E.WAKE, E.UTTERANCE, E.ANSWER, E.SPEAK, E.WAKE])
    assert machine.state is S.LISTENING
    assert machine.hearing() is Hearing.REQUEST
    machine.handle(E.DONE)  # ... and the interrupted turn ending does not undo that
    assert machine.state is S.LISTENING


def test_cancel_rests_the_device() -> None:
    for busy in ([E.START], [E.WAKE, E.UTTERANCE], [E.START, E.SPEAK], [E.WAKE]):
        machine, _ = run([*busy, E.CANCEL])
        assert machine.state is S.IDLE, busy


def test_a_text_request_that_is_not_spoken_leaves_the_wake_word_working() -> None:
    """An MQTT ask without speech sends no event: the device stays idle and hears its wake word."""
    machine, seen = run([])
    assert (machine.state, machine.hearing(), seen) == (S.IDLE, Hearing.WAKE_WORD, [])
    machine.handle(E.WAKE)
    assert machine.hearing() is Hearing.REQUEST


def test_a_spoken_text_request_thinks_then_speaks_and_the_wake_word_still_barges_in() -> None:
    machine, seen = run([E.START, E.SPEAK])
    assert seen == [S.THINKING, S.SPEAKING]
    assert machine.hearing() is Hearing.WAKE_WORD
    assert machine.handle(E.WAKE) is S.LISTENING


def test_mute_while_speaking_lets_the_reply_finish_then_rests_muted() -> None:
    machine, _ = run([E.START, E.SPEAK, E.MUTE])
    assert machine.state is S.SPEAKING
    assert machine.hearing() is Hearing.NOTHING  # not even the wake word
    assert machine.handle(E.DONE) is S.MUTED
    assert machine.handle(E.WAKE) is S.MUTED
    assert machine.handle(E.UNMUTE) is S.IDLE


def test_mute_while_listening_stops_listening() -> None:
    machine, _ = run([E.WAKE, E.MUTE])
    assert (machine.state, machine.hearing()) == (S.MUTED, Hearing.NOTHING)


def test_muted_device_still_speaks_text_requests() -> None:
    _, seen = run([E.START, E.SPEAK, E.DONE], muted=True)
    assert seen == [S.THINKING, S.SPEAKING, S.MUTED]


def test_follow_up_is_a_wake_after_done() -> None:
    machine, _ = run([E.WAKE, E.UTTERANCE, E.ANSWER, E.SPEAK, E.DONE, E.WAKE])
    assert machine.state is S.LISTENING
    assert machine.handle(E.SILENCE) is S.IDLE


@pytest.mark.parametrize(
    ("mode", "hearing"), [("wakeword", Hearing.WAKE_WORD), ("vad", Hearing.REQUEST), ("mqtt", Hearing.NOTHING)]
)
def test_what_each_wake_mode_hears_at_rest(mode: str, hearing: Hearing) -> None:
    machine, _ = run([], wake_mode=mode)
    assert machine.hearing() is hearing
    machine.handle(E.WAKE)
    assert machine.hearing() is Hearing.REQUEST


def test_every_listed_transition_is_reached_and_unlisted_pairs_keep_the_state() -> None:
    for (state, event), target in TRANSITIONS.items():
        machine = StateMachine("wakeword", state is S.MUTED)
        machine.state = state
        assert machine.handle(event) is (S.MUTED if target is S.IDLE and event is E.MUTE else target), (state, event)
    machine = StateMachine("wakeword", False)
    machine.state = S.SPEAKING
    assert machine.handle(E.UTTERANCE) is S.SPEAKING  # the device's own voice is not a request
