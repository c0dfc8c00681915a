"""What to export for the image models: the generators (the DCGAN's generator, the VAE's decoder), whose int8 files
are checked by a judge's labels of their images, and the DCGAN's discriminator, checked by its real-or-generated
verdicts. The inputs follow :mod:`export.specs`: tuples of NumPy arrays in the module's input order, batch 1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.specs import ExportSpec, Inputs, batches_of_one
from server.errors import InvalidArgument
from server.image.sampling import LATENT_SCALE, seed_latents

IMAGE_SAMPLES = 1000  # the evaluation set of an image model: seeds (and classes) of a generator, images of a critic
PIXELS = "float32 in [0, 1], 0 black and 1 white (the data's light garment or stroke on black), row-major (H, W)"
VERDICTS = ["real", "generated"]


def _judge_labeler(judge_path: Path) -> Callable[[list[list[np.ndarray]]], np.ndarray]:
    """The judge's label of each generated image (the first output, (1, H, W))."""
    from server.image.quality import load_judge

    judge = load_judge(judge_path)

    def labeler(outputs: list[list[np.ndarray]]) -> np.ndarray:
        images = np.concatenate([out[0] for out in outputs]).astype(np.float32)  # (N, H, W)
        return np.asarray(judge.probs(np.clip(images, 0.0, 1.0)).argmax(1), dtype=np.int64)

    return labeler


def _latent_inputs(
    latent: int, scale: float, classes: int, seeds: range | list[int], asked: np.ndarray | None
) -> list[Inputs]:
    z = seed_latents(seeds, latent, scale)
    if not classes:
        return batches_of_one(z)
    assert asked is not None
    return [(row[None], np.asarray([k], dtype=np.int32)) for row, k in zip(z, asked, strict=True)]


def _image_generator_spec(
    name: str,
    checkpoint: Path,
    module: nn.Module,
    family: str,
    image_size: int,
    latent: int,
    latent_scale: float,
    labels: list[str],
    judge: Path,
    seed: int,
    n_random: int,
    n_samples: int,
    n_calibration: int,
    output: str,
    float_scope: str | None = None,
) -> ExportSpec:
    """A latent generator: seeds 0..n_samples-1 (seed ``s`` asking class ``s mod K`` of a conditional one, as
    :func:`server.image.sampling.sample_many` does) are the evaluation set; the judge's label of each image is its
    label; latents of other seeds (drawn with ``seed``), scaled by 0.5 to 2, are the random inputs; more calibrate."""
    classes = len(labels)
    seeds = range(n_samples)
    asked = np.asarray([s % classes for s in seeds], dtype=np.int64) if classes else None
    rng = np.random.default_rng(seed)

    def drawn(count: int) -> list[Inputs]:
        z = rng.standard_normal((count, latent)).astype(np.float32)
        z *= rng.uniform(0.5, 2.0, size=(count, 1)).astype(np.float32)
        k = rng.integers(0, max(classes, 1), size=count).astype(np.int32)
        return [(z[i : i + 1], k[i : i + 1]) if classes else (z[i : i + 1],) for i in range(count)]

    # calibration: other seeds' latents (beyond any evaluation seed), every class in turn
    calib_seeds = [2**32 + seed * n_calibration + i for i in range(n_calibration)]
    calib_asked = np.asarray([i % classes for i in range(n_calibration)], dtype=np.int64) if classes else None
    return ExportSpec(
        name=name,
        kind="image_generator",
        checkpoint=checkpoint,
        module=module.eval(),
        input_names=("z", "label") if classes else ("z",),
        output_names=("images",),
        real_inputs=_latent_inputs(latent, latent_scale, classes, seeds, asked),
        random_inputs=drawn(n_random),
        targets=asked,
        calibration=_latent_inputs(latent, latent_scale, classes, calib_seeds, calib_asked),
        labeler=_judge_labeler(judge),
        float_scope=float_scope,
        float_tail="to_pixels",
        calibration_extremes=True,
        info={
            "family": family,
            "conditional": bool(classes),
            "labels": labels,
            "latent": latent,
            "latent_scale": latent_scale,
            "image_size": image_size,
            "pixels": PIXELS,
            "latent_noise": "z: np.random.default_rng(seed).standard_normal(latent) as float32 times latent_scale, "
            "one generator per image (the server's LatentSampler draws the same: the same seed and class give the "
            "same image)",
            "input": f"z: (1, {latent}) float32 standard normal latent"
            + ("; label: (1,) int32 class index into labels" if classes else ""),
            "output": f"images: (1, {image_size}, {image_size}) {output}",
            "judge": {"file": judge.name, "evaluated": n_samples},
            "check": "int8 files: the judge's label of each image of the evaluation set's seeds"
            + (" and classes" if classes else "")
            + " agrees with its label of torch's image",
        },
    )


