"""The classifiers' input shapes: few of them, whatever the request, so oneDNN's compiled kernels are reused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.engine.classify import pcm16_to_16k, shape_batches


def test_windows_are_read_in_few_batch_shapes() -> None:
    """Any number of windows is read in power-of-two batches of at most 64, in order."""
    shapes = set()
    for count in range(1, 400):
        parts = shape_batches(torch.arange(count), largest=64)
        assert torch.equal(torch.cat(parts), torch.arange(count))
        assert all(len(p) & (len(p) - 1) == 0 and len(p) <= 64 for p in parts)
        shapes |= {len(p) for p in parts}
    assert shapes == {1, 2, 4, 8, 16, 32, 64}


@pytest.mark.parametrize("rate", [8_000, 44_100, 47_999])
def test_audio_at_any_rate_keeps_its_pitch(rate: int) -> None:
    """A second of a 440 Hz tone at any rate the server takes is a second of 440 Hz at 16 kHz; an awkward rate
    (47,999 Hz) is resampled by the nearest ratio of small terms (1 / 3), not a filter of half a million taps."""
    t = np.arange(rate) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 16000).astype("<i2").tobytes()
    wave = pcm16_to_16k(pcm, rate)
    assert abs(len(wave) - 16000) <= 2
    spectrum = np.abs(np.fft.rfft(wave[300:-300] * np.hanning(len(wave) - 600)))
    assert abs(np.argmax(spectrum) * 16000 / (len(wave) - 600) - 440) < 2.0
