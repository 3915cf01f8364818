"""MQTT security against a real mosquitto: passwords, TLS verification, mutual TLS, `check`, the last will.

Certificates come from a throw-away CA made with `openssl` for this module (EC P-256, valid two
days): a server certificate for `localhost` / `127.0.0.1`, one for another name, a client
certificate, and an unrelated CA that must not be trusted.  Every broker is a fresh mosquitto.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import REPO_ROOT, Broker, MqttRecorder, free_port, require_program, stop_process, wait_for_log

from assistant.config import MqttConfig, parse_config
from assistant.link.client import MqttError, MqttLink

USER = "alice"
PASSWORD = "Pw-9f3c1e-only-in-this-test"
"""Distinctive, so finding it in any output is a leak."""
REFUSED = re.compile(r"not authori[sz]ed|bad user ?name or password", re.IGNORECASE)
FAIL_TIMEOUT = 1.0
"""start() timeout for connections that must fail."""

# --------------------------------------------------------------------------- throw-away PKI

OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[elsewhere]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:elsewhere.invalid
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    elsewhere_cert: Path
    """Signed by `ca`, but only for DNS:elsewhere.invalid."""
    elsewhere_key: Path
    client_cert: Path
    client_key: Path


def _openssl(directory: Path, *args: str) -> None:
    result = subprocess.run(
        [require_program("openssl"), *args], cwd=directory, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"openssl {' '.join(args)}:\n{result.stderr}"


_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-config", "pki.cnf")


def _issue(directory: Path, name: str, cn: str, extensions: str, serial: int) -> None:
    _openssl(directory, "req", "-new", *_NEW_KEY, "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
    _openssl(
        directory,
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", str(serial),
        "-days", "2", "-extfile", "pki.cnf", "-extensions", extensions, "-out", f"{name}.pem",
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    (directory / "pki.cnf").write_text(OPENSSL_CNF)
    for name, cn in (("ca", "Throw-away Test CA"), ("other-ca", "Unrelated Test CA")):
        _openssl(
            directory, "req", "-x509", "-new", *_NEW_KEY, "-days", "2", "-subj", f"/CN={cn}", "-extensions", "ca",
            "-keyout", f"{name}.key", "-out", f"{name}.pem",
        )  # fmt: skip
    _issue(directory, "server", "localhost", "server", 2)
    _issue(directory, "elsewhere", "elsewhere.invalid", "elsewhere", 3)
    _issue(directory, "client", "test-client", "client", 4)
    d = directory
    return Pki(
        d / "ca.pem", d / "other-ca.pem", d / "server.pem", d / "server.key",
        d / "elsewhere.pem", d / "elsewhere.key", d / "client.pem", d / "client.key",
    )  # fmt: skip


def tls_listener(pki: Pki, *, server: str = "server", require_certificate: bool = False) -> list[str]:
    """mosquitto listener lines: our server certificate; client certificates checked against our CA."""
    cert, key = (pki.server_cert, pki.server_key) if server == "server" else (pki.elsewhere_cert, pki.elsewhere_key)
    lines = [f"cafile {pki.ca}", f"certfile {cert}", f"keyfile {key}"]
    if require_certificate:
        lines.append("require_certificate true")
    return lines


def password_file(directory: Path) -> list[str]:
    """A mosquitto password file holding USER / PASSWORD; returns the config line."""
    path = directory / "passwords"
    subprocess.run([require_program("mosquitto_passwd"), "-c", "-b", str(path), USER, PASSWORD], check=True)
    assert PASSWORD not in path.read_text()  # hashed
    return [f"password_file {path}"]


def client_tls(pki: Pki) -> ssl.SSLContext:
    """The recorder's TLS context: trusts our CA only."""
    return ssl.create_default_context(cafile=str(pki.ca))


# --------------------------------------------------------------------------- brokers and helpers


@pytest.fixture
def password_broker(make_broker: Callable[..., Broker], tmp_path: Path) -> Broker:
    return make_broker(password_file(tmp_path), allow_anonymous=False)


@pytest.fixture
def tls_broker(make_broker: Callable[..., Broker], pki: Pki) -> Broker:
    return make_broker(tls_listener(pki))


@pytest.fixture
def secure_broker(make_broker: Callable[..., Broker], pki: Pki, tmp_path: Path) -> Broker:
    """TLS and passwords, no anonymous access: what a real installation should run."""
    return make_broker([*tls_listener(pki), *password_file(tmp_path)], allow_anonymous=False)


@pytest.fixture
def recorders() -> Iterator[list[MqttRecorder]]:
    opened: list[MqttRecorder] = []
    yield opened
    for recorder in opened:
        recorder.close()


def new_root() -> str:
    return f"sec/t{uuid.uuid4().hex[:8]}"