def dcgan_generator_spec(
    checkpoint: Path,
    judge: Path | None = None,
    seed: int = 0,
    n_random: int = 32,
    n_samples: int = IMAGE_SAMPLES,
    n_calibration: int = 200,
) -> ExportSpec:
    """The DCGAN's generator (``z``, and ``label`` for a class-conditional one -> ``images``), judged by the
    evaluator of its data (``judge``; default: the committed one of the checkpoint's data set)."""
    from export.image_graphs import ConditionalGenerator, LatentDecoder
    from server.image.checkpoint import load_image_model

    model, meta = load_image_model(checkpoint, "dcgan")
    config = model.config
    labels = [str(v) for v in meta.get("labels", [])] if config.classes else []
    if config.classes and len(labels) != config.classes:
        labels = [str(i) for i in range(config.classes)]
    graph = ConditionalGenerator(model.generator) if config.classes else LatentDecoder(model.generator)
    return _image_generator_spec(
        "dcgan_generator",
        checkpoint,
        graph,
        "dcgan",
        config.image_size,
        config.latent,
        LATENT_SCALE["dcgan"],
        labels,
        _judge_path(judge, meta),
        seed,
        n_random,
        n_samples,
        n_calibration,
        "in [0, 1]: the generator's tanh mapped to [0, 1]",
        # Static int8 of every layer changed the judge's label of 2.5% (ONNX) and 2.9% (TFLite) of the committed
        # DCGAN's 1,000 images; with its last transposed convolution float (to_pixels), 0.9% in both.
    )


def vae_decoder_spec(
    checkpoint: Path,
    judge: Path | None = None,
    seed: int = 0,
    n_random: int = 32,
    n_samples: int = IMAGE_SAMPLES,
    n_calibration: int = 200,
) -> ExportSpec:
    """The VAE's decoder (``z`` -> ``images``, the pixels' Bernoulli means); a VAE-GAN checkpoint gives its VAE's.
    Unconditional: the judge's label of each image is the label the int8 check compares."""
    from export.image_graphs import LatentDecoder
    from server.image.checkpoint import load_image_model
    from server.image.vae import VAEGAN

    model, meta = load_image_model(checkpoint)
    vae = model.vae if isinstance(model, VAEGAN) else model
    if not hasattr(vae, "decode"):
        raise InvalidArgument("vae_checkpoint", f"{checkpoint} holds a {meta.get('kind')!r} model, not a VAE")
    family = "vaegan" if isinstance(model, VAEGAN) else "vae"
    return _image_generator_spec(
        "vae_decoder",
        checkpoint,
        LatentDecoder(vae),
        family,
        vae.config.image_size,
        vae.config.latent,
        LATENT_SCALE[family],
        [],
        _judge_path(judge, meta),
        seed,
        n_random,
        n_samples,
        n_calibration,
        "in [0, 1]: each pixel's Bernoulli mean (the model was trained on binarised images)",
        # The VAE's prior samples are blurry and its judge undecided on many (top two classes within 0.05 on 12%
        # of the 1,000; rounding to 8 bits alone changes 0.5% of its labels): with every layer int8 but the last
        # 2.6% changed (ONNX), with the transposed convolutions float too 1.5%, with only the large linear layer
        # int8 (three quarters of the weights) 0.9%.
        float_scope="from_latent",
    )


def _judge_path(judge: Path | None, meta: dict[str, Any]) -> Path:
    from server.errors import ExportError
    from server.image.quality import resolve_judge

    dataset = meta.get("data", {}).get("dataset", "fashion")
    path = resolve_judge(judge, dataset)
    if path is None:
        raise ExportError(f"no judge of {dataset} images to check the int8 files with: give one (image_judge)")
    return path


