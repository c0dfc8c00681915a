"""Train the keyword spotter on augmented espeak-ng renderings; write the checkpoint and its model card.

Each step draws a fresh batch (labels uniform over the twelve, every clip augmented anew: see
:mod:`server.kws.augment`), computes the normalised log-mel inside the model, masks random bands and frames
(SpecAugment) and takes an AdamW step (one-cycle learning rate, label smoothing; the loop is
:class:`server.training.ClassifierTrainer`). The held-out voices are scored every ``eval_every`` steps for the
progress display and at the end for the card: clean, and through the same augmentation with a fixed seed
("noisy"). The options are :class:`~server.kws.options.KWSTrainOptions`; the card is :mod:`server.kws.model_card`'s.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from server.audio.constants import SAMPLE_RATE
from server.checkpoint import file_sha256
from server.data.speech import espeak_version
from server.errors import InvalidArgument
from server.kws.audio_files import one_second
from server.kws.augment import AugmentConfig
from server.kws.checkpoint import load_kws_model, save_kws_model
from server.kws.data import (
    LABELS,
    UNKNOWN_INDEX,
    BaseClips,
    ClipSampler,
    at_half_scale,
    hard_negatives,
    heldout_clips,
    heldout_set,
    holders,
    training_clips,
    unseen_clips,
    unseen_set,
)
from server.kws.evaluate import evaluate, predict_logits
from server.kws.model import CLIP_SAMPLES, KWSConfig, KWSNet
from server.kws.model_card import kws_card
from server.kws.options import KWSTrainOptions
from server.provenance import Provenance, options_record, stamp
from server.training import Batch, ClassifierTrainer, batched_logits, cross_entropy

log = logging.getLogger(__name__)


def spec_augment(features: torch.Tensor, opts: KWSTrainOptions, generator: torch.Generator) -> torch.Tensor:
    """Zero random mel bands and frames of normalised features (B, M, F) (zero is each band's mean)."""
    b, m, f = features.shape
    keep = torch.ones_like(features)
    for count, width, axis, size in ((opts.freq_masks, opts.freq_mask, 1, m), (opts.time_masks, opts.time_mask, 2, f)):
        for _ in range(count):
            w = torch.randint(0, width + 1, (b, 1), generator=generator)  # (B, 1)
            start = (torch.rand(b, 1, generator=generator) * (size - w)).long()  # (B, 1)
            pos = torch.arange(size)[None]  # (1, size)
            mask = ((pos >= start) & (pos < start + w)).float()  # (B, size)
            keep = keep * (1 - (mask[:, :, None] if axis == 1 else mask[:, None, :]))
    return features * keep


def centred(audio: np.ndarray) -> np.ndarray:
    """A trimmed word (any length) in the middle of one second (its loudest second if longer), peak 0.5."""
    return at_half_scale(one_second(audio))


def unknown_errors(model: KWSNet, base: BaseClips, indices: list[int]) -> np.ndarray:
    """1 - p(unknown) (len(indices),) of base clips heard clean, centred in the second."""
    logits = batched_logits(
        model,
        np.asarray(indices, dtype=np.int64),
        prepare=lambda rows: (np.stack([centred(base.audio[j]) for j in rows]),),
    )  # (N, classes)
    return 1 - torch.softmax(torch.from_numpy(logits), dim=1)[:, UNKNOWN_INDEX].numpy()


def _mine(model: KWSNet, sampler: ClipSampler, step: int) -> dict[str, Any]:
    """Score the unknown training clips, hand the errors to the sampler; what was found, for the checkpoint."""
    errors = unknown_errors(model, sampler.base, sampler.unknown_clips)
    sampler.set_unknown_errors(errors)
    texts = [sampler.base.clips[i].text for i in sampler.unknown_clips]
    top = np.argsort(-errors)[:12]
    top_words = [f"{texts[i]} {errors[i]:.2f}" for i in top]
    found: dict[str, Any] = {
        "step": step,
        "mean_error": round(float(errors.mean()), 4),
        "heard_as_number": int((errors > 0.5).sum()),
        "clips": len(errors),
        "top": top_words,
    }
    log.info("mining at step %d: mean error %.3f, %d of %d unknown clips heard as another label; %s", step,
             found["mean_error"], found["heard_as_number"], len(errors), ", ".join(top_words))  # fmt: skip
    return found


def train_kws(opts: KWSTrainOptions) -> dict[str, Any]:
    """Train, score the held-out voices, write the checkpoint and card; returns the checkpoint's info."""
    opts.validate()
    t_data = time.monotonic()
    base = training_clips(opts.data, opts.render_workers, opts.progress)
    espeak_clips = len(base.clips)
    if opts.data.beyond_espeak or opts.data.perturbed_copies:
        from server.kws.sources import extra_training_clips  # festival, flite, sox: only when asked for

        base = extra_training_clips(opts.data, base)
    held = heldout_clips(opts.data, opts.render_workers, opts.progress)
    clean_x, clean_y = heldout_set(held, noisy=False, seed=opts.data.seed)
    noisy_x, noisy_y = heldout_set(held, noisy=True, seed=opts.data.seed)
    test = (
        unseen_clips(opts.data, opts.test_per_label, opts.render_workers, opts.progress)
        if opts.test_per_label
        else None
    )
    # The development set before training, not after it: a missing package or voice stops the run at its start,
    # not after its steps, and the scoring reads the code the run started with.
    dev = None
    if opts.real_dev:
        from server.kws.devset import development_set, score

        dev = development_set()
    log.info(
        "%d training clips, %d held-out clips (%.0f s)", len(base.clips), len(held.clips), time.monotonic() - t_data
    )
    sampler = ClipSampler(
        base, opts.seed, AugmentConfig(p_context=opts.context, speed=opts.speed), unknown_share=opts.unknown_share,
        hard_share=opts.hard_share, mine_share=opts.mine_share, keyword_gap=opts.keyword_gap, mine_pool=opts.mine_pool,
    )  # fmt: skip
    # Logit adjustment (Menon et al., 2021): the log of each label's share of the batches relative to 1/12 is added
    # to the logits inside the loss only, so the model's own logits keep equal priors (the held-out sets and the
    # edge client's threshold assume them) while it sees more "unknown" clips than one in twelve.
    adjust = torch.from_numpy(np.log(sampler.label_p * len(LABELS))).float() if opts.balanced_loss else None
    torch.manual_seed(opts.seed)
    generator = torch.Generator().manual_seed(opts.seed)
    model, init_info = _start(opts)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # depthwise convolutions: 2x faster
    teachers, teachers_info = _teachers(opts)
    mining: list[dict[str, Any]] = []

    def batches() -> Iterator[Batch]:
        for step in itertools.count():
            if opts.mine_share > 0 and step % opts.mine_every == 0:
                mining.append(_mine(model, sampler, step))
            waves, labels = sampler.batch(opts.batch_size)
            yield torch.from_numpy(waves), torch.from_numpy(labels)

    def loss(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        features = spec_augment(model.features(batch[0]), opts, generator)  # (B, M, F)
        logits = model.classify(features)  # (B, classes)
        adjusted = logits if adjust is None else logits + adjust
        labelled = cross_entropy(adjusted, batch[1], label_smoothing=opts.label_smoothing)[0]
        if not teachers:
            return labelled, logits
        # The student's own logits (equal priors, as the teachers' are) against the teachers' mean log-probability.
        t = opts.distill_temperature
        distilled = distillation_loss(logits, teacher_log_probs(teachers, batch[0], t), t)
        return (1 - opts.distill_weight) * labelled + opts.distill_weight * distilled, logits

    def check(step: int, running: float) -> dict[str, float]:
        held_acc = evaluate(model, clean_x, clean_y).accuracy
        log.info("step %d: train %.3f, held-out clean %.4f", step, running, held_acc)
        return {"heldout_clean": held_acc}

    trainer = ClassifierTrainer(
        model,
        steps=opts.steps,
        lr=opts.lr,
        weight_decay=opts.weight_decay,
        name="kws",
        progress=opts.progress,
        check_every=opts.eval_every,
    )
    run = trainer.train(batches(), loss, check)
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    model.eval()
    if opts.unknown_bias:
        with torch.no_grad():
            model.head.bias[UNKNOWN_INDEX] += opts.unknown_bias
    clean = evaluate(model, clean_x, clean_y)
    noisy = evaluate(model, noisy_x, noisy_y)
    tested: dict[str, Any] = {}
    if test is not None:
        test_clean = evaluate(model, *unseen_set(test, noisy=False, config=opts.data))
        test_noisy = evaluate(model, *unseen_set(test, noisy=True, config=opts.data))
        tested = {
            "test_clean_accuracy": round(test_clean.accuracy, 4),
            "test_noisy_accuracy": round(test_noisy.accuracy, 4),
            "test_clean_confusion": test_clean.confusion,
            "test_noisy_confusion": test_noisy.confusion,
        }
    if dev is not None:
        real = score(predict_logits(model, dev.waves).argmax(axis=1), dev, opts.data.train_speakers)
        tested["real_dev"] = {k: v for k, v in real.items() if k != "number_misses"}
    training = Provenance(
        steps=opts.steps,
        wall_time_s=round(run.wall_time_s, 1),
        threads=torch.get_num_threads(),
        options=options_record(opts, leave_out=("data",)),
        extra={"init": init_info, "curve": run.checks, "mining": mining, **teachers_info},
    )
    info = {
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
        "data": {
            "source": f"espeak-ng ({espeak_version().split('Data at')[0].strip().rstrip(':').strip()})",
            **opts.data.to_dict(),
            "espeak_clips": espeak_clips,
            "hard_negatives": len(hard_negatives(opts.data)),
            "holders": len(holders(opts.data)),
            "train_clips": len(base.clips),
            "heldout_clips": len(held.clips),
            "test_clips": len(test.clips) if test is not None else 0,
            "heldout_voices": "voices('heldout'): accents and variants never in training",
        },
        "training": training.to_dict(),
        "metrics": {
            "heldout_clean_accuracy": round(clean.accuracy, 4),
            "heldout_noisy_accuracy": round(noisy.accuracy, 4),
            "heldout_clean_confusion": clean.confusion,
            "heldout_noisy_confusion": noisy.confusion,
            "train_batch_accuracy": round(run.train_batch_accuracy, 4),
            **tested,
        },
        "parameters": model.num_parameters(),
        **stamp(),
    }
    save_kws_model(opts.out, model, list(LABELS), info)
    kws_card(info, model.config).write(opts.out)
    log.info(
        "held-out clean %.4f, noisy %.4f after %d steps (%.0f s)",
        clean.accuracy,
        noisy.accuracy,
        opts.steps,
        run.wall_time_s,
    )
    return info


def teacher_log_probs(teachers: list[KWSNet], waves: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teachers' mean log-probability (B, classes) of each clip at ``temperature``, normalised again (the
    geometric mean of their distributions)."""
    with torch.no_grad():
        mean = torch.stack([torch.log_softmax(t(waves) / temperature, dim=1) for t in teachers]).mean(dim=0)
        return torch.log_softmax(mean, dim=1)


def distillation_loss(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(target || student) at ``temperature``, scaled by its square so that its gradients keep their size
    (Hinton et al., 2015)."""
    student = torch.log_softmax(logits / temperature, dim=1)
    kl = torch.nn.functional.kl_div(student, target, log_target=True, reduction="batchmean")
    return kl * temperature**2


def _teachers(opts: KWSTrainOptions) -> tuple[list[KWSNet], dict[str, Any]]:
    """The ``--teachers`` (eval mode, no gradients) and what the checkpoint records of them."""
    if not opts.teachers:
        return [], {}
    teachers, record = [], []
    for name in opts.teachers:
        path = Path(name)
        teacher, meta = load_kws_model(path)
        if meta["labels"] != list(LABELS):
            raise InvalidArgument(
                "teachers", f"{path} has the labels {meta['labels']}, not the spotter's {list(LABELS)}"
            )
        teacher.requires_grad_(False).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        teachers.append(teacher)
        record.append({"file": path.name, "sha256": file_sha256(path), "parameters": teacher.num_parameters()})
    return teachers, {"teachers": record}


def _start(opts: KWSTrainOptions) -> tuple[KWSNet, dict[str, Any] | None]:
    """The model to train (``--init``: a checkpoint's, with what the card says of it) or a fresh one."""
    if opts.init is None:
        return KWSNet(KWSConfig(num_classes=len(LABELS), **(opts.model or {}))), None
    model, meta = load_kws_model(opts.init)
    start = {
        "file": opts.init.name,
        "sha256": file_sha256(opts.init),
        "steps": Provenance.from_dict(meta["training"]).steps,
        "heldout_clean_accuracy": meta["metrics"]["heldout_clean_accuracy"],
    }
    if opts.widen is not None:
        channels = model.config.channels
        if opts.widen < channels:
            raise InvalidArgument("widen", f"must be at least the checkpoint's {channels} channels, got {opts.widen}")
        model = model.widened(opts.widen, seed=opts.seed)
        start["widened_from"] = channels
    peak_db = (opts.model or {}).get("peak_db")
    if peak_db is not None and peak_db != model.config.peak_db:  # the front end has no weights: rebuilt
        leveled = KWSNet(replace(model.config, peak_db=peak_db))
        leveled.load_state_dict(model.state_dict())
        model, start["peak_db_from"] = leveled, model.config.peak_db
    return model.train(), start
