"""The default model checkpoints: the committed ones under ``models/``, and the variables that name others.

The one place that knows where each model kind is read from when no path is given. ``antiphon serve`` reads the
variables through :class:`server.settings.ServeSettings` (its ``--NAME-checkpoint`` options), the other commands
through :func:`default_checkpoint`; both fall back to the files here. Torch-free.

    kind        default                                      variable
    text        models/text/char_lstm.safetensors            ANTIPHON_TEXT_CHECKPOINT
    audio       models/audio/wavenet.safetensors             ANTIPHON_AUDIO_CHECKPOINT
    digits      models/digits/digits_cnn.safetensors         ANTIPHON_DIGITS_CHECKPOINT
    textdisc    models/textdisc/text_disc.safetensors        ANTIPHON_TEXTDISC_CHECKPOINT
    kws         models/kws/kws_dscnn.safetensors             ANTIPHON_KWS_CHECKPOINT
    small text  models/text/char_lstm_small.safetensors      (none: only ``antiphon export`` reads it)
    image       every *.safetensors in models/image/           ANTIPHON_IMAGE_CHECKPOINTS (comma-separated)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULT_TEXT_CHECKPOINT = REPO_MODELS / "text" / "char_lstm.safetensors"
DEFAULT_SMALL_TEXT_CHECKPOINT = REPO_MODELS / "text" / "char_lstm_small.safetensors"
DEFAULT_AUDIO_CHECKPOINT = REPO_MODELS / "audio" / "wavenet.safetensors"
DEFAULT_DIGITS_CHECKPOINT = REPO_MODELS / "digits" / "digits_cnn.safetensors"
DEFAULT_TEXTDISC_CHECKPOINT = REPO_MODELS / "textdisc" / "text_disc.safetensors"
DEFAULT_KWS_CHECKPOINT = REPO_MODELS / "kws" / "kws_dscnn.safetensors"
DEFAULT_IMAGE_MODELS = REPO_MODELS / "image"  # the image models served by default: every checkpoint in it

DEFAULT_CHECKPOINTS: dict[str, Path] = {
    "text": DEFAULT_TEXT_CHECKPOINT,
    "audio": DEFAULT_AUDIO_CHECKPOINT,
    "digits": DEFAULT_DIGITS_CHECKPOINT,
    "textdisc": DEFAULT_TEXTDISC_CHECKPOINT,
    "kws": DEFAULT_KWS_CHECKPOINT,
}


def checkpoint_variable(kind: str) -> str:
    """The environment variable that names ``kind``'s checkpoint: ``ANTIPHON_TEXT_CHECKPOINT`` for text."""
    return f"ANTIPHON_{kind.upper()}_CHECKPOINT"


def default_checkpoint(kind: str, environ: Mapping[str, str] | None = None) -> Path:
    """``kind``'s checkpoint when none is named: its variable's path if set, else the committed file."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(checkpoint_variable(kind), DEFAULT_CHECKPOINTS[kind]))


def shown(path: Path) -> str:
    """A default path as help texts write it, relative to the repository: ``models/text/char_lstm.safetensors``."""
    return path.relative_to(REPO_MODELS.parent).as_posix()


def default_help(kind: str) -> str:
    """A ``--checkpoint`` help text, for text: ``default: char_lstm.safetensors in models/text (or
    $ANTIPHON_TEXT_CHECKPOINT)``."""
    path = DEFAULT_CHECKPOINTS[kind]
    return f"default: {path.name} in {shown(path.parent)} (or ${checkpoint_variable(kind)})"
