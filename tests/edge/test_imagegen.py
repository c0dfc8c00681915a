"""Image generation and judging on the device, without a model file: classes by name or index, latents from
seeds, the verdict's rule, the grid, and reading images at the model's size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_client.image import grid_size, read_image, tile
from edge_client.imagegen import ImageGenerator, RealnessJudge, latents, resolve_class
from edge_client.manifest import Model
from edge_client.runtime import TensorInfo
from server.errors import InvalidArgument

LABELS = ["T-shirt/top", "Trouser", "Ankle boot"]


class FixedRunner:
    """A runner that returns one fixed output and keeps what it was called with."""

    backend = "test"

    def __init__(self, output: np.ndarray, inputs: list[TensorInfo]) -> None:
        self.output, self.inputs, self.outputs = output, inputs, [TensorInfo("out", "float32", list(output.shape))]
        self.calls: list[tuple[np.ndarray, ...]] = []

    def __call__(self, *args: np.ndarray) -> list[np.ndarray]:
        self.calls.append(args)
        return [self.output]


def _model(entry: dict[str, Any], runner: FixedRunner) -> Model:
    return Model("m", entry, {}, Path("m.onnx"), "float32", runner)


@pytest.mark.parametrize(
    ("value", "index"), [("Trouser", 1), ("trouser", 1), (" ankle-boot ", 2), ("ANKLE_BOOT", 2), ("0", 0), ("2", 2)]
)
def test_a_class_is_a_name_or_an_index(value: str, index: int) -> None:
    """Names match with case, -, _ and spaces ignored; digits are indices."""
    assert resolve_class(LABELS, value) == index


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("hat", "--class: unknown class 'hat'; known: 0 T-shirt/top, 1 Trouser, 2 Ankle boot"),
        ("3", "--class: class index 3 is out of range; known: 0 T-shirt/top, 1 Trouser, 2 Ankle boot"),
        ("-1", "--class: class index -1 is out of range; known: 0 T-shirt/top, 1 Trouser, 2 Ankle boot"),
    ],
)
def test_an_unknown_class_lists_the_known_ones(value: str, message: str) -> None:
    """An unknown name or an index out of range names --class and lists index and name of each class."""
    with pytest.raises(InvalidArgument) as info:
        resolve_class(LABELS, value)
    assert str(info.value) == message


def test_latents_are_numpys_default_rng_normals() -> None:
    """A seed's latent is its own default_rng's first Z standard normals, alone or among others."""
    z = latents([5, 0, 5], 16)
    assert z.dtype == np.float32 and z.shape == (3, 16)
    np.testing.assert_array_equal(z[0], np.random.default_rng(5).standard_normal(16).astype(np.float32))
    np.testing.assert_array_equal(z[0], z[2])


def test_a_conditional_generator_feeds_each_seeds_latent_and_the_class() -> None:
    """One call per seed with (z (1, Z) at the manifest's latent scale, label (1,) int32); images clipped to [0, 1];
    --class is required."""
    runner = FixedRunner(np.full((1, 4, 4), 1.5, np.float32), [])
    entry = {"kind": "image_generator", "latent": 8, "latent_scale": 0.7, "image_size": 4, "labels": LABELS}
    generator = ImageGenerator(_model({**entry, "conditional": True}, runner))
    images = generator.generate([1, 2], generator.label("Ankle boot"))
    assert images.shape == (2, 4, 4) and images.max() == 1.0
    (z, label), _ = runner.calls
    np.testing.assert_array_equal(z, latents([1], 8) * np.float32(0.7))
    assert label.dtype == np.int32 and label.tolist() == [2]
    with pytest.raises(InvalidArgument, match="--class: m is class-conditional: give one of 0 T-shirt/top"):
        generator.label(None)


def test_an_unconditional_generator_refuses_a_class() -> None:
    """The VAE's decoder takes z alone; --class is refused naming it."""
    runner = FixedRunner(np.zeros((1, 4, 4), np.float32), [])
    entry = {"kind": "image_generator", "latent": 8, "image_size": 4, "labels": [], "conditional": False}
    generator = ImageGenerator(_model(entry, runner))
    generator.generate([0], generator.label(None))
    assert len(runner.calls[0]) == 1
    with pytest.raises(InvalidArgument, match="--class: m is unconditional: give no --class"):
        generator.label("Trouser")


def test_the_verdict_reads_one_class_or_the_mean() -> None:
    """Under a class: that logit's sigmoid; without: the mean logit's; the score is the shown verdict's."""
    logits = np.array([[2.0, -1.0, -4.0]], np.float32)  # mean -1
    judge = RealnessJudge(
        _model({"kind": "image_discriminator", "image_size": 4, "labels": LABELS}, FixedRunner(logits, []))
    )
    image = np.zeros((4, 4), np.float32)
    real = judge.judge(image, 0)
    assert (real.label, real.under, round(real.p_real, 4)) == ("real", "T-shirt/top", 0.8808)
    assert real.score == real.p_real
    unsure = judge.judge(image, None)
    assert (unsure.label, unsure.under, round(unsure.score, 4)) == ("generated", None, 0.7311)


def test_grid_has_white_lines_and_one_image_has_none() -> None:
    """Images tile row by row with one white pixel between and around; one image alone is itself, scaled."""
    images = np.stack([np.zeros((2, 2)), np.full((2, 2), 0.5), np.ones((2, 2))]).astype(np.float32)
    grid = tile(images, 2)
    assert grid.shape == (7, 7) and grid.dtype == np.uint8
    assert (grid[0] == 255).all() and (grid[:, 0] == 255).all()
    assert (grid[1:3, 1:3] == 0).all() and (grid[1:3, 4:6] == 128).all() and (grid[4:6, 1:3] == 255).all()
    assert (grid[4:6, 4:6] == 255).all()  # the empty cell is white
    assert tile(images[1:2], 8, scale=3).shape == (6, 6)
    assert grid_size(3, 2, 2) == (7, 7) and grid_size(1, 8, 2, scale=3) == (6, 6)  # known before generating


def test_a_scaled_image_reads_back_exactly_and_others_are_resized(tmp_path: Path) -> None:
    """A PNG of the model's side times k is averaged down to the 8-bit levels written; another size is resized."""
    from PIL import Image

    levels = np.random.default_rng(0).integers(0, 256, size=(4, 4)).astype(np.uint8)
    Image.fromarray(np.kron(levels, np.ones((3, 3), np.uint8))).save(tmp_path / "x3.png")
    np.testing.assert_allclose(read_image(tmp_path / "x3.png", 4), levels / 255, atol=1e-6)
    Image.fromarray(np.full((10, 7), 51, np.uint8)).save(tmp_path / "odd.png")
    np.testing.assert_allclose(read_image(tmp_path / "odd.png", 4), 0.2, atol=1e-6)
    np.save(tmp_path / "bad.npy", np.full((4, 4), 2.0, np.float32))
    with pytest.raises(InvalidArgument, match="values must be finite grey levels in \\[0, 1\\]"):
        read_image(tmp_path / "bad.npy", 4)
