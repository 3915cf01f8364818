"""Real-service test helpers: MQTT broker, MQTT recorder, virtual audio, speech.

Nothing here is a pytest fixture; ``conftest.py`` wraps these helpers in fixtures.
Everything starts real programs (mosquitto, pulseaudio, parec, paplay, espeak-ng,
sox) and fails loudly (RuntimeError / AssertionError) when it cannot.

Import from test modules as ``from support import ...`` (conftest.py puts this
directory on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

SAMPLE_RATE = 16000
"""Sample rate (Hz) of the virtual microphone, the virtual speaker and speech WAVs."""

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

Int16Array = npt.NDArray[np.int16]


# --------------------------------------------------------------------------- misc


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now on ``host`` (racy by nature)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def require_program(name: str) -> str:
    """Absolute path of an executable, or RuntimeError naming the apt package set."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"required program {name!r} is not on PATH; install it with: apt-get install -y "
            "mosquitto mosquitto-clients espeak-ng sox libportaudio2 pulseaudio "
            "libasound2-plugins alsa-utils"
        )
    return path


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return text[-limit:]


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 10.0,
    process: subprocess.Popen[Any] | None = None,
    what: str = "service",
) -> None:
    """Block until ``host:port`` accepts TCP connections.

    Raises RuntimeError if ``process`` exits first or ``timeout`` elapses.
    """
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before {host}:{port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError as exc:
            last_error = exc
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not accept connections on {host}:{port} within {timeout}s: {last_error}")


def stop_process(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Terminate a Popen we started (SIGTERM, then SIGKILL); never raises."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


# --------------------------------------------------------------------------- broker


_SAVED = "Saving in-memory database"  # mosquitto logs this before each save


@dataclass
class Broker:
    """A mosquitto process started by :func:`start_broker`."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    dir: Path
    config_path: Path
    log_path: Path
    _owns_dir: bool = field(default=True, repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def log(self) -> str:
        """mosquitto's stderr so far (connections, subscriptions, errors)."""
        return _tail(self.log_path, 100_000)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def wait_saved(self, timeout: float = 10) -> None:
        """Until mosquitto (persistence on) has saved its database once more (every second):
        what it holds now (sessions, their subscriptions) survives a SIGKILL. It logs before it
        writes, so the save is done once the new file has replaced the old one."""
        database = self.dir / "mosquitto.db"

        def inode() -> int | None:
            return database.stat().st_ino if database.exists() else None

        before, saves = inode(), self.log().count(_SAVED)
        deadline = time.monotonic() + timeout
        pending = database.with_suffix(".db.new")
        while self.log().count(_SAVED) <= saves or inode() in (before, None) or pending.exists():
            assert time.monotonic() < deadline, f"mosquitto did not save its database within {timeout} s"
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the broker (idempotent) and remove its directory if we created it."""
        stop_process(self.process)
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_for_log(broker: Broker, pattern: str, timeout: float = 5.0) -> str:
    """The broker log once it matches `pattern` (regex, case-insensitive)."""
    deadline = time.monotonic() + timeout
    while True:
        log = broker.log()
        if re.search(pattern, log, re.IGNORECASE):
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"broker log never matched {pattern!r}:\n{log[-3000:]}")
        time.sleep(0.05)


_broker_counter = itertools.count(1)


def start_broker(
    extra_config: Sequence[str] = (),
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    allow_anonymous: bool = True,
    workdir: Path | None = None,
    timeout: float = 10.0,
    persistence: bool = False,
) -> Broker:
    """Start ``mosquitto -c FILE`` listening on ``host:port`` and wait until it accepts.

    ``extra_config`` lines are appended after the ``listener`` line, so listener
    settings (``cafile``/``certfile``/``keyfile``/``require_certificate``) apply to it,
    and global ones (``password_file``, ``acl_file``) work too.  Use
    ``allow_anonymous=False`` together with ``password_file`` for auth tests.
    Files referenced by the config may live in ``broker.dir`` (pass ``workdir`` to
    choose it beforehand; it is then not deleted by :meth:`Broker.stop`).

    As root, mosquitto drops privileges to user ``mosquitto`` and then cannot read
    password/cert files in a 0700 temp dir, so ``user root`` is added when root.

    ``persistence=True`` keeps sessions and queued messages in ``mosquitto.db`` in the
    broker's directory, saved every second (so a broker killed with SIGKILL loses at most
    the last second); start it again with the same ``workdir`` and ``port`` to restore them.
    """
    binary = require_program("mosquitto")
    owns_dir = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="mqtt-broker-")) if workdir is None else workdir
    directory.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else 3
    last_error: RuntimeError | None = None
    for _ in range(attempts):
        chosen = port if port is not None else free_port(host)
        serial = next(_broker_counter)
        config_path = directory / f"mosquitto-{chosen}-{serial}.conf"
        log_path = directory / f"mosquitto-{chosen}-{serial}.log"
        lines = [
            *(
                ["persistence true", f"persistence_location {directory}/", "autosave_interval 1"]
                if persistence
                else ["persistence false"]
            ),
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
            "set_tcp_nodelay true",  # as the README recommends: no Nagle delay on small packets
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")
        lines += [
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            f"listener {chosen} {host}",
            *extra_config,
        ]
        config_path.write_text("\n".join(lines) + "\n")
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [binary, "-c", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )
        broker = Broker(host, chosen, process, directory, config_path, log_path, owns_dir)
        try:
            wait_for_port(host, chosen, timeout, process, what="mosquitto")
            return broker
        except RuntimeError as exc:
            stop_process(process)
            config_text = config_path.read_text()
            last_error = RuntimeError(f"{exc}\n--- {config_path}:\n{config_text}--- log:\n{_tail(log_path)}")
    if owns_dir:
        shutil.rmtree(directory, ignore_errors=True)
    assert last_error is not None
    raise last_error


# --------------------------------------------------------------------------- MQTT recorder


@dataclass(frozen=True)
class MqttMessage:
    topic: str
    payload: bytes
    retain: bool
    time: float
    """time.monotonic() when the recorder received it."""
    qos: int = 0

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.payload)

    def __str__(self) -> str:
        shown = self.payload[:120]
        more = "..." if len(self.payload) > 120 else ""
        return f"{self.topic} {'(retained) ' if self.retain else ''}{shown!r}{more}"


PayloadType = str | bytes | bytearray | int | float | None | dict[str, Any] | list[Any]
MessagePredicate = Callable[[MqttMessage], bool]

_SYNC_PREFIX = "test-sync"
_client_counter = itertools.count(1)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT wildcard match (``+``/``#``); a filter without wildcards must equal the topic."""
    return bool(paho.topic_matches_sub(topic_filter, topic))


def _no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    """Timings through the recorder are the broker's and the daemon's, not TCP's Nagle delay."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MqttRecorder:
    """A paho client (CallbackAPIVersion.VERSION2) recording everything it receives.

    The constructor returns only once it is connected and every subscription is
    acknowledged (retained messages may still be arriving: call :meth:`sync`).
    Messages are kept in arrival order as :class:`MqttMessage`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: Iterable[str] = ("#",),
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: Any = None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
        timeout: float = 10.0,
    ) -> None:
        """``tls`` is an ``ssl.SSLContext`` passed to ``tls_set_context`` (or None)."""
        self.host = host
        self.port = port
        self.topics = list(topics)
        self.client_id = client_id or f"test-recorder-{os.getpid()}-{next(_client_counter)}"
        self._cond = threading.Condition()
        self._messages: list[MqttMessage] = []
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._pending_subs: set[int] = set()
        self._sub_errors: list[str] = []
        self._sync_counter = itertools.count(1)
        self._sync_seen: set[str] = set()
        self._closed = False
        self.connections = 0
        """Successful CONNACKs so far (2 after one automatic reconnect)."""

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol)
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set_context(tls)
        client.reconnect_delay_set(min_delay=0.1, max_delay=1)  # type: ignore[arg-type]  # floats work
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_open = _no_delay
        self.client = client
        try:
            client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise AssertionError(f"MqttRecorder cannot connect to {host}:{port}: {exc}") from exc
        client.loop_start()
        try:
            self._await_connack(timeout)
            self._subscribe([*self.topics, f"{_SYNC_PREFIX}/{self.client_id}/#"], timeout)
        except BaseException:
            self.close()
            raise

    def _await_connack(self, timeout: float) -> None:
        if not self._connected.wait(timeout):
            raise AssertionError(f"MqttRecorder: no CONNACK from {self.host}:{self.port} within {timeout}s")
        if self._connect_error is not None:
            raise AssertionError(f"MqttRecorder: connection to {self.host}:{self.port} refused: {self._connect_error}")

    # -- paho callbacks (network thread)
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            if not self._connected.is_set():
                self._connect_error = str(reason_code)
                # Stop paho's reconnect loop now; otherwise close() waits up to 1 s.
                client.disconnect()
        else:
            if self._connected.is_set():
                # Reconnected (e.g. the broker was restarted): subscribe again, no waiting.
                for topic in [*self.topics, f"{_SYNC_PREFIX}/{self.client_id}/#"]:
                    client.subscribe(topic, qos=1)
            with self._cond:
                self.connections += 1
                self._cond.notify_all()
        self._connected.set()

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reason_codes: list[Any], properties: Any
    ) -> None:
        with self._cond:
            for code in reason_codes:
                if code.is_failure:
                    self._sub_errors.append(f"mid {mid}: {code}")
            self._pending_subs.discard(mid)
            self._cond.notify_all()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        message = MqttMessage(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic(), msg.qos)
        with self._cond:
            if msg.topic.startswith(f"{_SYNC_PREFIX}/{self.client_id}/"):
                self._sync_seen.add(msg.topic)
            else:
                self._messages.append(message)
            self._cond.notify_all()

    # -- API
    def _subscribe(self, topics: Sequence[str], timeout: float) -> None:
        with self._cond:
            for topic in topics:
                rc, mid = self.client.subscribe(topic, qos=1)
                if rc != paho.MQTT_ERR_SUCCESS or mid is None:
                    raise AssertionError(f"MqttRecorder: subscribe({topic!r}) failed: {paho.error_string(rc)}")
                self._pending_subs.add(mid)
            if not self._cond.wait_for(lambda: not self._pending_subs, timeout):
                raise AssertionError(f"MqttRecorder: no SUBACK for {list(topics)} within {timeout}s")
            if self._sub_errors:
                raise AssertionError(f"MqttRecorder: subscription refused: {self._sub_errors}")

    def wait_connected(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``count`` successful connections happened (paho reconnects by itself).

        ``wait_connected(2)`` after a broker restart; then :meth:`sync` before relying
        on the renewed subscriptions.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self.connections >= count, timeout):
                raise AssertionError(
                    f"MqttRecorder: {self.connections} connection(s) to {self.host}:{self.port}, "
                    f"expected {count} within {timeout}s"
                )

    def subscribe(self, *topics: str, timeout: float = 10.0) -> None:
        """Add subscriptions (waits for SUBACK)."""
        self._subscribe(topics, timeout)
        self.topics.extend(topics)

    def publish(
        self,
        topic: str,
        payload: PayloadType = None,
        retain: bool = False,
        qos: int = 1,
        timeout: float = 10.0,
    ) -> None:
        """Publish and wait until it is sent (qos 0) or acknowledged (qos 1/2).

        dict/list payloads are JSON-encoded; str is UTF-8.
        """
        data: str | bytes | bytearray | int | float | None
        data = json.dumps(payload) if isinstance(payload, dict | list) else payload
        info = self.client.publish(topic, data, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise AssertionError(f"publish to {topic!r} failed: {paho.error_string(info.rc)}")
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise AssertionError(f"publish to {topic!r} not acknowledged within {timeout}s")

    def sync(self, timeout: float = 10.0) -> None:
        """Round-trip a marker through the broker.

        When this returns, every message the broker had queued for us before the
        marker (e.g. retained messages sent after SUBACK) has been recorded.
        """
        topic = f"{_SYNC_PREFIX}/{self.client_id}/{next(self._sync_counter)}"
        self.publish(topic, b"sync", qos=1, timeout=timeout)
        with self._cond:
            if not self._cond.wait_for(lambda: topic in self._sync_seen, timeout):
                raise AssertionError(f"MqttRecorder.sync: marker {topic} not echoed within {timeout}s")

    def messages(self, topic: str = "#", predicate: MessagePredicate | None = None) -> list[MqttMessage]:
        """Recorded messages whose topic matches the filter ``topic`` (wildcards ok)."""
        with self._cond:
            return [m for m in self._messages if topic_matches(topic, m.topic) and (predicate is None or predicate(m))]

    def last(self, topic: str = "#") -> MqttMessage | None:
        found = self.messages(topic)
        return found[-1] if found else None

    def _find(self, topic: str, predicate: MessagePredicate | None, since: float | None) -> MqttMessage | None:
        for m in self._messages:
            if since is not None and m.time < since:
                continue
            if topic_matches(topic, m.topic) and (predicate is None or predicate(m)):
                return m
        return None

    def wait_for(
        self,
        topic: str,
        predicate: MessagePredicate | None = None,
        timeout: float = 10.0,
        since: float | None = None,
    ) -> MqttMessage:
        """First recorded message matching ``topic`` (filter) and ``predicate``.

        Looks at messages already recorded (since the last :meth:`clear`, and with
        ``time >= since`` if given) and then waits for new ones.  On timeout raises
        AssertionError listing the most recent messages.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self._find(topic, predicate, since)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            recent = "\n  ".join(str(m) for m in self._messages[-25:]) or "<none>"
            total = len(self._messages)
        what = f"{topic!r}" + (" matching predicate" if predicate is not None else "")
        raise AssertionError(f"no MQTT message on {what} within {timeout}s; {total} recorded, most recent:\n  {recent}")

    def assert_no_message(self, topic: str, duration: float = 0.5, predicate: MessagePredicate | None = None) -> None:
        """Fail if a matching message is recorded during the next ``duration`` seconds."""
        start = time.monotonic()
        try:
            found = self.wait_for(topic, predicate, timeout=duration, since=start)
        except AssertionError:
            return
        raise AssertionError(f"unexpected MQTT message: {found}")

    def clear(self) -> None:
        """Forget every recorded message."""
        with self._cond:
            self._messages.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.client.disconnect()
        with contextlib.suppress(Exception):
            self.client.loop_stop()

    def __enter__(self) -> MqttRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def wipe_retained(host: str, port: int, topic_filter: str = "#", **recorder_kwargs: Any) -> list[str]:
    """Delete every retained message under ``topic_filter``; returns the topics wiped."""
    with MqttRecorder(host, port, [topic_filter], **recorder_kwargs) as rec:
        rec.sync()
        topics = sorted({m.topic for m in rec.messages() if m.retain})
        for topic in topics:
            rec.publish(topic, b"", retain=True)
    return topics


# --------------------------------------------------------------------------- audio data


def read_wav(path: Path) -> tuple[Int16Array, int]:
    """Samples (int16, first channel) and sample rate of a 16-bit PCM WAV."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * wav.getsampwidth()}-bit")
        channels = wav.getnchannels()
        rate = wav.getframerate()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels)[:, 0]
    return data.astype(np.int16), rate


