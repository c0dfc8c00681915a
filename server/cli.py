"""The ``antiphon`` command: train, evaluate, sample and serve.

Exit codes: 0 success, 1 a runtime failure (missing checkpoint, unreadable
corpus), 2 a bad argument (named in the message), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.errors import AntiphonError, InvalidArgument

log = logging.getLogger("antiphon")

if TYPE_CHECKING:
    from server.settings import ServeSettings

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULT_TEXT_CHECKPOINT = REPO_MODELS / "text" / "char_lstm.safetensors"
DEFAULT_DIGITS_CHECKPOINT = REPO_MODELS / "digits" / "digits_cnn.safetensors"
DEFAULT_AUDIO_CHECKPOINT = REPO_MODELS / "audio" / "wavenet.safetensors"
DEFAULT_TEXTDISC_CHECKPOINT = REPO_MODELS / "textdisc" / "text_disc.safetensors"
TEXTDISC_TRAIN_STREAMS = 400  # server.textdisc.data.TRAIN_SAMPLES.streams (not imported here: it loads torch)
DEFAULT_SMALL_TEXT_CHECKPOINT = REPO_MODELS / "text" / "char_lstm_small.safetensors"
DEFAULT_KWS_CHECKPOINT = REPO_MODELS / "kws" / "kws_dscnn.safetensors"


def default_kws_checkpoint() -> Path:
    return Path(os.environ.get("ANTIPHON_KWS_CHECKPOINT", DEFAULT_KWS_CHECKPOINT))


def default_text_checkpoint() -> Path:
    return Path(os.environ.get("ANTIPHON_TEXT_CHECKPOINT", DEFAULT_TEXT_CHECKPOINT))


def default_audio_checkpoint() -> Path:
    return Path(os.environ.get("ANTIPHON_AUDIO_CHECKPOINT", DEFAULT_AUDIO_CHECKPOINT))


# -- train -------------------------------------------------------------------
def _add_loop_options(p: argparse.ArgumentParser, *, out: str, optimizer: str, warmup: int, eval_every: int) -> None:
    """The options of the training loop the text and audio trainers share (``server/training.py``)."""
    budget = p.add_argument_group("budget (the first reached ends the run; the learning rate decays over it)")
    budget.add_argument("--steps", type=int, help="optimizer steps")
    budget.add_argument("--minutes", type=float, help="wall-clock minutes of training")
    p.add_argument("--out", type=Path, default=Path(out), help="checkpoint to write")
    p.add_argument("--resume", action="store_true", help="continue from the training state saved beside --out")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when present")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 autocast where the hardware runs it natively",
    )
    p.add_argument("--seed", type=int, default=1234, help="initialization and data order")
    p.add_argument("--lr", type=float, default=2e-3, help=f"peak learning rate ({optimizer}, cosine decay)")
    p.add_argument("--warmup-steps", type=int, default=warmup, help="linear learning-rate warm-up")
    p.add_argument("--eval-every", type=int, default=eval_every, help="steps between held-out estimates")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0, help="minutes between resumable saves")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def _loop_options(args: argparse.Namespace) -> dict[str, Any]:
    """The shared loop's fields of a trainer's options, from the flags ``_add_loop_options`` declared."""
    names = ("out", "steps", "minutes", "device", "precision", "resume", "seed", "lr", "warmup_steps")
    values = {name: getattr(args, name) for name in (*names, "eval_every", "checkpoint_minutes")}
    return {**values, "progress": not args.no_progress}


def _add_train_text(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "text",
        help="train the character LSTM",
        description="Train the character-level LSTM on Shakespeare (or --corpus) with stateful truncated "
        "backpropagation. Progress shows training bits/char, held-out estimate, characters/s and learning rate. "
        "Run under `torchrun --nproc-per-node N` for data-parallel training.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--corpus", type=Path, help="a UTF-8 text file instead of Shakespeare (last 5%% held out)")
    _add_loop_options(p, out="runs/text/model.safetensors", optimizer="AdamW", warmup=100, eval_every=500)
    p.add_argument("--batch-size", type=int, default=64, help="parallel text streams per process")
    p.add_argument("--seq-len", type=int, default=128, help="characters per truncated-BPTT chunk")
    model = p.add_argument_group("model")
    model.add_argument("--hidden-size", type=int, default=512)
    model.add_argument("--layers", type=int, default=2)
    model.add_argument("--embed-dim", type=int, default=64)
    model.add_argument("--dropout", type=float, default=0.1)
    p.set_defaults(func=_train_text)


def _train_text(args: argparse.Namespace) -> int:
    from server.text.train import TextTrainer, TextTrainOptions

    opts = TextTrainOptions(
        **_loop_options(args),
        corpus=args.corpus,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        model={
            "hidden_size": args.hidden_size,
            "num_layers": args.layers,
            "embed_dim": args.embed_dim,
            "dropout": args.dropout,
        },
    )
    for name in ("hidden_size", "layers", "embed_dim"):
        if getattr(args, name) < 1:
            raise InvalidArgument(name, f"must be at least 1, got {getattr(args, name)}")
    if not 0 <= args.dropout < 1:
        raise InvalidArgument("dropout", f"must be in [0, 1), got {args.dropout}")
    info = TextTrainer(opts).train()
    if info:
        print(f"held-out {info['metrics']['held_out_bits_per_char']:.4f} bits/char -> {opts.out}")
    return 0


def _add_train_digits(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--seed", type=int, default=0, help="initialization, batch order and augmentation")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    p.set_defaults(func=_train_digits)


def _train_digits(args: argparse.Namespace) -> int:
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


def _add_train_audio(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audio",
        help="train the WaveNet on espeak-ng speech",
        description="Train the WaveNet on random segments of espeak-ng renderings (lines of the training plays and "
        "the number words, in training voices, speeds, pitches and loudness; rendered once and cached), conditioned "
        "on each rendering's log-mel frames and voice. Progress shows training bits/sample, a held-out estimate "
        "(voices never trained on), samples/s and learning rate; the checkpoint records the exact held-out NLL over "
        "whole utterances. Run under `torchrun --nproc-per-node N` for data-parallel training.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_loop_options(p, out="runs/audio/wavenet.safetensors", optimizer="Adam", warmup=50, eval_every=250)
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this WaveNet checkpoint's weights and config (its model options win), with a fresh "
        "learning-rate schedule: more training for a committed model; the card names it",
    )
    p.add_argument("--batch-size", type=int, default=4, help="segments per process and step")
    p.add_argument("--segment", type=int, default=2000, help="samples per segment")
    p.add_argument(
        "--input-noise",
        type=float,
        default=0.0,
        help="std of Gaussian noise (in mu-law code steps) added to the codes the model reads while training",
    )
    data = p.add_argument_group("data")
    data.add_argument("--lines", type=int, default=2000, help="lines of the plays rendered for training")
    data.add_argument("--number-renderings", type=int, default=60, help="training renderings of each number word")
    data.add_argument("--heldout-lines", type=int, default=24, help="held-out lines (held-out voices)")
    data.add_argument("--heldout-number-renderings", type=int, default=2, help="held-out renderings of each number")
    data.add_argument("--workers", type=int, default=2, help="espeak-ng processes while rendering")
    model = p.add_argument_group("model")
    model.add_argument("--layers", type=int, default=20)
    model.add_argument("--cycle", type=int, default=10, help="dilations 1..2**(cycle-1), repeated")
    model.add_argument("--residual-channels", type=int, default=64)
    model.add_argument("--gate-channels", type=int, default=64)
    model.add_argument("--skip-channels", type=int, default=32)
    model.add_argument("--out-channels", type=int, default=128)
    model.add_argument("--n-mels", type=int, default=40)
    model.add_argument("--hop", type=int, default=160, help="samples per log-mel frame")
    model.add_argument("--cond-channels", type=int, default=64)
    model.add_argument("--cond-layers", type=int, default=2)
    p.set_defaults(func=_train_audio)


def _train_audio(args: argparse.Namespace) -> int:
    from server.audio.train import AudioTrainer, AudioTrainOptions

    model = {
        name: getattr(args, name)
        for name in (
            "layers",
            "cycle",
            "residual_channels",
            "gate_channels",
            "skip_channels",
            "out_channels",
            "n_mels",
            "hop",
            "cond_channels",
            "cond_layers",
        )
    }
    for name, value in model.items():
        if value < 1:
            raise InvalidArgument(name, f"must be at least 1, got {value}")
    if args.cycle > 14:
        raise InvalidArgument("cycle", f"must be at most 14 (dilation 8192), got {args.cycle}")
    opts = AudioTrainOptions(
        **_loop_options(args),
        batch_size=args.batch_size,
        segment=args.segment,
        input_noise=args.input_noise,
        lines=args.lines,
        number_renderings=args.number_renderings,
        heldout_lines=args.heldout_lines,
        heldout_number_renderings=args.heldout_number_renderings,
        workers=args.workers,
        model=model,
        init=args.init,
    )
    info = AudioTrainer(opts).train()
    if info:
        print(f"held-out {info['metrics']['heldout_bits_per_sample']:.4f} bits/sample -> {opts.out}")
    return 0


def _add_train_textdisc(sub: argparse._SubParsersAction) -> None:
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
        help="the generator (default: models/text/char_lstm.safetensors or $ANTIPHON_TEXT_CHECKPOINT)",
    )
    p.add_argument("--corpus", type=Path, help="a UTF-8 text file instead of Shakespeare (last 5%% tests)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=64, help="windows per step, half real")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW, one-cycle)")
    p.add_argument("--seed", type=int, default=0, help="initialization and window draws")
    p.add_argument(
        "--train-streams",
        type=int,
        default=TEXTDISC_TRAIN_STREAMS,
        help="sampled training streams (1,088 characters each) per temperature and variant; 18 settings",
    )
    p.add_argument("--channels", type=int, default=64, help="channels of every convolution")
    p.add_argument("--dilations", type=_comma_list, default="1,2,4,8,16", help="one convolution (width 5) per dilation")
    p.add_argument(
        "--ngrams",
        type=_comma_list,
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
    p.set_defaults(func=_train_textdisc)


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


def _train_textdisc(args: argparse.Namespace) -> int:
    from server.textdisc.train import TextDiscTrainOptions, train_textdisc

    opts = TextDiscTrainOptions(
        text_checkpoint=args.text_checkpoint or default_text_checkpoint(),
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


def _add_train_kws(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--seed", type=int, default=0, help="initialization, clip draws and augmentation")
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
    p.set_defaults(func=_train_kws)


def _float_pair(text: str, field: str) -> tuple[float, float]:
    """ "LOW,HIGH" -> (low, high); the ranges themselves are checked by the options they fill."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise InvalidArgument(field, f"give two numbers as LOW,HIGH, got {text!r}") from None
    return low, high


