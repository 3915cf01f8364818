"""Fixtures backed by real services (no mocks).

* A private PulseAudio daemon (virtual mic ``vmic`` fed by sink ``micsrc``, virtual
  speaker sink ``spk``) is started in ``pytest_configure``, before any test module
  can import sounddevice, and its PULSE_SERVER / XDG_RUNTIME_DIR are exported into
  ``os.environ`` so sounddevice and subprocesses (``assistant run``) use it.
* Fixtures: ``mqtt_broker`` (session), ``make_broker``, ``make_mqtt``, ``mqtt``,
  ``pulse`` (session), ``speaker``, ``speech`` (session), ``home_assistant`` (session, once per
  supported Home Assistant version).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # also works with --import-mode=importlib
    sys.path.insert(0, _TESTS_DIR)

from daemon import ENTITIES, Daemon, daemon_env, write_config  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402
from real_ha import VERSIONS, HomeAssistant  # noqa: E402
from support import (  # noqa: E402
    Broker,
    MqttRecorder,
    PulseAudio,
    SpeakerRecorder,
    SpeechFactory,
    refresh_sounddevice,
    start_broker,
    wipe_retained,
)

PULSE_KEY = pytest.StashKey[PulseAudio]()


def pytest_configure(config: pytest.Config) -> None:
    if PULSE_KEY in config.stash:
        return
    pulse = PulseAudio.start()  # raises (aborting the run) if it cannot start
    config.stash[PULSE_KEY] = pulse
    os.environ.update(pulse.env)
    # If something imported sounddevice already, PortAudio enumerated devices
    # without our server: make it look again.
    refresh_sounddevice()


def pytest_unconfigure(config: pytest.Config) -> None:
    pulse = config.stash.get(PULSE_KEY, None)
    if pulse is not None:
        del config.stash[PULSE_KEY]
        pulse.stop()


# --------------------------------------------------------------------------- MQTT


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[Broker]:
    """One anonymous mosquitto for the whole session (host 127.0.0.1, free port)."""
    broker = start_broker()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Factory for extra brokers (auth/TLS): ``make_broker(extra_config=[...], allow_anonymous=False)``.

    Defaults ``workdir`` to the test's ``tmp_path``, so put password/cert files there.
    All brokers are stopped at teardown.
    """
    brokers: list[Broker] = []

    def factory(extra_config: Iterable[str] = (), **kwargs: Any) -> Broker:
        kwargs.setdefault("workdir", tmp_path)
        broker = start_broker(list(extra_config), **kwargs)
        brokers.append(broker)
        return broker

    try:
        yield factory
    finally:
        for broker in brokers:
            broker.stop()


@pytest.fixture
def make_mqtt(mqtt_broker: Broker) -> Iterator[Callable[..., MqttRecorder]]:
    """Factory: ``make_mqtt(topics=("#",), broker=None, **MqttRecorder kwargs)``; closed at teardown."""
    recorders: list[MqttRecorder] = []

    def factory(topics: Iterable[str] = ("#",), broker: Broker | None = None, **kwargs: Any) -> MqttRecorder:
        target = broker or mqtt_broker
        recorder = MqttRecorder(target.host, target.port, topics, **kwargs)
        recorders.append(recorder)
        return recorder

    try:
        yield factory
    finally:
        for recorder in recorders:
            recorder.close()


@pytest.fixture
def mqtt(mqtt_broker: Broker, make_mqtt: Callable[..., MqttRecorder]) -> Iterator[MqttRecorder]:
    """Recorder subscribed to ``#`` on the session broker.

    At teardown every retained message on the session broker is deleted, so the
    next test starts from an empty retained store.
    """
    recorder = make_mqtt(("#",))
    yield recorder
    recorder.close()
    wipe_retained(mqtt_broker.host, mqtt_broker.port)


# --------------------------------------------------------------------------- Home Assistant


@pytest.fixture(scope="session", params=VERSIONS, ids=[f"ha{v.rsplit('.', 1)[0]}" for v in VERSIONS])
def home_assistant(
    request: pytest.FixtureRequest, mqtt_broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeAssistant]:
    """A real Home Assistant on the session broker (tests/real_ha.py): every test using it runs once
    per supported version. One start per version: pytest groups the tests by version and stops one
    Home Assistant before it starts the next."""
    version = request.param
    ha = HomeAssistant.start_new(version, tmp_path_factory.mktemp(f"ha{version}-"), mqtt_broker)
    try:
        yield ha
    finally:
        ha.close()


