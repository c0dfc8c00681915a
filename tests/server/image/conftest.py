"""Image fixtures: every image family trained with its tiny preset (``--dry-run``: seconds on one core), once per
session."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.image.options import TRAIN_OPTIONS


def train_tiny(family: str, out: Path) -> Path:
    """Train ``family``'s tiny preset into ``out``."""
    from server.image import train_evaluator, train_gan, train_rbm, train_vae

    runners = {
        "evaluator": train_evaluator.train_evaluator,
        "dcgan": train_gan.train_dcgan,
        "vae": train_vae.train_vae,
        "vaegan": train_vae.train_vaegan,
        "rbm": train_rbm.train_rbm,
    }
    runners[family](TRAIN_OPTIONS[family].dry_run(out=out))
    return out


@pytest.fixture(scope="session")
def tiny_image_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family -> a checkpoint its tiny preset trained (the generators on the 8x8 digits, the evaluator on 2,000
    Fashion-MNIST images)."""
    folder = tmp_path_factory.mktemp("image")
    return {family: train_tiny(family, folder / f"{family}.safetensors") for family in TRAIN_OPTIONS}
