"""What to export for each model: the torch module, its example, calibration and evaluation inputs, and the labels
or vocabulary the edge needs to read its outputs. Here: :class:`ExportSpec`, the classifiers' and the text step's
specs, and the names of every exportable model; the image models' specs are in :mod:`export.image_specs`.

Every input set is a list of tuples of NumPy arrays in the module's input order, batch 1 (the exported graphs have
static shapes: one image, or one token of one stream).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
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
    # round near-ties to the same value and flip the top label of a model whose margins are often small. Dynamic
    # ONNX int8 leaves the matrix products that give the outputs float (a text step's head).
    float_output: bool = False
    # Dynamic int8 in both formats (int8 weights; TFLite keeps float activations, ONNX quantizes them per call)
    # even where calibration inputs are given. For a recurrent network inside a classifier: the static TFLite recipe
    # quantizes its weights even in the float scope, and 256 steps compound their error; static ONNX flips the
    # windows near a tie.
    dynamic_int8: bool = False
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
    # Torch's outputs for the real inputs (batches of one, each row computed alone) are computed this many rows a
    # call: the text discriminator's 3,456 windows took 6 minutes one at a time. 1: one at a time.
    reference_rows: int = 1

    @property
    def sample_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(a) for a in self.real_inputs[0])

    @torch.no_grad()
    def reference(self, inputs: Inputs) -> list[np.ndarray]:
        out = self.module(*(torch.from_numpy(a) for a in inputs))
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    @cached_property
    def real_outputs(self) -> list[list[np.ndarray]]:
        """Torch's outputs for ``real_inputs``, computed once: every file of the model is checked against them
        (``reference_rows`` inputs a call, split back into one output list per input)."""
        from export.parity import run_all

        if self.reference_rows == 1:
            return run_all(lambda *args: self.reference(args), self.real_inputs, f"{self.name}: torch")
        rows = self.reference_rows
        groups = [self.real_inputs[i : i + rows] for i in range(0, len(self.real_inputs), rows)]
        stacked = [tuple(np.concatenate(column) for column in zip(*group, strict=True)) for group in groups]
        outputs = run_all(lambda *args: self.reference(args), stacked, f"{self.name}: torch, {rows} a call")
        return [[out[k : k + 1] for out in batch] for batch in outputs for k in range(len(batch[0]))]

    def labels_of(self, outputs: list[list[np.ndarray]]) -> np.ndarray:
        """One label per output of ``real_inputs`` (in their order): the labeler's, else the top label of the
        first output."""
        if self.labeler is not None:
            return np.asarray(self.labeler(outputs), dtype=np.int64)
        return np.asarray([int(np.argmax(out[0])) for out in outputs])


def batches_of_one(rows: np.ndarray) -> list[Inputs]:
    """Each row of ``rows`` as the inputs of a one-input module: a batch of one."""
    return [(x[None],) for x in rows]


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
        real_inputs=batches_of_one(test_x),
        random_inputs=[(x,) for x in random_images],
        targets=test_y,
        calibration=batches_of_one(calibration),
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
        # The head's product stays float in the ONNX int8 file (+130 KB for 2 x 512): with it in int8, 98.8% of
        # the long run's next characters kept torch's top label, below the 99% the export asks; float, 99.8%.
        float_output=True,
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
        real_inputs=batches_of_one(data.ids),
        random_inputs=[(x,) for x in random_ids],
        targets=data.labels,
        calibration=batches_of_one(calibration),
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
        # With a scorer, int8 is dynamic. TFLite: the static file of the 95.17% model agreed with torch on 91.29% of
        # the 3,456 test windows (and was larger than the float file: 22.7 MB), the dynamic one on 99.74%. ONNX:
        # the static file agreed on 99.54% with that model, on 97.66% with the 93.03% one trained against the long
        # run's generator (more windows near a tie), the dynamic one on all of 600 windows drawn from them.
        dynamic_int8=model.scorer is not None,
        # Static int8 files of a model with many windows near a tie between its two logits flip some of them: the
        # 80% model (no scorer) agreed with torch on 99.1% (ONNX) and 97.97% (TFLite) of 3,456 windows. With a
        # scorer (dynamic int8) the export's default holds.
        int8_agreement=None if model.scorer is not None else 0.975,
        reference_rows=64,
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
        real_inputs=batches_of_one(waves),
        random_inputs=[(x,) for x in random_waves],
        targets=labels,
        calibration=batches_of_one(calibration),
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
            # the development set's recorded speakers it learned from: benchmarks/kws_real.py leaves them out
            "trained_speakers": list(meta["data"].get("train_speakers", [])),
            **(
                {"checkpoint_test_accuracy": meta["metrics"]["test_clean_accuracy"]}
                if "test_clean_accuracy" in meta["metrics"]
                else {}
            ),
        },
    )


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
