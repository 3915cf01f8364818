"""microWakeWord models run through the TensorFlow Lite C API, without numpy.

pymicro-wakeword's Python side imports numpy (about 13 MB resident, a sixth of the daemon
at rest) for a few dozen numbers every 30 ms. Its wheel also holds what is needed to do
without it: the models (`models/<name>.tflite` and `<name>.json`, with the probability
cutoff and window size) and `lib/libtensorflowlite_c.so`, whose C API (`c_api.h`) is
TensorFlow Lite's stable public interface. `find_package` locates them without importing
the package; when the layout is not there, `assistant.audio.wakeword` falls back to the
package's own classes.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

_K_TFLITE_INT8, _K_TFLITE_UINT8 = 9, 3  # TfLiteType
MAX_REMEMBERED = 4096  # quantized feature values kept per model (a few hundred occur)


class _QuantizationParams(ctypes.Structure):
    _fields_ = [("scale", ctypes.c_float), ("zero_point", ctypes.c_int32)]


@dataclass(frozen=True)
class Package:
    """Where pymicro-wakeword's models and TFLite library lie."""

    models: Path
    library: Path

    def names(self) -> list[str]:
        """The bundled models, in file name order."""
        return sorted(path.stem for path in self.models.glob("*.json") if path.with_suffix(".tflite").exists())


def find_package() -> Package | None:
    """pymicro-wakeword's data directories, found without importing it (and numpy with it)."""
    spec = importlib.util.find_spec("pymicro_wakeword")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    library = next(iter(sorted((root / "lib").glob("*tensorflowlite_c.*"))), None)
    if library is None or not (root / "models").is_dir():
        return None
    return Package(root / "models", library)


_LIBRARIES: dict[Path, ctypes.CDLL] = {}


