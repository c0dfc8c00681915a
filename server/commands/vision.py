"""``antiphon train digits`` and ``eval digits``: the digits CNN."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from server.commands.common import add_checkpoint, add_device, add_seed
from server.paths import default_checkpoint


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "digits",
        help="train the digits CNN",
        description="Train the small CNN on scikit-learn's bundled 8x8 digits (a fixed stratified 80/20 split, "
        "recorded in the checkpoint) and write a model card beside the checkpoint. Seconds on one CPU core.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=60, help="passes over the training images")
    budget.add_argument("--steps", type=int, help="optimizer steps instead of --epochs")
    p.add_argument("--out", type=Path, default=Path("runs/digits/digits_cnn.safetensors"), help="checkpoint to write")
    add_seed(p, 0, "initialization, batch order and augmentation")
    add_device(p, default="cpu")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from server.vision.train import DigitsTrainOptions, train_digits

    opts = DigitsTrainOptions(
        out=args.out,
        epochs=None if args.steps is not None else args.epochs,
        steps=args.steps,
        seed=args.seed,
        device=args.device,
    )
    info = train_digits(opts)
    print(f"test accuracy {info['metrics']['test_accuracy']:.2%} -> {opts.out}")
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "digits",
        help="accuracy and confusion matrix of the digits CNN",
        description="Classify the test split recorded in the checkpoint and print the accuracy and the "
        "confusion matrix (rows: true digit, columns: predicted).",
    )
    add_checkpoint(p, "digits")
    p.add_argument("--json", action="store_true", help='last line: {"accuracy": ..., "count": ..., "confusion": ...}')
    p.set_defaults(func=_eval)


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
