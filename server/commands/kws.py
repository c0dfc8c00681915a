"""``antiphon train kws`` and ``eval kws``: the keyword spotter (zero..nine, unknown, silence)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from server.commands.common import add_checkpoint, add_subcommand, add_trainer
from server.errors import InvalidArgument
from server.kws.options import KWSTrainOptions
from server.paths import default_checkpoint


def add_train(sub: argparse._SubParsersAction) -> None:
    add_trainer(
        sub,
        "kws",
        KWSTrainOptions,
        _train,
        help="train the keyword spotter (zero..nine, unknown, silence)",
        description="Train the DS-CNN keyword spotter on one-second clips: espeak-ng renderings of the number words "
        "and of other words by the training voices (rendered once, cached), augmented afresh every batch (speed, "
        "shift, reverberation, EQ, telephone band, noise, gain), and noise for silence. The log-mel front end is "
        "part of the model. Scores the held-out voices and writes a model card beside the checkpoint.",
        dry_run="40 steps of a narrow model on 3 renderings of each number word (about 15 s)",
    )


def _train(opts: KWSTrainOptions) -> int:
    from server.kws.train import train_kws

    info = train_kws(opts)
    m = info["metrics"]
    test = (
        f"; test set: {m['test_clean_accuracy']:.2%} clean, {m['test_noisy_accuracy']:.2%} augmented"
        if "test_clean_accuracy" in m
        else ""
    )
    print(
        f"held-out voices: {m['heldout_clean_accuracy']:.2%} clean, {m['heldout_noisy_accuracy']:.2%} augmented"
        f"{test} -> {opts.out}"
    )
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "kws",
        _eval,
        help="accuracy and confusion matrix of the keyword spotter",
        description="Classify audio files (WAV of any rate, channels and sample format, G.711 WAV, FLAC, Ogg, MP3, "
        "AIFF and Sun audio through sox; resampled to 16 kHz mono, the loudest second kept, shorter clips centred) "
        "and print the accuracy and the confusion matrix (rows: "
        "true label, columns: predicted). A file's label is its folder's name (Speech Commands layout: "
        "DIR/seven/a.wav) or its name's prefix (seven_a.wav); other words count as unknown, and folders named "
        "silence or _background_noise_ as silence. With no FILE, the held-out espeak-ng voices are scored: the "
        "checkpoint's held-out set (the one on its card, 40 clips of each label by default), or with "
        "--test-per-label the larger test set.",
    )
    p.add_argument("files", nargs="*", type=Path, metavar="DIR|FILE")
    add_checkpoint(p, "kws")
    p.add_argument("--noisy", action="store_true", help="no FILE only: through the training augmentation")
    p.add_argument(
        "--test-per-label",
        type=int,
        default=0,
        metavar="N",
        help="no FILE only: score the test set, N clips of each label (the held-out voices again, with fresh "
        "renderings and other words that the checkpoint's training did not read; 200 in the cards); 0: the "
        "held-out set",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='last line: {"accuracy": ..., "count": ..., "confusion": ..., "labels": ...}',
    )


def _eval(args: argparse.Namespace) -> int:
    import numpy as np

    from server.classifier_metrics import format_confusion
    from server.kws.checkpoint import load_kws_model
    from server.kws.evaluate import evaluate

    if args.test_per_label < 0:
        raise InvalidArgument("test_per_label", f"must be at least 0, got {args.test_per_label}")
    if args.files and (args.noisy or args.test_per_label):
        raise InvalidArgument("files", "--noisy and --test-per-label score the espeak-ng voices: give no FILE")
    model, meta = load_kws_model(args.checkpoint or default_checkpoint("kws"))
    if args.files:
        from server.kws.audio_files import collect, label_of, one_second, read_wav

        files = collect(args.files)
        labels = np.asarray([label_of(f) for f in files], dtype=np.int64)
        waves = np.stack([one_second(read_wav(f)) for f in files])
        what = f"{len(files)} files"
    else:
        from server.kws.data import KWSDataConfig, scored_set

        config = KWSDataConfig.from_meta(meta["data"])
        waves, labels = scored_set(config, args.test_per_label, args.noisy, progress=bool(args.test_per_label))
        what = (
            f"{len(labels)} test clips of the held-out espeak-ng voices"
            if args.test_per_label
            else f"{len(labels)} held-out espeak-ng clips"
        )
        what += " (augmented)" if args.noisy else ""
    result = evaluate(model, waves, labels)
    print(f"accuracy {result.accuracy:.2%} on {what}")
    print(format_confusion(result.confusion, meta["labels"]))
    if args.json:
        print(json.dumps({**result.to_dict(), "labels": meta["labels"]}))
    return 0
