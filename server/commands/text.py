"""``antiphon train text``, ``eval text`` and ``sample text``: the character LSTM."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from server.commands.common import add_checkpoint, add_device, add_seed, add_subcommand, add_trainer, read_utf8
from server.errors import InvalidArgument
from server.options import written_to
from server.paths import default_checkpoint
from server.text.options import DynamicEval, TextTrainOptions


def add_train(sub: argparse._SubParsersAction) -> None:
    add_trainer(
        sub,
        "text",
        TextTrainOptions,
        _train,
        help="train the character LSTM",
        description="Train the character-level LSTM on Shakespeare (or --corpus) with stateful truncated "
        "backpropagation. Progress shows training bits/char, held-out estimate, characters/s and learning rate. "
        "Run under `torchrun --nproc-per-node N` for data-parallel training.",
        dry_run="60 steps of a 2 x 32 LSTM (seconds)",
    )


def _train(opts: TextTrainOptions) -> int:
    from server.text.train import TextTrainer

    info = TextTrainer(opts).train()
    if info:
        metrics = info["metrics"]
        dev = f", development {metrics['dev_bits_per_char']:.4f}" if "dev_bits_per_char" in metrics else ""
        print(f"held-out {metrics['held_out_bits_per_char']:.4f} bits/char{dev} -> {written_to(opts)}")
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "text",
        _eval,
        help="bits per character of text files",
        description="Score every character of each FILE as read (newlines included), carrying the LSTM state "
        "through the whole file. With no FILE, the corpus's held-out plays are scored (--dev: the development plays). "
        "The figure is static: the weights stay as trained. --dynamic adds a second, labelled figure with dynamic "
        "evaluation (Krause et al. 2018): each segment is scored, then the weights take one gradient step on it, so "
        "the model adapts to the text as a compressor does; no character is scored by weights that have seen it.",
    )
    p.add_argument("files", nargs="*", type=Path, metavar="FILE", help="UTF-8 text files (default: the held-out plays)")
    add_checkpoint(p, "text")
    add_device(p)
    p.add_argument("--dev", action="store_true", help="with no FILE: the development plays, not the held-out ones")
    p.add_argument(
        "--max-chars", type=int, default=None, metavar="N", help="score the first N characters of each (default: all)"
    )
    p.add_argument("--json", action="store_true", help='last line: {"bits_per_char": ..., "chars": ...}')
    dynamic = p.add_argument_group("dynamic evaluation (--dynamic)")
    dynamic.add_argument("--dynamic", action="store_true", help="also score with dynamic evaluation")
    dynamic.add_argument("--dynamic-lr", type=float, default=DynamicEval.lr, help="SGD step (default: %(default)s)")
    dynamic.add_argument(
        "--dynamic-decay",
        type=float,
        default=DynamicEval.decay,
        help="pull toward the trained weights per segment, 0..1 (default: %(default)s)",
    )
    dynamic.add_argument(
        "--segment", type=int, default=DynamicEval.segment, help="characters per step (default: %(default)s)"
    )


def _eval(args: argparse.Namespace) -> int:
    from server.data.shakespeare import DEV_PLAYS, load_shakespeare
    from server.device import resolve_device
    from server.text.checkpoint import load_text_model
    from server.text.evaluate import dynamic_total_bits, total_bits

    if args.max_chars is not None and args.max_chars < 1:
        raise InvalidArgument("max_chars", f"must be at least 1, got {args.max_chars}")
    if args.dev and args.files:
        raise InvalidArgument("dev", "--dev scores the development plays; give it without FILE")
    dynamic = DynamicEval(args.dynamic_lr, args.dynamic_decay, args.segment) if args.dynamic else None
    texts = {str(p): read_utf8(p, "FILE") for p in args.files}
    if not texts:
        corpus = load_shakespeare(dev_plays=DEV_PLAYS if args.dev else ())
        texts = corpus.dev if args.dev else corpus.valid
    texts = {name: text[: args.max_chars] for name, text in texts.items()}
    if not all(texts.values()):
        raise InvalidArgument("FILE", "an empty file has no characters to score")
    model, vocab, _ = load_text_model(args.checkpoint or default_checkpoint("text"), resolve_device(args.device))
    bits, dynamic_bits, chars = 0.0, 0.0, 0
    for name, text in texts.items():
        file_bits = total_bits(model, vocab, text)
        bits, chars = bits + file_bits, chars + len(text)
        line = f"{name}: {file_bits / len(text):.4f} bits/char over {len(text):,} characters"
        if dynamic is not None:
            file_dynamic = dynamic_total_bits(model, vocab, text, dynamic)
            dynamic_bits += file_dynamic
            line += f" (dynamic evaluation: {file_dynamic / len(text):.4f})"
        print(line, flush=True)
    if len(texts) > 1:
        line = f"total: {bits / chars:.4f} bits/char over {chars:,} characters"
        print(line + (f" (dynamic evaluation: {dynamic_bits / chars:.4f})" if dynamic is not None else ""))
    if args.json:
        report: dict[str, object] = {"bits_per_char": bits / chars, "chars": chars}
        if dynamic is not None:
            report["dynamic"] = {"bits_per_char": dynamic_bits / chars, **vars(dynamic)}
        print(json.dumps(report))
    return 0


def add_sample(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "text",
        _sample,
        help="stream a continuation of a prompt to stdout",
        description="Continue --prompt token by token, printing each character as it is sampled.",
    )
    p.add_argument(
        "--prompt", default="", help="text to continue (dialogue form: 'Kent.\\nI thought ...'; default: none)"
    )
    add_checkpoint(p, "text")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy (default: %(default)s)")
    p.add_argument(
        "--top-k", type=int, default=0, help="keep the k likeliest characters (0: off) (default: %(default)s)"
    )
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass to keep (1: off) (default: %(default)s)")
    add_seed(p, None, "same seed, same text (default: random)")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=500,
        metavar="N",
        help="characters to generate, at most 100,000 (default: %(default)s)",
    )
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop before this text (repeatable)")
    add_device(p)


def _sample(args: argparse.Namespace) -> int:
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
    model, vocab, _ = load_text_model(args.checkpoint or default_checkpoint("text"), resolve_device(args.device))
    params.validated(max_tokens_limit=100_000, vocab_size=len(vocab))
    out = sys.stdout
    out.write(args.prompt)
    for piece in TextGeneration(model, vocab, args.prompt, params):
        out.write(piece)
        out.flush()
    out.write("\n")
    return 0
