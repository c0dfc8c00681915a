"""``antiphon train evaluator|dcgan|vae|vaegan|rbm``, ``antiphon eval`` of the same, and ``antiphon sample image``
(a PNG grid of any image checkpoint's samples: a batch, a latent walk, a Gibbs chain's steps, Deep Dream's steps):
the image generators and their judge (:mod:`server.image`).

The trainers' flags are generated from their options dataclasses (:mod:`server.image.options`), ``--dry-run``
included. Nothing here imports torch until a command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from server.commands.common import add_subcommand
from server.image.options import TRAIN_OPTIONS
from server.options import add_flags, check_output, from_flags, written_to

log = logging.getLogger(__name__)

TRAIN_HELP = {
    "evaluator": (
        "train the Fashion-MNIST evaluator CNN (the generators' judge, Deep Dream's network)",
        "30 steps of a tiny CNN on 2,000 images",
    ),
    "dcgan": ("train the class-conditional DCGAN", "20 steps of a tiny GAN on the 8x8 digits"),
    "vae": ("train the convolutional VAE on binarised images", "20 steps of a tiny VAE on the 8x8 digits"),
    "vaegan": ("train the VAE-GAN", "20 steps of a tiny VAE-GAN on the 8x8 digits"),
    "rbm": ("train the Bernoulli RBM (CD-k or persistent CD)", "50 steps of a 12-hidden-unit RBM on the 8x8 digits"),
}


def add_train(sub: argparse._SubParsersAction) -> None:
    for family, cls in TRAIN_OPTIONS.items():
        help_text, dry_run = TRAIN_HELP[family]
        p = add_subcommand(sub, family, _train, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        add_flags(p, cls, dry_run=dry_run)
        p.set_defaults(family=family)


def _train(args: argparse.Namespace) -> int:
    from server.image import train_evaluator, train_gan, train_rbm, train_vae

    runners: dict[str, Any] = {
        "evaluator": train_evaluator.train_evaluator,
        "dcgan": train_gan.train_dcgan,
        "vae": train_vae.train_vae,
        "vaegan": train_vae.train_vaegan,
        "rbm": train_rbm.train_rbm,
    }
    opts = from_flags(TRAIN_OPTIONS[args.family], args)
    info = runners[args.family](opts)
    if info:  # rank 0 only under torchrun
        print(json.dumps(info["metrics"], sort_keys=True))
        print(f"-> {written_to(opts)}")
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    for family, text in (
        ("evaluator", "test accuracy and confusion matrix of the evaluator CNN"),
        ("dcgan", "quality of DCGAN samples in the judge's features, beside real data"),
        ("vaegan", "quality of VAE-GAN samples in the judge's features, beside real data"),
        ("vae", "test NLL of the VAE on binarised images (importance sampling)"),
        ("rbm", "test NLL of the RBM on binarised images (AIS; exact log Z when it can be enumerated)"),
    ):
        p = add_subcommand(sub, family, _eval, help=text, description=text[0].upper() + text[1:] + ".")
        p.set_defaults(family=family)
        p.add_argument("--checkpoint", type=Path, required=True, help="the checkpoint to evaluate")
        if family in ("dcgan", "vaegan"):
            p.add_argument("--judge", type=Path, default=None, help="the judge's checkpoint (default: per data set)")
            p.add_argument("--samples", type=int, default=2000, help="generated images (default: 2000)")
        if family == "vae":
            p.add_argument("--k", type=int, default=1000, help="importance samples per image (default: 1000)")
            p.add_argument("--images", type=int, default=2000, help="the fixed test subset (default: 2000)")
        if family == "rbm":
            p.add_argument("--ais-runs", type=int, default=500, help="AIS chains (default: 500)")
            p.add_argument("--ais-betas", type=int, default=20000, help="AIS temperatures (default: 20000)")


def _eval(args: argparse.Namespace) -> int:
    from server.image import evaluate

    result: dict[str, Any]
    if args.family == "evaluator":
        result = evaluate.evaluate_evaluator(args.checkpoint)
        from server.classifier_metrics import format_confusion

        print(f"accuracy {result['accuracy']:.2%} on {result['count']} test images")
        print(format_confusion(result["confusion"], [str(i) for i in range(len(result["labels"]))]))
    elif args.family in ("dcgan", "vaegan"):
        result = evaluate.evaluate_generator(args.checkpoint, args.judge, args.samples).to_dict()
    elif args.family == "vae":
        result = evaluate.evaluate_vae(args.checkpoint, args.k, args.images)
    else:
        result = evaluate.evaluate_rbm(args.checkpoint, args.ais_runs, args.ais_betas)
    print(json.dumps(result, sort_keys=True))
    return 0


def add_sample(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "image",
        _sample,
        help="a PNG grid of an image model's samples (or frames)",
        description="Write a PNG grid of samples of any image checkpoint: DCGAN, VAE or VAE-GAN samples (every "
        "class in turn for a conditional model) or a latent walk (--walk); an RBM's Gibbs chains, one column per "
        "shown step; Deep Dream on the evaluator, one column per shown step.",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="an image model's checkpoint")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--rows", type=int, default=10, help="rows of the grid (default: 10)")
    p.add_argument(
        "--columns", type=int, default=10, help="columns (frames shown, for chains and dreams) (default: 10)"
    )
    p.add_argument("--seed", type=int, default=0, help="the first row's seed; the others follow (default: 0)")
    p.add_argument("--scale", type=int, default=2, help="pixels per image pixel (default: 2)")
    p.add_argument("--walk", action="store_true", help="latent walks between seeds instead of samples")
    p.add_argument("--steps", type=int, default=1000, help="Gibbs steps of an RBM's chains (default: 1000)")
    p.add_argument("--photo", default="china", help="Deep Dream's photo (default: china)")
    p.add_argument("--layer", default="block2", help="Deep Dream's layer (default: block2)")
    p.add_argument("--target", type=int, default=None, help="Deep Dream's class, with --layer logits")
    p.add_argument("--channel", type=int, default=None, help="Deep Dream's channel of the layer")


def _sample(args: argparse.Namespace) -> int:
    from server.image.samples import sample_grid

    check_output(args.out, "out")  # before the sampling, not an OSError after it
    picture = sample_grid(args)
    print(f"{picture.shape[1]}x{picture.shape[0]} -> {args.out}")
    return 0
