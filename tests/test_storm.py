"""A discovery storm does not starve the microphone or requests.

`assistant run` (a subprocess, recording from the PulseAudio virtual microphone) is running
when a fast paho client publishes STORM_CONFIGS retained discovery configs to a real
mosquitto; asks arrive every quarter second meanwhile. Then Home Assistant says `online`,
and every retained config comes again at once. Each time: every config is learned, every
ask gets a reply or a `busy` error, and not one microphone frame is lost.
bench/discovery_storm.py runs the same with 100,000 configs and prints the figures.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon import ENTITIES, Daemon, base_sections, daemon_env, write_config
from fake_openai import FakeOpenAI
from storm import (
    DROPPED,
    UPTIME,
    Asks,
    ask_during,
    broker_config,
    broker_drops,
    microphone_figures,
    publish_configs,
    wait_answered,
    wait_for_entities,
    wait_sys_update,
)
from support import Broker, MqttRecorder, PulseAudio

STORM_CONFIGS = int(os.environ.get("STORM_CONFIGS", "100000"))
DECLARED = 2  # the hand-declared entities of ENTITIES


def absorb(
    daemon: Daemon, recorder: MqttRecorder, root: str, start: Callable[[], object], name: str
) -> tuple[float, Asks]:
    """Start a storm, ask all along, wait until every config is learned and every ask answered."""
    asks = Asks(prefix=name)
    stop = threading.Event()
    asker = threading.Thread(target=ask_during, args=(recorder, root, stop, asks, 0.25), daemon=True)
    mark = len(daemon.log())
    started = time.monotonic()
    asker.start()
    try:
        start()
        line, _ = wait_for_entities(daemon, STORM_CONFIGS + DECLARED, timeout=120, after=mark)
    finally:
        stop.set()
        asker.join()
    wait_answered(recorder, root, asks, timeout=60)
    print(
        f"\n{name}: {line.group(0)}; {len(asks.ids)} asks: {len(asks.replied)} replied, {len(asks.busy)} busy,"
        f" {len(asks.unanswered())} unanswered ({time.monotonic() - started:.1f} s in all)"
    )
    assert asks.ids, "no ask was sent during the storm"
    assert not asks.unanswered(), f"asks with neither a reply nor a busy error: {asks.unanswered()}"
    return time.monotonic() - started, asks


@pytest.mark.slow
def test_discovery_storm_loses_no_audio_and_answers_every_ask(
    tmp_path: Path,
    fake: FakeOpenAI,
    make_broker: Callable[..., Broker],
    make_mqtt: Callable[..., MqttRecorder],
    pulse: PulseAudio,
) -> None:
    broker = make_broker(broker_config())
    sections = base_sections(broker.port, fake.url)
    sections["tts"] = {"engine": "none"}
    site = sections["device"]["site_id"]
    sections["device"]["state_dir"] = str(tmp_path / "state")
    root = f"assistant/{site}"
    recorder = make_mqtt([f"{root}/event/#", f"{root}/state", DROPPED, UPTIME], broker=broker)  # not the storm
    config = write_config(tmp_path / "assistant.toml", sections, ENTITIES.format(ns=site))
    daemon = Daemon(config, daemon_env(pulse.env, OPENAI_API_KEY="test-key"), tmp_path / "daemon.log")
    try:
        daemon.wait_ready(recorder, root)
        publisher = threading.Thread(target=publish_configs, args=(broker, STORM_CONFIGS, f"storm-{site}"))
        absorb(daemon, recorder, root, publisher.start, "live")
        publisher.join()
        # Home Assistant restarted: the daemon subscribes again and gets every retained config at once.
        absorb(daemon, recorder, root, lambda: recorder.publish("homeassistant/status", "online"), "re-read")
        wait_sys_update(recorder)  # the broker has published its drop counter as of now
        assert broker_drops(recorder) == 0, "the broker dropped messages: the storm was not what it should be"
    finally:
        assert daemon.stop() == 0, daemon.log()[-4000:]
    mic = microphone_figures(daemon.log())
    print(f"microphone: {mic}")
    assert mic.dropped == 0 and mic.overruns == 0, mic
    assert mic.audio_s >= mic.open_s - 0.5, f"frames missing: {mic.audio_s:.1f} s of audio in {mic.open_s:.1f} s"
    assert "CRITICAL" not in daemon.log() and "without an answer" not in daemon.log()
