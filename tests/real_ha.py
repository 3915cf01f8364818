"""A real Home Assistant for the tests, at the oldest and newest versions the project supports.

scripts/ha-venv.sh (run by `scripts/setup.sh --test`, so by `make test`) installs each version in
its own venv under ~/.cache/assistant-tests, with the requirements of the integrations used here,
so a start downloads nothing (`--skip-pip`). A start writes a fresh configuration: the house in
ha_house.yaml (MQTT entities whose commands show on the broker under `house/`, and whose state
Home Assistant keeps optimistically), the repository's bridge package, and an MQTT config entry for
the given broker, so no UI flow is needed; the first start then onboards a user and takes a
long-lived token.

Every wait is on something Home Assistant does (its HTTP API answering, its MQTT birth message,
a state, a log line), never on a fixed time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import Broker, MqttRecorder, free_port

VERSIONS: list[str] = ["2024.11.3", "2025.4.4"]  # keep in step with scripts/ha-venv.sh
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "assistant-tests"
REPO = Path(__file__).resolve().parents[1]
BRIDGE_PACKAGE = REPO / "config/homeassistant/assistant_bridge.yaml"
HOUSE = Path(__file__).with_name("ha_house.yaml")  # the entities every start has
BRIDGE_TOPIC = "assistant/service"
STATUS_TOPIC = "homeassistant/status"  # Home Assistant's MQTT birth and last will
START_TIMEOUT = 180.0  # a cold start on two loaded cores

CONFIGURATION = """
homeassistant:
  name: Test house
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  time_zone: UTC
  packages: !include_dir_named packages