def _train_kws(args: argparse.Namespace) -> int:
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
        speed=_float_pair(args.speed_range, "speed_range"),
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


# -- eval --------------------------------------------------------------------
def _add_eval_text(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "text",
        help="bits per character of text files",
        description="Score every character of each FILE as read (newlines included), carrying the LSTM state "
        "through the whole file. With no FILE, the corpus's held-out plays are scored.",
    )
    p.add_argument("files", nargs="*", type=Path, metavar="FILE")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help=f"default: {DEFAULT_TEXT_CHECKPOINT.name} in models/text (or $ANTIPHON_TEXT_CHECKPOINT)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", action="store_true", help='last line: {"bits_per_char": ..., "chars": ...}')
    p.set_defaults(func=_eval_text)


def _read_utf8(path: Path, field: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgument(field, f"{path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise InvalidArgument(field, f"{path} is not UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise InvalidArgument(field, f"cannot read {path}: {exc.strerror}") from None


def _eval_text(args: argparse.Namespace) -> int:
    from server.data.shakespeare import load_shakespeare
    from server.device import resolve_device
    from server.text.checkpoint import load_text_model
    from server.text.evaluate import total_bits

    texts = {str(p): _read_utf8(p, "FILE") for p in args.files}
    if not texts:
        texts = load_shakespeare().valid
    if not all(texts.values()):
        raise InvalidArgument("FILE", "an empty file has no characters to score")
    model, vocab, _ = load_text_model(args.checkpoint or default_text_checkpoint(), resolve_device(args.device))
    bits, chars = 0.0, 0
    for name, text in texts.items():
        file_bits = total_bits(model, vocab, text)
        bits, chars = bits + file_bits, chars + len(text)
        print(f"{name}: {file_bits / len(text):.4f} bits/char over {len(text):,} characters")
    if len(texts) > 1:
        print(f"total: {bits / chars:.4f} bits/char over {chars:,} characters")
    if args.json:
        print(json.dumps({"bits_per_char": bits / chars, "chars": chars}))
    return 0


def _add_eval_digits(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "digits",
        help="accuracy and confusion matrix of the digits CNN",
        description="Classify the test split recorded in the checkpoint and print the accuracy and the "
        "confusion matrix (rows: true digit, columns: predicted).",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help=f"default: {DEFAULT_DIGITS_CHECKPOINT.name} in models/digits (or $ANTIPHON_DIGITS_CHECKPOINT)",
    )
    p.add_argument("--json", action="store_true", help='last line: {"accuracy": ..., "count": ..., "confusion": ...}')
    p.set_defaults(func=_eval_digits)


def default_digits_checkpoint() -> Path:
    return Path(os.environ.get("ANTIPHON_DIGITS_CHECKPOINT", DEFAULT_DIGITS_CHECKPOINT))


def _eval_digits(args: argparse.Namespace) -> int:
    from server.vision.checkpoint import load_digits_model
    from server.vision.data import recorded_split
    from server.vision.evaluate import evaluate, format_confusion

    model, meta = load_digits_model(args.checkpoint or default_digits_checkpoint())
    result = evaluate(model, *recorded_split(meta["data"]["test_indices"]).test)
    print(f"accuracy {result.accuracy:.2%} on {result.count} test images")
    print(format_confusion(result.confusion, meta["labels"]))
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0


def _add_eval_audio(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audio",
        help="held-out NLL (bits/sample) of the WaveNet; --render writes WAVs, a spectrogram and the log-mel distance",
        description="Score the held-out utterances the checkpoint's trainer held out (espeak-ng renderings in voices "
        "never trained on) with teacher forcing, in bits per sample over whole utterances (8 is chance). With "
        "--render DIR, also generate a few held-out utterances sample by sample, write them (generated and espeak "
        "reference) as WAV files with a spectrogram PNG into DIR, and report the mean absolute log-mel distance (dB).",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help=f"default: {DEFAULT_AUDIO_CHECKPOINT.name} in models/audio (or $ANTIPHON_AUDIO_CHECKPOINT)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--limit", type=int, default=None, help="score only the first N held-out utterances")
    render = p.add_argument_group("rendering (--render)")
    render.add_argument("--render", type=Path, default=None, metavar="DIR", help="write WAVs and a spectrogram here")
    render.add_argument("--count", type=int, default=4, help="held-out utterances to generate (default: 4)")
    render.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    render.add_argument("--seed", type=int, default=0, help="same seed, same audio (default: 0)")
    render.add_argument("--threads", type=int, default=1, help="cores for generation (default: 1)")
    p.add_argument(
        "--json",
        action="store_true",
        help='last line: {"bits_per_sample": ..., "samples": ..., "log_mel_distance_db": ... (with --render)}',
    )
    p.set_defaults(func=_eval_audio)


def _eval_audio(args: argparse.Namespace) -> int:
    from server.audio.checkpoint import load_audio_model
    from server.audio.data import build_utterances
    from server.audio.evaluate import bits_per_sample
    from server.device import resolve_device

    if args.limit is not None and args.limit < 1:
        raise InvalidArgument("limit", f"must be at least 1, got {args.limit}")
    if not 1 <= args.count <= 64:
        raise InvalidArgument("count", f"must be in 1..64, got {args.count}")
    if not 0 <= args.temperature <= 100:
        raise InvalidArgument("temperature", f"must be between 0 and 100, got {args.temperature}")
    if not 1 <= args.threads <= 64:
        raise InvalidArgument("threads", f"must be in 1..64, got {args.threads}")
    if not 0 <= args.seed < 2**63:
        raise InvalidArgument("seed", f"must be in 0..2**63-1, got {args.seed}")
    model, _, meta = load_audio_model(args.checkpoint or default_audio_checkpoint(), resolve_device(args.device))
    opts = meta["training"]["options"]
    heldout = build_utterances(
        "heldout",
        opts["heldout_lines"],
        opts["heldout_number_renderings"],
        model.config.n_mels,
        model.config.hop,
        opts["seed"],
        min_samples=opts["segment"],
    )[: args.limit]
    bits = bits_per_sample(model, heldout)
    samples = sum(u.samples for u in heldout)
    print(f"held-out {bits:.4f} bits/sample over {len(heldout)} utterances ({samples / 16_000:.1f} s)")
    result: dict[str, object] = {"bits_per_sample": bits, "samples": samples, "utterances": len(heldout)}
    if args.render is not None:
        from server.audio.quality import render_report

        report = render_report(model.cpu(), args.render, args.count, args.seed, args.temperature, args.threads)
        for item in report["utterances"]:  # type: ignore[attr-defined]
            print(f"{item['voice']}: {item['log_mel_distance_db']:.2f} dB  {item['text']!r}")
        print(f"mean log-mel distance {report['log_mel_distance_db']:.2f} dB; files in {args.render}")
        if "spectrogram.png" not in report["files"]:  # type: ignore[operator]
            print("(no spectrogram: install matplotlib, the `plots` extra)")
        result["log_mel_distance_db"] = report["log_mel_distance_db"]
    if args.json:
        print(json.dumps(result))
    return 0


def default_textdisc_checkpoint() -> Path:
    return Path(os.environ.get("ANTIPHON_TEXTDISC_CHECKPOINT", DEFAULT_TEXTDISC_CHECKPOINT))


def _add_eval_textdisc(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "textdisc",
        help="accuracy of the text discriminator, or its verdict on text files",
        description="With no FILE: rebuild the test windows the checkpoint names (held-out plays and fresh "
        "samples of its generator, from the cache or sampled again) and print the accuracy, by source, and the "
        "confusion matrix. With FILEs: the share of each file's 256-character windows judged generated.",
    )
    p.add_argument("files", nargs="*", type=Path, metavar="FILE")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help=f"default: {DEFAULT_TEXTDISC_CHECKPOINT.name} in models/textdisc (or $ANTIPHON_TEXTDISC_CHECKPOINT)",
    )
    p.add_argument(
        "--text-checkpoint",
        type=Path,
        default=None,
        help="the generator of the test samples (default: the text model the checkpoint names, if it is the "
        "default one)",
    )
    p.add_argument("--json", action="store_true", help="last line: the figures as JSON")
    p.set_defaults(func=_eval_textdisc)


def _eval_textdisc(args: argparse.Namespace) -> int:
    from server.textdisc.checkpoint import load_textdisc_model
    from server.textdisc.data import WINDOW, windows
    from server.textdisc.evaluate import predict_logits

    model, vocab, meta = load_textdisc_model(args.checkpoint or default_textdisc_checkpoint())
    if args.files:
        verdicts: dict[str, dict[str, float | int]] = {}
        for path in args.files:
            text = _read_utf8(path, "FILE")
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
    from server.data.shakespeare import load_corpus
    from server.textdisc.data import split_held_out, test_windows
    from server.textdisc.evaluate import evaluate
    from server.textdisc.samples import SampleSet, load_samples
    from server.vision.evaluate import format_confusion

    generator = args.text_checkpoint or default_text_checkpoint()
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


def _add_eval_kws(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help=f"default: {DEFAULT_KWS_CHECKPOINT.name} in models/kws (or $ANTIPHON_KWS_CHECKPOINT)",
    )
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
    p.set_defaults(func=_eval_kws)


def _eval_kws(args: argparse.Namespace) -> int:
    import numpy as np

    from server.kws.checkpoint import load_kws_model
    from server.kws.evaluate import evaluate
    from server.vision.evaluate import format_confusion

    if args.test_per_label < 0:
        raise InvalidArgument("test_per_label", f"must be at least 0, got {args.test_per_label}")
    if args.files and (args.noisy or args.test_per_label):
        raise InvalidArgument("files", "--noisy and --test-per-label score the espeak-ng voices: give no FILE")
    model, meta = load_kws_model(args.checkpoint or default_kws_checkpoint())
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


# -- sample ------------------------------------------------------------------
def _add_sample_text(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "text",
        help="stream a continuation of a prompt to stdout",
        description="Continue --prompt token by token, printing each character as it is sampled.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--prompt", default="", help="text to continue (dialogue form: 'Kent.\\nI thought ...')")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: models/text/char_lstm.safetensors")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k likeliest characters (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass to keep (1: off)")
    p.add_argument("--seed", type=int, default=None, help="same seed, same text")
    p.add_argument("--max-tokens", type=int, default=500)
    p.add_argument("--stop", action="append", default=[], help="stop before this text (repeatable)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(func=_sample_text)


def _sample_text(args: argparse.Namespace) -> int:
    from server.device import resolve_device
    from server.sampling import SamplingParams
    from server.text.checkpoint import load_text_model
    from server.text.generate import TextGeneration

    params = SamplingParams(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        max_tokens=args.max_tokens,
        stop=tuple(args.stop),
    )
    model, vocab, _ = load_text_model(args.checkpoint or default_text_checkpoint(), resolve_device(args.device))
    params.validated(max_tokens_limit=100_000, vocab_size=len(vocab))
    out = sys.stdout
    out.write(args.prompt)
    for piece in TextGeneration(model, vocab, args.prompt, params):
        out.write(piece)
        out.flush()
    out.write("\n")
    return 0


# -- serve -------------------------------------------------------------------
def _add_serve(commands: argparse._SubParsersAction) -> None:
    from server.settings import add_arguments

    p = commands.add_parser(
        "serve",
        help="serve the text model over gRPC and WebSocket",
        description="Serve the text model over gRPC and WebSocket from one process. Every option is also an "
        "ANTIPHON_* environment variable (a flag wins). Once both servers listen, one log line says "
        "`listening grpc=HOST:PORT ws=HOST:PORT`. SIGTERM stops accepting, lets live streams finish within "
        "--grace-s, cancels the rest and exits 0.",
    )
    add_arguments(p)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from server.app import serve
    from server.settings import ServeSettings

    settings = ServeSettings.from_sources(args, os.environ)
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)
    classifiers = {
        "kws": default_kws_checkpoint(),
        "textdisc": default_textdisc_checkpoint(),
        "digits": default_digits_checkpoint(),
    }
    text = settings.text_checkpoint or default_text_checkpoint()
    asyncio.run(serve(settings, text, _serve_audio(settings), classifiers))
    return 0


