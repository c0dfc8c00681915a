"""Server fixtures: the tiny text model loaded once, text engines over it that close after each test, and a digits
CNN trained in seconds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from server.engine.backend import BACKENDS
from server.engine.text import ChatStyle, TextEngine, TextLimits
from server.text.checkpoint import load_text_model

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
    """Build a started engine over the tiny model with the given limits, once per backend; closed after the test."""
    engines: list[TextEngine] = []

    def make(**limits: Any) -> TextEngine:
        model, vocab = tiny_text_model
        backend = BACKENDS[request.param](model)
        engine = TextEngine("tiny", backend, vocab, TextLimits(**limits), CHAT_STYLE)
        engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.close()


@pytest.fixture(scope="session")
def tiny_digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real digits CNN trained for 200 steps (about two seconds on one core)."""
    from server.vision.train import DigitsTrainOptions, train_digits

    out = tmp_path_factory.mktemp("digits") / "digits.safetensors"
    train_digits(DigitsTrainOptions(out=out, steps=200, seed=0))
    return out


TINY_AUDIO_MODEL = {
    "layers": 4,
    "cycle": 2,
    "residual_channels": 8,
    "gate_channels": 8,
    "skip_channels": 8,
    "out_channels": 16,
    "cond_channels": 8,
}


@pytest.fixture(scope="session")
def tiny_audio_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real WaveNet (4 small layers) trained for 30 steps on a few espeak-ng renderings (seconds on one core)."""
    from server.audio.train import AudioTrainer, AudioTrainOptions

    out = tmp_path_factory.mktemp("audio_model") / "tiny_wavenet.safetensors"
    opts = AudioTrainOptions(
        out=out,
        steps=30,
        device="cpu",
        precision="fp32",
        batch_size=4,
        segment=800,
        lr=1e-2,
        warmup_steps=5,
        eval_every=1000,
        progress=False,
        lines=6,
        number_renderings=1,
        heldout_lines=2,
        heldout_number_renderings=0,
        model=TINY_AUDIO_MODEL,
    )
    AudioTrainer(opts).train()
    return out
