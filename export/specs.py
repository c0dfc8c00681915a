"""What to export for each model: the torch module, its example, calibration and evaluation inputs, and the labels
or vocabulary the edge needs to read its outputs.

Every input set is a list of tuples of NumPy arrays in the module's input order, batch 1 (the exported graphs have
static shapes: one image, or one token of one stream).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from server.errors import InvalidArgument
from server.kws.data import TEST_PER_LABEL

if TYPE_CHECKING:
    from server.textdisc.model import TextDiscConfig

Inputs = tuple[np.ndarray, ...]


@dataclass
class ExportSpec:
    name: str
    kind: str
    checkpoint: Path
    module: nn.Module  # eval mode
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    real_inputs: list[Inputs]  # from the data: float parity, top-label agreement and accuracy
    random_inputs: list[Inputs]  # fresh random inputs of the right range: float parity
    targets: np.ndarray | None = None  # the true label of each real input (accuracy)
    calibration: list[Inputs] | None = None  # static int8 where given, dynamic otherwise
    # A submodule (attribute name) that static int8 leaves in float: its inputs stay float32 and its weights are
    # stored as int8 (TFLite) or float (ONNX). For a front end whose activations span too wide a range for int8.
    float_scope: str | None = None
    # A submodule (attribute name) at the end of the graph that static int8 leaves in float, with every op after it
    # and float32 outputs: an image generator's last layer (``to_pixels``), whose int8 input and output move pixels
    # enough to change the judge's label of 3% of the images.
    float_tail: str | None = None
    # Static int8 leaves the ops that produce the graph's outputs in float, with float32 outputs: int8 logits
    # round near-ties to the same value and flip the top label of a model whose margins are often small.
    float_output: bool = False
    # TFLite int8 by the LiteRT quantizer's dynamic recipe (int8 weights, float activations) even where calibration
    # inputs are given (ONNX int8 stays static). For a recurrent network inside a classifier: the static recipe
    # quantizes its weights even in the float scope, and 256 steps compound their error.
    tflite_dynamic: bool = False
    # TFLite static int8: each tensor's range is its extremes over every calibration input (as onnxruntime's MinMax
    # calibration takes it) rather than the LiteRT calibrator's moving average of each input's extremes, which keeps
    # about one typical input's range. For a generator, whose latent tails drive its largest activations: the
    # average clipped the committed DCGAN's latent at 2.3 (its calibration latents reach 4) and moved pixels by 0.7.
    calibration_extremes: bool = False
    # The least top-label agreement of an int8 file with torch; None: the export's default (INT8_AGREEMENT).
    int8_agreement: float | None = None
    # The most a float file's outputs may differ from torch's; None: the export's default (FLOAT_TOLERANCE).
    float_tolerance: float | None = None
    # How outputs are read as labels (accuracy, and the int8 check): None takes the top label of the first output
    # (logits). Given, it maps the outputs of ``real_inputs``, in their order, to one label each: an image
    # generator's is the judge's label of its image, the GAN discriminator's real (0) or generated (1).
    labeler: Callable[[list[list[np.ndarray]]], np.ndarray] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # labels, vocabulary, ... for the manifest

    @property
    def sample_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(a) for a in self.real_inputs[0])

    @torch.no_grad()
    def reference(self, inputs: Inputs) -> list[np.ndarray]:
        out = self.module(*(torch.from_numpy(a) for a in inputs))
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    def labels_of(self, outputs: list[list[np.ndarray]]) -> np.ndarray:
        """One label per output of ``real_inputs`` (in their order): the labeler's, else the top label of the
        first output."""
        if self.labeler is not None:
            return np.asarray(self.labeler(outputs), dtype=np.int64)
        return np.asarray([int(np.argmax(out[0])) for out in outputs])


def digits_spec(checkpoint: Path, seed: int = 0, n_random: int = 32) -> ExportSpec:
    """The digits CNN: its recorded test split is the evaluation set, training images calibrate."""
    from server.vision.checkpoint import load_digits_model
    from server.vision.data import recorded_split
    from server.vision.model import MAX_INTENSITY

    model, meta = load_digits_model(checkpoint)
    split = recorded_split(meta["data"]["test_indices"])
    test_x, test_y = split.test
    train_x, _ = split.train
    rng = np.random.default_rng(seed)
    random_images = rng.uniform(0, MAX_INTENSITY, size=(n_random, 1, 8, 8)).astype(np.float32)
    calibration = train_x[rng.permutation(len(train_x))[:200]]
    return ExportSpec(
        name="digits",
        kind=meta["kind"],
        checkpoint=checkpoint,
        module=model,
        input_names=("images",),
        output_names=("logits",),
        real_inputs=[(x[None],) for x in test_x],
        random_inputs=[(x,) for x in random_images],
        targets=test_y,
        calibration=[(x[None],) for x in calibration],
        info={
            "labels": meta["labels"],
            "input": "raw pixel intensities of an 8x8 image in [0, 16] (sklearn load_digits)",
            "output": "logits over labels; the top one is the digit",
            "checkpoint_test_accuracy": meta["metrics"]["test_accuracy"],
        },
    )


def text_step_spec(
    checkpoint: Path, text: str, seed: int = 0, n_random: int = 32, name: str = "text_step"
) -> ExportSpec:
    """The character LSTM as a one-token step; ``text`` (the first 1,000 characters are read) gives real inputs:
    each character with the state torch reached before it."""
    from export.text_step import TextStep
    from server.text.checkpoint import load_text_model
    from server.text.vocab import START_TEXT

    model, vocab, meta = load_text_model(checkpoint)
    step = TextStep(model).eval()
    ids = vocab.encode(START_TEXT + text[:1000])
    h, c = step.zero_state()
    real: list[Inputs] = []
    with torch.no_grad():
        for token in ids[:-1]:
            tok = torch.tensor([token], dtype=torch.int32)
            real.append((tok.numpy(), h.numpy(), c.numpy()))
            _, h, c = step(tok, h, c)
    rng = np.random.default_rng(seed)
    shape = (step.layers, 1, step.hidden)
    random_inputs: list[Inputs] = [
        (
            rng.integers(0, len(vocab), size=1).astype(np.int32),
            rng.uniform(-1, 1, size=shape).astype(np.float32),  # h = o * tanh(c) lies in (-1, 1)
            rng.normal(0, 2, size=shape).astype(np.float32),
        )
        for _ in range(n_random)
    ]
    return ExportSpec(
        name=name,
        kind="char_lstm_step",
        checkpoint=checkpoint,
        module=step,
        input_names=("token", "h", "c"),
        output_names=("logits", "h_out", "c_out"),
        real_inputs=real,
        random_inputs=random_inputs,
        targets=np.asarray(ids[1:], dtype=np.int64),
        calibration=None,
        info={
            "vocabulary": vocab.chars,
            "start_text": START_TEXT,
            "layers": step.layers,
            "hidden_size": step.hidden,
            "input": "token: id of the last character (int32); h, c: the state the previous step returned "
            "(zeros to start); read START_TEXT first",
            "output": "logits over the vocabulary for the next character, and the next state",
            "source_kind": meta["kind"],
        },
    )


def hard_comparisons(config: TextDiscConfig) -> bool:
    """Whether a text discriminator's scorer features jump at rounding: hard ranks, or hard entropy bands."""
    if config.scorer is None:
        return False
    return not config.rank_width or (config.scorer_pooled and not config.band_width)


