"""The keyword spotter's module: the band-limited log-mel equals LogMel, shapes, gain invariance."""

from __future__ import annotations

import numpy as np
import torch

from server.audio.features import LogMel
from server.kws.model import KWSConfig, KWSNet


def test_factorized_front_end_equals_log_mel() -> None:
    """The factorized DFT of the bins below f_max gives the shared LogMel's numbers from a few constants."""
    model = KWSNet(KWSConfig()).eval()
    wave = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (2, 16_000)).astype(np.float32))
    want = LogMel(model.config.log_mel)(wave)
    got = model.front_end.log_mel(wave)
    assert got.shape == want.shape == (2, 40, 99)
    assert torch.allclose(got, want, atol=1e-4)
    assert sum(b.numel() for b in model.front_end.buffers()) < 5_000


def test_raw_pcm_in_logits_out() -> None:
    """(B, 16000) float32 -> (B, 12) logits."""
    model = KWSNet(KWSConfig()).eval()
    assert model(torch.zeros(3, 16_000)).shape == (3, 12)


def test_features_do_not_depend_on_the_gain() -> None:
    """Per-utterance normalisation removes the level: a clip 20 dB quieter gives the same features (up to the
    log floor)."""
    model = KWSNet(KWSConfig()).eval()
    wave = torch.from_numpy(np.random.default_rng(1).uniform(-0.5, 0.5, (1, 16_000)).astype(np.float32))
    with torch.no_grad():
        difference = (model.features(wave) - model.features(0.1 * wave)).abs()
    assert float(difference.mean()) < 0.01  # of features spanning several units
    assert float(difference.max()) < 0.2
