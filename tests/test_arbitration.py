"""Wake word arbitration decides before a request is sent, however the frames and timer interleave.

When the event loop stalls, queued microphone frames are handled before the arbitration
timer fires, so the utterance can end first. The listener (real segmenter, real webrtcvad,
real espeak speech) must hold it until this device is known to have heard best.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from listener_host import ListenerHost
from support import read_wav, speech_wav

from assistant.audio.listener import Listener
from assistant.audio.wakeword import Detection
from assistant.config import parse_config
from assistant.daemon.state import State


def frames(tmp_path: Path, frame_bytes: int) -> list[bytes]:
    """A spoken request and the silence after it, cut into the segmenter's frames."""
    samples, rate = read_wav(speech_wav("turn on the kitchen light", tmp_path / "req.wav", pad_before=0.3))
    assert rate == 16000
    pcm = samples.tobytes()
    return [pcm[i : i + frame_bytes] for i in range(0, len(pcm) - frame_bytes + 1, frame_bytes)]


def hear_everything_before_the_timer(tmp_path: Path) -> tuple[Listener, ListenerHost, str]:
    """The wake word, then the whole request handled in one go (a stalled loop catching up)."""
    config = parse_config({"wake": {"mode": "mqtt", "arbitration_ms": 200}}, credentials=False)
    host = ListenerHost("mqtt")
    listener = Listener(config, host)
    listener.woken(Detection("okay_nabu", 0.9, -30.0))
    request_id = listener.request_id
    assert request_id is not None
    for frame in frames(tmp_path, listener.segmenter.frame_bytes):
        listener.feed(frame)
    assert listener.held is not None, "the utterance should have ended before the arbitration timer"
    assert host.uploads == []
    return listener, host, request_id


def test_an_utterance_that_ends_before_the_decision_is_sent_once_this_device_wins(tmp_path: Path) -> None:
    async def main() -> None:
        listener, host, request_id = hear_everything_before_the_timer(tmp_path)
        listener.on_claim(b'{"site_id": "far", "level_dbfs": -50.0, "probability": 0.8}')  # a worse one
        assert listener._arbitration is not None
        await listener._arbitration
        assert [sent for _, sent in host.uploads] == [request_id]

    asyncio.run(main())


def test_an_utterance_that_ends_before_the_decision_is_dropped_when_another_device_heard_better(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        listener, host, _ = hear_everything_before_the_timer(tmp_path)
        listener.on_claim(b'{"site_id": "near", "level_dbfs": -10.0, "probability": 0.9}')
        assert listener._arbitration is not None
        await listener._arbitration
        assert host.uploads == []
        assert listener.held is None
        assert host.machine.state is State.IDLE

    with caplog.at_level(logging.INFO, logger="assistant.audio.listener"):
        asyncio.run(main())
    assert "near heard the wake word better" in caplog.text