def write_wav(path: Path, samples: npt.ArrayLike | bytes, rate: int = SAMPLE_RATE) -> Path:
    """Write mono 16-bit PCM (int16 samples or raw s16le bytes)."""
    data = samples if isinstance(samples, bytes) else np.asarray(samples, dtype="<i2").tobytes()
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(data)
    return path


def pcm_to_array(data: bytes) -> Int16Array:
    """s16le bytes to int16 samples (a trailing odd byte is dropped)."""
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int16)


def rms(samples: npt.ArrayLike) -> float:
    arr = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.mean(arr * arr))) if arr.size else 0.0


def correlate(recorded: npt.ArrayLike, reference: npt.ArrayLike) -> tuple[float, int]:
    """Best alignment of ``reference`` inside ``recorded`` (FFT cross-correlation).

    Returns ``(ncc, lag)``: ``lag`` is the index in ``recorded`` where
    ``reference[0]`` falls (negative if the recording started after the reference
    did, e.g. because of stream start-up loss), and ``ncc`` is the normalized
    correlation over the overlapping part (1.0 = identical up to gain).
    """
    rec = np.asarray(recorded, dtype=np.float64).ravel()
    ref = np.asarray(reference, dtype=np.float64).ravel()
    if rec.size == 0 or ref.size == 0:
        return 0.0, 0
    n = rec.size + ref.size - 1
    nfft = 1 << (n - 1).bit_length()
    xcorr = np.fft.irfft(np.fft.rfft(rec, nfft) * np.conj(np.fft.rfft(ref, nfft)), nfft)
    # xcorr[k] = sum rec[i + k] * ref[i]; negative k wraps to the end.
    lags = np.concatenate([np.arange(0, rec.size), np.arange(-(ref.size - 1), 0)])
    values = np.concatenate([xcorr[: rec.size], xcorr[nfft - (ref.size - 1) :]])
    lag = int(lags[int(np.argmax(values))])
    rec_start, ref_start = max(lag, 0), max(-lag, 0)
    length = min(rec.size - rec_start, ref.size - ref_start)
    a = rec[rec_start : rec_start + length]
    b = ref[ref_start : ref_start + length]
    denom = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return (float(np.dot(a, b)) / denom if denom > 0 else 0.0), lag


