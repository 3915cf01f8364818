"""scripts/lean_alsa.py: which card a Pi's lean ALSA configuration opens, and that ALSA reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from lean_alsa import cards, choose, config

PI_PLAYBACK = """**** List of PLAYBACK Hardware Devices ****
card 0: Headphones [bcm2835 Headphones], device 0: bcm2835 Headphones [bcm2835 Headphones]
  Subdevices: 8/8
  Subdevice #0: subdevice #0
card 1: vc4hdmi0 [vc4-hdmi-0], device 0: MAI PCM i2s-hifi-0 [MAI PCM i2s-hifi-0]
  Subdevices: 1/1
card 3: Speaker [Jabra SPEAK 410 USB], device 0: USB Audio [USB Audio]
"""
PI_CAPTURE = """**** List of CAPTURE Hardware Devices ****
card 2: Device [USB PnP Sound Device], device 0: USB Audio [USB Audio]
  Subdevices: 1/1
"""


def test_cards_are_read_from_the_listing() -> None:
    found = cards(PI_PLAYBACK)
    assert [(c.index, c.id, c.device) for c in found] == [(0, "Headphones", 0), (1, "vc4hdmi0", 0), (3, "Speaker", 0)]
    assert found[2].name == "Jabra SPEAK 410 USB"
    assert cards("**** List of CAPTURE Hardware Devices ****\n") == []


def test_usb_first_then_anything_but_hdmi() -> None:
    assert choose(cards(PI_PLAYBACK)) == cards(PI_PLAYBACK)[2]
    without_usb = cards(PI_PLAYBACK)[:2]
    assert choose(list(reversed(without_usb))) == without_usb[0]  # the jack, not HDMI
    assert choose([]) is None


def test_a_named_card_by_id_index_or_name() -> None:
    found = cards(PI_PLAYBACK)
    assert choose(found, "Headphones") == found[0]
    assert choose(found, "1") == found[1]
    assert choose(found, "jabra") == found[2]
    assert choose(found, "nothing") is None


def test_config_plays_and_records_on_the_chosen_cards(tmp_path: Path) -> None:
    text = config(cards(PI_PLAYBACK)[0], cards(PI_CAPTURE)[0])
    assert 'playback.pcm { type plug slave.pcm { type hw card "Headphones" device 0 } }' in text
    assert 'capture.pcm { type plug slave.pcm { type hw card "Device" device 0 } }' in text
    assert 'ctl.!default { type hw card "Headphones" }' in text
    # alsa-lib parses it: a syntax error would show here (the cards themselves do not exist on this machine)
    path = tmp_path / "asound.conf"
    path.write_text(text)
    probe = "import sounddevice; print('parsed')"
    env = {"ALSA_CONFIG_PATH": str(path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False)
    assert "parsed" in result.stdout
    assert "parse error" not in result.stderr.lower() and "syntax" not in result.stderr.lower()


def test_speaker_only_config() -> None:
    text = config(cards(PI_PLAYBACK)[0], None)
    assert 'pcm.!default { type plug slave.pcm { type hw card "Headphones" device 0 } }' in text
    assert "capture" not in text.split("\n", 3)[-1]