def textdisc_spec(
    checkpoint: Path, generator: Path, text: str, seed: int = 0, n_random: int = 32, n_calibration: int = 200
) -> ExportSpec:
    """The text discriminator: the checkpoint's test windows (``text``, the held-out text, for the real ones; fresh
    samples of ``generator``, prompted with ``text``, for the generated ones) are the evaluation set and a random
    draw of them calibrates."""
    from server.checkpoint import file_sha256
    from server.errors import ExportError
    from server.textdisc.checkpoint import load_textdisc_model
    from server.textdisc.data import WINDOW, split_held_out, test_windows
    from server.textdisc.samples import SampleSet, load_samples

    model, vocab, meta = load_textdisc_model(checkpoint)
    if file_sha256(generator) != meta["generator"]["sha256"]:
        raise ExportError(f"{checkpoint.name} was trained against another generator than {generator.name}")
    test_set = SampleSet.from_dict(meta["data"]["test_samples"])
    real_test = split_held_out(text, meta["data"].get("real_train_share", 0.0))[1]  # the rest trained it
    data = test_windows(vocab, real_test, load_samples(generator, test_set, text))
    # Static int8 scales come from a random draw of the evaluation windows (half real, half generated): the
    # check is agreement with torch, not accuracy, and the training samples would need the training text.
    rng = np.random.default_rng(seed)
    calibration = data.ids[rng.permutation(len(data.ids))[:n_calibration]]
    random_ids = rng.integers(0, len(vocab), size=(n_random, 1, WINDOW)).astype(np.int32)
    return ExportSpec(
        name="textdisc",
        kind=meta["kind"],
        checkpoint=checkpoint,
        module=model,
        input_names=("ids",),
        output_names=("logits",),
        real_inputs=[(x[None],) for x in data.ids],
        random_inputs=[(x,) for x in random_ids],
        targets=data.labels,
        calibration=[(x[None],) for x in calibration],
        # A scorer (an LSTM over the window, then logs and exponentials of its probabilities) and the map of its
        # features (log-probabilities, a wide range) or their window statistics stay float: int8 gates compound their
        # error over 256 steps.
        float_scope="scorer|reference|scorer_view|features|scorer_stats" if model.scorer is not None else None,
        float_output=model.scorer is not None,  # int8 logits round near ties to one value (see ExportSpec)
        # Hard comparisons (checkpoints before soft ones): a character whose entropy lies within rounding of an
        # entropy band's edge falls in one band in torch and in the next in ONNX Runtime, and two characters within
        # rounding of a tie swap ranks; either moves the window's logits by up to about 2e-2 (such a model: once
        # in 3,488 inputs; typically 1e-5). Soft ones (TextDiscConfig.band_width, rank_width) move them by the
        # rounding only.
        float_tolerance=5e-2 if hard_comparisons(model.config) else None,
        # With a scorer, TFLite int8 is dynamic: the static file of the 95.17% model agreed with torch on 91.29% of
        # the 3,456 test windows (and was larger than the float file: 22.7 MB), the dynamic one on 99.74%.
        tflite_dynamic=model.scorer is not None,
        # Static int8 files of a model with many windows near a tie between its two logits flip some of them: the
        # 80% model (no scorer) agreed with torch on 99.1% (ONNX) and 97.97% (TFLite) of 3,456 windows. With a
        # scorer the export's default holds: the 95.17% model's static ONNX file agreed on 99.54%.
        int8_agreement=None if model.scorer is not None else 0.975,
        info={
            "labels": meta["labels"],
            "vocabulary": vocab.chars,
            "window": WINDOW,
            "input": f"ids: the last {WINDOW} characters as int32 ids in the vocabulary (0 for any other "
            "character), left-padded with the id of a newline when the text is shorter",
            "output": "logits over labels (real, generated)",
            "checkpoint_test_accuracy": meta["metrics"]["test_accuracy"],
        },
    )


