import wave
from pathlib import Path

import numpy as np

from server.audio.checkpoint import load_audio_model
from server.audio.quality import log_mel_distance, number_words, render_report, speak
from server.data.speech import NUMBER_WORDS
from server.data.speech import voices as espeak_voices


def test_log_mel_distance_is_zero_for_the_same_audio_and_grows_with_noise() -> None:
    """The distance of a waveform to itself is 0 dB; added noise makes it positive."""
    rng = np.random.default_rng(0)
    t = np.arange(16_000) / 16_000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    assert log_mel_distance(tone, tone) == 0.0
    noisy = tone + rng.normal(0, 0.05, tone.shape).astype(np.float32)
    assert log_mel_distance(noisy, tone) > 1.0


def test_speak_generates_as_long_as_the_rendering(tiny_audio_checkpoint: Path) -> None:
    """Each generated waveform is as long as espeak-ng's rendering of the same text and voice."""
    model, _, _ = load_audio_model(tiny_audio_checkpoint)
    spoken = speak(model, [("one", "en-us+m1"), ("good night", "en-gb+f2")], seed=1)
    assert [len(s.generated) for s in spoken] == [len(s.reference) for s in spoken]
    assert all(s.generated.dtype == np.float32 and np.abs(s.generated).max() <= 1.0 for s in spoken)


def test_number_words_in_held_out_voices(tiny_audio_checkpoint: Path) -> None:
    """number_words returns the ten number words for each held-out voice asked for."""
    model, _, _ = load_audio_model(tiny_audio_checkpoint)
    voice = espeak_voices("heldout")[0]
    words = number_words(model, [voice], seed=0)
    assert [w for w, _, _ in words] == list(NUMBER_WORDS)
    assert all(v == voice and len(audio) > 1000 for _, v, audio in words)


def test_render_report_writes_wavs_and_a_distance(tiny_audio_checkpoint: Path, tmp_path: Path) -> None:
    """--render's report: a WAV pair per utterance (16 kHz mono 16-bit) and a finite mean distance."""
    model, _, _ = load_audio_model(tiny_audio_checkpoint)
    report = render_report(model, tmp_path, count=2, seed=3)
    assert {"gen_00.wav", "ref_00.wav", "gen_01.wav", "ref_01.wav"} <= set(report["files"])  # type: ignore[arg-type]
    with wave.open(str(tmp_path / "gen_00.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16_000, 1, 2)
    assert np.isfinite(report["log_mel_distance_db"])  # type: ignore[arg-type]