def dcgan_discriminator_spec(
    checkpoint: Path,
    seed: int = 0,
    n_random: int = 32,
    n_samples: int = IMAGE_SAMPLES,
    n_calibration: int = 200,
) -> ExportSpec:
    """The DCGAN's discriminator, ``images`` -> ``logits`` (1, K), its realness logit under each class. The
    evaluation set: half real test images of its data (a fixed subset), half its generator's images (seeds 0, 1,
    ..., seed ``s`` asking class ``s mod K``); an image's label is real (0) where its logit under its own class (the
    true or the asked one) is positive, else generated (1). Training images and generated images of other seeds
    calibrate; random inputs are uniform noise images."""
    from export.image_graphs import RealnessGraph
    from server.image.checkpoint import load_image_model
    from server.image.data import fixed_subset, load_images

    model, meta = load_image_model(checkpoint, "dcgan")
    config = model.config
    classes = config.classes
    labels = [str(v) for v in meta.get("labels", [])] if classes else []
    if classes and len(labels) != classes:
        labels = [str(i) for i in range(classes)]
    dataset = meta["data"]["dataset"]
    n_real = n_samples // 2
    test = load_images(dataset, "test")
    pick = fixed_subset(len(test), n_real, seed)
    fake_seeds = range(n_samples - n_real)
    fake_asked = np.asarray([s % max(classes, 1) for s in fake_seeds], dtype=np.int64)

    @torch.no_grad()
    def generate(seeds: range | list[int], asked: np.ndarray) -> np.ndarray:
        z = torch.from_numpy(seed_latents(seeds, config.latent, LATENT_SCALE["dcgan"]))  # the served fakes
        lab = torch.from_numpy(asked) if classes else None
        return model.generator(z, lab).numpy()  # (N, H, W)

    images = np.concatenate([test.images[pick], generate(fake_seeds, fake_asked)]).astype(np.float32)
    own = np.concatenate([test.labels[pick] if classes else np.zeros(n_real, np.int64), fake_asked])
    targets = np.concatenate([np.zeros(n_real, np.int64), np.ones(len(fake_seeds), np.int64)])
    rng = np.random.default_rng(seed)
    train = load_images(dataset, "train", limit=10000)
    half = n_calibration // 2
    calib_seeds = [2**32 + seed * n_calibration + i for i in range(n_calibration - half)]
    calib_asked = np.asarray([i % max(classes, 1) for i in range(len(calib_seeds))], dtype=np.int64)
    calibration = np.concatenate(
        [train.images[rng.permutation(len(train))[:half]], generate(calib_seeds, calib_asked)]
    ).astype(np.float32)
    side = config.image_size
    random_images = rng.uniform(0, 1, size=(n_random, 1, side, side)).astype(np.float32)

    def labeler(outputs: list[list[np.ndarray]]) -> np.ndarray:
        logits = np.concatenate([out[0] for out in outputs])  # (N, K)
        return (logits[np.arange(len(logits)), own if classes else 0] <= 0).astype(np.int64)

    return ExportSpec(
        name="dcgan_discriminator",
        kind="image_discriminator",
        checkpoint=checkpoint,
        module=RealnessGraph(model.discriminator),
        input_names=("images",),
        output_names=("logits",),
        real_inputs=batches_of_one(images),
        random_inputs=[(x,) for x in random_images],
        targets=targets,
        calibration=batches_of_one(calibration),
        # The head (score and class embeddings, one product) stays float; the convolutions are int8.
        float_tail="head",
        calibration_extremes=True,
        # A spectrally normalised critic near equilibrium has small logits: the committed DCGAN's median |logit| is
        # 0.22 and a tenth lie within 0.04 of 0, while int8 activations move them by 0.014 on average. Its static
        # int8 files flipped the verdict of 3.0% (ONNX) and 3.6% (TFLite) of 1,000 images, every one with a torch
        # logit within 0.029 of 0 (P(real) 0.49 to 0.51): undecided images, not wrong ones.
        int8_agreement=0.95,
        labeler=labeler,
        info={
            "family": "dcgan",
            "conditional": bool(classes),
            "labels": labels,
            "verdicts": VERDICTS,
            "image_size": side,
            "pixels": PIXELS,
            "input": f"images: (1, {side}, {side}) {PIXELS}",
            "output": f"logits: (1, {max(classes, 1)}) float32, the realness logit under each class (labels)"
            if classes
            else "logits: (1, 1) float32, the realness logit",
            "verdict": "real where the logit (under the image's class, or the largest one when the class is "
            "unknown) is positive, else generated; P(real) = sigmoid(logit)",
            "evaluation": f"{n_real} {dataset} test images and {len(fake_seeds)} of its generator's images; an "
            "image is judged under its own class (true or asked)",
        },
    )
