"""``antiphon train textdisc`` and ``eval textdisc``: the text discriminator (real text or sampled)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from server.commands.common import add_checkpoint, add_subcommand, add_trainer, read_utf8
from server.errors import InvalidArgument
from server.paths import default_checkpoint
from server.textdisc.options import TextDiscTrainOptions

DRY_RUN = (
    "150 steps of a narrow model against 16 short streams of the generator at two temperatures (sampled and cached "
    "first)"
)


def add_train(sub: argparse._SubParsersAction) -> None:
    add_trainer(
        sub,
        "textdisc",
        TextDiscTrainOptions,
        _train,
        help="train the text discriminator (real text or sampled from the LSTM)",
        description="Train the text discriminator on windows of 256 characters: the training plays (real) against "
        "streams sampled from the text model, each continuing a 128-character prompt of training text, at "
        "temperatures 0.5 to 1.3, plain and with top-k 20 or top-p 0.9 (generated once in batches and cached under "
        "the antiphon cache). Tested on the held-out plays and fresh streams prompted with held-out text at "
        "temperatures 0.7, 0.9 and 1.1, plain and with top-k 30 or top-p 0.95, with other seeds. Writes a model "
        "card beside the checkpoint.",
        dry_run=DRY_RUN,
    )


def _train(opts: TextDiscTrainOptions) -> int:
    from server.textdisc.train import train_textdisc

    info = train_textdisc(opts)
    print(f"test accuracy {info['metrics']['test_accuracy']:.2%} -> {opts.out}")
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "textdisc",
        _eval,
        help="accuracy of the text discriminator, or its verdict on text files",
        description="With no FILE: rebuild the test windows the checkpoint names (held-out plays and fresh "
        "samples of its generator, from the cache or sampled again) and print the accuracy, by source, and the "
        "confusion matrix. With FILEs: the share of each file's 256-character windows judged generated.",
    )
    p.add_argument("files", nargs="*", type=Path, metavar="FILE")
    add_checkpoint(p, "textdisc")
    p.add_argument(
        "--text-checkpoint",
        type=Path,
        default=None,
        help="the generator of the test samples (default: the text model the checkpoint names, if it is the "
        "default one)",
    )
    p.add_argument("--json", action="store_true", help="last line: the figures as JSON")


def _eval(args: argparse.Namespace) -> int:
    from server.textdisc.checkpoint import load_textdisc_model
    from server.textdisc.data import WINDOW, windows
    from server.textdisc.evaluate import predict_logits

    model, vocab, meta = load_textdisc_model(args.checkpoint or default_checkpoint("textdisc"))
    if args.files:
        verdicts: dict[str, dict[str, float | int]] = {}
        for path in args.files:
            text = read_utf8(path, "FILE")
            if len(text) < WINDOW:
                raise InvalidArgument("FILE", f"{path} has {len(text)} characters; at least {WINDOW} are needed")
            ids = windows(vocab, text, max(1, len(text) // WINDOW))
            share = float(predict_logits(model, ids).argmax(axis=1).mean())
            verdicts[str(path)] = {"windows": len(ids), "generated_share": share}
            print(f"{path}: {share:.1%} of {len(ids)} windows judged generated")
        if args.json:
            print(json.dumps(verdicts))
        return 0
    from server.checkpoint import file_sha256
    from server.classifier_metrics import format_confusion
    from server.data.shakespeare import load_corpus
    from server.textdisc.data import split_held_out, test_windows
    from server.textdisc.evaluate import evaluate
    from server.textdisc.sample_sets import SampleSet
    from server.textdisc.samples import load_samples

    generator = args.text_checkpoint or default_checkpoint("text")
    if file_sha256(generator) != meta["generator"]["sha256"]:
        raise InvalidArgument("text_checkpoint", f"{generator} is not the generator the checkpoint was trained on")
    corpus_opt = meta["training"]["options"].get("corpus")
    corpus = load_corpus(Path(corpus_opt) if corpus_opt else None)
    test_set = SampleSet.from_dict(meta["data"]["test_samples"])
    real_test = split_held_out(corpus.valid_text, meta["data"].get("real_train_share", 0.0))[1]
    data = test_windows(vocab, real_test, load_samples(generator, test_set, corpus.valid_text))
    result, by_group = evaluate(model, data)
    print(f"accuracy {result.accuracy:.2%} on {result.count} windows")
    for group, accuracy in by_group.items():
        print(f"  {group}: {accuracy:.2%}")
    print(format_confusion(result.confusion, meta["labels"]))
    if args.json:
        print(json.dumps({**result.to_dict(), "by_source": by_group}))
    return 0
