"""Export fixtures: one export of every model to every format, float and int8, shared by the session.

The digits CNN is the committed default checkpoint (the int8 checks need a well-trained classifier); the text step
comes from the tiny text checkpoint, checked on the tiny corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from export.pipeline import ExportOptions, export_models

DIGITS_CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "digits" / "digits_cnn.safetensors"


@dataclass
class Exported:
    out: Path
    manifest: dict[str, Any]
    options: ExportOptions


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_text_checkpoint: Path, tiny_corpus: Path) -> Exported:
    """digits and text_step as ONNX and TFLite, float32 and int8 (about 15 seconds)."""
    opts = ExportOptions(
        out=tmp_path_factory.mktemp("export"),
        models=("digits", "text_step"),
        formats=("onnx", "tflite"),
        int8=True,
        digits_checkpoint=DIGITS_CHECKPOINT,
        text_checkpoint=tiny_text_checkpoint,
        text=tiny_corpus.read_text(encoding="utf-8"),
    )
    return Exported(opts.out, export_models(opts), opts)
