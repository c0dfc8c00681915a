"""``antiphon train text``, ``eval text`` and ``sample text``: the character LSTM."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from server.commands.common import add_checkpoint, add_device, add_loop_options, add_seed, loop_options, read_utf8
from server.data.shakespeare import DEV_PLAYS
from server.errors import InvalidArgument
from server.paths import DEFAULT_TEXT_CHECKPOINT, default_checkpoint, shown

# CharLSTMConfig's fields as the flags name them (--layers, not --num-layers).
MODEL_FLAGS = {
    "hidden_size": "hidden_size",
    "num_layers": "layers",
    "embed_dim": "embed_dim",
    "dropout": "dropout",
    "embed_dropout": "embed_dropout",
    "output_dropout": "output_dropout",
}


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "text",
        help="train the character LSTM",
        description="Train the character-level LSTM on Shakespeare (or --corpus) with stateful truncated "
        "backpropagation. Progress shows training bits/char, held-out estimate, characters/s and learning rate. "
        "Run under `torchrun --nproc-per-node N` for data-parallel training.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--corpus", type=Path, help="a UTF-8 text file instead of Shakespeare (last 5%% held out)")
    add_loop_options(p, out="runs/text/model.safetensors", optimizer="AdamW", warmup=100, eval_every=500)
    p.add_argument("--batch-size", type=int, default=64, help="parallel text streams per process")
    p.add_argument("--seq-len", type=int, default=128, help="characters per truncated-BPTT chunk")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW decoupled weight decay on matrices")
    p.add_argument("--min-lr-ratio", type=float, default=0.05, help="the cosine's floor, a fraction of --lr")
    p.add_argument(
        "--dev-plays",
        nargs="*",
        metavar="PLAY",
        help="hold these training plays out as a development split, reported beside the held-out plays "
        f"(no PLAY: {' '.join(DEV_PLAYS)}); off by default",
    )
    model = p.add_argument_group("model")
    model.add_argument("--hidden-size", type=int, default=512)
    model.add_argument("--layers", type=int, default=2)
    model.add_argument("--embed-dim", type=int, default=64)
    model.add_argument("--dropout", type=float, default=0.1, help="between layers (and on the output)")
    model.add_argument("--embed-dropout", type=float, default=0.0, help="on the embedding")
    model.add_argument("--output-dropout", type=float, default=None, help="on the output (default: --dropout)")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from server.text.model import CharLSTMConfig
    from server.text.train import TextTrainer, TextTrainOptions

    opts = TextTrainOptions(
        **loop_options(args),
        corpus=args.corpus,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        weight_decay=args.weight_decay,
        min_lr_ratio=args.min_lr_ratio,
        dev_plays=() if args.dev_plays is None else tuple(args.dev_plays) or DEV_PLAYS,
        model={field: getattr(args, flag) for field, flag in MODEL_FLAGS.items()},
    )
    try:  # before the corpus is read: the vocabulary comes with it, any size does to check the rest
        CharLSTMConfig(vocab_size=1, **opts.model)
    except InvalidArgument as exc:
        raise InvalidArgument(MODEL_FLAGS[exc.field], exc.reason) from None
    info = TextTrainer(opts).train()
    if info:
        metrics = info["metrics"]
        dev = f", development {metrics['dev_bits_per_char']:.4f}" if "dev_bits_per_char" in metrics else ""
        print(f"held-out {metrics['held_out_bits_per_char']:.4f} bits/char{dev} -> {opts.out}")
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "text",
        help="bits per character of text files",
        description="Score every character of each FILE as read (newlines included), carrying the LSTM state "
        "through the whole file. With no FILE, the corpus's held-out plays are scored.",
    )
    p.add_argument("files", nargs="*", type=Path, metavar="FILE")
    add_checkpoint(p, "text")
    add_device(p)
    p.add_argument("--json", action="store_true", help='last line: {"bits_per_char": ..., "chars": ...}')
    p.set_defaults(func=_eval)


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
    p = sub.add_parser(
        "text",
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
    p.set_defaults(func=_sample)


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
