"""Wake word detection with microWakeWord's bundled models (pymicro-wakeword).

The detector is pure: it is fed 16 kHz mono int16 audio and returns a Detection when a
model fires. It keeps its own clock in audio samples, so the refractory period is
counted in audio time and its behaviour can be tested to the frame.

Audio features (a 40-band log filterbank every 10 ms) are computed once per 10 ms chunk
and shared by every loaded model. Each model runs an inference every `stride` feature
slices (30 ms for the bundled models) and averages its last few outputs
(`sliding_window_size`, 5); a detection happens when that average exceeds the cutoff.

The models are driven below pymicro-wakeword's streaming helpers, which cost three times
the inference itself at idle (a generator and a numpy array per 10 ms, `statistics.mean`
over Fractions per inference) and load numpy (13 MB): features come straight from
pymicro-features' `MicroFrontend` (its public API), and each model runs through the
TensorFlow Lite C API (`assistant.audio.tflite`) from the files the package ships. Should
a release lay them out differently, the package's own classes are used instead: the same
numbers, only slower and bigger. The level meter keeps the last second of audio and
measures it only when a model fires.

A model's probability stays above its cutoff for up to a second after the phrase and can
dip and recover meanwhile, so detections are edge-triggered: a model fires when its
probability rises above the cutoff, and is re-armed only once the probability has fallen
to half the cutoff. One utterance therefore fires once even with no refractory period,
and an utterance still "hot" when the refractory period ends does not fire late.
"""

from __future__ import annotations

import logging
import math
import operator
import sys
from array import array
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymicro_features import MicroFrontend

from assistant.audio.tflite import TfLiteModel, find_package

if TYPE_CHECKING:
    from pymicro_wakeword import MicroWakeWord

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 160  # 10 ms: the feature frontend's step
CHUNK_BYTES = CHUNK_SAMPLES * 2
BATCH_BYTES = 6 * CHUNK_BYTES  # audio is run through the models 60 ms at a time (see `process`)
LEVEL_WINDOW_CHUNKS = 100  # level_dbfs covers the last 1 s of audio
LEVEL_FLOOR_DBFS = -120.0  # reported for digital silence instead of -inf
REARM_FRACTION = 0.5  # a model re-arms when its probability falls to this fraction of its cutoff
_FULL_SCALE_SQ = 32768.0**2


@dataclass(frozen=True)
class Detection:
    """A wake word heard.

    `probability` is the model's (averaged) probability when it fired. `level_dbfs` is
    the RMS level of the last ~1 s of audio before the detection, relative to int16 full
    scale (a full-scale square wave is 0 dBFS, a full-scale sine -3 dBFS), floored at
    -120 dBFS; devices that heard the same wake word can compare it to pick the nearest.
    """

    model: str
    probability: float
    level_dbfs: float


class _Inference:
    """One model's streaming inference: `stride` feature slices in, one averaged probability out.

    Does what `MicroWakeWord.process_streaming_prob` does: an inference every `stride`
    slices, averaged over the last `sliding_window_size` outputs (0.0 until there are
    that many). With a `TfLiteModel` directly, else through the library's helper.
    """

    def __init__(self, model: TfLiteModel | MicroWakeWord) -> None:
        self.model = model
        self.stride = int(model.stride)
        self.direct = isinstance(model, TfLiteModel)
        self._lists: list[list[float]] = []  # this stride's slices, as the frontend gave them
        self._window: deque[float] = deque(maxlen=int(model.sliding_window_size))

    def reset(self) -> None:
        """Forget the model's state (the interpreter is rebuilt) and the window."""
        self.model.reset()
        self._lists.clear()
        self._window.clear()

    def feed(self, features: list[float]) -> float | None:
        """Take one slice; the averaged probability when this slice completed an inference
        and the window is full, 0.0 when it completed one before that, else None."""
        lists = self._lists
        lists.append(features)
        if not isinstance(self.model, TfLiteModel):
            import numpy as np  # only on this fallback: the library wants arrays

            probability = self.model.process_streaming_prob(np.array(features).reshape((1, 1, len(features))))
            if len(lists) < self.stride:
                return None
            lists.clear()
            return None if probability is None else float(probability)
        if len(lists) < self.stride:
            return None
        output = self.model.infer(lists)
        lists.clear()
        window = self._window
        window.append(output)
        if len(window) < (window.maxlen or 0):
            return 0.0
        return sum(window) / len(window)


def _load(names: list[str]) -> list[TfLiteModel] | list[MicroWakeWord]:
    """The models, through TFLite directly when pymicro-wakeword's files are where expected."""
    package = find_package()
    if package is not None and set(names) <= set(package.names()):
        return [TfLiteModel(package, name) for name in names]
    log.info("pymicro-wakeword's model files not found where expected; using its own classes")
    from pymicro_wakeword import MicroWakeWord, Model

    return [MicroWakeWord.from_builtin(Model(name)) for name in names]


