"""The keyword spotter's module: the band-limited log-mel equals LogMel, shapes, gain invariance, quiet clips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from server.audio.features import LogMel
from server.errors import InvalidArgument
from server.kws import model as kws_model
from server.kws.augment import AugmentConfig
from server.kws.model import MAX_LIFT_DB, QUIET_PEAK_DB, KWSConfig, KWSNet, lift_quiet, to_peak


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


def _peak_db(wave: torch.Tensor) -> list[float]:
    return [round(20 * math.log10(float(p)), 6) for p in wave.abs().amax(dim=1)]


def test_a_clip_quieter_than_training_is_raised_to_its_level() -> None:
    """Each clip of a batch on its own: a peak below -30 dBFS is raised to it, by at most 40 dB; a louder clip and
    digital silence pass unchanged."""
    shape = np.random.default_rng(2).uniform(-1, 1, 16_000).astype(np.float32)
    shape /= np.abs(shape).max()
    levels = [-50.0, -20.0, -90.0, -30.0]
    wave = torch.from_numpy(np.stack([shape * 10 ** (db / 20) for db in levels] + [np.zeros(16_000, np.float32)]))
    lifted = lift_quiet(wave)
    assert _peak_db(lifted[:4]) == pytest.approx([QUIET_PEAK_DB, -20.0, -90.0 + MAX_LIFT_DB, QUIET_PEAK_DB], abs=1e-4)
    assert torch.equal(lifted[1], wave[1]) and torch.equal(lifted[3], wave[3])
    assert not lifted[4].any()
    assert AugmentConfig().gain_db[0] == QUIET_PEAK_DB  # the quietest level training draws
    for row in range(3):  # the waveform's shape is kept: only its level moves
        assert torch.allclose(lifted[row] / lifted[row].abs().max(), wave[row] / wave[row].abs().max(), atol=1e-6)


def _burst(seed: int) -> torch.Tensor:
    """(1, 16000): a third of a second of noise in the middle of digital silence, as a word trimmed and centred."""
    wave = np.zeros((1, 16_000), np.float32)
    wave[0, 5_000:10_000] = np.random.default_rng(seed).normal(0, 0.1, 5_000)
    return torch.from_numpy(wave)


def test_a_quiet_recording_scores_as_at_the_trained_level(monkeypatch: pytest.MonkeyPatch) -> None:
    """The network hears a word at -46 dBFS exactly as at -30 dBFS; without the lift the log floor under the
    silence around it would tell them apart."""
    model = KWSNet(KWSConfig()).eval()
    wave = _burst(3)
    quiet, at_floor = (wave * (10 ** (db / 20) / wave.abs().max()) for db in (-46, QUIET_PEAK_DB))
    with torch.no_grad():
        assert torch.allclose(model(quiet), model(at_floor), atol=1e-5)
        monkeypatch.setattr(kws_model, "lift_quiet", lambda wave: wave)
        assert not torch.allclose(model.features(quiet), model.features(at_floor), atol=0.1)


def test_peak_db_puts_every_clip_at_one_level() -> None:
    """KWSConfig(peak_db=D): loud and quiet clips alike reach D (raised by at most 40 dB), so the network hears a
    word at -6 dBFS and at -40 dBFS the same; a level above full scale or below -60 dBFS is refused, naming it."""
    wave = _burst(5)
    levels = [wave * (10 ** (db / 20) / wave.abs().max()) for db in (-6.0, -40.0, -90.0)]
    moved = to_peak(torch.cat(levels), -20.0)
    assert _peak_db(moved) == pytest.approx([-20.0, -20.0, -90.0 + MAX_LIFT_DB], abs=1e-4)
    model = KWSNet(KWSConfig(peak_db=-20.0)).eval()
    with torch.no_grad():
        assert torch.allclose(model(levels[0]), model(levels[1]), atol=1e-5)
    for bad in (3.0, -61.0):
        with pytest.raises(InvalidArgument) as refused:
            KWSConfig(peak_db=bad)
        assert refused.value.field == "peak_db"
