"""The image generators and the GAN discriminator, exported: float files match torch, int8 generators keep the
judge's labels of their images, int8 discriminators keep torch's verdicts, and the manifest says what the edge needs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.image_specs import dcgan_discriminator_spec, dcgan_generator_spec, vae_decoder_spec
from export.parity import max_abs_difference
from export.runtime import open_runner
from export.specs import ExportSpec
from server.image.checkpoint import load_image_model
from server.image.data import FASHION_LABELS

from .conftest import DCGAN_CHECKPOINT, VAE_CHECKPOINT, Exported

GENERATORS = [("dcgan_generator", "onnx"), ("dcgan_generator", "tflite"), ("vae_decoder", "onnx")]


def _generator_spec(name: str, seed: int = 0, samples: int = 200) -> ExportSpec:
    if name == "vae_decoder":
        return vae_decoder_spec(VAE_CHECKPOINT, seed=seed, n_samples=samples)
    return dcgan_generator_spec(DCGAN_CHECKPOINT, seed=seed, n_samples=samples)


@pytest.mark.parametrize(("name", "fmt"), GENERATORS)
def test_float_generators_match_torch_on_fresh_latents(exported_images: Exported, name: str, fmt: str) -> None:
    """Float generator files give torch's images to 1e-4 on latents of another seed (0.5 to 2 times typical) and
    on the first seeds' latents."""
    spec = _generator_spec(name, seed=7, samples=20)
    runner = open_runner(fmt, exported_images.out / f"{name}.{fmt}", (spec.input_names, spec.output_names))
    assert max_abs_difference(spec, runner, spec.random_inputs) <= 1e-4
    assert max_abs_difference(spec, runner, spec.real_inputs) <= 1e-4


@pytest.mark.parametrize(("name", "fmt"), GENERATORS)
def test_int8_generator_images_keep_the_judges_labels(exported_images: Exported, name: str, fmt: str) -> None:
    """The evaluator labels at least 99% of the int8 file's images of the fixed seeds (and classes) as it labels
    torch's; the manifest records that agreement."""
    spec = _generator_spec(name)
    runner = open_runner(fmt, exported_images.out / f"{name}.int8.{fmt}", (spec.input_names, spec.output_names))
    got = spec.labels_of([runner(*args) for args in spec.real_inputs])
    want = spec.labels_of([spec.reference(args) for args in spec.real_inputs])
    assert np.mean(got == want) >= 0.99
    parity = exported_images.manifest["models"][name]["files"][fmt]["int8"]["parity"]
    assert parity["top_label_agreement"] == pytest.approx(float(np.mean(got == want)))


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_discriminator_files_judge_under_every_class(exported_images: Exported, fmt: str) -> None:
    """The float file's logits are torch's discriminator's under each class, to 1e-4; the int8 file gives torch's
    verdict on at least 95% of the evaluation images, flipping only images torch is unsure of (|logit| < 0.05)."""
    spec = dcgan_discriminator_spec(DCGAN_CHECKPOINT, n_samples=100)
    model, _ = load_image_model(DCGAN_CHECKPOINT, "dcgan")
    images = np.concatenate([args[0] for args in spec.real_inputs])  # (100, 28, 28)
    with torch.no_grad():
        x = torch.from_numpy(images)
        want = np.stack([model.discriminator(x, torch.full((len(x),), k)).numpy() for k in range(10)], 1)  # (N, 10)
    runner = open_runner(fmt, exported_images.out / f"dcgan_discriminator.{fmt}", (spec.input_names, spec.output_names))
    got = np.concatenate([runner(x[None])[0] for x in images])
    assert np.abs(got - want).max() <= 1e-4
    int8 = open_runner(fmt, exported_images.out / f"dcgan_discriminator.int8.{fmt}", (("images",), ("logits",)))
    flipped = (np.concatenate([int8(x[None])[0] for x in images]) > 0) != (want > 0)  # every class's verdict
    assert flipped.mean() <= 0.05
    assert np.abs(want[flipped]).max(initial=0.0) < 0.05


def test_generators_are_described(exported_images: Exported) -> None:
    """A generator's entry gives its kind, latent size, class names, image size and pixel convention; its files
    take z (1, Z) (and label (1,) int32) and return images (1, H, W) float32."""
    models = exported_images.manifest["models"]
    gan, vae = models["dcgan_generator"], models["vae_decoder"]
    assert (gan["kind"], gan["family"], gan["conditional"], gan["latent"], gan["image_size"]) == (
        "image_generator", "dcgan", True, 64, 28,
    )  # fmt: skip
    assert gan["labels"] == list(FASHION_LABELS)
    assert (vae["kind"], vae["family"], vae["conditional"], vae["labels"], vae["latent"]) == (
        "image_generator", "vae", False, [], 32,
    )  # fmt: skip
    assert "0 black and 1 white" in gan["pixels"] and "default_rng(seed)" in gan["latent_noise"]
    for fmt in ("onnx", "tflite"):
        for precision in ("float32", "int8"):
            entry = gan["files"][fmt][precision]
            assert [(t["name"], t["shape"]) for t in entry["inputs"]] == [("z", [1, 64]), ("label", [1])]
            assert entry["inputs"][1]["dtype"] == "int32"
            assert entry["outputs"] == [{"name": "images", "dtype": "float32", "shape": [1, 28, 28]}]
    assert vae["files"]["onnx"]["float32"]["inputs"] == [{"name": "z", "dtype": "float32", "shape": [1, 32]}]
    assert gan["torch"]["evaluated"] == 200 and gan["torch"]["accuracy"] > 0.7  # the asked class, recognised


def test_discriminator_is_described(exported_images: Exported) -> None:
    """The discriminator's entry gives its class names, the verdicts and the image size; its files take images
    (1, 28, 28) and return logits (1, 10) float32 (the int8 files too: the head stays float)."""
    disc = exported_images.manifest["models"]["dcgan_discriminator"]
    assert (disc["kind"], disc["conditional"], disc["verdicts"], disc["image_size"]) == (
        "image_discriminator", True, ["real", "generated"], 28,
    )  # fmt: skip
    assert disc["labels"] == list(FASHION_LABELS)
    assert disc["int8_top_label_agreement_needed"] == 0.95
    for fmt in ("onnx", "tflite"):
        for precision in ("float32", "int8"):
            entry = disc["files"][fmt][precision]
            assert [(t["name"], t["shape"]) for t in entry["inputs"]] == [("images", [1, 28, 28])]
            assert entry["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [1, 10]}]
    assert "head and after" in disc["files"]["onnx"]["int8"]["method"]


def test_latents_are_the_servers_and_the_edges() -> None:
    """The server's sampler and the edge client draw the same latent from a seed: its standard normals times the
    family's latent scale (0.7 for the DCGAN), which the manifest carries."""
    from edge_client.imagegen import latents
    from server.image.sampling import open_sampler

    seeds = [0, 1, 12345, 2**63 - 1]
    sampler = open_sampler(DCGAN_CHECKPOINT)
    assert sampler.latent_scale == 0.7
    normals = np.stack([np.random.default_rng(s).standard_normal(64).astype(np.float32) for s in seeds])
    np.testing.assert_array_equal(sampler.latents(seeds), normals * np.float32(0.7))
    np.testing.assert_array_equal(latents(seeds, 64, sampler.latent_scale), sampler.latents(seeds))
