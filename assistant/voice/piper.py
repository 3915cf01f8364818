"""Piper: a natural voice synthesized on the device (piper-tts, ONNX Runtime).

piper-tts and onnxruntime are imported only when a Piper voice is made, so another engine
pays nothing for them. A voice is loaded once (about 0.9 s and 100+ MB for a medium
voice) on a worker thread as soon as the voice object exists, so start-up and reload do
not block the event loop, and a reload that keeps the same voice file reuses the loaded
one. Synthesis runs on that same single worker thread, one request at a time; each
sentence's audio is handed to the event loop as soon as Piper has made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.voice.choice import config_path
from assistant.voice.tts import TtsError

if TYPE_CHECKING:
    from piper import PiperVoice as LoadedVoice

log = logging.getLogger(__name__)

_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper")
_loaded: dict[tuple[Path, int], Future[LoadedVoice]] = {}  # at most one: the voice in use
_lock = threading.Lock()


def _load_now(model: Path) -> LoadedVoice:
    try:
        import onnxruntime
        from piper import PiperConfig
        from piper import PiperVoice as Loaded
    except ImportError as error:
        raise TtsError(
            f"piper-tts is not installed ({error}): pip install piper-tts (wheels exist for x86_64 and aarch64)"
        ) from None
    started = time.monotonic()
    # ONNX Runtime's worker threads spin between runs by default: on a Pi that would take
    # CPU from the wake word listener while a reply is spoken (and were slower here under load).
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        settings = PiperConfig.from_dict(json.loads(config_path(model).read_text(encoding="utf-8")))
        session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        voice = Loaded(session=session, config=settings)
    except Exception as error:  # onnxruntime raises its own types for a corrupt model
        raise TtsError(f"cannot load Piper voice {model}: {type(error).__name__}: {error}") from None
    log.info("Piper voice %s loaded in %.2f s", model.name, time.monotonic() - started)
    return voice


def load(model: Path) -> Future[LoadedVoice]:
    """The voice loading (or loaded) on the worker thread; the previous other voice is let go."""
    key = (model.resolve(), model.stat().st_mtime_ns)
    with _lock:
        future = _loaded.get(key)
        if future is None:
            _loaded.clear()
            future = _loaded[key] = _worker.submit(_load_now, model)
        return future


class PiperVoice:
    """One installed Piper voice, speaking at its own rate (22050 Hz medium, 16000 Hz low)."""

    def __init__(self, model: Path, speed: float = 1.0) -> None:
        try:
            settings = json.loads(config_path(model).read_text(encoding="utf-8"))
            self.sample_rate = int(settings["audio"]["sample_rate"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise TtsError(f"cannot read Piper voice config {config_path(model)}: {error}") from None
        self.model = model
        self.name = model.name.removesuffix(".onnx")
        self.speed = speed
        self.loading = load(model)

    async def ready(self) -> None:
        """Wait until the voice is loaded; TtsError if it cannot be."""
        await asyncio.wrap_future(self.loading)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """Yield int16 pcm per sentence Piper makes, as soon as each is made."""
        voice = await asyncio.wrap_future(self.loading)
        # Only now: importing piper here while the loader thread imports it (and numpy) can
        # leave numpy half-initialised in one of the two threads.
        from piper import SynthesisConfig

        loop = asyncio.get_running_loop()
        audio: asyncio.Queue[bytes | TtsError | None] = asyncio.Queue()
        stop = threading.Event()
        settings = SynthesisConfig(length_scale=1.0 / self.speed)

        def hand_over(item: bytes | TtsError | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(audio.put_nowait, item)

        def work() -> None:
            try:
                for chunk in voice.synthesize(text, settings):
                    if stop.is_set():
                        return
                    hand_over(chunk.audio_int16_bytes)
            except Exception as error:
                hand_over(TtsError(f"Piper failed: {type(error).__name__}: {error}"))
            finally:
                hand_over(None)

        _worker.submit(work)
        try:
            while (item := await audio.get()) is not None:
                if isinstance(item, TtsError):
                    raise item
                yield item
        finally:
            stop.set()  # a reply cut short: the worker stops after the sentence it is on
