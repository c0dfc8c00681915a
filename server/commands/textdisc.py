"""``antiphon train textdisc`` and ``eval textdisc``: the text discriminator (real text or sampled)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from server.commands.common import add_checkpoint, add_seed, comma_list, read_utf8
from server.errors import InvalidArgument
from server.paths import DEFAULT_TEXT_CHECKPOINT, checkpoint_variable, default_checkpoint, shown

TEXTDISC_TRAIN_STREAMS = 400  # server.textdisc.data.TRAIN_SAMPLES.streams (not imported here: it loads torch)


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "textdisc",
        help="train the text discriminator (real text or sampled from the LSTM)",
        description="Train the text discriminator on windows of 256 characters: the training plays (real) against "
        "streams sampled from the text model, each continuing a 128-character prompt of training text, at "
        "temperatures 0.5 to 1.3, plain and with top-k 20 or top-p 0.9 (generated once in batches and cached under "
        "the antiphon cache). Tested on the held-out plays and fresh streams prompted with held-out text at "
        "temperatures 0.7, 0.9 and 1.1, plain and with top-k 30 or top-p 0.95, with other seeds. Writes a model "
        "card beside the checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--text-checkpoint",
        type=Path,
        default=None,
        help=f"the generator (default: {shown(DEFAULT_TEXT_CHECKPOINT)} or ${checkpoint_variable('text')})",
    )
    p.add_argument("--corpus", type=Path, help="a UTF-8 text file instead of Shakespeare (last 5%% tests)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=64, help="windows per step, half real")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW, one-cycle)")
    add_seed(p, 0, "initialization and window draws")
    p.add_argument(
        "--train-streams",
        type=int,
        default=TEXTDISC_TRAIN_STREAMS,
        help="sampled training streams (1,088 characters each) per temperature and variant; 18 settings",
    )
    p.add_argument("--channels", type=int, default=64, help="channels of every convolution")
    p.add_argument("--dilations", type=comma_list, default="1,2,4,8,16", help="one convolution (width 5) per dilation")
    p.add_argument(
        "--ngrams",
        type=comma_list,
        default="none",
        help="orders of hashed character n-gram embeddings to add to each character's, e.g. 3,5 ('none': "
        "characters only; 3,5 learnt the training plays' n-grams and tested worse)",
    )
    p.add_argument("--ngram-buckets", type=int, default=16381, help="rows of each n-gram table")
    p.add_argument(
        "--scorer",
        type=str,
        default="none",
        help="a character LSTM checkpoint (same vocabulary) that reads each window inside the model: its surprise, "
        "entropy and rank of every character are the model's input beside the character ('none': characters only)",
    )
    p.add_argument(
        "--pool-windows",
        type=int,
        default=0,
        help="with --scorer: generated training windows (and as many real) whose scorer features are computed "
        "once and cached (0: every non-overlapping window of the training streams)",
    )
    p.add_argument(
        "--real-train-plays",
        type=float,
        default=0.0,
        help="with --scorer and --real-train-share: the share of the real training windows taken from the training "
        "plays all the same",
    )
    p.add_argument(
        "--no-characters",
        action="store_true",
        help="with --scorer: the scorer's features only, no character embedding (characters let the model learn "
        "the real training text by heart)",
    )
    p.add_argument(
        "--real-train-share",
        type=float,
        default=0.0,
        help="the share of the held-out text (from its start, cut at a line start) whose windows are the real "
        "class instead of the training plays'; the test's real windows come from the rest (0: training plays; "
        "with a scorer trained on the training plays, 0.4434: Hamlet, which it never read)",
    )
    p.add_argument(
        "--base",
        type=Path,
        default=None,
        help="with --scorer: a trained discriminator without a scorer (characters, lexicon) whose weights are copied "
        "and frozen; only the head trains, over its pooled convolutions and statistics of the scorer's features over "
        "the window (their mean and spread, overall and by the scorer's entropy): too few weights to learn the real "
        "text by heart, so the real class can be held-out text the scorer never read (--real-train-share)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="with --base: a second, weaker character LSTM (e.g. models/text/char_lstm_small.safetensors) read "
        "beside the scorer; how its view of each character differs from the scorer's enters the head (text the "
        "generator sampled is likelier to it than to a weaker model; real text is hard for both)",
    )
    p.add_argument(
        "--rank-width",
        type=float,
        default=0.01,
        help="with --scorer: the width in nats of the soft comparisons that count the characters the scorer found "
        "likelier (their rank and mass); 0: hard comparisons, which a near tie can flip in an exported file",
    )
    p.add_argument(
        "--band-width",
        type=float,
        default=0.05,
        help="with --base: the width in nats of the soft edges between the scorer's entropy bands (0: hard edges, "
        "which rounding in an exported file can cross)",
    )
    p.add_argument(
        "--scorer-skip",
        type=int,
        default=None,
        help="with --base: the first character of the window whose scorer features the statistics count (the "
        "scorer reads each window from a newline, cold; default 8, the first models 32)",
    )
    p.add_argument(
        "--no-position-statistics",
        action="store_true",
        help="with --base: leave out the scorer's view by where a character stands in a word (first letter, other "
        "letters, other characters)",
    )
    p.add_argument(
        "--no-lexicon",
        action="store_true",
        help="no lexicon: by default the model holds the training documents' words (a table of a million bytes) and "
        "sees at each word's end whether it is known and how common; made-up words are what hot samples give away",
    )
    p.add_argument("--out", type=Path, default=Path("runs/textdisc/text_disc.safetensors"), help="checkpoint to write")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=_train)


def _dilations(values: tuple[str, ...]) -> tuple[int, ...]:
    try:
        dilations = tuple(int(v) for v in values)
    except ValueError:
        raise InvalidArgument("dilations", f"must be whole numbers, got {','.join(values)}") from None
    if not 1 <= len(dilations) <= 8 or any(not 1 <= d <= 64 for d in dilations):
        raise InvalidArgument("dilations", f"give one to eight values in 1..64, got {','.join(values)}")
    return dilations


def _ngram_orders(values: tuple[str, ...]) -> tuple[int, ...]:
    if values == ("none",):
        return ()
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise InvalidArgument("ngrams", f"must be whole numbers or 'none', got {','.join(values)}") from None


def _train(args: argparse.Namespace) -> int:
    from server.textdisc.options import TextDiscTrainOptions
    from server.textdisc.train import train_textdisc

    opts = TextDiscTrainOptions(
        text_checkpoint=args.text_checkpoint or default_checkpoint("text"),
        out=args.out,
        corpus=args.corpus,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        progress=not args.no_progress,
        scorer_checkpoint=None if args.scorer == "none" else Path(args.scorer),
        pool_windows=args.pool_windows,
        real_train_share=args.real_train_share,
        real_train_plays=args.real_train_plays,
        lexicon=not args.no_lexicon,
        base_checkpoint=args.base,
        reference_checkpoint=args.reference,
        model={
            "channels": args.channels,
            "dilations": _dilations(args.dilations),
            "ngram_orders": _ngram_orders(args.ngrams),
            "ngram_buckets": args.ngram_buckets,
            "characters": not args.no_characters,
            "band_width": args.band_width,
            "rank_width": args.rank_width,
            **({"position_statistics": False} if args.no_position_statistics else {}),
            **({"scorer_skip": args.scorer_skip} if args.scorer_skip is not None else {}),
        },
    )
    if not 1 <= args.train_streams <= 10_000:
        raise InvalidArgument("train_streams", f"must be in 1..10000, got {args.train_streams}")
    opts.train_samples = dataclasses.replace(opts.train_samples, streams=args.train_streams)
    info = train_textdisc(opts)
    print(f"test accuracy {info['metrics']['test_accuracy']:.2%} -> {opts.out}")
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "textdisc",
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
    p.set_defaults(func=_eval)


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
    from server.textdisc.samples import SampleSet, load_samples

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
