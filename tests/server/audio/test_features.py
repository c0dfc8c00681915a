"""Log-mel features: torch and NumPy agree, the filterbank is sane, a tone lands in the right band."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.audio.features import LogMel, LogMelConfig, log_mel_numpy, mel_filterbank
from server.errors import InvalidArgument


def test_torch_and_numpy_agree() -> None:
    config = LogMelConfig(n_mels=40)
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, 16_000).astype(np.float32)
    with torch.no_grad():
        ours = LogMel(config)(torch.from_numpy(wave)[None])[0].numpy()
    assert ours.shape == (40, config.frames(16_000)) == (40, 97)
    np.testing.assert_allclose(ours, log_mel_numpy(wave, config), atol=2e-3)


@pytest.mark.parametrize("samples", [512, 3_217, 16_000])
def test_the_framed_product_is_the_convolution(samples: int) -> None:
    """What the serving path computes (frames times the basis) is what the exported convolution computes."""
    module = LogMel(LogMelConfig(n_mels=40, hop_length=200))
    wave = torch.from_numpy(np.random.default_rng(samples).uniform(-0.5, 0.5, (2, samples)).astype(np.float32))
    with torch.no_grad():
        framed, convolved = module.framed(wave), module(wave)
    assert framed.shape == convolved.shape == (2, 40, module.config.frames(samples))
    torch.testing.assert_close(framed, convolved, atol=1e-3, rtol=1e-4)


def test_a_tone_peaks_in_its_band() -> None:
    config = LogMelConfig(n_mels=64)
    t = np.arange(16_000) / 16_000
    for freq in (300.0, 2000.0, 6000.0):
        feats = log_mel_numpy(np.sin(2 * np.pi * freq * t).astype(np.float32) * 0.5, config)
        peak = int(feats.mean(axis=1).argmax())
        bank = mel_filterbank(config.n_freqs, config.n_mels, 16_000, config.f_min, 8000.0)
        centre_bin = int(bank[peak].argmax())
        assert abs(centre_bin * 16_000 / config.n_fft - freq) < 0.15 * freq + 40


def test_silence_is_finite() -> None:
    feats = log_mel_numpy(np.zeros(4000, dtype=np.float32))
    assert np.isfinite(feats).all() and np.allclose(feats, np.log(1e-6))


def test_filterbank_covers_the_band() -> None:
    bank = mel_filterbank(257, 40, 16_000, 20.0, 8000.0)
    assert bank.shape == (40, 257) and (bank >= 0).all()
    assert (bank.sum(axis=0)[3:250] > 0).all()  # no hole between the lowest and highest filters


def test_bad_config_names_the_field() -> None:
    with pytest.raises(InvalidArgument, match="win_length"):
        LogMelConfig(n_fft=256, win_length=400)
    with pytest.raises(InvalidArgument, match="f_max"):
        LogMelConfig(f_max=9000.0)