class WakeWord:
    """Run one or more bundled microWakeWord models over a stream of audio.

    `models` are names from `WakeWord.available()`. `threshold` overrides every model's
    own probability cutoff (None keeps each model's cutoff). After a detection no model
    can fire again for `refractory_s` seconds of audio fed to `process`.

    Not thread-safe: feed it from one thread.
    """

    def __init__(self, models: list[str], threshold: float | None = None, refractory_s: float = 2.0) -> None:
        if not models:
            raise ValueError(f"no wake word model given; available: {', '.join(self.available())}")
        unknown = [name for name in models if name not in self.available()]
        if unknown:
            raise ValueError(
                f"unknown wake word model {', '.join(map(repr, unknown))}; available: {', '.join(self.available())}"
            )
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"wake word threshold must be between 0 and 1, not {threshold}")
        if refractory_s < 0:
            raise ValueError(f"wake word refractory_s must not be negative, not {refractory_s}")

        self.names: list[str] = list(dict.fromkeys(models))  # duplicates dropped, order kept
        self.threshold = threshold
        self.refractory_s = refractory_s
        loaded: list[Any] = list(_load(self.names))
        self._models: list[_Inference] = [_Inference(model) for model in loaded]
        self._cutoffs: list[float] = [
            threshold if threshold is not None else float(model.probability_cutoff) for model in loaded
        ]
        self._armed: list[bool] = [True] * len(self._models)
        self._refractory_samples = round(refractory_s * SAMPLE_RATE)
        self._frontend = MicroFrontend()
        self._pending = b""
        self._recent: deque[bytes] = deque(maxlen=LEVEL_WINDOW_CHUNKS)  # the last second, for level_dbfs
        self._samples = 0  # audio fed so far, in whole 10 ms chunks
        self._quiet_until = 0  # no detection before this sample count

    @staticmethod
    def available() -> list[str]:
        """Names of the models bundled with the installed pymicro-wakeword."""
        package = find_package()
        if package is not None:
            return package.names()
        from pymicro_wakeword import Model

        return [model.value for model in Model]

    def cutoff(self, name: str) -> float:
        """The probability a model's output must exceed to fire."""
        return self._cutoffs[self.names.index(name)]

    @property
    def time_s(self) -> float:
        """Seconds of audio fed since construction or the last reset (in whole samples)."""
        return (self._samples + len(self._pending) // 2) / SAMPLE_RATE

    def process(self, frame: bytes) -> Detection | None:
        """Feed 16 kHz mono int16 little-endian audio of any length.

        Audio is consumed in 10 ms chunks, but only once 60 ms (`BATCH_BYTES`) have
        gathered: woken every 60 ms rather than every 30 ms frame, the models run with warm
        caches, which at idle halves their CPU time for at most 30 ms more latency on a
        wake word that fires about half a second after the phrase anyway. Returns the first
        detection completed inside the audio processed by this call, or None. (A frame
        longer than `refractory_s` could hold a second one: it is dropped.)
        """
        buffer = self._pending + frame if self._pending else frame
        if len(buffer) < BATCH_BYTES:
            self._pending = buffer
            return None
        detection: Detection | None = None
        whole = len(buffer) - len(buffer) % CHUNK_BYTES
        for start in range(0, whole, CHUNK_BYTES):
            found = self._chunk(buffer[start : start + CHUNK_BYTES])
            if found is not None and detection is None:
                detection = found
        self._pending = buffer[whole:]
        return detection

    def reset(self) -> None:
        """Forget all audio: features, model states, level, clock and refractory period.

        Reloading the models' interpreters costs about a millisecond.
        """
        self._frontend.reset()
        for model in self._models:
            model.reset()
        self._armed = [True] * len(self._models)
        self._pending = b""
        self._recent.clear()
        self._samples = 0
        self._quiet_until = 0

    def _chunk(self, chunk: bytes) -> Detection | None:
        # The frontend reads one 10 ms step (160 samples) per call.
        features: list[float] = self._frontend.process_samples(chunk).features
        self._recent.append(chunk)
        self._samples += CHUNK_SAMPLES
        detection: Detection | None = None
        if features:  # the frontend has a full window (not in the first 20 ms)
            for index, model in enumerate(self._models):
                # Every model sees every slice, even in the refractory period, so its
                # streaming state stays continuous.
                probability = model.feed(features)
                if probability is None:
                    continue  # no inference on this slice
                cutoff = self._cutoffs[index]
                if probability <= cutoff * REARM_FRACTION:
                    self._armed[index] = True
                elif probability > cutoff and self._armed[index]:
                    self._armed[index] = False  # fired or swallowed by the refractory period
                    if self._samples >= self._quiet_until and (
                        detection is None or probability > detection.probability
                    ):
                        detection = Detection(self.names[index], float(probability), self._level_dbfs())
        if detection is not None:
            self._quiet_until = self._samples + self._refractory_samples
        return detection

    def _level_dbfs(self) -> float:
        samples = array("h", b"".join(self._recent))
        if sys.byteorder == "big":
            samples.byteswap()  # the audio is little-endian
        mean_square = sum(map(operator.mul, samples, samples)) / len(samples) / _FULL_SCALE_SQ if samples else 0.0
        if mean_square <= 0.0:
            return LEVEL_FLOOR_DBFS
        return max(LEVEL_FLOOR_DBFS, 10.0 * math.log10(mean_square))
