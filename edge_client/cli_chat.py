"""``antiphon-edge chat``: turns with the server, streamed token by token, answered on the device when the server
cannot be reached (its flags, their checks, and playing or writing a spoken reply)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from edge_client.cli_common import in_range, manifest_of, stdin_bytes, subcommand, utf8
from server.errors import DeviceError, InvalidArgument, ModelFileError

if TYPE_CHECKING:
    from edge_client.chat import TurnResult

STEP_MODELS = ("text_small_step", "text_step")  # offline chat: the small one where the export has it
# the server's sampling limits (server/sampling.py: its largest max_tokens; a server's --max-tokens, 2048 by default,
# may be lower), checked here too for offline turns
MAX_TEMPERATURE = 100.0
MAX_TOKENS = 4096
MAX_SEED = 2**64 - 1
MAX_RETRIES = 20
MAX_BACKOFF_S = 60.0
MAX_TIMEOUT_S = 3600.0


def _stdin_lines() -> Iterator[str]:
    """Standard input's lines as UTF-8 text, without their line ends, whatever the locale says."""
    for number, line in enumerate(stdin_bytes(), 1):
        try:
            yield line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise InvalidArgument("standard input", f"line {number} is not UTF-8 text") from None


def _chat(args: argparse.Namespace) -> int:
    from edge_client.chat import ChatClient, ChatRequest, TurnResult
    from edge_client.text import Generator

    def notify(text: str) -> None:
        print(f"antiphon-edge: {text}", file=sys.stderr, flush=True)

    _check_chat(args)
    generator: list[Generator] = []  # opened at the first offline turn; keeps the offline conversation

    def local(request: ChatRequest, on_text: Callable[[str], None]) -> TurnResult:
        manifest = manifest_of(args)
        name = args.local_model or manifest.first_of(*STEP_MODELS)
        if name is None:
            raise ModelFileError(f"no text step model ({', '.join(STEP_MODELS)}) in {args.models} to answer offline")
        if args.local_model and not manifest.entry(name).get("vocabulary"):
            raise InvalidArgument("--local-model", f"{name!r} is not a text step model (it has no vocabulary)")
        if not generator:
            generator.append(Generator(manifest.open(name, args.backend, args.precision, args.threads), args.seed))
        notify(f"answering on this device with {name}")
        entry = generator[0].model.entry
        personas = entry.get("personas") or []
        persona = request.persona or entry.get("default_persona") or (personas[0] if personas else "Lear")
        speaker = request.speaker or entry.get("user_speaker") or "Kent"
        result = TurnResult("device")
        turn = generator[0].chat_turn(
            request.message,
            persona,
            speaker,
            request.max_tokens or 256,
            0.8 if request.temperature is None else request.temperature,
        )
        for piece in turn:
            result.text += piece
            on_text(piece)
        result.finish_reason = "stop"
        return result

    api_key = args.api_key or os.environ.get("ANTIPHON_API_KEY") or None  # never a default: --help would show it
    client = ChatClient(
        args.server,
        local,
        args.retries,
        args.backoff,
        args.connect_timeout,
        args.session,
        notify,
        api_key,
        args.ca_file,
        args.stall_timeout,
    )

    def on_text(piece: str) -> None:
        if not args.json:
            sys.stdout.write(piece)
            sys.stdout.flush()

    messages = [args.message] if args.message is not None else _stdin_lines()
    try:
        for message in messages:
            if not message.strip():
                continue
            request = ChatRequest(
                "",
                message,
                args.persona,
                args.speaker,
                args.speak or bool(args.speak_to),
                args.temperature,
                args.max_tokens,
                args.seed,
            )
            result = client.turn(request, on_text)
            if args.json:
                record = {"source": result.source, "text": result.text, "finish_reason": result.finish_reason}
                if result.note:
                    record["note"] = result.note
                print(json.dumps(record), flush=True)
            else:
                print(flush=True)
            if args.speak or args.speak_to:
                _speak(result, args.speak_to, notify)
    finally:
        client.close()
    return 0


def _check_chat(args: argparse.Namespace) -> None:
    """The chat flags the server would refuse, or that would break the retries, refused before any turn."""
    for flag in ("--message", "--session", "--persona", "--speaker", "--api-key", "--server"):
        utf8(flag, getattr(args, flag[2:].replace("-", "_")))
    in_range("--temperature", args.temperature, 0.0, MAX_TEMPERATURE)
    in_range("--max-tokens", args.max_tokens, 1, MAX_TOKENS)
    in_range("--seed", args.seed, 0, MAX_SEED, shown="in 0..2**64-1 (an unsigned 64-bit integer)")
    in_range("--retries", args.retries, 0, MAX_RETRIES)
    in_range("--backoff", args.backoff, 0.0, MAX_BACKOFF_S)
    in_range("--connect-timeout", args.connect_timeout, 0.0, MAX_TIMEOUT_S, above=True)
    in_range("--stall-timeout", args.stall_timeout, 0.0, MAX_TIMEOUT_S, above=True)
    if args.speak_to is not None:  # checked now: a reply's audio is only written once its turn has ended
        if args.speak_to.is_dir():
            raise InvalidArgument("--speak-to", f"{args.speak_to} is a folder; give a file name such as reply.wav")
        if not args.speak_to.parent.is_dir():
            raise InvalidArgument("--speak-to", f"{args.speak_to.parent} is not a folder")