def _serve_audio(settings: ServeSettings) -> Path | None:
    """The audio checkpoint to serve: the one named (``none``: no audio), else the default when it exists."""
    if settings.audio_checkpoint is not None:
        return None if str(settings.audio_checkpoint).lower() == "none" else Path(settings.audio_checkpoint)
    default = DEFAULT_AUDIO_CHECKPOINT
    if default.is_file():
        return default
    logging.getLogger("antiphon.server").warning(
        "no audio model at %s: serving text only (train one with `antiphon train audio`)", default
    )
    return None


# -- say ---------------------------------------------------------------------
def _add_say(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "say",
        help="speak a text with the WaveNet (play it, or write a WAV file)",
        description="Speak TEXT with the WaveNet in this process: espeak-ng renders the text, the WaveNet makes "
        "every sample, and the audio streams to `aplay` (speech starts before the rest is made) or into a WAV "
        "file as it is generated. Progress (seconds made, speed against real time) goes to stderr.",
    )
    p.add_argument("text", help="the text to speak; - reads it from stdin")
    p.add_argument("-o", "--out", type=Path, default=None, help="write a 16 kHz 16-bit WAV file (- for stdout)")
    p.add_argument("--voice", default="", help="an espeak-ng voice, accent+variant (default: the model's)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature; 0 is greedy (default 1)")
    p.add_argument("--seed", type=int, default=None, help="same seed, same samples (default: random)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this much audio (default 30)")
    p.add_argument("--threads", type=int, default=1, help="cores for the WaveNet step (default 1)")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: models/audio/wavenet.safetensors")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_say)


