"""The real-people development set's scoring, and PocketSphinx (benchmarks/kws_real.py) on a real digit."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from benchmarks import kws_real
from server.kws import recordings
from server.kws.data import UNKNOWN_INDEX
from server.kws.devset import DevSet, score, window


def test_report_counts_numbers_and_unknown_per_speaker() -> None:
    """Shares per speaker, recordings apart from voices, and the misses named speaker:word->answer."""
    dev = DevSet(
        waves=np.zeros((4, 16000), np.float32),
        labels=np.asarray([7, 7, UNKNOWN_INDEX, 3]),
        speakers=["alice", "alice", "alice", "flite-x"],
        texts=["seven", "seven", "ball", "three"],
        hard=np.zeros(4, bool),
        recorded=np.asarray([True, True, True, False]),
    )
    r = score(np.asarray([7, UNKNOWN_INDEX, UNKNOWN_INDEX, 3]), dev)
    assert r["recorded_numbers"] == 0.5 and r["recorded_unknown"] == 1.0 and r["voices_numbers"] == 1.0
    assert r["speakers"]["alice"] == {"numbers": 0.5, "n_numbers": 2, "unknown": 1.0, "n_unknown": 1}
    assert r["number_misses"] == {"alice:seven->unknown": 1}
    assert r["words"]["seven"] == 0.5 and r["words"]["zero"] is None


def test_words_holding_a_number_word_have_their_own_figure() -> None:
    """ "sixteen" or "ninety" heard as unknown, people and voices together, less the speakers trained on."""
    dev = DevSet(
        waves=np.zeros((5, 16000), np.float32),
        labels=np.asarray([UNKNOWN_INDEX, UNKNOWN_INDEX, UNKNOWN_INDEX, UNKNOWN_INDEX, 6]),
        speakers=["alice", "flite-x", "flite-x", "bob", "alice"],
        texts=["sixteen", "ninety", "ball", "seventy", "six"],
        hard=np.asarray([True, True, False, True, False]),
        recorded=np.asarray([True, False, False, True, True]),
    )
    r = score(np.asarray([6, UNKNOWN_INDEX, UNKNOWN_INDEX, 7, 6]), dev, trained_on=["bob"])
    assert r["n_holders"] == 2 and r["holders_unknown"] == 0.5


def test_speakers_a_run_trained_on_leave_the_figures() -> None:
    """A speaker the run trained on keeps its line, marked, and leaves the summaries, the words and the misses."""
    dev = DevSet(
        waves=np.zeros((4, 16000), np.float32),
        labels=np.asarray([7, 7, 3, UNKNOWN_INDEX]),
        speakers=["alice", "bob", "bob", "bob"],
        texts=["seven", "seven", "three", "ball"],
        hard=np.zeros(4, bool),
        recorded=np.ones(4, bool),
    )
    r = score(np.asarray([7, UNKNOWN_INDEX, 3, 7]), dev, trained_on=["bob"])
    assert r["recorded_numbers"] == 1.0 and r["recorded_unknown"] is None
    assert r["speakers"]["bob"]["trained_on"] and r["speakers"]["bob"]["numbers"] == 0.5
    assert "trained_on" not in r["speakers"]["alice"]
    assert r["words"]["three"] is None and r["number_misses"] == {}


@pytest.mark.skipif(not recordings.ASTERISK.exists(), reason="asterisk-core-sounds-en-wav is not installed")
def test_pocketsphinx_hears_allisons_three() -> None:
    """PocketSphinx with the ten-word grammar hears Allison's "three" as three."""
    pytest.importorskip("pocketsphinx", reason="pocketsphinx (a dev dependency) is not installed")
    three = next(u for u in recordings.asterisk_utterances() if u.text == "three")
    assert list(kws_real.pocketsphinx_predictions(window(three.audio)[None])) == [3]


def test_gain_moves_the_level_as_a_wav_file_would_hold_it() -> None:
    """kws_real --gain DB: every clip moved by DB decibels, clipped to full scale, rounded to 16-bit steps."""
    waves = np.asarray([[0.5, -0.25, 0.0, 1e-6], [0.9, -0.9, 0.1, 0.0]], np.float32)
    quiet = kws_real.at_gain(waves, -40.0)
    np.testing.assert_allclose(quiet[0], np.round(waves[0] * 0.01 * 32767) / 32767, atol=1e-9)
    assert quiet[0, 3] == 0.0  # under half a 16-bit step
    loud = kws_real.at_gain(waves, 6.0)
    assert loud[1, 0] == 1.0 and loud[1, 1] == -1.0 and loud.dtype == np.float32


def test_phone_clips_are_narrow_band_trimmed_and_centred() -> None:
    """kws_real --phone: a word in quiet padding comes out trimmed to the word, centred in one second of silence,
    with nothing left above the 8 kHz line's 4 kHz."""
    t = np.arange(16_000) / 16_000
    word = (0.5 * np.sin(2 * np.pi * 440 * t[:6_000]) + 0.2 * np.sin(2 * np.pi * 6_000 * t[:6_000])).astype(np.float32)
    clip = np.zeros(16_000, np.float32)
    clip[1_000:7_000] = word  # the word off-centre, room noise around it
    clip[:1_000] = clip[7_000:8_000] = 1e-3
    (out,) = kws_real.as_phone(clip[None])
    assert out.shape == (16_000,) and out.dtype == np.float32
    loud = np.flatnonzero(np.abs(out) > 0.5 * 10 ** (-30 / 20))
    assert abs((loud[0] + loud[-1]) / 2 - 8_000) < 100  # centred again
    assert 5_800 < loud[-1] - loud[0] < 6_100  # the word, without its padding
    spectrum = np.abs(np.fft.rfft(out))
    assert spectrum[6_000] < 0.01 * spectrum[440]  # the 6 kHz tone is gone


def test_write_wavs_writes_the_peoples_clips_as_the_issues_recordings(tmp_path: Path) -> None:
    """kws_real --write-wavs: each recording of a person no model trained on, as an 8 kHz 16-bit mono WAV trimmed to
    the word, under its label's folder; voices and trained-on speakers are left out."""
    t = np.arange(16_000) / 16_000
    word = np.zeros(16_000, np.float32)
    word[4_000:12_000] = 0.5 * np.sin(2 * np.pi * 300 * t[:8_000])
    dev = DevSet(
        waves=np.stack([word, word, word, word]),
        labels=np.asarray([7, UNKNOWN_INDEX, 7, 7]),
        speakers=["tuxpaint-en", "tuxpaint-en", "flite-rms", "asterisk-allison"],
        texts=["seven", "cat", "seven", "seven"],
        hard=np.zeros(4, bool),
        recorded=np.asarray([True, True, False, True]),
    )
    assert kws_real.write_wavs(tmp_path, dev, ["asterisk-allison"]) == 2
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.wav")) == [
        "seven/tuxpaint-en-0.wav",
        "unknown/tuxpaint-en-1.wav",
    ]
    with wave.open(str(tmp_path / "seven" / "tuxpaint-en-0.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8_000, 1, 2)
        assert abs(w.getnframes() - 4_000) < 20  # the word's half second, not the window
