"""``antiphon train text``, ``eval text`` and ``sample text``: the character LSTM."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from server.commands.common import add_checkpoint, add_device, add_seed, add_subcommand, add_trainer, read_utf8
from server.errors import InvalidArgument
from server.options import written_to
from server.paths import DEFAULT_TEXT_CHECKPOINT, default_checkpoint, shown
from server.text.options import TextTrainOptions


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
        "through the whole file. With no FILE, the corpus's held-out plays are scored.",
    )
    p.add_argument("files", nargs="*", type=Path, metavar="FILE")
    add_checkpoint(p, "text")
    add_device(p)
    p.add_argument("--json", action="store_true", help='last line: {"bits_per_char": ..., "chars": ...}')


def _eval(args: argparse.Namespace) -> int:
    from server.data.shakespeare import load_shakespeare
    from server.device import resolve_device
    from server.text.checkpoint import load_text_model
    from server.text.evaluate import total_bits

    texts = {str(p): read_utf8(p, "FILE") for p in args.files}
    if not texts:
        texts = load_shakespeare().valid
    if not all(texts.values()):
        raise InvalidArgument("FILE", "an empty file has no characters to score")
    model, vocab, _ = load_text_model(args.checkpoint or default_checkpoint("text"), resolve_device(args.device))
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


def add_sample(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "text",
        _sample,
        help="stream a continuation of a prompt to stdout",
        description="Continue --prompt token by token, printing each character as it is sampled.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--prompt", default="", help="text to continue (dialogue form: 'Kent.\\nI thought ...')")
    p.add_argument("--checkpoint", type=Path, default=None, help=f"default: {shown(DEFAULT_TEXT_CHECKPOINT)}")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k likeliest characters (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass to keep (1: off)")
    add_seed(p, None, "same seed, same text")
    p.add_argument("--max-tokens", type=int, default=500)
    p.add_argument("--stop", action="append", default=[], help="stop before this text (repeatable)")
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
