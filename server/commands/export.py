"""``antiphon export``: models to ONNX and TFLite files, each checked against torch, with a manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from server.commands.common import add_seed, add_subcommand, comma_list
from server.paths import (
    DEFAULT_DIGITS_CHECKPOINT,
    DEFAULT_IMAGE_MODELS,
    DEFAULT_KWS_CHECKPOINT,
    DEFAULT_SMALL_TEXT_CHECKPOINT,
    DEFAULT_TEXT_CHECKPOINT,
    DEFAULT_TEXTDISC_CHECKPOINT,
    default_checkpoint,
    shown,
)

# export/specs.py's MODELS, named here so that --help does not import torch (tests/server/test_cli.py checks both agree)
EXPORTABLE = (
    "digits",
    "text_step",
    "text_small_step",
    "textdisc",
    "kws",
    "dcgan_generator",
    "vae_decoder",
    "dcgan_discriminator",
)


def add_command(commands: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        commands,
        "export",
        _run,
        help="export models to ONNX and TFLite files with a manifest",
        description="Convert models to ONNX and TFLite (float32 and, with --int8, int8), check every file against "
        "torch (float: 1e-4 max abs on real and random inputs; int8: the same top label on at least 99% of the "
        "evaluation set, for an image generator the judge's label of its images, for the GAN's discriminator its "
        "verdict on 95%; the text step: the same greedy text for 200 tokens) and write manifest.json beside them. "
        "A file that fails its check stops the export (exit 1).",
    )
    p.add_argument(
        "--models",
        type=comma_list,
        default=",".join(EXPORTABLE),
        metavar="LIST",
        help=f"comma-separated: {', '.join(EXPORTABLE)} (default: all)",
    )
    p.add_argument(
        "--formats",
        type=comma_list,
        default="onnx,tflite",
        metavar="LIST",
        help="comma-separated: onnx, tflite (default: both)",
    )
    p.add_argument("--int8", action="store_true", help="also write int8 files (default: float32 only)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/export"),
        metavar="DIR",
        help="folder for the files and manifest.json; an earlier export's other models stay listed (default: "
        "runs/export)",
    )
    # The files the models are read from (None: the default each help names).
    for flag, help_text in (
        ("--digits-checkpoint", f"default: {shown(DEFAULT_DIGITS_CHECKPOINT)} (or $ANTIPHON_DIGITS_CHECKPOINT)"),
        (
            "--text-checkpoint",
            "text_step, and the generator textdisc was trained against (default: "
            f"{shown(DEFAULT_TEXT_CHECKPOINT)} or $ANTIPHON_TEXT_CHECKPOINT)",
        ),
        ("--small-text-checkpoint", f"default: {shown(DEFAULT_SMALL_TEXT_CHECKPOINT)}"),
        ("--textdisc-checkpoint", f"default: {shown(DEFAULT_TEXTDISC_CHECKPOINT)} (or $ANTIPHON_TEXTDISC_CHECKPOINT)"),
        ("--kws-checkpoint", f"default: {shown(DEFAULT_KWS_CHECKPOINT)} (or $ANTIPHON_KWS_CHECKPOINT)"),
        (
            "--dcgan-checkpoint",
            f"dcgan_generator and dcgan_discriminator (default: {shown(DEFAULT_IMAGE_MODELS / 'dcgan.safetensors')})",
        ),
        (
            "--vae-checkpoint",
            f"vae_decoder: a VAE or VAE-GAN (default: {shown(DEFAULT_IMAGE_MODELS / 'vae.safetensors')})",
        ),
        ("--text-corpus", "text whose held-out part checks the text step (default: Shakespeare's held-out plays)"),
    ):
        p.add_argument(flag, type=Path, default=None, metavar="PATH", help=help_text)
    p.add_argument(
        "--check-workers",
        type=int,
        default=0,
        metavar="N",
        help="threads that check each file against torch, each running its own copy of the file (the text "
        "discriminator's four files take minutes each on one core); 0: one per CPU core this process may use, at "
        "most $OMP_NUM_THREADS where it is set (default: 0)",
    )
    add_seed(p, 0, "random inputs and calibration sample (default: 0)")


def _run(args: argparse.Namespace) -> int:
    from export.pipeline import ExportOptions, export_models

    opts = ExportOptions(
        out=args.out,
        models=args.models,
        formats=args.formats,
        int8=args.int8,
        digits_checkpoint=args.digits_checkpoint or default_checkpoint("digits"),
        text_checkpoint=args.text_checkpoint or default_checkpoint("text"),
        small_text_checkpoint=args.small_text_checkpoint or DEFAULT_SMALL_TEXT_CHECKPOINT,
        textdisc_checkpoint=args.textdisc_checkpoint or default_checkpoint("textdisc"),
        kws_checkpoint=args.kws_checkpoint or default_checkpoint("kws"),
        dcgan_checkpoint=args.dcgan_checkpoint or DEFAULT_IMAGE_MODELS / "dcgan.safetensors",
        vae_checkpoint=args.vae_checkpoint or DEFAULT_IMAGE_MODELS / "vae.safetensors",
        seed=args.seed,
        check_workers=args.check_workers,
    )
    opts.validate()
    if opts.needs_text:
        from server.data.shakespeare import load_corpus

        opts.text = load_corpus(args.text_corpus).valid_text
    manifest = export_models(opts)
    for name in opts.models:
        for fmt, files in manifest["models"][name]["files"].items():
            for precision, info in files.items():
                print(f"{name} {fmt} {precision}: {args.out / info['file']} ({info['bytes']:,} bytes)")
    kept = [name for name in manifest["models"] if name not in opts.models]
    also = f" (also lists, unchanged: {', '.join(kept)})" if kept else ""
    print(f"manifest: {args.out / 'manifest.json'}{also}")
    return 0
