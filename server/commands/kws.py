"""``antiphon train kws`` and ``eval kws``: the keyword spotter (zero..nine, unknown, silence)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from server.commands.common import add_checkpoint, add_seed, float_pair
from server.errors import InvalidArgument
from server.paths import default_checkpoint


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "kws",
        help="train the keyword spotter (zero..nine, unknown, silence)",
        description="Train the DS-CNN keyword spotter on one-second clips: espeak-ng renderings of the number words "
        "and of other words by the training voices (rendered once, cached), augmented afresh every batch (speed, "
        "shift, reverberation, EQ, telephone band, noise, gain), and noise for silence. The log-mel front end is "
        "part of the model. Scores the held-out voices and writes a model card beside the checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--steps", type=int, default=4000, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=64, help="fresh augmented clips per step")
    p.add_argument("--lr", type=float, default=4e-3, help="peak learning rate (AdamW, one-cycle)")
    add_seed(p, 0, "initialization, clip draws and augmentation")
    p.add_argument("--per-number", type=int, default=250, help="training renderings of each number word")
    p.add_argument("--unknown-words", type=int, default=1500, help="training renderings of other words")
    p.add_argument(
        "--accent-share",
        type=float,
        default=0.25,
        help="share of the number-word renderings spoken as other accents and learners pronounce them (0 to 1)",
    )
    p.add_argument("--heldout-per-label", type=int, default=40, help="held-out clips of each label")
    p.add_argument(
        "--test-per-label",
        type=int,
        default=200,
        help="clips of each label in the test set, scored once after training: the held-out voices again, with "
        "fresh renderings and other words that no training reads (0: none)",
    )
    p.add_argument(
        "--context",
        type=float,
        default=0.5,
        help="share of training words placed between parts of other words, as cut from running speech (0 to 1)",
    )
    p.add_argument(
        "--speed-range",
        default="0.85,1.2",
        metavar="LOW,HIGH",
        help="resampling factors of the speed and pitch augmentation (> 1: faster and higher), drawn uniformly for "
        "80%% of the clips; a wider range hears slower, deeper and faster, higher voices than espeak-ng's",
    )
    p.add_argument(
        "--hard-renderings",
        type=int,
        default=0,
        help="training renderings of each hard negative (server.kws.data.HARD_NEGATIVES: other words that sound "
        "in part like a number word, and short common words), as unknown; 0: none",
    )
    p.add_argument(
        "--unknown-share",
        type=float,
        default=None,
        help="share of unknown clips in each batch, the other labels alike (default: 1/12, like every label)",
    )
    p.add_argument(
        "--hard-share",
        type=float,
        default=0.0,
        help="share of the unknown clips drawn from the hard negatives (with --hard-renderings)",
    )
    p.add_argument(
        "--balanced-loss",
        action="store_true",
        help="logit-adjusted loss: the log of each label's share of the batches is added to its logit in the loss, "
        "so that a larger --unknown-share shows more unknown words without making unknown the likelier answer",
    )
    p.add_argument(
        "--mine-share",
        type=float,
        default=0.0,
        help="share of the unknown clips mined: drawn in proportion to the model's error on them (1 - p(unknown), "
        "every unknown training clip, other words and hard negatives, heard clean every --mine-every steps), so "
        "the words it takes for a number word come back more often; 0: no mining",
    )
    p.add_argument("--mine-every", type=int, default=500, help="steps between the scorings for --mine-share")
    p.add_argument(
        "--mine-pool",
        choices=("unknown", "hard"),
        default="unknown",
        help="what --mine-share draws from: every unknown training clip, or the hard negatives only (so that the "
        "ones the model still takes for their number word, 'seventeen', 'forty', come back far more often)",
    )
    p.add_argument(
        "--keyword-gap",
        type=float,
        default=0.0,
        help="seconds of pause at least between a number word and the next word when it is cut from running speech "
        "(--context), so that 'seven' and the next word's start do not sound like 'seventeen' with the label seven; "
        "0: the pause of the other words (30 ms or more)",
    )
    p.add_argument("--channels", type=int, default=88, help="DS-CNN width (ignored with --init)")
    p.add_argument("--blocks", type=int, default=4, help="depthwise-separable blocks (ignored with --init)")
    p.add_argument("--eval-every", type=int, default=500, help="steps between held-out scores")
    p.add_argument("--render-workers", type=int, default=2, help="espeak-ng processes while rendering")
    p.add_argument("--init", type=Path, default=None, help="start from this kws checkpoint's weights (fine-tuning)")
    p.add_argument("--out", type=Path, default=Path("runs/kws/kws_dscnn.safetensors"), help="checkpoint to write")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from server.kws.data import KWSDataConfig
    from server.kws.train import KWSTrainOptions, train_kws

    opts = KWSTrainOptions(
        out=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        eval_every=args.eval_every,
        test_per_label=args.test_per_label,
        render_workers=args.render_workers,
        init=args.init,
        context=args.context,
        speed=float_pair(args.speed_range, "speed_range"),
        unknown_share=args.unknown_share,
        hard_share=args.hard_share,
        balanced_loss=args.balanced_loss,
        mine_share=args.mine_share,
        mine_every=args.mine_every,
        mine_pool=args.mine_pool,
        keyword_gap=args.keyword_gap,
        data=KWSDataConfig(
            per_number=args.per_number,
            unknown_words=args.unknown_words,
            heldout_per_label=args.heldout_per_label,
            accent_share=args.accent_share,
            hard_renderings=args.hard_renderings,
        ),
        model={"channels": args.channels, "blocks": args.blocks},
        progress=not args.no_progress,
    )
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
    p = sub.add_parser(
        "kws",
        help="accuracy and confusion matrix of the keyword spotter",
        description="Classify WAV files (any rate, channels and sample format; resampled to 16 kHz mono, the "
        "loudest second kept, shorter clips centred) and print the accuracy and the confusion matrix (rows: "
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
    p.set_defaults(func=_eval)


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
