"""The ``antiphon-edge`` image commands: ``classify image`` (a digit, or real or generated under an image
discriminator) and ``generate image`` (an exported generator's images as one PNG), with their arguments.

:mod:`edge_client.cli` registers them in its parser and runs them, with its exit codes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from edge_client.cli_common import emit, open_model, subcommand
from server.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from edge_client.manifest import Manifest, Model

MAX_IMAGES = 1024  # generate image --count
MODEL_HELP = (
    "a model name in --models, an export folder (its {model} model), or one exported file such as "
    "DIR/dcgan_discriminator.int8.onnx (that file; its manifest.json beside it) (default: {model})"
)


# -- classify image ----------------------------------------------------------
def _classify_image(args: argparse.Namespace) -> int:
    from edge_client.image import read_digit
    from edge_client.text import softmax

    model = open_model(args, "digits")
    if model.entry.get("kind") == "image_discriminator":
        return _judge_images(args, model)
    if args.class_ is not None:
        raise InvalidArgument("--class", f"{model.name} is not a discriminator; --class goes with one")
    labels = model.labels
    shape = model.runner.inputs[0].shape
    for path in args.files:
        image = read_digit(Path(path), args.ink)
        (logits,) = model.runner(image.reshape(shape))[:1]
        p = softmax(logits.reshape(-1).astype("float64"))
        best = int(p.argmax())
        record = {"file": path, "label": labels[best], "score": round(float(p[best]), 4)}
        emit(args, record, f"{path}: {labels[best]} ({p[best]:.2f})")
    return 0


def _judge_images(args: argparse.Namespace, model: Model) -> int:
    from edge_client.image import read_image
    from edge_client.imagegen import RealnessJudge, resolve_class

    judge = RealnessJudge(model)
    label = resolve_class(judge.labels, args.class_)
    for path in args.files:
        verdict = judge.judge(read_image(Path(path), judge.image_size), label)
        under = f", as {verdict.under}" if verdict.under else ""
        emit(args, {"file": path, **verdict.to_dict()}, f"{path}: {verdict.label} ({verdict.score:.2f}{under})")
    return 0


# -- generate image ----------------------------------------------------------
def _first_generator(manifest: Manifest) -> str:
    """``dcgan_generator`` where the export has it, else its first image generator."""
    names = [n for n, e in manifest.models.items() if e.get("kind") == "image_generator"]
    if not names:
        raise NotFound(
            f"{manifest.folder}: no image generator in the manifest; export one with "
            "`antiphon export --models dcgan_generator`"
        )
    return "dcgan_generator" if "dcgan_generator" in names else names[0]


def _generate_image(args: argparse.Namespace) -> int:
    from edge_client.image import MAX_PIXELS, grid_size, tile, write_png
    from edge_client.imagegen import SEED_MAX, ImageGenerator

    for flag, value, low, high in (
        ("--count", args.count, 1, MAX_IMAGES),
        ("--columns", args.columns, 1, MAX_IMAGES),
        ("--scale", args.scale, 1, 64),
    ):
        if value is not None and not low <= value <= high:
            raise InvalidArgument(flag, f"must be in [{low}, {high}], got {value}")
    if Path(args.out).suffix.lower() != ".png":
        raise InvalidArgument("--out", f"{args.out}: the picture is written as PNG; give a file name ending in .png")
    if not 0 <= args.seed <= SEED_MAX - args.count + 1:
        raise InvalidArgument("--seed", f"must be in [0, 2**63 - count], got {args.seed}")
    generator = ImageGenerator(open_model(args, _first_generator))
    label = generator.label(args.class_)
    columns = args.columns or min(args.count, 8)
    width, height = grid_size(args.count, columns, generator.image_size, args.scale)
    if width * height > MAX_PIXELS:
        raise InvalidArgument("--scale", f"the picture would be {width}x{height} pixels; at most {MAX_PIXELS:,}")
    seeds = list(range(args.seed, args.seed + args.count))
    images = generator.generate(seeds, label)  # (N, H, W)
    picture = tile(images, columns, args.scale)
    write_png(Path(args.out), picture)
    model = generator.model
    name = generator.labels[label] if label is not None else None
    record = {
        "file": args.out,
        "model": model.name,
        "backend": model.backend,
        "precision": model.precision,
        "class": name,
        "seeds": seeds,
        "size": [int(picture.shape[1]), int(picture.shape[0])],
    }
    what = f"{args.count} image{'s' if args.count > 1 else ''}" + (f" of {name}" if name else "")
    span = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
    text = (
        f"{args.out}: {what} ({span}), {picture.shape[1]}x{picture.shape[0]} px, {model.name} "
        f"{model.backend} {model.precision}"
    )
    emit(args, record, text)
    return 0


# -- arguments ---------------------------------------------------------------
def add_classify_image(kinds: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """``classify image``, under ``classify``'s ``kinds``."""
    p = subcommand(
        kinds,
        "image",
        common,
        _classify_image,
        "one JSON object per file",
        model="digits",
        model_help=MODEL_HELP,
        help="an 8x8 digit (the digits model), or real or generated (an image discriminator)",
        description="The digit in each image: an 8x8 PNG (8-bit grey or RGB), PGM (P2/P5) or .npy of raw "
        "intensities in [0, 16]. Larger images whose sides are multiples of 8 are averaged down. "
        "With an image discriminator (--model dcgan_discriminator, or its exported file): whether each image is "
        "real or generated, with the probability of that verdict: grey levels as they are (light on black, as "
        "Fashion-MNIST), averaged down from a whole multiple of the model's side (a `generate image --scale` "
        "output) or else resized; judged under --class, or by the mean over classes when none is given.",
        examples=(
            "antiphon-edge classify image --models DIR digit.png",
            "antiphon-edge classify image --model DIR/dcgan_discriminator.int8.onnx --class Trouser trouser.png",
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="PNG, PGM, JPEG or .npy files")
    p.add_argument(
        "--class",
        dest="class_",
        default=None,
        metavar="NAME_OR_INDEX",
        help="a discriminator's class to judge the images under: a label name (case ignored) or its index "
        "(default: the mean of every class's logit)",
    )
    p.add_argument(
        "--ink",
        default="auto",
        choices=("auto", "light", "dark"),
        help="light: bright strokes on black (the training data); dark: dark strokes on paper; auto: dark when "
        "the border is brighter than the middle (default: auto)",
    )


def add_generate_image(outputs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """``generate image``, under ``generate``'s ``outputs``."""
    p = subcommand(
        outputs,
        "image",
        common,
        _generate_image,
        "a JSON object: the file, model, backend, precision, class, seeds and size",
        model="",
        model_help="an export folder, one exported file (e.g. DIR/dcgan_generator.int8.tflite: that file), or a "
        "model name in --models (default: dcgan_generator, else the export's first image generator)",
        help="images from an exported generator (the DCGAN's generator, the VAE's decoder) as a PNG",
        description="Generate --count images of --class from seeds --seed, --seed + 1, ... and write them as one "
        "8-bit grey PNG (a grid of --columns when --count > 1, white lines between images; each pixel --scale x "
        "--scale). A seed's latent is the first Z standard normals of NumPy's default_rng(seed), which is what "
        "the server's sampler draws: the same seed and class give the server's image. A class-conditional "
        "generator needs --class (a label name or its index); an unconditional one takes none. Auto precision "
        "takes the float32 file (torch's images); --precision int8 the int8 one.",
        examples=(
            "antiphon-edge generate image --model DIR --class Trouser -o trouser.png",
            "antiphon-edge generate image --model DIR --class 'ankle boot' --seed 7 --count 16 --scale 4 -o boots.png",
            "antiphon-edge generate image --model DIR/vae_decoder.int8.tflite --count 8 -o vae.png",
        ),
    )
    p.add_argument("-o", "--out", required=True, metavar="FILE.png", help="the PNG to write")
    p.add_argument(
        "--class",
        dest="class_",
        default=None,
        metavar="NAME_OR_INDEX",
        help="the class to generate: a label name (case ignored; e.g. Trouser, 'ankle boot') or its index",
    )
    p.add_argument("--seed", type=int, default=0, help="the first image's seed; image i has seed + i (default: 0)")
    p.add_argument("--count", type=int, default=1, help=f"how many images, 1 to {MAX_IMAGES} (default: 1)")
    p.add_argument("--columns", type=int, default=None, help="images a row of the grid (default: up to 8)")
    p.add_argument("--scale", type=int, default=1, help="pixels a model pixel, each way (default: 1)")
