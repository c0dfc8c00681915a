"""How good the generated speech is: generation of held-out renderings, log-mel distance, WAV files, a spectrogram.

The WaveNet generates every sample of an utterance from the espeak-ng rendering's log-mel frames, so the rendering
is the reference: the mean absolute difference of the two log-mel spectrograms (in dB, over every frame and band,
powers floored at -60 dB) says how far the generated audio is from what it should sound like. The ten number words
in held-out voices (:func:`number_words`) are what a keyword classifier scores for intelligibility.
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.audio.constants import SAMPLE_RATE
from server.audio.fast import FastWaveNet, StreamState
from server.audio.features import MelFrames, utterance_features
from server.audio.model import WaveNet
from server.audio.mulaw import decode
from server.data.speech import NUMBER_WORDS, Rendering, play_lines, render, trim_silence, voices

DB_PER_NEPER = 10.0 / math.log(10.0)  # 10 log10(p) = DB_PER_NEPER * ln(p)
POWER_FLOOR = 1e-6  # -60 dB


@dataclass
class Spoken:
    text: str
    voice: str
    reference: np.ndarray  # espeak-ng's rendering, float32 at 16 kHz (silence trimmed)
    generated: np.ndarray  # the WaveNet's, as long as the reference


def speak(
    model: WaveNet,
    items: list[tuple[str, str]],
    voice_ids: dict[str, int] | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    threads: int = 1,
) -> list[Spoken]:
    """Render each (text, voice) with espeak-ng and generate it with the WaveNet, all streams in one batch.
    A voice missing from ``voice_ids`` (every held-out voice) uses id 0."""
    ids = voice_ids or {}
    frames = MelFrames(model.config.n_mels, model.config.hop)
    fast = FastWaveNet(model, threads=threads)
    references, states = [], []
    for i, (text, voice) in enumerate(items):
        reference = trim_silence(render(text, Rendering(voice=voice)), pad=160)
        feats = utterance_features(model, frames(reference), ids.get(voice, 0))[0].detach().numpy()
        references.append(reference)
        states.append(fast.start(feats, seed=seed + i, temperature=temperature))
    state = StreamState.concat(states)
    longest = max(len(r) for r in references)
    codes, _ = fast.generate(state, longest)
    fast.close()
    return [
        Spoken(text, voice, reference, decode(codes[i, : len(reference)]))
        for i, ((text, voice), reference) in enumerate(zip(items, references, strict=True))
    ]


def log_mel_db(audio: np.ndarray, frames: MelFrames) -> np.ndarray:
    """(n_mels, F) mel power in dB, floored at -60 dB."""
    return DB_PER_NEPER * np.log(np.maximum(np.exp(frames(audio)), POWER_FLOOR))


def log_mel_distance(generated: np.ndarray, reference: np.ndarray, n_mels: int = 40, hop: int = 160) -> float:
    """Mean absolute difference in dB between the log-mel spectrograms of two equally long waveforms."""
    frames = MelFrames(n_mels, hop)
    n = min(len(generated), len(reference))
    return float(np.mean(np.abs(log_mel_db(generated[:n], frames) - log_mel_db(reference[:n], frames))))


def heldout_items(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """``count`` (text, voice) pairs in held-out voices: lines of the plays, and up to two number words."""
    held = voices("heldout")
    rng = np.random.default_rng(seed)
    numbers = ["seven", "three"][: min(2, count // 2)]
    texts = [*play_lines(count - len(numbers), seed=seed + 20_011, max_chars=60), *numbers]
    return [(text, held[int(rng.integers(len(held)))]) for text in texts]


def number_words(
    model: WaveNet,
    voices_: list[str] | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    threads: int = 1,
) -> list[tuple[str, str, np.ndarray]]:
    """The ten number words generated in each held-out voice (default: every one): (word, voice, waveform)."""
    chosen = voices_ if voices_ is not None else voices("heldout")
    items = [(word, voice) for voice in chosen for word in NUMBER_WORDS]
    return [(s.text, s.voice, s.generated) for s in speak(model, items, None, seed, temperature, threads)]


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    pcm = np.rint(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def plot_spectrograms(path: Path, spoken: list[Spoken], n_mels: int = 40, hop: int = 160) -> bool:
    """Reference and generated log-mel spectrograms side by side, one row per utterance (PNG). False without
    matplotlib (the ``plots`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    frames = MelFrames(n_mels, hop)
    fig, axes = plt.subplots(len(spoken), 2, figsize=(12, 2.4 * len(spoken)), squeeze=False)
    for row, s in enumerate(spoken):
        for col, (audio, title) in enumerate(((s.reference, "espeak-ng"), (s.generated, "WaveNet"))):
            ax = axes[row][col]
            ax.imshow(log_mel_db(audio, frames), origin="lower", aspect="auto", vmin=-60, vmax=20, cmap="magma")
            ax.set_title(f"{title} ({s.voice}): {s.text[:48]}", fontsize=8)
            ax.set_xlabel(f"frame ({hop / SAMPLE_RATE * 1000:g} ms)", fontsize=7)
            ax.set_ylabel("mel band", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def render_report(
    model: WaveNet, out: Path, count: int = 4, seed: int = 0, temperature: float = 1.0, threads: int = 1
) -> dict[str, object]:
    """Generate ``count`` held-out utterances, write ``gen_*.wav``, ``ref_*.wav`` and ``spectrogram.png`` into
    ``out``, and return the mean absolute log-mel distance (dB), overall and per utterance."""
    out.mkdir(parents=True, exist_ok=True)
    spoken = speak(model, heldout_items(count, seed), None, seed, temperature, threads)
    c = model.config
    distances = []
    files = []
    for i, s in enumerate(spoken):
        write_wav(out / f"gen_{i:02d}.wav", s.generated)
        write_wav(out / f"ref_{i:02d}.wav", s.reference)
        files += [f"gen_{i:02d}.wav", f"ref_{i:02d}.wav"]
        distances.append(log_mel_distance(s.generated, s.reference, c.n_mels, c.hop))
    if plot_spectrograms(out / "spectrogram.png", spoken[: min(3, len(spoken))], c.n_mels, c.hop):
        files.append("spectrogram.png")
    return {
        "log_mel_distance_db": float(np.mean(distances)),
        "utterances": [
            {"text": s.text, "voice": s.voice, "seconds": len(s.reference) / SAMPLE_RATE, "log_mel_distance_db": d}
            for s, d in zip(spoken, distances, strict=True)
        ],
        "files": files,
        "temperature": temperature,
        "seed": seed,
    }
