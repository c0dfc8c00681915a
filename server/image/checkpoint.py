"""Save and load the image models: weights in safetensors, the config that rebuilds the module and what produced
it in the header (:mod:`server.checkpoint`). One ``kind`` per family."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from server.checkpoint import load_checkpoint, read_meta, rebuilding, save_checkpoint
from server.errors import CheckpointError
from server.image.evaluator import Evaluator, EvaluatorConfig
from server.image.gan import DCGAN, GANConfig
from server.image.rbm import BernoulliRBM, RBMConfig
from server.image.vae import VAEGAN, ConvVAE, VAEConfig, VAEGANConfig

# kind -> how its module is built from the saved config
BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "image_evaluator": lambda c: Evaluator(EvaluatorConfig(**c)),
    "dcgan": lambda c: DCGAN(GANConfig(**c)),
    "conv_vae": lambda c: ConvVAE(VAEConfig(**c)),
    "vae_gan": lambda c: VAEGAN(VAEGANConfig.from_dict(c)),
    "rbm": lambda c: BernoulliRBM(RBMConfig(**c)),
}
FAMILY_KINDS = {"evaluator": "image_evaluator", "dcgan": "dcgan", "vae": "conv_vae", "vaegan": "vae_gan", "rbm": "rbm"}


def kind_of(model: nn.Module) -> str:
    for kind, cls in (
        ("image_evaluator", Evaluator),
        ("dcgan", DCGAN),
        ("conv_vae", ConvVAE),
        ("vae_gan", VAEGAN),
        ("rbm", BernoulliRBM),
    ):
        if isinstance(model, cls):
            return kind
    raise TypeError(f"not an image model: {type(model).__name__}")


def save_image_model(path: Path, model: nn.Module, info: dict[str, Any]) -> None:
    """``info``: the data, the training record, the metrics, the labels; kind and config are added here."""
    config = cast(Any, model).config.to_dict()  # every image model keeps its config dataclass
    save_checkpoint(path, model.state_dict(), {"kind": kind_of(model), "config": config, **info})


def load_image_model(
    path: Path, kind: str | None = None, device: torch.device | str = "cpu"
) -> tuple[Any, dict[str, Any]]:
    """The model (eval mode, on ``device``) and metadata of an image checkpoint, of ``kind`` if given (else of
    whichever image kind it holds)."""
    if kind is None:
        kind = read_meta(path).get("kind")
        if kind not in BUILDERS:
            raise CheckpointError(f"checkpoint {path} holds a {kind!r} model, not an image model")
    state, meta = load_checkpoint(path, kind)
    with rebuilding(path, kind):
        model = BUILDERS[kind](meta["config"])
        model.load_state_dict(state)
    return model.to(device).eval(), meta