def _say(args: argparse.Namespace) -> int:
    import asyncio

    from server.audio.say import SayOptions, say

    text = sys.stdin.read() if args.text == "-" else args.text
    if not 1 <= args.threads <= 64:
        raise InvalidArgument("threads", f"must be in 1..64, got {args.threads}")
    checkpoint = args.checkpoint or default_audio_checkpoint()
    if not checkpoint.is_file():
        raise InvalidArgument("checkpoint", f"{checkpoint} does not exist (train one with `antiphon train audio`)")
    options = SayOptions(
        text=text,
        checkpoint=checkpoint,
        out=args.out,
        voice=args.voice,
        temperature=args.temperature,
        seed=args.seed,
        max_seconds=args.max_seconds,
        threads=args.threads,
        progress=not args.quiet,
    )
    result = asyncio.run(say(options))
    where = "played" if args.out is None else f"wrote {args.out}"
    print(
        f"{where}: {result.samples / 16_000:.2f} s of audio in {result.seconds:.2f} s "
        f"(first chunk after {result.first_chunk_s * 1000:.0f} ms, {result.finish_reason})",
        file=sys.stderr,
    )
    return 0


# -- export ------------------------------------------------------------------
def _comma_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _add_export(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export",
        help="export models to ONNX and TFLite files with a manifest",
        description="Convert models to ONNX and TFLite (float32 and, with --int8, int8), check every file against "
        "torch (float: 1e-4 max abs on real and random inputs; int8: the same top label on at least 99% of the "
        "evaluation set; the text step: the same greedy text for 200 tokens) and write manifest.json beside them. "
        "A file that fails its check stops the export (exit 1).",
    )
    p.add_argument(
        "--models",
        type=_comma_list,
        default="digits,text_step,text_small_step,textdisc,kws",
        help="comma-separated: digits, text_step, text_small_step, textdisc, kws (default: all)",
    )
    p.add_argument(
        "--formats", type=_comma_list, default="onnx,tflite", help="comma-separated: onnx, tflite (default: both)"
    )
    p.add_argument("--int8", action="store_true", help="also write int8 files")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/export"),
        help="folder for the files and manifest.json (default: runs/export)",
    )
    p.add_argument("--digits-checkpoint", type=Path, default=None, help="default: models/digits/digits_cnn.safetensors")
    p.add_argument(
        "--text-checkpoint",
        type=Path,
        default=None,
        help="text_step, and the generator textdisc was trained against (default: models/text/char_lstm.safetensors)",
    )
    p.add_argument(
        "--small-text-checkpoint", type=Path, default=None, help="default: models/text/char_lstm_small.safetensors"
    )
    p.add_argument(
        "--textdisc-checkpoint", type=Path, default=None, help="default: models/textdisc/text_disc.safetensors"
    )
    p.add_argument("--kws-checkpoint", type=Path, default=None, help="default: models/kws/kws_dscnn.safetensors")
    p.add_argument(
        "--text-corpus",
        type=Path,
        default=None,
        help="text whose held-out part checks the text step (default: Shakespeare's held-out plays)",
    )
    p.add_argument("--seed", type=int, default=0, help="random inputs and calibration sample (default: 0)")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from export.pipeline import ExportOptions, export_models

    opts = ExportOptions(
        out=args.out,
        models=args.models,
        formats=args.formats,
        int8=args.int8,
        digits_checkpoint=args.digits_checkpoint or default_digits_checkpoint(),
        text_checkpoint=args.text_checkpoint or default_text_checkpoint(),
        small_text_checkpoint=args.small_text_checkpoint or DEFAULT_SMALL_TEXT_CHECKPOINT,
        textdisc_checkpoint=args.textdisc_checkpoint or default_textdisc_checkpoint(),
        kws_checkpoint=args.kws_checkpoint or default_kws_checkpoint(),
        seed=args.seed,
    )
    opts.validate()
    if opts.needs_text:
        from server.data.shakespeare import load_corpus

        opts.text = load_corpus(args.text_corpus).valid_text
    manifest = export_models(opts)
    for name, entry in manifest["models"].items():
        for fmt, files in entry["files"].items():
            for precision, info in files.items():
                print(f"{name} {fmt} {precision}: {args.out / info['file']} ({info['bytes']:,} bytes)")
    print(f"manifest: {args.out / 'manifest.json'}")
    return 0


# -- parser ------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="antiphon",
        description="Streaming generation server: train, evaluate and sample models, and serve them over "
        "gRPC and WebSocket.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, adders in (
        (
            "train",
            "train a model",
            [_add_train_text, _add_train_digits, _add_train_audio, _add_train_textdisc, _add_train_kws],
        ),
        (
            "eval",
            "evaluate a model",
            [_add_eval_text, _add_eval_digits, _add_eval_audio, _add_eval_textdisc, _add_eval_kws],
        ),
        ("sample", "generate from a model", [_add_sample_text]),
    ):
        group = commands.add_parser(name, help=help_text, description=help_text.capitalize() + ".")
        kinds = group.add_subparsers(dest="kind", required=True, metavar="MODEL")
        for add in adders:
            add(kinds)
    _add_serve(commands)
    _add_say(commands)
    _add_export(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Our own loggers at INFO (DEBUG with -v); libraries (converters, grpc, onnx) only from WARNING up.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("antiphon", "server", "export", "websockets.server"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except InvalidArgument as exc:
        log.debug("invalid argument", exc_info=True)
        parser.exit(2, f"antiphon: error: {exc}\n")
    except AntiphonError as exc:
        log.debug("failed", exc_info=True)
        print(f"antiphon: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("antiphon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
