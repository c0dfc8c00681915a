"""The ``antiphon-edge`` command: run exported models on a small device, with no torch. Here: the parser, the
audio and text commands, listen and bench; the image commands (``classify image``, ``generate image``) are in
:mod:`edge_client.cli_images`, ``chat`` in :mod:`edge_client.cli_chat`, the helpers every command shares in
:mod:`edge_client.cli_common`.

Exit codes: 0 success, 1 a runtime failure (a missing, altered or unreadable model file, a missing or busy audio
device, an unreachable server with nothing to fall back on), 2 a bad argument or input file (named in the
message) or an API key the server refused (or did not get), 130 interrupted.
"""

from __future__ import annotations

import argparse
import codecs
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge_client.cli_chat import add_chat
from edge_client.cli_common import emit, in_range, manifest_of, open_named, stdin_bytes, subcommand, utf8
from edge_client.cli_images import add_classify_image, add_generate_image
from edge_client.runtime import BACKENDS
from server.errors import AntiphonError, InvalidArgument, Unauthenticated

if TYPE_CHECKING:
    pass

log = logging.getLogger("antiphon.edge")

DEFAULT_MODELS = Path("runs/export")
MAX_THREADS = 64  # interpreter threads; more only adds start-up time on any board this runs on
MAX_BENCH_SECONDS = 3600.0
MAX_BENCH_TOKENS = 1_000_000