def _speak(result: TurnResult, to: Path | None, notify: Callable[[str], None]) -> None:
    from edge_client.audio import encode_wav

    if not result.audio:
        notify("no audio came with this reply")
        return
    rate = result.audio_format.sample_rate if result.audio_format else 16000
    wav = encode_wav(result.samples(), rate)
    if to is not None:
        try:
            to.write_bytes(wav)
        except OSError as exc:
            raise InvalidArgument("--speak-to", f"cannot write {to} ({exc.strerror or exc})") from None
        notify(f"wrote the spoken reply to {to}")
        return
    try:
        done = subprocess.run(["aplay", "-q"], input=wav, capture_output=True, check=False)
    except FileNotFoundError:
        raise DeviceError(
            "aplay not found: install ALSA's tools (apt install alsa-utils) or use --speak-to FILE"
        ) from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise DeviceError(f"aplay: {lines[-1] if lines else f'exit status {done.returncode}'}")


def add_chat(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The ``chat`` command and its flags."""
    p = subcommand(
        commands,
        "chat",
        common,
        _chat,
        'one JSON object per turn: {"source", "text", ...}',
        help="chat with the server; answer on the device when it is unreachable",
        description="Chat turn by turn (one message per line of standard input, or --message), the reply streamed "
        "token by token from the server (grpc://HOST:PORT or ws://HOST:PORT/PATH; grpcs:// and wss:// over TLS). "
        "An unreachable server is tried again after --backoff seconds, doubling, --retries times; then the device "
        "answers with its own step model (text_small_step, else text_step) and says so on standard error; the "
        "next turn tries the server again. A refused API key is an error (exit code 2), never answered offline. "
        "--speak asks for the reply's audio and plays it with aplay (--speak-to writes a WAV).",
        examples=(
            "antiphon-edge chat --models DIR --server grpc://pi-server:50051",
            'antiphon-edge chat --models DIR --server ws://pi-server:8765/ --message "Good night." --json',
            "ANTIPHON_API_KEY=KEY antiphon-edge chat --models DIR --server wss://server:8765/ --ca-file ca.pem",
        ),
    )
    p.add_argument(
        "--server",
        required=True,
        metavar="URL",
        help="grpc://HOST:PORT or ws://HOST:PORT/PATH; grpcs://HOST:PORT or wss://HOST:PORT/PATH over TLS",
    )
    p.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="the server's API key, sent as Authorization: Bearer KEY; prefer the variable, which other users of "
        "the device cannot read from the process list (default: none; env ANTIPHON_API_KEY)",
    )
    p.add_argument(
        "--ca-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="PEM certificates of the authority that signed a grpcs:// or wss:// server's certificate, for a "
        "private one (default: the system's authorities)",
    )
    p.add_argument("--message", default=None, help="one turn with this message (default: read lines from stdin)")
    p.add_argument("--session", default=None, help="chat session id (default: a fresh random one)")
    p.add_argument("--persona", default="", help="who replies (default: the server's default persona)")
    p.add_argument("--speaker", default="", help="the name the user's lines are written under")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the server's)")
    p.add_argument("--max-tokens", type=int, default=None, help="reply length limit (default: the server's)")
    p.add_argument("--seed", type=int, default=None, help="seed for the server's and the device's sampling")
    p.add_argument("--speak", action="store_true", help="ask for audio and play it with aplay")
    p.add_argument("--speak-to", type=Path, default=None, metavar="FILE", help="write the reply's audio to a WAV")
    p.add_argument(
        "--retries", type=int, default=3, help=f"tries again before answering offline, 0 to {MAX_RETRIES} (default: 3)"
    )
    p.add_argument(
        "--backoff", type=float, default=0.5, help="first wait between tries in seconds, doubling (default: 0.5)"
    )
    p.add_argument("--connect-timeout", type=float, default=2.0, help="seconds to connect (default: 2)")
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=10.0,
        help="seconds with nothing from the server before the reply's first event or between two events, after "
        "which the connection counts as lost (default: 10)",
    )
    p.add_argument(
        "--local-model", default=None, help="step model for offline turns (default: text_small_step, else text_step)"
    )