# --------------------------------------------------------------------------- audio


@pytest.fixture(scope="session")
def pulse(pytestconfig: pytest.Config) -> PulseAudio:
    """The session's PulseAudio (started in pytest_configure), audio flowing."""
    pulse = pytestconfig.stash.get(PULSE_KEY, None)
    if pulse is None:
        raise RuntimeError("PulseAudio was not started by pytest_configure (is tests/conftest.py loaded?)")
    pulse.wait_monitors_ready()
    return pulse


@pytest.fixture(autouse=True)
def _stop_stray_mic_playback(pytestconfig: pytest.Config) -> Iterator[None]:
    """Kill ``play_into_mic(wait=False)`` playbacks a test left running."""
    yield
    pulse = pytestconfig.stash.get(PULSE_KEY, None)
    if pulse is not None:
        pulse.stop_players()


@pytest.fixture
def speaker(pulse: PulseAudio) -> Iterator[SpeakerRecorder]:
    """SpeakerRecorder already recording the virtual speaker for the whole test."""
    with SpeakerRecorder(pulse) as recorder:
        yield recorder


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> SpeechFactory:
    """Cached ``speech(text, voice="en-us", wpm=150, pad_before=1.0, pad_after=1.5) -> Path``."""
    return SpeechFactory(tmp_path_factory.mktemp("speech"))


# --------------------------------------------------------------------------- API server and daemon


@pytest.fixture(scope="session")
def api() -> Iterator[FakeOpenAI]:
    """The local OpenAI-compatible server, one per session."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake(api: FakeOpenAI) -> FakeOpenAI:
    """The local API server with a clean slate for this test."""
    api.reset()
    return api


@pytest.fixture
def launch(tmp_path: Path, pulse: PulseAudio) -> Iterator[Callable[..., tuple[Daemon, str]]]:
    """`launch(sections, recorder, entities=None, **env)`: like `start_daemon`, on any broker.

    Readiness is read from `recorder` (which must be on the daemon's broker). Daemons
    still running at teardown are stopped; a test checks the exit code itself.
    """
    started: list[Daemon] = []

    def start(
        sections: dict[str, dict[str, Any]], recorder: MqttRecorder, entities: str | None = None, **env: str
    ) -> tuple[Daemon, str]:
        site = sections["device"]["site_id"]
        sections["device"].setdefault("state_dir", str(tmp_path / f"state-{site}"))
        text = ENTITIES if entities is None else entities
        name = f"{site}-{len(started)}"
        config = write_config(tmp_path / f"{name}.toml", sections, text.format(ns=site))
        daemon = Daemon(config, daemon_env(pulse.env, **env), tmp_path / f"{name}.log")
        started.append(daemon)
        root = f"assistant/{site}"
        daemon.wait_ready(recorder, root)
        return daemon, root

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def start_daemon(
    tmp_path: Path, mqtt_broker: Broker, pulse: PulseAudio, mqtt: MqttRecorder
) -> Iterator[Callable[..., tuple[Daemon, str]]]:
    """`start(sections, entities=ENTITIES, **env)`: `assistant run` until ready; stopped cleanly at teardown."""
    started: list[Daemon] = []

    def start(sections: dict[str, dict[str, Any]], entities: str | None = None, **env: str) -> tuple[Daemon, str]:
        site = sections["device"]["site_id"]
        sections["device"].setdefault("state_dir", str(tmp_path / f"state-{site}"))
        root = f"assistant/{site}"
        text = ENTITIES if entities is None else entities
        config = write_config(tmp_path / f"{site}-{len(started)}.toml", sections, text.format(ns=site))
        daemon = Daemon(config, daemon_env(pulse.env, **env), tmp_path / f"{site}-{len(started)}.log")
        started.append(daemon)
        daemon.wait_ready(mqtt, root)
        return daemon, root

    yield start
    for daemon in started:
        assert daemon.stop() == 0, daemon.log()
