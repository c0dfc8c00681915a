"""The sampling API: same seed, same frames, alone or batched; knobs named at the boundary; Deep Dream climbs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from server.errors import InvalidArgument
from server.image.checkpoint import load_image_model
from server.image.evaluator import Evaluator, EvaluatorConfig
from server.image.sampling import DeepDream, DreamSettings, GibbsSampler, LatentSampler, open_sampler


@pytest.mark.parametrize("family", ["dcgan", "vae", "vaegan"])
def test_a_seed_gives_the_same_sample_alone_or_batched(tiny_image_checkpoints: dict[str, Path], family: str) -> None:
    """Seed 5's image is the same sampled alone, twice, or as the middle of three."""
    sampler = open_sampler(tiny_image_checkpoints[family])
    labels = (lambda n: [3] * n) if sampler.labels else (lambda n: None)
    alone = next(iter(sampler.sample([5], labels(1)))).images
    again = next(iter(sampler.sample([5], labels(1)))).images
    batched = next(iter(sampler.sample([4, 5, 6], labels(3)))).images
    assert alone.shape == (1, 8, 8) and alone.dtype == np.float32
    assert np.array_equal(alone, again)
    np.testing.assert_allclose(batched[1], alone[0], atol=1e-5)
    assert alone.min() >= 0.0 and alone.max() <= 1.0


def test_a_latent_walk_runs_from_one_seed_to_the_other(tiny_image_checkpoints: dict[str, Path]) -> None:
    """A walk's first and last frames are the two seeds' samples; it yields ``frames`` frames, the last final."""
    sampler = open_sampler(tiny_image_checkpoints["vae"])
    frames = list(sampler.walk([(1, 2)], 6))
    assert [f.index for f in frames] == list(range(6))
    assert [f.final for f in frames] == [False] * 5 + [True]
    np.testing.assert_allclose(frames[0].images, next(iter(sampler.sample([1]))).images, atol=1e-5)
    np.testing.assert_allclose(frames[-1].images, next(iter(sampler.sample([2]))).images, atol=1e-5)


def test_a_gibbs_chain_is_the_same_alone_or_batched(tiny_image_checkpoints: dict[str, Path]) -> None:
    """Chain 9's frames are the same run alone or beside two others, step after step."""
    sampler = open_sampler(tiny_image_checkpoints["rbm"])
    assert isinstance(sampler, GibbsSampler)
    alone = [f.images[0] for f in sampler.chains([9], 30)]
    batched = [f.images[1] for f in sampler.chains([8, 9, 10], 30)]
    assert len(alone) == 30
    for a, b in zip(alone, batched, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.sample([]), "seeds: give 1 to 64 seeds, got 0"),
        (lambda s: s.sample([-1], [0]), "seeds: each seed must be an integer in [0, 2**63), got -1"),
        (lambda s: s.sample([1]), "labels: the dcgan is class-conditional: give one label per seed"),
        (lambda s: s.sample([1], [10]), "labels: must be an integer in [0, 9], got 10"),
        (lambda s: s.walk([(1, 2)], 1, [0]), "frames: must be an integer in [2, 1000], got 1"),
    ],
)
def test_bad_knobs_are_named(tiny_image_checkpoints: dict[str, Path], call: object, message: str) -> None:
    """A bad seed, label or frame count raises InvalidArgument naming the knob."""
    sampler = open_sampler(tiny_image_checkpoints["dcgan"])
    with pytest.raises(InvalidArgument) as info:
        list(call(sampler))  # type: ignore[operator]
    assert str(info.value) == message


def test_an_unconditional_model_refuses_labels(tiny_image_checkpoints: dict[str, Path]) -> None:
    """Labels for the VAE are refused by name."""
    with pytest.raises(InvalidArgument) as info:
        list(open_sampler(tiny_image_checkpoints["vae"]).sample([1], [0]))
    assert str(info.value) == "labels: the vae is unconditional: give no labels"


def _dream_net() -> Evaluator:
    torch.manual_seed(0)
    return Evaluator(EvaluatorConfig(channels=4, hidden=16)).eval()


@pytest.mark.parametrize(
    "settings",
    [DreamSettings(layer="block2", octaves=1, size=28), DreamSettings(layer="logits", target=3, octaves=2, size=40)],
    ids=["layer", "class"],
)
def test_deep_dream_steps_raise_the_chosen_activation(settings: DreamSettings) -> None:
    """After the steps the objective is higher than on the photo it started from."""
    dream = DeepDream(_dream_net())
    start = np.random.default_rng(0).random((2, settings.size, settings.size), dtype=np.float32)
    frames = list(dream.dream(start, [1, 2], settings))
    assert len(frames) == settings.steps * settings.octaves and frames[-1].final
    before = dream.objective(torch.from_numpy(start), settings)
    after = dream.objective(torch.from_numpy(frames[-1].images), settings)
    assert bool((after > before).all())


def test_deep_dream_is_the_same_alone_or_batched() -> None:
    """An image's dream depends on its seed only, not on the batch beside it."""
    dream = DeepDream(_dream_net())
    settings = DreamSettings(octaves=2, steps=3, size=32)
    photos = np.random.default_rng(1).random((2, 32, 32), dtype=np.float32)
    alone = list(dream.dream(photos[1:], [7], settings))[-1].images[0]
    batched = list(dream.dream(photos, [6, 7], settings))[-1].images[1]
    np.testing.assert_allclose(alone, batched, atol=1e-4)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (DreamSettings(layer="block9"), "layer: must be one of block1, block2, hidden, logits, got 'block9'"),
        (DreamSettings(layer="logits"), "target: layer logits needs a target class"),
        (DreamSettings(layer="block1", channel=4), "channel: must be an integer in [0, 3], got 4"),
        (DreamSettings(step_size=0), "step_size: must be in (0, 1], got 0"),
    ],
)
def test_bad_dream_settings_are_named(settings: DreamSettings, message: str) -> None:
    """Deep Dream's knobs are checked before any step."""
    with pytest.raises(InvalidArgument) as info:
        list(DeepDream(_dream_net()).dream(np.zeros((1, 28, 28), np.float32), [0], settings))
    assert str(info.value) == message


def test_open_sampler_picks_the_family(tiny_image_checkpoints: dict[str, Path]) -> None:
    """A checkpoint opens as the sampler of its family."""
    assert isinstance(open_sampler(tiny_image_checkpoints["evaluator"]), DeepDream)
    assert isinstance(open_sampler(tiny_image_checkpoints["rbm"]), GibbsSampler)
    model, _ = load_image_model(tiny_image_checkpoints["dcgan"])
    assert open_sampler(tiny_image_checkpoints["dcgan"]).info.labels == tuple(str(d) for d in range(10))
    assert isinstance(LatentSampler(model), LatentSampler)
