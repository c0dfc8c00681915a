"""Server fixtures: the tiny text model loaded once, text engines over it that close after each test, and a digits
CNN and a WaveNet trained in seconds (their trainers' tiny presets, ``--dry-run``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from server.audio.options import AudioTrainOptions
from server.engine.audio import AudioEngine, AudioLimits
from server.engine.backend import BACKENDS
from server.engine.text import ChatStyle, TextEngine, TextLimits
from server.text.checkpoint import load_text_model
from tests.server.helpers import started_engines

PERSONAS = ("Lear", "Kent", "Fool", "Edgar")  # the speakers of the tiny corpus
CHAT_STYLE = ChatStyle(PERSONAS, default_persona="Lear", user_speaker="Kent")


@pytest.fixture(scope="session")
def tiny_text_model(tiny_text_checkpoint: Path) -> Any:
    """(model, vocab) of the tiny checkpoint, on the CPU."""
    model, vocab, _ = load_text_model(tiny_text_checkpoint, "cpu")
    return model, vocab


@pytest.fixture(params=sorted(BACKENDS))
async def make_text_engine(
    request: pytest.FixtureRequest, tiny_text_model: Any
) -> AsyncIterator[Callable[..., TextEngine]]:
    """Build a started engine over the tiny model with the given limits (and ``shared``: a session store outside
    the process), once per backend; closed after the test."""
    model, vocab = tiny_text_model

    def build(shared: Any = None, **limits: Any) -> TextEngine:
        backend = BACKENDS[request.param](model)
        return TextEngine("tiny", backend, vocab, TextLimits(**limits), CHAT_STYLE, shared=shared)

    async with started_engines(build) as make:
        yield make


@pytest.fixture
async def make_audio_engine(tiny_audio_checkpoint: Path) -> AsyncIterator[Callable[..., AudioEngine]]:
    """Build a started engine over the tiny WaveNet with the given limits; closed after the test."""

    def build(**limits: Any) -> AudioEngine:
        return AudioEngine.from_checkpoint(tiny_audio_checkpoint, "tiny-wavenet", AudioLimits(**limits))

    async with started_engines(build) as make:
        yield make


@pytest.fixture(scope="session")
def tiny_digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real digits CNN trained for 200 steps (about two seconds on one core)."""
    from server.vision.options import DigitsTrainOptions
    from server.vision.train import train_digits

    out = tmp_path_factory.mktemp("digits") / "digits.safetensors"
    train_digits(DigitsTrainOptions.dry_run(out=out))
    return out


TINY_AUDIO_MODEL = AudioTrainOptions.DRY_RUN["model"]  # the tiny preset's WaveNet (4 small layers; tests/edge)


@pytest.fixture(scope="session")
def tiny_audio_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real WaveNet (4 small layers) trained for 30 steps on a few espeak-ng renderings (seconds on one core)."""
    from server.audio.train import AudioTrainer

    out = tmp_path_factory.mktemp("audio_model") / "tiny_wavenet.safetensors"
    AudioTrainer(AudioTrainOptions.dry_run(out=out)).train()
    return out


SERVED_IMAGE_FAMILIES = ("rbm", "dcgan", "vae", "evaluator")  # one of each sampler: chains, latents, Deep Dream


@pytest.fixture(scope="session")
def tiny_image_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family -> a checkpoint its tiny preset trained in seconds (the RBM, DCGAN and VAE on the 8x8 digits, the
    Deep Dream evaluator on 2,000 Fashion-MNIST images), each file named after its family."""
    from server.image import train_evaluator, train_gan, train_rbm, train_vae
    from server.image.options import TRAIN_OPTIONS

    runners = {
        "evaluator": train_evaluator.train_evaluator,
        "dcgan": train_gan.train_dcgan,
        "vae": train_vae.train_vae,
        "rbm": train_rbm.train_rbm,
    }
    folder = tmp_path_factory.mktemp("image_models")
    paths = {}
    for family in SERVED_IMAGE_FAMILIES:
        paths[family] = folder / f"{family}.safetensors"
        runners[family](TRAIN_OPTIONS[family].dry_run(out=paths[family]))
    return paths
