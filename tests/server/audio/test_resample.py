"""The one whole-signal rate conversion the server's data, files and clients' audio go through."""

from __future__ import annotations

import numpy as np
import pytest

from server.audio.resample import resample


def tone(hz: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate).astype(np.float64)


@pytest.mark.parametrize("rate", [8_000, 11_025, 22_050, 44_100, 48_000, 47_999])
def test_a_tone_keeps_its_pitch_and_length(rate: int) -> None:
    out = resample(tone(440, rate), rate)
    assert out.dtype == np.float32
    assert abs(len(out) - 16_000) <= 1  # 47,999 Hz is rounded to 1 / 3: 0.002% off in pace
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.02)


def test_what_the_target_cannot_hold_is_filtered_out() -> None:
    out = resample(tone(7_000, 48_000), 48_000, 8_000)  # above 8 kHz's Nyquist frequency of 4 kHz
    assert np.sqrt(np.mean(out[100:-100] ** 2)) < 0.01


def test_the_same_rate_is_the_signal_itself() -> None:
    x = tone(440, 16_000)
    assert np.array_equal(resample(x, 16_000), x.astype(np.float32))
