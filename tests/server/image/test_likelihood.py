"""Likelihoods: the RBM's exact log Z against brute force and against AIS, the VAE's importance sampling against
its bound, the mixture baseline."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from server.image.likelihood import (
    best_bernoulli_mixture,
    fit_bernoulli_mixture,
    rbm_free_energy,
    rbm_log_partition_ais,
    rbm_log_partition_exact,
    vae_log_likelihood,
)
from server.image.rbm import BernoulliRBM, RBMConfig
from server.image.vae import ConvVAE, VAEConfig


def _rbm(image_size: int, hidden: int, scale: float, seed: int = 0) -> BernoulliRBM:
    torch.manual_seed(seed)
    rbm = BernoulliRBM(RBMConfig(image_size=image_size, hidden=hidden))
    with torch.no_grad():
        rbm.weight.normal_(0, scale)
        rbm.visible_bias.normal_(0, 1)
        rbm.hidden_bias.normal_(0, 1)
    return rbm


def test_the_exact_log_partition_function_sums_every_joint_state() -> None:
    """Summing the hidden units out (2**H terms) equals summing exp(-E) over every (v, h) of a 9x5 RBM."""
    rbm = _rbm(3, 5, 1.0)
    w, b, c = (p.detach().double().numpy() for p in (rbm.weight, rbm.visible_bias, rbm.hidden_bias))
    energies = [
        np.dot(b, v) + np.dot(c, h) + np.dot(v, w @ h)
        for v in itertools.product((0, 1), repeat=9)
        for h in itertools.product((0, 1), repeat=5)
    ]
    brute = float(np.logaddexp.reduce(np.asarray(energies)))
    assert rbm_log_partition_exact(rbm) == pytest.approx(brute, abs=1e-9)


def test_the_free_energy_gives_a_normalised_distribution() -> None:
    """exp(-F(v)) / Z sums to one over every visible state."""
    rbm = _rbm(3, 4, 0.5)
    states = np.asarray(list(itertools.product((0.0, 1.0), repeat=9)))
    log_p = -rbm_free_energy(rbm, states) - rbm_log_partition_exact(rbm)
    assert float(np.exp(log_p).sum()) == pytest.approx(1.0, abs=1e-9)


def test_ais_agrees_with_the_exact_value_on_an_8x8_rbm() -> None:
    """An 8x8 RBM with 16 hidden units (65,536 hidden states, enumerated): AIS lands within 0.1 nats and its
    three-standard-error interval holds the exact value."""
    rbm = _rbm(8, 16, 0.3, seed=1)
    exact = rbm_log_partition_exact(rbm)
    data_mean = np.full(64, 0.3)
    ais = rbm_log_partition_ais(rbm, data_mean, runs=200, betas=2000, seed=0)
    assert abs(ais.log_z - exact) < 0.1
    assert ais.log_z_low - 0.02 <= exact <= ais.log_z_high + 0.02


def test_importance_sampling_is_no_lower_than_the_bound_and_tightens() -> None:
    """With more samples the estimate of log p(x) rises toward the truth from its ELBO-like start (k = 1)."""
    torch.manual_seed(0)
    vae = ConvVAE(VAEConfig(image_size=8, latent=2, channels=4, hidden=16)).eval()
    images = (np.random.default_rng(0).random((4, 8, 8)) < 0.3).astype(np.float32)
    one = vae_log_likelihood(vae, images, k=1, seed=0)
    many = vae_log_likelihood(vae, images, k=2000, seed=0)
    assert many.mean() > one.mean()
    again = vae_log_likelihood(vae, images, k=2000, seed=0)
    np.testing.assert_array_equal(many, again)


def test_one_bernoulli_component_is_the_independent_pixel_model() -> None:
    """A one-component mixture's NLL is that of independent pixels with the smoothed training means."""
    x = (np.random.default_rng(0).random((200, 6)) < np.linspace(0.1, 0.9, 6)).astype(np.float64)
    mixture = fit_bernoulli_mixture(x, 1, iterations=3, prior=1.0)
    p = (x.sum(0) + 1) / (len(x) + 2)
    expected = -np.mean(x @ np.log(p) + (1 - x) @ np.log1p(-p))
    assert mixture.nll(x) == pytest.approx(expected, rel=1e-9)


def test_the_best_mixture_beats_independent_pixels_on_clustered_data() -> None:
    """On data from two prototypes, the best mixture is far better than one component."""
    rng = np.random.default_rng(0)
    protos = np.array([[0.95] * 8 + [0.05] * 8, [0.05] * 8 + [0.95] * 8])
    x = (rng.random((400, 16)) < protos[rng.integers(0, 2, 400)]).astype(np.float64)
    one = fit_bernoulli_mixture(x[:300], 1).nll(x[300:])
    k, prior, best = best_bernoulli_mixture(x[:300], x[300:], components=(1, 2, 4), priors=(1.0,))
    assert k >= 2 and prior == 1.0
    assert best < one - 16 * math.log(2) * 0.5
