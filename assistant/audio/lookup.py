"""Find sound devices by index or by part of their name, as the config names them."""

from __future__ import annotations

import sounddevice as sd

from assistant.audio.pcm import AudioError


def find_device(spec: str | int | None, kind: str) -> int | None:
    """Resolve a device by index or case-insensitive name substring; None = default."""
    if spec is None or spec == "":
        return None
    channels_key = "max_input_channels" if kind == "input" else "max_output_channels"
    devices = sd.query_devices()
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        index = int(spec)
        if 0 <= index < len(devices) and devices[index][channels_key] > 0:
            return index
        raise AudioError(f"audio.{kind}_device: no {kind} device with index {index}")
    for index, device in enumerate(devices):
        if spec.lower() in device["name"].lower() and device[channels_key] > 0:
            return index
    raise AudioError(f"audio.{kind}_device: no {kind} device matches {spec!r}")


def device_name(spec: str | int | None, kind: str) -> str:
    """The device that `spec` selects (the system default when unset); AudioError if there is none."""
    index = find_device(spec, kind)
    try:
        info = sd.query_devices(kind=kind) if index is None else sd.query_devices(index, kind)
    except sd.PortAudioError:
        raise AudioError(f"no {kind} device: the system has none (or no default one)") from None
    return str(info["name"])


def list_devices() -> str:
    """A readable table of the audio devices, defaults marked."""
    return str(sd.query_devices())