def mqtt_config(broker: Broker, **fields: Any) -> MqttConfig:
    return MqttConfig.model_validate({"host": broker.host, "port": broker.port, **fields})


async def round_trip(config: MqttConfig, recorder: MqttRecorder, root: str) -> None:
    """Connect a MqttLink, publish out (seen by the recorder) and receive in (sent by the recorder)."""
    link = MqttLink(config, root)
    try:
        await link.start(timeout=5)
        assert link.client.is_connected()
        await asyncio.to_thread(recorder.wait_for, f"{root}/status", lambda m: m.text == "online", 5)
        assert (await link.send_command(f"{root}/out", "ping")).status == "delivered"
        seen = await asyncio.to_thread(recorder.wait_for, f"{root}/out", None, 5)
        assert seen.text == "ping"
        link.subscribe([f"{root}/in"])
        assert (
            await link.send_command(f"{root}/in", "self")
        ).status == "delivered"  # after our SUBSCRIBE on the same connection
        async with asyncio.timeout(5):
            assert (await link.messages.get()).payload == b"self"
            await asyncio.to_thread(recorder.publish, f"{root}/in", "pong")
            message = await link.messages.get()
        assert (message.topic, message.payload) == (f"{root}/in", b"pong")
    finally:
        link.stop()


def start_fails(config: MqttConfig, timeout: float = FAIL_TIMEOUT) -> str:
    """The MqttError message of a start() that must fail."""
    return timed_start_failure(config, timeout)[0]


def timed_start_failure(config: MqttConfig, timeout: float) -> tuple[str, float]:
    """The MqttError message of a start() that must fail, and how long start() took (stop() excluded)."""
    took = 0.0

    async def attempt() -> None:
        nonlocal took
        link = MqttLink(config, new_root())
        started = time.monotonic()
        try:
            await link.start(timeout=timeout)
        finally:
            took = time.monotonic() - started
            link.stop()  # may take up to 1 s: paho's reconnect wait sleeps in 1 s steps

    with pytest.raises(MqttError) as caught:
        asyncio.run(attempt())
    return str(caught.value), took


# --------------------------------------------------------------------------- passwords


def test_right_password_connects_and_round_trips(password_broker: Broker, recorders: list[MqttRecorder]) -> None:
    root = new_root()
    recorder = MqttRecorder(password_broker.host, password_broker.port, [f"{root}/#"], username=USER, password=PASSWORD)
    recorders.append(recorder)
    asyncio.run(round_trip(mqtt_config(password_broker, username=USER, password=PASSWORD), recorder, root))
    assert f"u'{USER}'" in password_broker.log()  # the link really logged in as alice


def test_wrong_password_is_refused_without_echoing_it(password_broker: Broker) -> None:
    wrong = "Wrong-" + PASSWORD
    message = start_fails(mqtt_config(password_broker, username=USER, password=wrong))
    assert REFUSED.search(message), message
    assert f"{password_broker.host}:{password_broker.port}" in message
    assert wrong not in message and PASSWORD not in message
    wait_for_log(password_broker, r"not authori[sz]ed")


def test_anonymous_is_refused(password_broker: Broker) -> None:
    message = start_fails(mqtt_config(password_broker))
    assert REFUSED.search(message), message