def _library(path: Path) -> ctypes.CDLL:
    """The TFLite C library, loaded once, with the signatures this module calls."""
    if path in _LIBRARIES:
        return _LIBRARIES[path]
    lib = ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL)
    p, i32, size = ctypes.c_void_p, ctypes.c_int32, ctypes.c_size_t
    signatures: dict[str, tuple[list[type], type | None]] = {
        "TfLiteModelCreateFromFile": ([ctypes.c_char_p], p),
        "TfLiteModelDelete": ([p], None),
        "TfLiteInterpreterCreate": ([p, p], p),
        "TfLiteInterpreterDelete": ([p], None),
        "TfLiteInterpreterAllocateTensors": ([p], ctypes.c_int),
        "TfLiteInterpreterInvoke": ([p], ctypes.c_int),
        "TfLiteInterpreterGetInputTensor": ([p, i32], p),
        "TfLiteInterpreterGetOutputTensor": ([p, i32], p),
        "TfLiteTensorByteSize": ([p], size),
        "TfLiteTensorDim": ([p, i32], i32),
        "TfLiteTensorType": ([p], i32),
        "TfLiteTensorQuantizationParams": ([p], _QuantizationParams),
        "TfLiteTensorCopyFromBuffer": ([p, p, size], ctypes.c_int),
        "TfLiteTensorCopyToBuffer": ([p, p, size], ctypes.c_int),
    }
    for name, (arguments, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = arguments
        function.restype = result
    _LIBRARIES[path] = lib
    return lib


class _Quantized(dict[float, int]):
    """A feature's input byte, round(x / scale + zero_point) clamped, remembered per value.

    The frontend's features are multiples of 1/25.6 below about 30 (a few hundred distinct
    values), so after the first seconds every one is a dictionary hit instead of a division,
    a rounding and two comparisons (120 of them per inference).
    """

    def __init__(self, scale: float, zero: int, low: int, high: int) -> None:
        super().__init__()
        self.scale, self.zero, self.low, self.high = scale, zero, low, high

    def __missing__(self, value: float) -> int:
        quantized = min(self.high, max(self.low, round(value / self.scale + self.zero)))
        if len(self) < MAX_REMEMBERED:
            self[value] = quantized
        return quantized


class TfLiteModel:
    """One microWakeWord model: quantized feature slices in, one probability out per `stride` slices.

    The numbers match pymicro-wakeword's `process_streaming_prob` (tests/test_wakeword.py
    compares them): features are quantized as round(x / scale + zero_point), half to even,
    and the output byte is dequantized in float32.
    """

    def __init__(self, package: Package, name: str) -> None:
        settings = json.loads((package.models / f"{name}.json").read_text(encoding="utf-8"))
        self.name = name
        self.probability_cutoff = float(settings["micro"]["probability_cutoff"])
        self.sliding_window_size = int(settings["micro"]["sliding_window_size"])
        self._path = str((package.models / settings["model"]).resolve()).encode()
        self._lib = _library(package.library)
        self._model: int | None = None
        self._interpreter: int | None = None
        self._load()

    def _load(self) -> None:
        lib = self._lib
        self._model = lib.TfLiteModelCreateFromFile(self._path)
        if not self._model:
            raise RuntimeError(f"TFLite could not load {self._path.decode()}")
        self._interpreter = lib.TfLiteInterpreterCreate(self._model, None)
        if not self._interpreter or lib.TfLiteInterpreterAllocateTensors(self._interpreter) != 0:
            raise RuntimeError(f"TFLite could not prepare {self._path.decode()}")
        self._input = lib.TfLiteInterpreterGetInputTensor(self._interpreter, 0)
        self._output = lib.TfLiteInterpreterGetOutputTensor(self._interpreter, 0)
        self.stride = int(lib.TfLiteTensorDim(self._input, 1))
        self.features = int(lib.TfLiteTensorDim(self._input, 2))
        quant_in = lib.TfLiteTensorQuantizationParams(self._input)
        quant_out = lib.TfLiteTensorQuantizationParams(self._output)
        signed_in = lib.TfLiteTensorType(self._input) == _K_TFLITE_INT8
        low, high = (-128, 127) if signed_in else (0, 255)
        self._quantized = _Quantized(float(quant_in.scale), int(quant_in.zero_point), low, high)
        self._in_buffer = (ctypes.c_int8 if signed_in else ctypes.c_uint8) * (self.stride * self.features)
        self._in = self._in_buffer()
        self._out = (ctypes.c_uint8 * int(lib.TfLiteTensorByteSize(self._output)))()
        # Every output byte's probability: (float32(q) - zero_point) * scale, rounded to float32.
        signed_out = lib.TfLiteTensorType(self._output) == _K_TFLITE_INT8
        scale = ctypes.c_float(quant_out.scale).value
        self._probability = [
            ctypes.c_float(
                ctypes.c_float((b - 256 if signed_out and b > 127 else b) - quant_out.zero_point).value * scale
            ).value
            for b in range(256)
        ]

    def infer(self, slices: list[list[float]]) -> float:
        """The model's output for `stride` feature slices (each `features` long)."""
        self._in[:] = list(map(self._quantized.__getitem__, chain.from_iterable(slices)))
        lib = self._lib
        lib.TfLiteTensorCopyFromBuffer(self._input, self._in, ctypes.sizeof(self._in))
        lib.TfLiteInterpreterInvoke(self._interpreter)
        lib.TfLiteTensorCopyToBuffer(self._output, self._out, len(self._out))
        return self._probability[self._out[0]]

    def reset(self) -> None:
        """Forget the streaming state (the interpreter is rebuilt: about a millisecond)."""
        self.close()
        self._load()

    def close(self) -> None:
        """Free the interpreter and the model."""
        if self._interpreter:
            self._lib.TfLiteInterpreterDelete(self._interpreter)
            self._interpreter = None
        if self._model:
            self._lib.TfLiteModelDelete(self._model)
            self._model = None

    def __del__(self) -> None:
        self.close()
