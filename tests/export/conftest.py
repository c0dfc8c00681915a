"""Export fixtures: one export of every model to every format, float and int8, shared by the session.

The digits CNN, the keyword spotter and the image models are the committed default checkpoints (the int8 checks
need well-trained models: a classifier's labels, a generator's images that its judge recognises); the text steps
come from the tiny text checkpoint and the text discriminator is the tiny one, checked on the tiny corpus's
held-out part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from export.pipeline import MANIFEST, ExportOptions, export_models
from server.data.shakespeare import load_corpus
from tests.conftest import textdisc_cache

MODELS = Path(__file__).resolve().parents[2] / "models"
DIGITS_CHECKPOINT = MODELS / "digits" / "digits_cnn.safetensors"
KWS_CHECKPOINT = MODELS / "kws" / "kws_dscnn.safetensors"
DCGAN_CHECKPOINT = MODELS / "image" / "dcgan.safetensors"
VAE_CHECKPOINT = MODELS / "image" / "vae.safetensors"
IMAGE_SAMPLES = 200  # the image models' evaluation set here: 200 seeds; 100 test and 100 generated images


@dataclass
class Exported:
    out: Path
    manifest: dict[str, Any]
    options: ExportOptions


@pytest.fixture(scope="session")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_text_checkpoint: Path,
    tiny_corpus: Path,
    tiny_textdisc_checkpoint: Path,
) -> Exported:
    """digits, text_step, text_small_step (the tiny LSTM again) and textdisc as ONNX and TFLite, float32 and int8
    (about 40 seconds). textdisc's samples come from the cache its fixture filled."""
    opts = ExportOptions(
        out=tmp_path_factory.mktemp("export"),
        models=("digits", "text_step", "text_small_step", "textdisc"),
        formats=("onnx", "tflite"),
        int8=True,
        digits_checkpoint=DIGITS_CHECKPOINT,
        text_checkpoint=tiny_text_checkpoint,
        small_text_checkpoint=tiny_text_checkpoint,
        textdisc_checkpoint=tiny_textdisc_checkpoint,
        text=load_corpus(tiny_corpus).valid_text,
    )
    with textdisc_cache(tiny_textdisc_checkpoint):
        return Exported(opts.out, export_models(opts), opts)


@pytest.fixture(scope="session")
def exported_kws(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The committed keyword spotter as ONNX and TFLite, float32 and int8, checked on 20 held-out clips of each
    label (the int8 checks need a well-trained classifier; with 10, one near tie that int8 tips is 0.8% of the
    99% top-label agreement)."""
    from server.kws.data import KWSDataConfig

    opts = ExportOptions(
        out=tmp_path_factory.mktemp("export_kws"),
        models=("kws",),
        formats=("onnx", "tflite"),
        int8=True,
        kws_checkpoint=KWS_CHECKPOINT,
        kws_data=KWSDataConfig(per_number=10, unknown_words=40, heldout_per_label=20),
        kws_test_per_label=0,  # the held-out set: these sizes are not the checkpoint's, so its test set would not be
    )
    return Exported(opts.out, export_models(opts), opts)


@pytest.fixture(scope="session")
def exported_images(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The committed DCGAN's generator and discriminator as ONNX and TFLite, float32 and int8, and the committed
    VAE's decoder as ONNX float32 and int8 (its TFLite path is the generator's), each checked on IMAGE_SAMPLES
    (about 25 seconds)."""
    opts = ExportOptions(
        out=tmp_path_factory.mktemp("export_images"),
        models=("dcgan_generator", "dcgan_discriminator"),
        formats=("onnx", "tflite"),
        int8=True,
        dcgan_checkpoint=DCGAN_CHECKPOINT,
        vae_checkpoint=VAE_CHECKPOINT,
        image_samples=IMAGE_SAMPLES,
    )
    vae = export_models(replace(opts, models=("vae_decoder",), formats=("onnx",)))["models"]
    manifest = export_models(opts)  # its manifest.json, rewritten with the VAE's entry too
    manifest["models"].update(vae)
    (opts.out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Exported(opts.out, manifest, replace(opts, models=(*opts.models, "vae_decoder")))