def _stdin_text(keep: int) -> str:
    """Standard input as UTF-8 text, whatever the locale says, read a piece at a time so that memory stays bounded
    however long it is: its last ``keep`` characters, after the last non-blank character before them if there is
    one (so that a text blank only at its end is not taken for an empty one)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    source = stdin_bytes()
    tail, before = "", ""
    try:
        while True:
            data = source.read(1 << 16)
            tail += decoder.decode(data, final=not data)
            if len(tail) > keep:
                cut, tail = tail[:-keep], tail[-keep:]
                if cut.strip():
                    before = cut.rstrip()[-1]
            if not data:
                return before + tail
    except UnicodeDecodeError:
        raise InvalidArgument("standard input", "is not UTF-8 text") from None


# -- classify ----------------------------------------------------------------
MAX_UNKNOWN_BIAS = 5.0


def add_unknown_bias(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--unknown-bias",
        type=float,
        default=0.0,
        metavar="B",
        help="added to the unknown label's logit, -5 to 5: below 0 hears more number words (and takes more other "
        "words for them), above 0 fewer; choose it on recordings of your own speakers (default: 0, the model as "
        "trained)",
    )


def _classify_audio(args: argparse.Namespace) -> int:
    from edge_client.audio import wav_chunks
    from edge_client.kws import KeywordModel

    in_range("--unknown-bias", args.unknown_bias, -MAX_UNKNOWN_BIAS, MAX_UNKNOWN_BIAS)
    kws = KeywordModel(open_named(args, args.model), args.unknown_bias)
    hop = max(1, kws.sample_rate // 4)
    for path in args.files:
        p, at = kws.classify_stream(wav_chunks(Path(path), kws.sample_rate), hop)  # an hour's file in bounded memory
        order = p.argsort()[::-1][:3]
        top = [{"label": kws.labels[i], "score": round(float(p[i]), 4)} for i in order]
        record = {"file": path, "label": top[0]["label"], "score": top[0]["score"], "window_s": at, "top": top}
        emit(args, record, f"{path}: {top[0]['label']} ({top[0]['score']:.2f})")
    return 0


def _classify_text(args: argparse.Namespace) -> int:
    from edge_client.text import TextClassifier

    utf8("TEXT", args.text)
    classifier = TextClassifier(open_named(args, args.model))
    text = _stdin_text(keep=classifier.length) if args.text == "-" else args.text  # only the last window counts
    verdict = classifier.classify(text)
    record = {"label": verdict.label, "score": round(verdict.score, 4), "scores": verdict.scores}
    emit(args, record, f"{verdict.label} ({verdict.score:.2f})")
    return 0


# -- listen ------------------------------------------------------------------
def _listen(args: argparse.Namespace) -> int:
    from edge_client.audio import MAX_CHANNELS, MAX_SAMPLE_RATE, Microphone, stream_chunks
    from edge_client.kws import KeywordModel, Listener, ListenOptions

    in_range("--rate", args.rate, 1, MAX_SAMPLE_RATE)
    in_range("--channels", args.channels, 1, MAX_CHANNELS)
    options = ListenOptions(args.hop, args.smooth, args.threshold, args.refractory)
    try:
        options.validate()
    except InvalidArgument as exc:  # the options name their fields; here those are flags
        raise InvalidArgument(f"--{exc.field}", exc.reason) from None
    in_range("--unknown-bias", args.unknown_bias, -MAX_UNKNOWN_BIAS, MAX_UNKNOWN_BIAS)
    kws = KeywordModel(open_named(args, args.model), args.unknown_bias)
    listener = Listener(kws, options)
    if args.device == "-":
        chunks = stream_chunks(stdin_bytes(), "standard input", kws.sample_rate, args.rate, args.channels)
        for found in listener.run(chunks):
            emit(args, found.to_dict(), f"{found.time:8.2f}s  {found.word}  ({found.score:.2f})")
        return 0
    microphone = Microphone(args.device, kws.sample_rate)
    print(f"antiphon-edge: listening on {microphone.device} (Ctrl-C stops)", file=sys.stderr)
    try:
        for found in listener.run(microphone.chunks()):
            emit(args, found.to_dict(), f"{found.time:8.2f}s  {found.word}  ({found.score:.2f})")
    finally:
        microphone.close()
    return 0


# -- bench -------------------------------------------------------------------
def _bench(args: argparse.Namespace) -> int:
    from edge_client.bench import run_bench

    backends = None if args.backend in (None, "auto") else [args.backend]
    if backends:
        from edge_client.runtime import resolve_backend

        resolve_backend(backends[0])
    if args.images < 0:
        raise InvalidArgument("--images", f"must be at least 0, got {args.images}")
    in_range("--seconds", args.seconds, 0.0, MAX_BENCH_SECONDS, above=True)
    in_range("--tokens", args.tokens, 0, MAX_BENCH_TOKENS)
    rows = run_bench(manifest_of(args), args.only, backends, args.seconds, args.tokens, args.images)
    for row in rows:
        extra = f", {row.tokens_per_s:,.0f} tokens/s" if row.tokens_per_s else ""
        extra += f", {row.images_per_s:,.0f} images/s" if row.images_per_s else ""
        emit(
            args,
            row.to_dict(),
            f"{row.model:16} {row.backend:15} {row.precision:8} {row.median_ms:8.3f} ms median "
            f"{row.p90_ms:8.3f} ms p90  load {row.load_ms:7.1f} ms  +{row.rss_mb:5.1f} MB{extra}",
        )
    return 0


# -- parser ------------------------------------------------------------------
def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("models")
    where.add_argument(
        "--models",
        default=os.environ.get("ANTIPHON_EDGE_MODELS", str(DEFAULT_MODELS)),
        metavar="DIR",
        help="folder with manifest.json and the exported files (`antiphon export --out DIR`) "
        "(default: runs/export; env ANTIPHON_EDGE_MODELS)",
    )
    where.add_argument(
        "--backend",
        default=os.environ.get("ANTIPHON_EDGE_BACKEND", "auto"),
        help=f"auto, {', '.join(BACKENDS)}: auto takes the first installed in that order; ai_edge_litert and "
        "tflite_runtime run .tflite files, onnxruntime .onnx (default: auto; env ANTIPHON_EDGE_BACKEND)",
    )
    where.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "int8", "float32"),
        help="which file of a model: auto takes int8 for classifiers, float32 for generators (default: auto)",
    )
    where.add_argument("--threads", type=int, default=1, help=f"interpreter threads, 1 to {MAX_THREADS} (default: 1)")
    where.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    parser = argparse.ArgumentParser(
        prog="antiphon-edge",
        description="Run antiphon's exported models on a small device with no PyTorch: classify audio, text and "
        "images locally, tell real images from generated ones, generate images offline, spot keywords from a "
        "microphone, chat with the server (falling back to the device's own generator), and measure each model. "
        "Models come from `antiphon export` (a folder with "
        "manifest.json); every file's sha256 is checked before use.",
        epilog="examples:\n"
        "  antiphon-edge classify image --models DIR digit.png\n"
        "  antiphon-edge generate image --model DIR --class Trouser --seed 7 --count 16 -o trousers.png\n"
        "  antiphon-edge classify image --model DIR/dcgan_discriminator.int8.tflite shirt.png\n"
        "  espeak-ng --stdout 'three' | antiphon-edge listen --models DIR --device -\n"
        "  antiphon-edge chat --models DIR --server grpc://server:50051\n"
        "  antiphon-edge bench --models DIR\n"
        "exit codes: 0 success, 1 a runtime failure (model file missing, altered or unloadable; audio device missing "
        "or busy; server unreachable with no step model to answer), 2 a bad argument or input file, or an API key "
        "the server refused, 130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    classify = commands.add_parser(
        "classify", help="classify audio, text or an image", description="Classify audio, text or an image locally."
    )
    kinds = classify.add_subparsers(dest="kind", required=True, metavar="INPUT")
    p = subcommand(
        kinds,
        "audio",
        common,
        _classify_audio,
        "one JSON object per file, with the top three labels",
        model="kws",
        help="spoken words in audio files (the kws model)",
        description="The word said in each audio file: WAV of any sample rate and channel count (mixed down and "
        "resampled to the model's rate), other formats (FLAC, Ogg, MP3...) through sox where installed. A clip "
        "longer than the model's window (1 s) is read window by window and the "
        "most word-like window is reported. Prints `FILE: label (score)`, or one JSON object per file.",
        examples=(
            "antiphon-edge classify audio --models DIR yes.wav seven.wav",
            "antiphon-edge classify audio --models DIR --json recording-48k-stereo.wav",
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="WAV files, or others sox reads")
    add_unknown_bias(p)
    p = subcommand(
        kinds,
        "text",
        common,
        _classify_text,
        "a JSON object with every label's score",
        model="textdisc",
        help="a text's label (the textdisc model)",
        description="The label of a text (e.g. human or machine) from the text discriminator. Characters map to "
        "ids by the manifest's vocabulary; the text is cut or padded to the model's length.",
        examples=(
            'antiphon-edge classify text --models DIR "Good night, sweet prince."',
            'echo "some text" | antiphon-edge classify text --models DIR -',
        ),
    )
    p.add_argument("text", metavar="TEXT", help="the text, or - to read it from standard input")
    add_classify_image(kinds, common)

    generate = commands.add_parser(
        "generate",
        help="generate offline (images)",
        description="Generate on the device with an exported generator, no server needed.",
    )
    outputs = generate.add_subparsers(dest="output", required=True, metavar="OUTPUT")
    add_generate_image(outputs, common)

    p = subcommand(
        commands,
        "listen",
        common,
        _listen,
        'one JSON object per word: {"word", "time", "score"}',
        model="kws",
        help="spot number words from a microphone or a pipe",
        description="Spot words continuously: a one-second window slides by --hop; the posteriors of the last "
        "--smooth windows are averaged; a word (not unknown or silence) whose average passes --threshold is "
        "printed, then no word for --refractory seconds, and the same word again only after its average fell "
        "below half the threshold. One line per word: `TIME s  WORD  (SCORE)`, or JSON. "
        "`--device -` reads standard input: a WAV stream, or raw PCM16 LE (--rate, --channels); otherwise "
        "`arecord` records from ALSA device --device (default: the default device).",
        examples=(
            "antiphon-edge listen --models DIR",
            "antiphon-edge listen --models DIR --device plughw:1,0 --json",
            'espeak-ng --stdout "three and seven" | antiphon-edge listen --models DIR --device -',
            "arecord -t raw -f S16_LE -r 44100 -c 2 | antiphon-edge listen --models DIR --device - --rate 44100 "
            "--channels 2",
        ),
    )
    p.add_argument("--device", default=None, help="ALSA capture device (arecord -D), or - for standard input")
    p.add_argument("--hop", type=float, default=0.25, help="seconds between windows, 0.01 to 1 (default: 0.25)")
    p.add_argument("--smooth", type=int, default=3, help="windows whose posteriors are averaged, 1 to 20 (default: 3)")
    p.add_argument(
        "--threshold", type=float, default=0.6, help="smoothed posterior to report a word, over 0 to 1 (default: 0.6)"
    )
    p.add_argument("--refractory", type=float, default=1.0, help="seconds with no word after one, 0 to 10 (default: 1)")
    p.add_argument(
        "--rate", type=int, default=16000, help="sample rate of raw PCM on standard input, in Hz (default: 16000)"
    )
    p.add_argument("--channels", type=int, default=1, help="channels of raw PCM on standard input (default: 1)")
    add_unknown_bias(p)

    add_chat(commands, common)

    p = subcommand(
        commands,
        "bench",
        common,
        _bench,
        "one JSON object per file",
        help="latency and memory of each model on this device",
        description="Load each model file this device can run (every installed backend, or --backend) and "
        "report load time, resident memory added, and per-inference latency (median, 90th percentile) over "
        "--seconds of runs (for an image model: per image); step models also report sampled offline generation "
        "in tokens/s, image generators images/s (--images images from seeds, the latent drawn for each).",
        examples=(
            "antiphon-edge bench --models DIR",
            "antiphon-edge bench --models DIR --only kws,digits --backend onnxruntime --json",
        ),
    )
    p.add_argument("--only", type=_comma_list, default=None, metavar="NAMES", help="comma-separated model names")
    p.add_argument("--seconds", type=float, default=1.0, help="seconds of runs per file (default: 1)")
    p.add_argument("--tokens", type=int, default=500, help="tokens generated by step models (default: 500)")
    p.add_argument(
        "--images", type=int, default=100, help="images generated by image generators, seed by seed (default: 100)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("antiphon").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    logging.getLogger("edge_client").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # gRPC's C core would write its own line (a failed TLS handshake) beside the one this client says; before grpc
    # loads. GRPC_VERBOSITY=INFO shows them.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        in_range("--threads", args.threads, 1, MAX_THREADS)
        return func(args)
    except (InvalidArgument, Unauthenticated) as exc:
        log.debug("invalid argument", exc_info=True)
        print(f"antiphon-edge: error: {exc}", file=sys.stderr)
        return 2
    except AntiphonError as exc:
        log.debug("failed", exc_info=True)
        print(f"antiphon-edge: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("antiphon-edge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