def test_password_from_the_credentials_directory(
    password_broker: Broker, tmp_path: Path, recorders: list[MqttRecorder]
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt_password").write_text(PASSWORD + "\n")  # systemd-creds style, trailing newline
    data = {"mqtt": {"host": password_broker.host, "port": password_broker.port, "username": USER}}
    config = parse_config(data, {"CREDENTIALS_DIRECTORY": str(credentials), "OPENAI_API_KEY": "sk-test"})
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(config) and PASSWORD not in str(config.mqtt)
    root = new_root()
    recorder = MqttRecorder(password_broker.host, password_broker.port, [f"{root}/#"], username=USER, password=PASSWORD)
    recorders.append(recorder)
    asyncio.run(round_trip(config.mqtt, recorder, root))


# --------------------------------------------------------------------------- TLS


def test_tls_with_our_ca_connects(tls_broker: Broker, pki: Pki, recorders: list[MqttRecorder]) -> None:
    root = new_root()
    recorder = MqttRecorder(tls_broker.host, tls_broker.port, [f"{root}/#"], tls=client_tls(pki))
    recorders.append(recorder)
    asyncio.run(round_trip(mqtt_config(tls_broker, tls={"enabled": True, "ca_file": pki.ca}), recorder, root))


@pytest.mark.parametrize("trust", ["system CAs", "unrelated CA"])
def test_tls_rejects_a_server_it_cannot_verify(tls_broker: Broker, pki: Pki, trust: str) -> None:
    tls = {"enabled": True} if trust == "system CAs" else {"enabled": True, "ca_file": pki.other_ca}
    message = start_fails(mqtt_config(tls_broker, tls=tls))
    assert f"cannot connect to {tls_broker.host}:{tls_broker.port}" in message
    wait_for_log(tls_broker, r"alert unknown ca")  # the client aborted the handshake: verification failed


def test_tls_checks_the_host_name(make_broker: Callable[..., Broker], pki: Pki) -> None:
    broker = make_broker(tls_listener(pki, server="elsewhere"))  # right CA, wrong name
    start_fails(mqtt_config(broker, tls={"enabled": True, "ca_file": pki.ca}))
    wait_for_log(broker, r"alert (bad certificate|certificate unknown)")


def test_insecure_skips_verification_entirely(
    make_broker: Callable[..., Broker], pki: Pki, recorders: list[MqttRecorder]
) -> None:
    """`insecure = true` means no verification at all: an unknown CA *and* a wrong name are accepted.

    It is `ssl.CERT_NONE`, not just paho's `tls_insecure_set` (host name only): anyone on the path can
    impersonate the broker and read the password.  Only for a first test against a self-signed broker.
    """
    broker = make_broker(tls_listener(pki, server="elsewhere"))  # certificate for elsewhere.invalid
    root = new_root()
    context = client_tls(pki)
    context.check_hostname = False
    recorder = MqttRecorder(broker.host, broker.port, [f"{root}/#"], tls=context)
    recorders.append(recorder)
    insecure = {"enabled": True, "insecure": True, "ca_file": pki.other_ca}  # the wrong CA on purpose
    asyncio.run(round_trip(mqtt_config(broker, tls=insecure), recorder, root))


def test_plain_mqtt_to_a_tls_listener_fails(tls_broker: Broker) -> None:
    start_fails(mqtt_config(tls_broker))


# --------------------------------------------------------------------------- mutual TLS


def test_mutual_tls_needs_the_client_certificate(
    make_broker: Callable[..., Broker], pki: Pki, recorders: list[MqttRecorder], tmp_path: Path
) -> None:
    broker = make_broker(tls_listener(pki, require_certificate=True))
    without = {"enabled": True, "ca_file": pki.ca}
    start_fails(mqtt_config(broker, tls=without))
    wait_for_log(broker, r"peer did not return a certificate|certificate required")

    root = new_root()
    context = client_tls(pki)
    context.load_cert_chain(pki.client_cert, pki.client_key)
    recorder = MqttRecorder(broker.host, broker.port, [f"{root}/#"], tls=context)
    recorders.append(recorder)
    with_cert = {**without, "cert_file": pki.client_cert, "key_file": pki.client_key}
    asyncio.run(round_trip(mqtt_config(broker, tls=with_cert), recorder, root))


# --------------------------------------------------------------------------- `assistant check`


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AZURE_OPENAI_", "ASSISTANT_"))}
    env.pop("CREDENTIALS_DIRECTORY", None)
    return {**env, **extra}


def _write_check_config(path: Path, broker: Broker, pki: Pki) -> Path:
    path.write_text(
        textwrap.dedent(f"""\
            [device]
            site_id = "t{uuid.uuid4().hex[:8]}"

            [openai]
            base_url = "http://127.0.0.1:{free_port()}/v1"
            max_retries = 0
            timeout_s = 2

            [tts]
            engine = "none"

            [mqtt]
            host = "localhost"
            port = {broker.port}
            username = "{USER}"

            [mqtt.tls]
            enabled = true
            ca_file = "{pki.ca}"
        """)
    )
    return path


def test_check_reports_the_secure_broker(secure_broker: Broker, pki: Pki, tmp_path: Path) -> None:
    config = _write_check_config(tmp_path / "assistant.toml", secure_broker, pki)
    wrong = "Wrong-" + PASSWORD
    runs = {
        password: subprocess.Popen(
            [sys.executable, "-m", "assistant", "check", "-v", "--config", str(config)],
            env=_clean_env(OPENAI_API_KEY="sk-test", ASSISTANT_MQTT__PASSWORD=password),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for password in (PASSWORD, wrong)
    }
    outputs = {}
    try:
        for password, process in runs.items():
            outputs[password] = process.communicate(timeout=30)
    finally:
        for process in runs.values():
            stop_process(process)
    good_out, good_err = outputs[PASSWORD]
    assert f"mqtt: ok (localhost:{secure_broker.port})" in good_out, good_out + good_err
    bad_out, bad_err = outputs[wrong]
    assert runs[wrong].returncode == 1
    line = next((x for x in bad_out.splitlines() if x.startswith("mqtt: ")), "")
    assert line.startswith("mqtt: FAILED: ") and REFUSED.search(line), bad_out + bad_err
    for text in (good_out, good_err, bad_out, bad_err):
        assert PASSWORD not in text  # also covers the wrong one, which contains it


# --------------------------------------------------------------------------- last will

CHILD = """\
import asyncio, sys
from assistant.config import parse_config
from assistant.link.client import MqttLink

port, ca_file, site, user = sys.argv[1:]
mqtt = {"host": "127.0.0.1", "port": int(port), "username": user, "tls": {"enabled": True, "ca_file": ca_file}}
config = parse_config({"mqtt": mqtt, "device": {"site_id": site}, "tts": {"engine": "none"}})  # password: env

async def main():
    link = MqttLink(config.mqtt, config.topic_root, will=True)
    await link.start(timeout=5)
    print("connected", flush=True)
    await asyncio.sleep(60)  # stay connected until the test kills this process

asyncio.run(main())
"""


def test_last_will_after_an_unclean_death(
    secure_broker: Broker, pki: Pki, tmp_path: Path, recorders: list[MqttRecorder]
) -> None:
    site = f"t{uuid.uuid4().hex[:8]}"
    status = f"assistant/{site}/status"
    recorder = MqttRecorder(
        secure_broker.host, secure_broker.port, [status], username=USER, password=PASSWORD, tls=client_tls(pki)
    )
    recorders.append(recorder)
    log = tmp_path / "child.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(secure_broker.port), str(pki.ca), site, USER],
            env=_clean_env(OPENAI_API_KEY="sk-test", ASSISTANT_MQTT__PASSWORD=PASSWORD),
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while "connected" not in log.read_text():  # start() returned
            assert child.poll() is None and time.monotonic() < deadline, f"child:\n{log.read_text()}"
            time.sleep(0.02)
        recorder.wait_for(status, lambda m: m.text == "online", timeout=5)
        assert not recorder.messages(status, lambda m: m.text == "offline")
        child.send_signal(signal.SIGKILL)  # no DISCONNECT, no TLS close_notify: the kernel just closes the socket
        child.wait(5)
        recorder.wait_for(status, lambda m: m.text == "offline", timeout=5)
    finally:
        stop_process(child)
    assert PASSWORD not in log.read_text()
    # The will is retained: whoever subscribes later (Home Assistant after a restart) sees offline.
    with MqttRecorder(
        secure_broker.host, secure_broker.port, [status], username=USER, password=PASSWORD, tls=client_tls(pki)
    ) as late:
        late.sync()
        retained = late.last(status)
    assert retained is not None and retained.retain and retained.text == "offline"


# --------------------------------------------------------------------------- failures are told, and told at once


def test_a_refusal_fails_fast(password_broker: Broker) -> None:
    config = mqtt_config(password_broker, username=USER, password="Wrong-" + PASSWORD)
    message, took = timed_start_failure(config, timeout=2.5)
    assert REFUSED.search(message), message
    assert took < 1.6, f"start() took {took:.1f}s to report a refusal that came at once"


def test_a_tls_failure_names_its_cause(tls_broker: Broker, pki: Pki) -> None:
    message = start_fails(mqtt_config(tls_broker, tls={"enabled": True, "ca_file": pki.other_ca}))
    assert "certificate" in message.lower(), message


def test_check_reports_a_missing_ca_file(tls_broker: Broker, pki: Pki, tmp_path: Path) -> None:
    config = _write_check_config(tmp_path / "assistant.toml", tls_broker, pki)
    config.write_text(config.read_text().replace(str(pki.ca), str(tmp_path / "missing-ca.pem")))
    result = subprocess.run(
        [sys.executable, "-m", "assistant", "check", "--config", str(config)],
        env=_clean_env(OPENAI_API_KEY="sk-test", ASSISTANT_MQTT__PASSWORD=PASSWORD),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output  # it was FileNotFoundError from paho's tls_set in MqttLink()
    assert result.returncode != 0
    assert re.search(r"mqtt.*(ca_file|missing-ca\.pem|no such file)", output, re.IGNORECASE), output


@pytest.mark.parametrize("case", ["client certificate missing", "plain MQTT to TLS"])
def test_a_connection_closed_before_connack_is_told(make_broker: Callable[..., Broker], pki: Pki, case: str) -> None:
    broker = make_broker(tls_listener(pki, require_certificate=True))
    tls = {"enabled": True, "ca_file": pki.ca} if case == "client certificate missing" else {"enabled": False}
    message, took = timed_start_failure(mqtt_config(broker, tls=tls), timeout=2.5)
    assert "no answer" not in message, message
    assert took < 1.6, f"start() took {took:.1f}s"  # paho's loop_stop() alone may take 1 s
