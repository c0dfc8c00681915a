"""``antiphon train digits`` and ``eval digits``: the digits CNN."""

from __future__ import annotations

import argparse
import json

from server.commands.common import add_checkpoint, add_subcommand, add_trainer
from server.paths import default_checkpoint
from server.vision.options import DigitsTrainOptions


def add_train(sub: argparse._SubParsersAction) -> None:
    add_trainer(
        sub,
        "digits",
        DigitsTrainOptions,
        _train,
        help="train the digits CNN",
        description="Train the small CNN on scikit-learn's bundled 8x8 digits (a fixed stratified 80/20 split, "
        "recorded in the checkpoint) and write a model card beside the checkpoint. Seconds on one CPU core.",
        dry_run="200 steps (about two seconds)",
    )


def _train(opts: DigitsTrainOptions) -> int:
    from server.vision.train import train_digits

    info = train_digits(opts)
    print(f"test accuracy {info['metrics']['test_accuracy']:.2%} -> {opts.out}")
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "digits",
        _eval,
        help="accuracy and confusion matrix of the digits CNN",
        description="Classify the test split recorded in the checkpoint and print the accuracy and the "
        "confusion matrix (rows: true digit, columns: predicted).",
    )
    add_checkpoint(p, "digits")
    p.add_argument("--json", action="store_true", help='last line: {"accuracy": ..., "count": ..., "confusion": ...}')


def _eval(args: argparse.Namespace) -> int:
    from server.classifier_metrics import format_confusion
    from server.vision.checkpoint import load_digits_model
    from server.vision.data import recorded_split
    from server.vision.evaluate import evaluate

    model, meta = load_digits_model(args.checkpoint or default_checkpoint("digits"))
    result = evaluate(model, *recorded_split(meta["data"]["test_indices"]).test)
    print(f"accuracy {result.accuracy:.2%} on {result.count} test images")
    print(format_confusion(result.confusion, meta["labels"]))
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0
