"""``antiphon train audio`` and ``eval audio``: the WaveNet."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from server.audio.options import AudioTrainOptions
from server.commands.common import add_checkpoint, add_device, add_seed, add_subcommand, add_trainer
from server.errors import InvalidArgument
from server.options import check_output, written_to
from server.paths import default_checkpoint


def add_train(sub: argparse._SubParsersAction) -> None:
    add_trainer(
        sub,
        "audio",
        AudioTrainOptions,
        _train,
        help="train the WaveNet on espeak-ng speech",
        description="Train the WaveNet on random segments of espeak-ng renderings (lines of the training plays and "
        "the number words, in training voices, speeds, pitches and loudness; rendered once and cached), conditioned "
        "on each rendering's log-mel frames and voice. Progress shows training bits/sample, a held-out estimate "
        "(voices never trained on), samples/s and learning rate; the checkpoint records the exact held-out NLL over "
        "whole utterances. Run under `torchrun --nproc-per-node N` for data-parallel training.",
        dry_run="30 steps of four small layers on a few espeak-ng renderings (seconds)",
    )


def _train(opts: AudioTrainOptions) -> int:
    from server.audio.train import AudioTrainer

    info = AudioTrainer(opts).train()
    if info:
        print(f"held-out {info['metrics']['heldout_bits_per_sample']:.4f} bits/sample -> {written_to(opts)}")
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "audio",
        _eval,
        help="held-out NLL (bits/sample) of the WaveNet; --render writes WAVs, a spectrogram and the log-mel distance",
        description="Score the held-out utterances the checkpoint's trainer held out (espeak-ng renderings in voices "
        "never trained on) with teacher forcing, in bits per sample over whole utterances (8 is chance). With "
        "--render DIR, also generate a few held-out utterances sample by sample, write them (generated and espeak "
        "reference) as WAV files with a spectrogram PNG into DIR, and report the mean absolute log-mel distance (dB).",
    )
    add_checkpoint(p, "audio")
    add_device(p)
    p.add_argument(
        "--limit", type=int, default=None, metavar="N", help="score only the first N held-out utterances (default: all)"
    )
    render = p.add_argument_group("rendering (--render)")
    render.add_argument("--render", type=Path, default=None, metavar="DIR", help="write WAVs and a spectrogram here")
    render.add_argument("--count", type=int, default=4, help="held-out utterances to generate (default: 4)")
    render.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    add_seed(render, 0, "same seed, same audio (default: 0)")
    render.add_argument("--threads", type=int, default=1, help="cores for generation (default: 1)")
    p.add_argument(
        "--json",
        action="store_true",
        help='last line: {"bits_per_sample": ..., "samples": ..., "log_mel_distance_db": ... (with --render)}',
    )


def _eval(args: argparse.Namespace) -> int:
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
    if args.render is not None:  # before the scoring, not an OSError after it
        check_output(args.render / "spectrogram.png", "render")
    model, _, meta = load_audio_model(args.checkpoint or default_checkpoint("audio"), resolve_device(args.device))
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