http:
  server_host: 127.0.0.1
  server_port: {port}
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
""".lstrip()


def venv(version: str) -> Path:
    """The installed Home Assistant `version`, or an error that says how to install it."""
    path = CACHE / f"homeassistant-{version}"
    if not any(path.glob(".installed-*")):
        raise RuntimeError(f"Home Assistant {version} is not installed in {path}: run scripts/setup.sh --test")
    return path


def _mqtt_entry(broker: Broker) -> dict[str, Any]:
    """.storage/core.config_entries with an MQTT entry for `broker`, as the UI flow would leave it."""
    entry = {
        "created_at": "2025-01-01T00:00:00+00:00",
        "modified_at": "2025-01-01T00:00:00+00:00",
        "data": {"broker": broker.host, "port": broker.port, "discovery": True},
        "disabled_by": None,
        "discovery_keys": {},
        "domain": "mqtt",
        "entry_id": "01testmqttentry000000000000",
        "minor_version": 1,
        "options": {},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "title": "MQTT",
        "unique_id": None,
        "version": 1,
    }
    return {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [entry]}}


def _exists(state: dict[str, Any] | None) -> bool:
    return state is not None


class HomeAssistant:
    """One Home Assistant process on `broker`, configured in `config_dir` (see the module docstring)."""

    def __init__(self, version: str, config_dir: Path, broker: Broker) -> None:
        self.version = version
        self.config_dir = config_dir
        self.broker = broker
        self.venv = venv(version)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.start_seconds: list[float] = []  # how long each start took, for the curious
        self._process: subprocess.Popen[bytes] | None = None
        self._console = config_dir / "console.log"  # all starts, appended (HA rotates its own log)
        self._births = MqttRecorder(broker.host, broker.port, [STATUS_TOPIC])
        self._ws: subprocess.Popen[str] | None = None  # the websocket helper, see ws()

    # --- life cycle

    @classmethod
    def start_new(cls, version: str, config_dir: Path, broker: Broker, timeout: float = START_TIMEOUT) -> HomeAssistant:
        """Write a fresh configuration in `config_dir`, start, onboard; returns when ready."""
        ha = cls(version, config_dir, broker)
        try:
            ha._write_config()
            ha.start(timeout)
            ha._onboard()
        except BaseException:
            ha.close()
            raise
        return ha

    def _write_config(self) -> None:
        (self.config_dir / "packages").mkdir(parents=True, exist_ok=True)
        (self.config_dir / ".storage").mkdir(exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(CONFIGURATION.format(port=self.port) + HOUSE.read_text())
        (self.config_dir / "packages/assistant_bridge.yaml").write_text(BRIDGE_PACKAGE.read_text())
        (self.config_dir / ".storage/core.config_entries").write_text(json.dumps(_mqtt_entry(self.broker)))

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start on the current configuration; returns when its API answers and its MQTT birth is seen."""
        assert self._process is None, "already running"
        began = time.monotonic()
        with self._console.open("ab") as console:
            self._process = subprocess.Popen(
                [str(self.venv / "bin/hass"), "-c", str(self.config_dir), "--skip-pip"],
                stdout=console,
                stderr=subprocess.STDOUT,
            )
        self._wait(self._api_answers, timeout, "its HTTP API to answer")
        remaining = max(1.0, timeout - (time.monotonic() - began))
        try:
            self._births.wait_for(STATUS_TOPIC, lambda m: m.text == "online", timeout=remaining, since=began)
        except AssertionError:
            raise AssertionError(f"Home Assistant {self.version} sent no MQTT birth:\n{self.log_tail()}") from None
        self.start_seconds.append(time.monotonic() - began)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop as systemd would (SIGTERM), killing it only if it hangs."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start on the same configuration; returns when ready (API and MQTT birth)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and let go of the broker and the websocket helper."""
        self.stop()
        self._births.close()
        if self._ws is not None:
            self._ws.communicate()  # end of input: it exits

    def memory_kib(self) -> int:
        """Resident memory of the running process (VmRSS), for measurements."""
        assert self._process is not None
        status = Path(f"/proc/{self._process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(
                    f"Home Assistant {self.version} exited ({self._process.returncode}) "
                    f"waiting for {what}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"Home Assistant {self.version}: no {what} within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)  # polling the HTTP port: the next look, not a guess at how long it takes

    def _api_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/api/onboarding", timeout=5):
                return True
        except urllib.error.HTTPError:
            return True  # answered, if only to say no
        except OSError:
            return False

    def _onboard(self) -> None:
        """Create the owner (no browser) and a long-lived token for REST and websocket calls."""
        client_id = self.url + "/"
        user = {
            "client_id": client_id,
            "name": "Test",
            "username": "test",
            "password": "test-password",
            "language": "en",
        }
        code = self._http("POST", "/api/onboarding/users", user, auth=False)["auth_code"]
        form = {"grant_type": "authorization_code", "code": code, "client_id": client_id}
        self.token = self._http("POST", "/auth/token", form=form, auth=False)["access_token"]
        self.token = self.ws({"type": "auth/long_lived_access_token", "client_name": "tests", "lifespan": 30})

    # --- REST

    def _http(
        self, method: str, path: str, body: Any = None, form: dict[str, str] | None = None, auth: bool = True
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        if form is not None:
            data: bytes | None = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None or method == "POST":
            data = json.dumps(body or {}).encode()
            headers["Content-Type"] = "application/json"
        else:
            data = None
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            raise HomeAssistantError(error.code, f"{method} {path}: {error.code} {error.read()[:500]!r}") from None
        return json.loads(text) if text else None

    def states(self) -> list[dict[str, Any]]:
        """Every state Home Assistant has (GET /api/states)."""
        return list(self._http("GET", "/api/states"))

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """One entity's state, None if Home Assistant has no such entity."""
        try:
            return dict(self._http("GET", f"/api/states/{entity_id}"))
        except HomeAssistantError as error:
            if error.status == 404:
                return None
            raise

    def wait_state(
        self,
        entity_id: str,
        predicate: Callable[[dict[str, Any] | None], bool] = _exists,
        timeout: float = 30,
    ) -> dict[str, Any] | None:
        """The entity's state once `predicate` holds for it (by default: once it exists)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(entity_id)
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{entity_id} in Home Assistant {self.version} after {timeout} s: {state}")
            time.sleep(0.1)  # the next look at Home Assistant's state

    def call(self, domain: str, service: str, data: dict[str, Any] | None = None) -> Any:
        """Call an action (POST /api/services/<domain>/<service>); returns the states it changed."""
        return self._http("POST", f"/api/services/{domain}/{service}", data or {})

    # --- websocket

    def ws(self, message: dict[str, Any]) -> Any:
        """One websocket command ({"type": ..., ...}); its "result", or HomeAssistantError if it failed.

        Sent by a helper process on the Home Assistant venv's own python (it has aiohttp), so the tests
        need no websocket client; it stays up (starting Python for each command costs 0.4 s) and opens
        a connection per command, so a restart of Home Assistant does not disturb it.
        """
        if self._ws is None or self._ws.poll() is not None:
            self._ws = subprocess.Popen(
                [str(self.venv / "bin/python"), "-c", _WS_CLIENT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        assert self._ws.stdin is not None and self._ws.stdout is not None
        self._ws.stdin.write(json.dumps({"url": self.url, "token": self.token, "message": message}) + "\n")
        self._ws.stdin.flush()
        line = self._ws.stdout.readline()
        if not line:
            raise RuntimeError(f"the websocket helper exited ({self._ws.wait()}); its error is above")
        reply = json.loads(line)
        if not reply.get("success"):
            raise HomeAssistantError(0, f"{message['type']}: {reply.get('error')}")
        return reply.get("result")

    # --- configuration

    def write_package(self, name: str, text: str) -> None:
        """Write <config>/packages/<name>.yaml (read at the next start or reload)."""
        (self.config_dir / "packages" / f"{name}.yaml").write_text(text)

    def install_bridge(self, allowed_entities: str | None = None) -> None:
        """(Re)install the repository's bridge package as an installer would, `allowed_entities` edited if
        given, and reload automations."""
        text = BRIDGE_PACKAGE.read_text()
        if allowed_entities is not None:
            line = re.compile(r"^(\s*allowed_entities:\s*).*$", re.MULTILINE)
            assert line.search(text), "the bridge package has no allowed_entities line"
            text = line.sub(lambda m: m.group(1) + "'" + allowed_entities.replace("'", "''") + "'", text)
        self.write_package("assistant_bridge", text)
        self.reload_automations()

    def reload_automations(self) -> None:
        """automation.reload: returns once Home Assistant has set the automations up again."""
        self.call("automation", "reload")

    # --- log

    def log_text(self) -> str:
        """Everything Home Assistant wrote to its console, all starts."""
        return self._console.read_text(errors="replace") if self._console.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_log(self, pattern: str, timeout: float = 30, since: int = 0) -> str:
        """The first line matching the regular expression `pattern` (after character `since`)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()[since:]
            for line in text.splitlines():
                if regex.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r} within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)  # the next look at the log file


class HomeAssistantError(Exception):
    """Home Assistant answered a REST or websocket call with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# The websocket helper run by the Home Assistant venv's python: one JSON request a line on stdin
# ({"url", "token", "message"}), the command's result message a line on stdout.
_WS_CLIENT = """
import asyncio, json, sys
import aiohttp

async def command(session, url, token, message):
    async with session.ws_connect(url + "/api/websocket") as ws:
        assert (await ws.receive_json())["type"] == "auth_required"
        await ws.send_json({"type": "auth", "access_token": token})
        answer = await ws.receive_json()
        if answer["type"] != "auth_ok":
            return {"success": False, "error": answer}
        await ws.send_json({"id": 1, **message})
        while True:
            reply = await ws.receive_json()
            if reply.get("id") == 1 and reply.get("type") == "result":
                return reply

async def main():
    async with aiohttp.ClientSession() as session:
        for line in sys.stdin:
            request = json.loads(line)
            reply = await command(session, request["url"], request["token"], request["message"])
            print(json.dumps(reply), flush=True)

asyncio.run(main())
"""
