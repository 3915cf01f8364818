"""A do-nothing responder: the test harness's own audio path, without the daemon.

It records the default input and plays to the default output through sounddevice, with
the daemon's settings (16 kHz mono, 30 ms capture blocks, a blocking output stream),
and answers a click with a click as fast as it can: its output stream is kept running
on 5 ms writes of silence, as the daemon's is while it waits for a reply's first audio.
(A stream started only when there is something to play drops its first ~35 ms through
ALSA's PulseAudio plugin, a whole click.) For each click it prints one line,
`index frames`: where in its capture block the click began and the block's length, so
the bench can take out the wait for the block to fill, which the daemon's frame size
decides.

    PULSE_SERVER=... .venv/bin/python bench/echo.py [--threshold 1000]

It prints "ready" once recording, and runs until stdin closes.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
from array import array

import sounddevice as sd

RATE = 16000
BLOCK = 480  # 30 ms, the daemon's frame
SILENCE = bytes(RATE // 200 * 2)  # 5 ms
CLICK = array("h", (int(12000 * math.sin(2 * math.pi * 1000 * i / RATE)) for i in range(RATE // 50))).tobytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=int, default=1000)
    args = parser.parse_args()

    heard = threading.Event()
    done = threading.Event()
    armed = [True]

    def callback(indata: object, frames: int, when: object, status: sd.CallbackFlags) -> None:
        samples = array("h", bytes(indata))  # type: ignore[call-overload]
        loud = next((i for i, s in enumerate(samples) if abs(s) > args.threshold), None)
        if loud is None:
            armed[0] = True  # a quiet block re-arms: the next click is answered
        elif armed[0]:
            armed[0] = False
            heard.set()
            print(loud, frames, flush=True)

    def answer(out: sd.RawOutputStream) -> None:
        while not done.is_set():
            if heard.is_set():
                heard.clear()
                out.write(CLICK + SILENCE * 20)
            else:
                out.write(SILENCE)  # blocks until there is room: paced by the device

    with (
        sd.RawOutputStream(samplerate=RATE, channels=1, dtype="int16") as out,
        sd.RawInputStream(samplerate=RATE, channels=1, dtype="int16", blocksize=BLOCK, callback=callback),
    ):
        answering = threading.Thread(target=answer, args=(out,))
        answering.start()
        print("ready", flush=True)
        sys.stdin.read()
        done.set()
        answering.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