def first_sample_above(samples: npt.ArrayLike, threshold: int) -> int | None:
    arr = np.abs(np.asarray(samples, dtype=np.int32))
    above = np.flatnonzero(arr > threshold)
    return int(above[0]) if above.size else None


# --------------------------------------------------------------------------- speech


def speech_wav(
    text: str,
    path: Path,
    voice: str = "en-us",
    wpm: int = 150,
    pad_before: float = 1.0,
    pad_after: float = 1.5,
) -> Path:
    """Synthesize ``text`` with espeak-ng into a 16 kHz mono s16 WAV at ``path``.

    Leading/trailing silence (seconds) is added with sox: keep ``pad_before``
    around 1 s, because audio streams lose their first few hundred ms.
    """
    espeak = require_program("espeak-ng")
    sox = require_program("sox")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(f".{path.stem}.espeak.wav")
    try:
        subprocess.run(
            [espeak, "-v", voice, "-s", str(wpm), "-w", str(raw), text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            [
                sox,
                str(raw),
                "-r",
                str(SAMPLE_RATE),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                str(path),
                "pad",
                f"{pad_before}",
                f"{pad_after}",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"speech synthesis failed: {exc.cmd}: {exc.stderr.decode(errors='replace')}") from exc
    finally:
        raw.unlink(missing_ok=True)
    return path


class SpeechFactory:
    """Cached :func:`speech_wav`: same arguments -> same file, synthesized once."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._cache: dict[tuple[str, str, int, float, float], Path] = {}
        self._lock = threading.Lock()

    def __call__(
        self,
        text: str,
        voice: str = "en-us",
        wpm: int = 150,
        pad_before: float = 1.0,
        pad_after: float = 1.5,
    ) -> Path:
        key = (text, voice, wpm, float(pad_before), float(pad_after))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.exists():
                return cached
            slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "speech"
            digest = hashlib.sha1(repr(key).encode()).hexdigest()[:10]
            path = speech_wav(text, self.directory / f"{slug}-{digest}.wav", voice, wpm, pad_before, pad_after)
            self._cache[key] = path
            return path


# --------------------------------------------------------------------------- PulseAudio


def _test_pa_script(directory: Path) -> str:
    return "\n".join(
        [
            f"load-module module-native-protocol-unix socket={directory}/native auth-anonymous=1",
            f"load-module module-null-sink sink_name={PulseAudio.SPEAKER_SINK} rate={SAMPLE_RATE} channels=1",
            f"load-module module-null-sink sink_name={PulseAudio.MIC_SINK} rate={SAMPLE_RATE} channels=1",
            f"load-module module-remap-source source_name={PulseAudio.MIC_SOURCE} master={PulseAudio.MIC_SINK}.monitor",
            f"set-default-sink {PulseAudio.SPEAKER_SINK}",
            f"set-default-source {PulseAudio.MIC_SOURCE}",
            "",
        ]
    )


class _MonitorKeeper:
    """``parec`` on a null sink's monitor at low latency, output discarded.

    An idle null sink renders in 2 s blocks and only notices a new low-latency
    recorder when its timer next fires, so a fresh recorder gets no data (and loses
    the audio) for up to ~2 s.  Keeping one low-latency recorder attached makes
    every later recorder (parec, sounddevice via ALSA) start within ~20-40 ms.
    """

    def __init__(self, env: Mapping[str, str], device: str, latency_msec: int) -> None:
        self.device = device
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [
                require_program("parec"),
                f"--device={device}",
                "--raw",
                f"--rate={SAMPLE_RATE}",
                "--channels=1",
                "--format=s16le",
                f"--latency-msec={latency_msec}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(env),
        )
        self._thread = threading.Thread(target=self._drain, name=f"keeper-{device}", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.ready.set()

    def stop(self) -> None:
        stop_process(self.process)
        self._thread.join(timeout=5)


def _feed(process: subprocess.Popen[bytes], pcm: bytes) -> None:
    """Write all of `pcm` to a player's stdin, then close it (the end of the stream)."""
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(pcm)
        process.stdin.close()


class PulseAudio:
    """A private PulseAudio daemon with a virtual microphone and speaker.

    * ``micsrc``: null sink; whatever is played into it (:meth:`play_into_mic`) is
      heard by the default source ``vmic`` (= sounddevice's default input).
    * ``spk``: null sink, the default sink (= sounddevice's default output);
      record it with :class:`SpeakerRecorder` (``spk.monitor``).

    ``env`` holds PULSE_SERVER and XDG_RUNTIME_DIR; they must be in ``os.environ``
    before sounddevice (PortAudio) is imported.
    """

    SPEAKER_SINK = "spk"
    MIC_SINK = "micsrc"
    MIC_SOURCE = "vmic"
    SPEAKER_MONITOR = "spk.monitor"

    def __init__(self, directory: Path, env: dict[str, str], process: subprocess.Popen[bytes]) -> None:
        self.dir = directory
        self.env = env
        self.process = process
        self.log_path = directory / "pulse.log"
        self._keepers: list[_MonitorKeeper] = []
        self._players: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()

    @classmethod
    def start(cls, timeout: float = 15.0, keep_monitors: bool = True) -> PulseAudio:
        """Start ``pulseaudio -n -F test.pa`` in the foreground (our own Popen).

        Directory is short (``/tmp/paXXXX``): the socket path must fit sun_path.
        """
        binary = require_program("pulseaudio")
        directory = Path(tempfile.mkdtemp(prefix="pa", dir="/tmp"))
        xdg = directory / "xdg"
        xdg.mkdir(mode=0o700)
        home = directory / "home"  # keeps cookie/runtime links out of the real ~/.config/pulse
        home.mkdir(mode=0o700)
        script = directory / "test.pa"
        script.write_text(_test_pa_script(directory))
        env = {
            "PULSE_SERVER": f"unix:{directory}/native",
            "XDG_RUNTIME_DIR": str(xdg),
            "PULSE_COOKIE": str(directory / "cookie"),  # not ~/.config/pulse/cookie
        }
        daemon_env = {**os.environ, **env, "HOME": str(home)}
        daemon_env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        process = subprocess.Popen(
            [
                binary,
                "-n",
                "-F",
                str(script),
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--disallow-exit",
                # No shared memory: under load, PulseAudio 16's memfd block import aborts the server
                # ("Assertion 'pa_atomic_load(&b->pool->stat.n_imported) > 0' failed", its issue 824),
                # and every audio test after it fails. Over the socket a 16 kHz mono stream costs nothing.
                "--enable-memfd=no",
                "--disable-shm=yes",
                f"--log-target=file:{directory}/pulse.log",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=daemon_env,
        )
        pulse = cls(directory, env, process)
        try:
            pulse._wait_ready(timeout)
            if keep_monitors:
                for device in (f"{cls.SPEAKER_SINK}.monitor", f"{cls.MIC_SINK}.monitor"):
                    pulse._keepers.append(_MonitorKeeper(pulse.subprocess_env(), device, 40))
                pulse.wait_monitors_ready(timeout)
        except BaseException:
            pulse.stop(remove_dir=False)
            raise
        return pulse

    def _wait_ready(self, timeout: float) -> None:
        pactl = require_program("pactl")
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"pulseaudio exited with code {self.process.returncode}; log {self.log_path}:\n{self.log()}"
                )
            if (self.dir / "native").exists():
                result = subprocess.run(
                    [pactl, "list", "short", "sources"],
                    check=False,
                    env=self.subprocess_env(),
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                last = result.stdout + result.stderr
                if result.returncode == 0 and self.MIC_SOURCE in result.stdout:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"pulseaudio not ready within {timeout}s: {last}\nlog:\n{self.log()}")

    def keep_monitor(self, sink: str, timeout: float = 15.0) -> _MonitorKeeper:
        """Keep a low-latency recorder on a sink added later (another microphone), as for ours.

        Without it, a daemon recording that sink's monitor gets its audio up to ~2 s late.
        """
        keeper = _MonitorKeeper(self.subprocess_env(), f"{sink}.monitor", 40)
        self._keepers.append(keeper)
        self.wait_monitors_ready(timeout)
        return keeper

    def wait_monitors_ready(self, timeout: float = 5.0) -> None:
        """Wait until the monitor keepers receive audio.

        An idle null sink only notices a new recorder when its 2 s timer fires;
        suspending and resuming the sink restarts it at once (~50 ms instead of ~2 s).
        """
        deadline = time.monotonic() + timeout
        while True:
            waiting = [k for k in self._keepers if not k.ready.is_set()]
            if not waiting:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(k.device for k in waiting)
                raise RuntimeError(f"no audio from {names} within {timeout}s; log:\n{self.log()}")
            for keeper in waiting:
                sink = keeper.device.removesuffix(".monitor")
                self.pactl("suspend-sink", sink, "1")
                self.pactl("suspend-sink", sink, "0")
            for keeper in waiting:
                keeper.ready.wait(max(0.0, min(0.5, deadline - time.monotonic())))

    def subprocess_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default os.environ) with PULSE_SERVER / XDG_RUNTIME_DIR set."""
        return {**(os.environ if base is None else base), **self.env}

    def log(self) -> str:
        return _tail(self.log_path)

    def pactl(self, *args: str) -> str:
        result = subprocess.run(
            [require_program("pactl"), *args],
            check=False,
            env=self.subprocess_env(),
            capture_output=True,
            text=True,
            timeout=10,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def play_into_mic(self, wav: Path, wait: bool = True, timeout: float = 60.0) -> subprocess.Popen[bytes] | None:
        """Play a WAV into the virtual microphone (``paplay --device=micsrc``).

        ``wait=True`` blocks until playback ended (returns None) and raises
        AssertionError if paplay fails; ``wait=False`` returns the running Popen
        (it is killed by :meth:`stop_players`, e.g. after each test).
        """
        wav = Path(wav)
        if not wav.is_file():
            raise FileNotFoundError(wav)
        process = subprocess.Popen(
            [require_program("paplay"), f"--device={self.MIC_SINK}", str(wav)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.subprocess_env(),
        )
        if not wait:
            with self._lock:
                self._players = [p for p in self._players if p.poll() is None]
                self._players.append(process)
            return process
        try:
            _, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(process)
            raise AssertionError(f"paplay {wav} still running after {timeout}s") from None
        if process.returncode != 0:
            raise AssertionError(f"paplay {wav} failed ({process.returncode}): {err.decode(errors='replace')}")
        return None

    def play_together(self, plays: list[tuple[Path, str]], timeout: float = 60.0) -> None:
        """Play WAVs into several sinks starting at the same moment, like one sound heard by two devices.

        Separate `paplay` processes start up to seconds apart on a loaded machine; here each
        `pacat` is connected first, and only then are all fed, so the streams start together.
        """
        players: list[tuple[subprocess.Popen[bytes], bytes]] = []
        try:
            for wav, sink in plays:
                samples, rate = read_wav(wav)
                command = [require_program("pacat"), "-v", "--raw", f"--device={sink}", f"--rate={rate}"]
                command += ["--format=s16le", "--channels=1"]
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=self.subprocess_env(),
                )
                players.append((process, samples.tobytes()))
            for process, _ in players:  # connected and ready for data
                assert process.stderr is not None
                for line in process.stderr:
                    if b"Stream successfully created" in line:
                        break
                else:
                    raise AssertionError(f"pacat could not open a stream (exit {process.wait(timeout)})")
            writers = [threading.Thread(target=_feed, args=(process, pcm)) for process, pcm in players]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join(timeout)
            for process, _ in players:
                if process.wait(timeout) != 0:
                    raise AssertionError(f"pacat failed ({process.returncode})")
        finally:
            for process, _ in players:
                stop_process(process)

    def stop_players(self) -> None:
        """Kill mic playbacks started with ``wait=False`` that are still running."""
        with self._lock:
            players, self._players = self._players, []
        for process in players:
            stop_process(process)

    def record_speaker(self, **kwargs: Any) -> SpeakerRecorder:
        return SpeakerRecorder(self, **kwargs)

    def stop(self, remove_dir: bool = True) -> None:
        """``pulseaudio --kill`` in our environment, then make sure our Popen is gone."""
        self.stop_players()
        for keeper in self._keepers:
            keeper.stop()
        self._keepers.clear()
        if self.process.poll() is None:
            with contextlib.suppress(Exception):
                subprocess.run(
                    [require_program("pulseaudio"), "--kill"],
                    check=False,
                    env={**self.subprocess_env(), "HOME": str(self.dir / "home")},
                    capture_output=True,
                    timeout=10,
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        stop_process(self.process)
        if remove_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class SpeakerRecorder:
    """Record the virtual speaker (``parec`` on ``spk.monitor``) into memory.

    Use as a context manager; ``__enter__`` returns once audio is flowing, so
    anything played afterwards is captured.  Audio is 16 kHz mono s16le.  Reads
    happen in a thread in small chunks, each stamped with time.monotonic() on
    arrival (granularity ~``latency_msec``).
    """

    def __init__(
        self,
        pulse: PulseAudio,
        *,
        device: str = PulseAudio.SPEAKER_MONITOR,
        rate: int = SAMPLE_RATE,
        latency_msec: int = 40,
        chunk_bytes: int = 640,
        ready_timeout: float = 5.0,
    ) -> None:
        # latency_msec <= 20 starves parec on a null-sink monitor: keep it >= 25.
        self.pulse = pulse
        self.device = device
        self.rate = rate
        self.latency_msec = latency_msec
        self.chunk_bytes = chunk_bytes
        self.ready_timeout = ready_timeout
        self._buf = bytearray()
        self._arrivals: list[tuple[float, int]] = []  # (monotonic time, total bytes after chunk)
        self._cond = threading.Condition()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._eof = False
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    def start(self) -> SpeakerRecorder:
        if self._process is not None:
            raise RuntimeError("SpeakerRecorder already started")
        self._process = subprocess.Popen(
            [
                require_program("parec"),
                f"--device={self.device}",
                "--raw",
                f"--rate={self.rate}",
                "--channels=1",
                "--format=s16le",
                f"--latency-msec={self.latency_msec}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.pulse.subprocess_env(),
        )
        self._thread = threading.Thread(target=self._read, name=f"speaker-{self.device}", daemon=True)
        self._thread.start()
        with self._cond:
            ready = self._cond.wait_for(lambda: bool(self._arrivals) or self._eof, self.ready_timeout)
        if not ready or not self._arrivals:
            err = b""
            with contextlib.suppress(Exception):
                self._process.kill()
                _, err = self._process.communicate(timeout=5)
            self.stop()
            raise RuntimeError(
                f"parec on {self.device} delivered no audio within {self.ready_timeout}s: "
                f"{err.decode(errors='replace')}\npulse log:\n{self.pulse.log()}"
            )
        self.started_at = self._arrivals[0][0]
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, self.chunk_bytes)
            except OSError:
                chunk = b""
            now = time.monotonic()
            with self._cond:
                if not chunk:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._buf.extend(chunk)
                self._arrivals.append((now, len(self._buf)))
                self._cond.notify_all()

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()

    def __enter__(self) -> SpeakerRecorder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- results (usable while recording)
    def audio(self) -> bytes:
        """Everything recorded so far, s16le mono, whole samples only."""
        with self._cond:
            return bytes(self._buf[: len(self._buf) // 2 * 2])

    def samples(self) -> Int16Array:
        return pcm_to_array(self.audio())

    @property
    def duration(self) -> float:
        """Seconds of audio recorded so far."""
        with self._cond:
            return len(self._buf) // 2 / self.rate

    def time_of_sample(self, index: int) -> float:
        """time.monotonic() at which the chunk holding sample ``index`` arrived."""
        end = (index + 1) * 2
        with self._cond:
            for arrived, total in self._arrivals:
                if total >= end:
                    return arrived
        raise IndexError(f"sample {index} not recorded yet")

    def sample_index_at(self, when: float) -> int:
        """Number of samples that had arrived by time.monotonic() ``when``."""
        with self._cond:
            total = 0
            for arrived, after in self._arrivals:
                if arrived > when:
                    break
                total = after
        return total // 2

    def first_sound_time(self, threshold: int = 1000, since: float | None = None) -> float | None:
        """Arrival time (time.monotonic()) of the first chunk with |sample| > threshold.

        Only samples that arrived after ``since`` are considered.  None if no
        sound yet.  Accuracy is about ``latency_msec`` (40 ms) plus the ~50 ms
        PulseAudio pipeline latency.
        """
        start = 0 if since is None else self.sample_index_at(since)
        samples = self.samples()
        idx = first_sample_above(samples[start:], threshold)
        return None if idx is None else self.time_of_sample(start + idx)

    def wait_for_sound(self, threshold: int = 1000, timeout: float = 10.0, since: float | None = None) -> float:
        """Block until sound above ``threshold`` arrives; returns its arrival time."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.first_sound_time(threshold, since)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                peak = int(np.abs(self.samples().astype(np.int32)).max(initial=0))
                raise AssertionError(
                    f"no sound above {threshold} on {self.device} within {timeout}s "
                    f"(recorded {self.duration:.2f}s, peak {peak})"
                )
            with self._cond:
                self._cond.wait(0.05)

    def wait_for_silence(
        self, threshold: int = 1000, silence: float = 0.5, timeout: float = 30.0, since: float | None = None
    ) -> float:
        """Block until the last ``silence`` seconds (after ``since``) stayed under threshold.

        Returns time.monotonic() when that was observed (e.g. playback finished).
        """
        deadline = time.monotonic() + timeout
        need = int(silence * self.rate)
        start = 0 if since is None else self.sample_index_at(since)
        while True:
            samples = self.samples()[start:]
            if samples.size >= need and first_sample_above(samples[-need:], threshold) is None:
                return time.monotonic()
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.device} not silent for {silence}s within {timeout}s")
            with self._cond:
                self._cond.wait(0.05)

    def save(self, path: Path) -> Path:
        """Write what was recorded to a WAV (handy when debugging a failure)."""
        return write_wav(path, self.audio(), self.rate)


def refresh_sounddevice() -> None:
    """Re-initialize PortAudio if sounddevice was imported before PULSE_SERVER was set."""
    module = sys.modules.get("sounddevice")
    if module is None:
        return
    module._terminate()
    module._initialize()
