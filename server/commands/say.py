"""``antiphon say``: speak a text with the WaveNet in this process (play it, or write a WAV file)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.commands.common import add_seed, add_subcommand
from server.errors import InvalidArgument
from server.options import check_output
from server.paths import DEFAULT_AUDIO_CHECKPOINT, default_checkpoint, shown


def add_command(commands: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        commands,
        "say",
        _run,
        help="speak a text with the WaveNet (play it, or write a WAV file)",
        description="Speak TEXT with the WaveNet in this process: espeak-ng renders the text, the WaveNet makes "
        "every sample, and the audio streams to `aplay` (speech starts before the rest is made) or into a WAV "
        "file as it is generated. Progress (seconds made, speed against real time) goes to stderr.",
    )
    p.add_argument("text", help="the text to speak; - reads it from stdin")
    p.add_argument("-o", "--out", type=Path, default=None, help="write a 16 kHz 16-bit WAV file (- for stdout)")
    p.add_argument("--voice", default="", help="an espeak-ng voice, accent+variant (default: the model's)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature; 0 is greedy (default 1)")
    add_seed(p, None, "same seed, same samples (default: random)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this much audio (default 30)")
    p.add_argument("--threads", type=int, default=1, help="cores for the WaveNet step (default 1)")
    p.add_argument("--checkpoint", type=Path, default=None, help=f"default: {shown(DEFAULT_AUDIO_CHECKPOINT)}")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from server.commands.speak import SayOptions, say

    text = sys.stdin.read() if args.text == "-" else args.text
    if not 1 <= args.threads <= 64:
        raise InvalidArgument("threads", f"must be in 1..64, got {args.threads}")
    if args.out is not None and str(args.out) != "-":
        check_output(args.out, "out")  # before the model is loaded and the speech made
        args.out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or default_checkpoint("audio")
    if checkpoint.is_dir():
        raise InvalidArgument("checkpoint", f"{checkpoint} is a directory, not a checkpoint")
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
