"""The image trainers' options: the model-size flags agree with the configs; the flags are generated."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from server.image.evaluator import EvaluatorConfig
from server.image.gan import GANConfig
from server.image.options import (
    TRAIN_OPTIONS,
    DCGANTrainOptions,
    EvaluatorSizes,
    GANSizes,
    RBMSizes,
    VAESizes,
)
from server.image.rbm import RBMConfig
from server.image.vae import VAEConfig
from server.options import add_flags, from_flags


@pytest.mark.parametrize(
    ("sizes", "config"),
    [(EvaluatorSizes, EvaluatorConfig), (GANSizes, GANConfig), (VAESizes, VAEConfig), (RBMSizes, RBMConfig)],
)
def test_size_flags_default_to_the_configs_defaults(sizes: type, config: type) -> None:
    """Each size flag's default is the model config's own."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for f in dataclasses.fields(sizes):
        assert f.default == defaults[f.name], f.name


@pytest.mark.parametrize("family", sorted(TRAIN_OPTIONS))
def test_every_preset_is_valid(family: str) -> None:
    """The tiny presets and the defaults pass their own checks."""
    TRAIN_OPTIONS[family].dry_run().validate()
    TRAIN_OPTIONS[family]().validate()


def test_flags_build_the_options() -> None:
    """Flags given win over the tiny preset, which wins over the defaults."""
    parser = argparse.ArgumentParser()
    add_flags(parser, DCGANTrainOptions)
    opts = from_flags(DCGANTrainOptions, parser.parse_args(["--dry-run", "--latent", "16", "--no-conditional"]))
    assert opts.steps == 20 and opts.model == {"latent": 16, "g_channels": 8, "d_channels": 8}
    assert opts.conditional is False
