"""Train the text discriminator: real windows of the training plays against windows sampled from the text model.

The samples come from the project's own generation code (:mod:`server.textdisc.samples`), cached under the
antiphon cache. The test set is the held-out plays and fresh streams at other temperatures and seeds, so the
accuracy measures both unseen real text and unseen sampling settings. AdamW with a one-cycle learning rate,
batches drawn afresh every step (the loop is :class:`server.training.ClassifierTrainer`); seconds to minutes on
one CPU core.

The options are :class:`~server.textdisc.options.TextDiscTrainOptions`; the model is assembled from them by
:mod:`server.textdisc.assemble` (a scorer, a base, a reference, the lexicon). With a scorer the batches come from
a fixed pool of windows whose scorer features are computed once (:mod:`server.textdisc.feature_pool`). The
checkpoint's card is written by :mod:`server.textdisc.model_card`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from server.checkpoint import file_sha256
from server.data.shakespeare import load_corpus
from server.provenance import Provenance, options_record, stamp
from server.text.checkpoint import load_text_model
from server.textdisc.assemble import assemble_model
from server.textdisc.checkpoint import save_textdisc_model
from server.textdisc.data import (
    CHECK_EVERY,
    LABELS,
    WINDOW,
    WindowSampler,
    encode,
    evenly,
    split_held_out,
    stream_windows,
    test_windows,
)
from server.textdisc.evaluate import evaluate, predict_logits
from server.textdisc.feature_pool import FeaturePool, scorer_features, standardise_statistics
from server.textdisc.model import TextDiscriminator
from server.textdisc.model_card import textdisc_card
from server.textdisc.options import TextDiscTrainOptions
from server.textdisc.samples import load_samples
from server.training import Batch, ClassifierTrainer, batched_logits, cross_entropy

log = logging.getLogger(__name__)

CHECK_WINDOWS = 512


def generated_share(model: TextDiscriminator, ids: np.ndarray, features: np.ndarray | None = None) -> float:
    """The share of windows (N, WINDOW) judged generated (``features``: their scorer features, precomputed)."""
    if features is None:
        return float(predict_logits(model, ids).argmax(axis=1).mean())
    logits = batched_logits(model, ids, features, forward=lambda i, f: model.classify(i, f.float()))
    return float(logits.argmax(axis=1).mean())


def train_textdisc(opts: TextDiscTrainOptions) -> dict[str, Any]:
    """Train, evaluate on the held-out windows, write the checkpoint and card; returns the checkpoint's info."""
    opts.validate()
    corpus = load_corpus(opts.corpus)
    _, vocab, text_meta = load_text_model(opts.text_checkpoint)
    test_samples = load_samples(opts.text_checkpoint, opts.test_samples, corpus.valid_text, opts.progress)
    train_samples = load_samples(opts.text_checkpoint, opts.train_samples, corpus.train, opts.progress)
    real_train, real_test = split_held_out(corpus.valid_text, opts.real_train_share)
    real_text = real_train or corpus.train
    test = test_windows(vocab, real_test, test_samples)
    # Every CHECK_EVERY-th training stream never trains: the gap between the accuracy on streams the model trained
    # on and on these shows whether it learns generated text or memorises its training streams.
    held_back = set(range(CHECK_EVERY - 1, len(train_samples), CHECK_EVERY)) or {len(train_samples) - 1}
    check = [s for i, s in enumerate(train_samples) if i in held_back]
    trained = [s for i, s in enumerate(train_samples) if i not in held_back]
    check_ids, seen_ids = (evenly(stream_windows(vocab, group)[0], CHECK_WINDOWS) for group in (check, trained))
    torch.manual_seed(opts.seed)
    parts = assemble_model(opts, vocab, corpus.documents)
    model, unread, scorer = parts.model, parts.unread, parts.scorer
    if parts.lexicon is not None:
        log.info("lexicon: %d word hashes from %d documents", parts.lexicon["words"], parts.lexicon["documents"])
    pool: FeaturePool | None = None
    seen_features = check_features = None
    if parts.features_key is not None:  # a scorer
        assert scorer is not None
        fake = stream_windows(vocab, trained)[0]
        if opts.pool_windows:
            fake = evenly(fake, opts.pool_windows)
        plays = encode(vocab, corpus.train) if real_train else None
        pool = FeaturePool(
            model,
            fake,
            encode(vocab, real_text),
            parts.features_key,
            opts.seed,
            opts.progress,
            plays,
            opts.real_train_plays,
            spans=() if real_train else corpus.spans,
            other_spans=corpus.spans,
        )
        seen_features = scorer_features(model, seen_ids, parts.features_key, opts.progress)
        check_features = scorer_features(model, check_ids, parts.features_key, opts.progress)
        log.info("training pool: %d windows, half real, scorer %s", len(pool.ids), scorer["file"])
        if model.config.scorer_pooled:
            standardise_statistics(model, pool, unread)
    sampler = WindowSampler(vocab, real_text, trained, opts.seed, () if real_train else corpus.spans)

    def batches() -> Iterator[Batch]:
        for _ in itertools.count():
            if pool is not None:
                ids, feats, labels, docs = pool.batch(opts.batch_size)
                features: torch.Tensor | None = torch.from_numpy(feats)
            else:
                ids, labels, docs = sampler.batch(opts.batch_size)
                features = None
            exclude = unread(ids, docs) if unread is not None else None
            yield (torch.from_numpy(ids), features, exclude), torch.from_numpy(labels)

    def loss(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return cross_entropy(model.classify(*batch[0]), batch[1])  # logits (B, 2)

    def memorisation(step: int, running: float) -> dict[str, float]:
        seen = generated_share(model, seen_ids, seen_features)
        unseen = generated_share(model, check_ids, check_features)
        log.info("step %d: generated windows caught: %.3f of trained streams, %.3f of unseen", step, seen, unseen)
        return {"trained_streams_caught": seen, "unseen_streams_caught": unseen}

    trainer = ClassifierTrainer(
        model,
        steps=opts.steps,
        lr=opts.lr,
        weight_decay=opts.weight_decay,
        parameters=model.trainable_parameters(),
        name="textdisc",
        progress=opts.progress,
        check_every=opts.check_every,
    )
    run = trainer.train(batches(), loss, memorisation)
    caught = run.checks[-1]
    result, by_group = evaluate(model, test)
    info = {
        "window": WINDOW,
        "generator": {
            "file": opts.text_checkpoint.name,
            "sha256": file_sha256(opts.text_checkpoint),
            "kind": text_meta["kind"],
        },
        "scorer": scorer,
        "reference": parts.reference,
        "lexicon": parts.lexicon,
        "base": parts.base,
        "data": {
            "source": corpus.source,
            "sha256": corpus.sha256,
            "held_out": list(corpus.valid),
            "train_samples": asdict(opts.train_samples),
            "test_samples": asdict(opts.test_samples),
            "test_windows": result.count,
            "pool_windows": len(pool.ids) if pool is not None else 0,
            "real_train_share": opts.real_train_share,
            "real_train_plays": opts.real_train_plays,
            "real_train_characters": len(real_train),
        },
        "training": Provenance(
            steps=opts.steps,
            wall_time_s=round(run.wall_time_s, 2),
            threads=torch.get_num_threads(),
            # the generator by name (its hash is under "generator"), not by this machine's path
            options=options_record(
                opts,
                leave_out=("train_samples", "test_samples"),
                by_name=("text_checkpoint", "scorer_checkpoint", "reference_checkpoint"),
            ),
        ).to_dict(),
        "metrics": {
            "test_accuracy": round(result.accuracy, 4),
            "test_by_source": by_group,
            "test_confusion": result.confusion,
            "train_batch_accuracy": round(run.train_batch_accuracy, 4),
            "trained_streams_caught": round(caught["trained_streams_caught"], 4),
            "unseen_streams_caught": round(caught["unseen_streams_caught"], 4),
        },
        "parameters": model.num_parameters(),
        **stamp(),
    }
    model.eval()
    save_textdisc_model(opts.out, model, vocab, list(LABELS), info)
    textdisc_card(info, model.config.to_dict()).write(opts.out)
    log.info(
        "test accuracy %.4f after %d steps (%.1f s); checkpoint %s",
        result.accuracy,
        opts.steps,
        run.wall_time_s,
        opts.out,
    )
    return info