def kws_spec(
    checkpoint: Path,
    seed: int = 0,
    n_random: int = 32,
    n_calibration: int = 400,
    data: Any = None,
    test_per_label: int = TEST_PER_LABEL,
) -> ExportSpec:
    """The keyword spotter, raw PCM in: the evaluation set is the test set of the held-out voices, clean
    (``test_per_label`` clips of each label; 0: the checkpoint's held-out set), training clips (half augmented,
    half clean) calibrate; ``data`` (a KWSDataConfig) replaces the checkpoint's data sizes (tests: a smaller set)."""
    from server.kws.checkpoint import load_kws_model
    from server.kws.data import BaseClips, ClipSampler, KWSDataConfig, heldout_set, scored_set, training_clips
    from server.kws.model import CLIP_SAMPLES

    model, meta = load_kws_model(checkpoint)
    config = data or KWSDataConfig.from_meta(meta["data"])
    waves, labels = scored_set(config, test_per_label)
    evaluation = (
        f"the test set: {len(labels):,} clips of the held-out voices (`antiphon eval kws --test-per-label`)"
        if test_per_label
        else f"the held-out set: {len(labels):,} clips of the held-out voices (`antiphon eval kws`)"
    )
    train = training_clips(config)
    augmented, _ = ClipSampler(train, seed).batch(n_calibration - n_calibration // 2)
    # Clean clips too: a word in digital silence reaches the log floor, which augmented clips seldom do, and an int8
    # range calibrated without it would clip every silent frame of a clean recording.
    pick = np.random.default_rng(seed).permutation(len(train.clips))[: n_calibration // 2]
    clean, _ = heldout_set(BaseClips([train.clips[i] for i in pick], [train.audio[i] for i in pick]), False, seed)
    calibration = np.concatenate([augmented, clean])
    rng = np.random.default_rng(seed)
    levels = 10 ** rng.uniform(-3, 0, size=(n_random, 1, 1))  # quiet to full scale
    random_waves = (rng.uniform(-1, 1, size=(n_random, 1, CLIP_SAMPLES)) * levels).astype(np.float32)
    return ExportSpec(
        name="kws",
        kind=meta["kind"],
        checkpoint=checkpoint,
        module=model,
        input_names=("audio",),
        output_names=("logits",),
        real_inputs=[(x[None],) for x in waves],
        random_inputs=[(x,) for x in random_waves],
        targets=labels,
        calibration=[(x[None],) for x in calibration],
        float_scope="front_end",
        float_output=True,
        info={
            "labels": meta["labels"],
            "sample_rate": meta["sample_rate"],
            "clip_samples": meta["clip_samples"],
            "front_end": model.config.front_end,
            "input": "audio: one second of mono PCM at 16 kHz, float32 in [-1, 1] (resample other rates first)",
            "output": "logits over labels; the top one is the word (unknown: another word; silence: no speech)",
            "evaluation": evaluation,
            "checkpoint_heldout_accuracy": meta["metrics"]["heldout_clean_accuracy"],
            **(
                {"checkpoint_test_accuracy": meta["metrics"]["test_clean_accuracy"]}
                if "test_clean_accuracy" in meta["metrics"]
                else {}
            ),
        },
    )


# -- image generators and the GAN discriminator -------------------------------------------------------------------
IMAGE_SAMPLES = 1000  # the evaluation set of an image model: seeds (and classes) of a generator, images of a critic
PIXELS = "float32 in [0, 1], 0 black and 1 white (the data's light garment or stroke on black), row-major (H, W)"
VERDICTS = ["real", "generated"]


def image_latents(seeds: range | list[int], latent: int) -> np.ndarray:
    """Each seed's latent (N, Z) float32: its own ``np.random.default_rng(seed)``'s first Z standard normals, as
    :meth:`server.image.sampling.LatentSampler.latents` draws them (and the edge client: the same seed, the same
    image)."""
    return np.stack([np.random.default_rng(s).standard_normal(latent).astype(np.float32) for s in seeds])


def _judge_labeler(judge_path: Path) -> Callable[[list[list[np.ndarray]]], np.ndarray]:
    """The judge's label of each generated image (the first output, (1, H, W))."""
    from server.image.quality import load_judge

    judge = load_judge(judge_path)

    def labeler(outputs: list[list[np.ndarray]]) -> np.ndarray:
        images = np.concatenate([out[0] for out in outputs]).astype(np.float32)  # (N, H, W)
        return np.asarray(judge.probs(np.clip(images, 0.0, 1.0)).argmax(1), dtype=np.int64)

    return labeler


def _latent_inputs(latent: int, classes: int, seeds: range | list[int], asked: np.ndarray | None) -> list[Inputs]:
    z = image_latents(seeds, latent)
    if not classes:
        return [(row[None],) for row in z]
    assert asked is not None
    return [(row[None], np.asarray([k], dtype=np.int32)) for row, k in zip(z, asked, strict=True)]


def _image_generator_spec(
    name: str,
    checkpoint: Path,
    module: nn.Module,
    family: str,
    image_size: int,
    latent: int,
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
        real_inputs=_latent_inputs(latent, classes, seeds, asked),
        random_inputs=drawn(n_random),
        targets=asked,
        calibration=_latent_inputs(latent, classes, calib_seeds, calib_asked),
        labeler=_judge_labeler(judge),
        float_scope=float_scope,
        float_tail="to_pixels",
        calibration_extremes=True,
        info={
            "family": family,
            "conditional": bool(classes),
            "labels": labels,
            "latent": latent,
            "image_size": image_size,
            "pixels": PIXELS,
            "latent_noise": "z: np.random.default_rng(seed).standard_normal(latent) as float32, one generator per "
            "image (the server's LatentSampler draws the same: the same seed and class give the same image)",
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
    return _image_generator_spec(
        "vae_decoder",
        checkpoint,
        LatentDecoder(vae),
        "vaegan" if isinstance(model, VAEGAN) else "vae",
        vae.config.image_size,
        vae.config.latent,
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
        z = torch.from_numpy(image_latents(seeds, config.latent))
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
        real_inputs=[(x[None],) for x in images],
        random_inputs=[(x,) for x in random_images],
        targets=targets,
        calibration=[(x[None],) for x in calibration],
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


SpecBuilder = Callable[..., ExportSpec]
MODELS: dict[str, str] = {
    "digits": "the digits CNN (image classifier)",
    "text_step": "the character LSTM as a one-token step with explicit state (offline generation)",
    "text_small_step": "the small character LSTM as a one-token step (fast offline generation on the edge)",
    "textdisc": "the text discriminator (real text or sampled from the character LSTM)",
    "kws": "keyword spotting on one second of 16 kHz audio, log-mel front end inside",
    "dcgan_generator": "the DCGAN's class-conditional generator (offline image generation)",
    "vae_decoder": "the VAE's decoder (offline image generation from the prior)",
    "dcgan_discriminator": "the DCGAN's discriminator (real or generated image, under each class)",
}


def check_model_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise InvalidArgument("models", f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
