"""Likelihoods on binarised images, in nats per image: the baseline and the two likelihood models.

- A mixture of Bernoullis fitted by EM (:func:`fit_bernoulli_mixture`): the baseline every likelihood model here
  must beat on the same split.
- The RBM: the exact log partition function by enumerating the hidden states (:func:`rbm_log_partition_exact`,
  for an RBM with few hidden units), and annealed importance sampling (:func:`rbm_log_partition_ais`, Salakhutdinov
  and Murray 2008) from a base of independent pixels, for any size. The test checks one against the other.
- The VAE: importance sampling with its posterior as the proposal, ``k`` samples per image (:func:`vae_nll`).

Everything runs in float64 but the VAE's networks.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from server.errors import InvalidArgument
from server.image.rbm import BernoulliRBM
from server.image.vae import ConvVAE

EPS = 1e-6


# -- the baseline: a mixture of Bernoullis ---------------------------------------------------------------------
@dataclass(frozen=True)
class BernoulliMixture:
    log_weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, D) in [EPS, 1 - EPS]

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """log p(x) (N,) of binary rows x (N, D), in float64."""
        log_p = _component_log_likelihoods(x.astype(np.float64), self.means, self.log_weights)  # (N, K)
        top = log_p.max(axis=1, keepdims=True)
        return (top + np.log(np.exp(log_p - top).sum(axis=1, keepdims=True)))[:, 0]

    def nll(self, x: np.ndarray) -> float:
        """Mean negative log-likelihood in nats per row."""
        return float(-self.log_likelihood(x).mean())


def _component_log_likelihoods(x: np.ndarray, means: np.ndarray, log_weights: np.ndarray) -> np.ndarray:
    """log w_k + log p(x | k) (N, K) of binary rows x (N, D): x.(log m - log(1 - m)) + sum log(1 - m), one matmul
    in the dtype of ``x``."""
    log_odds = (np.log(means) - np.log1p(-means)).astype(x.dtype)  # (K, D)
    return x @ log_odds.T + (np.log1p(-means).sum(axis=1) + log_weights).astype(x.dtype)  # (N, K)


def fit_bernoulli_mixture(
    x: np.ndarray, components: int, iterations: int = 100, seed: int = 0, prior: float = 1.0
) -> BernoulliMixture:
    """EM on binary rows x (N, D); the means are smoothed by ``prior`` pseudo-counts of each value (a Beta(prior,
    prior) MAP estimate), which keeps a component that sees few images from giving a test pixel probability 0. The
    iterations run in float32 (the fit's speed on 60,000 images); the likelihood is evaluated in float64."""
    if components < 1:
        raise InvalidArgument("components", f"must be at least 1, got {components}")
    x = x.astype(np.float32)
    rng = np.random.default_rng(seed)
    n, d = x.shape
    resp = rng.dirichlet(np.ones(components), size=n).astype(np.float32)  # (N, K)
    mixture = BernoulliMixture(np.zeros(components), np.full((components, d), 0.5))
    for i in range(iterations):
        counts = resp.sum(axis=0, dtype=np.float64)  # (K,)
        means = ((resp.T @ x).astype(np.float64) + prior) / (counts[:, None] + 2 * prior)  # (K, D)
        log_weights = np.log((counts + 1e-3) / (n + 1e-3 * components))
        mixture = BernoulliMixture(log_weights, np.clip(means, EPS, 1 - EPS))
        if i == iterations - 1:
            break
        log_p = _component_log_likelihoods(x, mixture.means, log_weights)  # (N, K) float32
        log_p -= log_p.max(axis=1, keepdims=True)
        resp = np.exp(log_p)
        resp /= resp.sum(axis=1, keepdims=True)
    return mixture


def best_bernoulli_mixture(
    train: np.ndarray,
    test: np.ndarray,
    components: tuple[int, ...] = (10, 25, 50, 100, 200),
    priors: tuple[float, ...] = (0.01, 0.1, 1.0),
    seed: int = 0,
) -> tuple[int, float, float]:
    """The mixture (components, prior) with the lowest test NLL, and that NLL: the baseline at its best, chosen on
    the test data itself, so the choice flatters the baseline, never the models."""
    results = [
        (k, prior, fit_bernoulli_mixture(train, k, seed=seed, prior=prior).nll(test))
        for k in components
        for prior in priors
    ]
    return min(results, key=lambda r: r[2])


# -- the RBM -----------------------------------------------------------------------------------------------------
def _rbm_params(rbm: BernoulliRBM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return rbm.weight.detach().double(), rbm.visible_bias.detach().double(), rbm.hidden_bias.detach().double()


@torch.no_grad()
def rbm_free_energy(rbm: BernoulliRBM, v: np.ndarray) -> np.ndarray:
    """F(v) (N,) of binary rows (N, V), in float64."""
    w, b, c = _rbm_params(rbm)
    x = torch.from_numpy(v).double()
    return (-(x @ b) - F.softplus(x @ w + c).sum(dim=1)).numpy()


@torch.no_grad()
def rbm_log_partition_exact(rbm: BernoulliRBM, chunk: int = 1 << 14) -> float:
    """log Z by summing over every hidden state: 2**H terms, each with the visible units summed out."""
    w, b, c = _rbm_params(rbm)
    hidden = w.shape[1]
    if hidden > 24:
        raise InvalidArgument("hidden", f"2**{hidden} hidden states are too many to enumerate (24 at most)")
    bits = 2 ** torch.arange(hidden)
    parts = []
    for start in range(0, 2**hidden, chunk):
        codes = torch.arange(start, min(start + chunk, 2**hidden))
        h = ((codes[:, None] & bits) > 0).double()  # (n, H)
        parts.append(h @ c + F.softplus(h @ w.T + b).sum(dim=1))  # (n,)
    return float(torch.logsumexp(torch.cat(parts), dim=0))


@dataclass(frozen=True)
class AISEstimate:
    log_z: float  # log of the mean importance weight, plus log Z of the base
    log_z_low: float  # log Z minus three standard errors (on the weights' scale)
    log_z_high: float
    runs: int
    betas: int


@torch.no_grad()
def rbm_log_partition_ais(
    rbm: BernoulliRBM,
    data_mean: np.ndarray | None = None,
    runs: int = 100,
    betas: int = 10000,
    seed: int = 0,
) -> AISEstimate:
    """log Z by annealed importance sampling: ``runs`` chains from the base RBM (no weights; its visible biases the
    log-odds of ``data_mean``, the training pixels' mean, or zero) to this one over ``betas`` linear temperatures."""
    w, b, c = _rbm_params(rbm)
    visible, hidden = w.shape
    if data_mean is None:
        base = torch.zeros(visible, dtype=torch.float64)
    else:
        p = torch.from_numpy(np.clip(np.asarray(data_mean, dtype=np.float64), 0.01, 0.99))
        base = torch.log(p) - torch.log1p(-p)  # (V,)
    gen = torch.Generator().manual_seed(seed)

    def log_unnormalised(v: torch.Tensor, beta: float) -> torch.Tensor:  # (R, V) -> (R,)
        return (1 - beta) * (v @ base) + beta * (v @ b) + F.softplus(beta * (v @ w + c)).sum(dim=1)

    v = (torch.rand(runs, visible, generator=gen, dtype=torch.float64) < torch.sigmoid(base)).double()  # (R, V)
    log_w = torch.zeros(runs, dtype=torch.float64)
    schedule = np.linspace(0.0, 1.0, betas + 1)
    for prev, beta in itertools.pairwise(schedule):
        log_w += log_unnormalised(v, float(beta)) - log_unnormalised(v, float(prev))
        h_p = torch.sigmoid(beta * (v @ w + c))  # (R, H)
        h = (torch.rand(h_p.shape, generator=gen, dtype=torch.float64) < h_p).double()
        v_p = torch.sigmoid((1 - beta) * base + beta * (h @ w.T + b))  # (R, V)
        v = (torch.rand(v_p.shape, generator=gen, dtype=torch.float64) < v_p).double()
    log_z_base = float(F.softplus(base).sum()) + hidden * math.log(2.0)
    top = float(log_w.max())
    weights = torch.exp(log_w - top)
    mean = float(weights.mean())
    stderr = float(weights.std()) / math.sqrt(runs) if runs > 1 else 0.0
    log_z = log_z_base + top + math.log(mean)
    low = log_z_base + top + math.log(max(mean - 3 * stderr, 1e-300))
    high = log_z_base + top + math.log(mean + 3 * stderr)
    return AISEstimate(log_z, low, high, runs, betas)


def rbm_nll(rbm: BernoulliRBM, v: np.ndarray, log_z: float) -> float:
    """Mean -log p(v) in nats per image of binary rows (N, V), given log Z."""
    return float(rbm_free_energy(rbm, v).mean() + log_z)


# -- the VAE -----------------------------------------------------------------------------------------------------
@torch.no_grad()
def vae_log_likelihood(vae: ConvVAE, images: np.ndarray, k: int = 1000, batch: int = 500, seed: int = 0) -> np.ndarray:
    """log p(x) (N,) of binary images (N, H, W) by importance sampling with the posterior q(z|x) as proposal:
    log mean_k p(x|z_k) p(z_k) / q(z_k|x), ``batch`` samples at a time."""
    if k < 1:
        raise InvalidArgument("k", f"must be at least 1, got {k}")
    device = next(vae.parameters()).device
    vae.eval()
    gen = torch.Generator().manual_seed(seed)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    out = []
    for image in images:
        x = torch.from_numpy(image[None]).float().to(device)  # (1, H, W)
        mean, logvar = vae.encode(x)  # (1, Z)
        std = (0.5 * logvar).exp()
        terms = []
        for start in range(0, k, batch):
            n = min(batch, k - start)
            eps = torch.randn(n, mean.shape[1], generator=gen).to(device)  # (n, Z)
            z = mean + std * eps  # (n, Z)
            logits = vae.decode_logits(z)  # (n, H, W)
            log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum((1, 2))
            log_pz = (-0.5 * z.pow(2) - half_log_2pi).sum(1)
            log_qz = (-0.5 * eps.pow(2) - half_log_2pi - 0.5 * logvar).sum(1)
            terms.append((log_px + log_pz - log_qz).double().cpu())
        values = torch.cat(terms)  # (k,)
        out.append(float(torch.logsumexp(values, 0)) - math.log(k))
    return np.asarray(out)


def vae_nll(vae: ConvVAE, images: np.ndarray, k: int = 1000, seed: int = 0) -> float:
    """Mean -log p(x) in nats per image (importance sampled, ``k`` samples each)."""
    return float(-vae_log_likelihood(vae, images, k, seed=seed).mean())
