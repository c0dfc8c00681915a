"""Quality of the image generators beside real data, and the likelihood models against their baseline.

    python benchmarks/image_quality.py --dcgan runs/image/dcgan.safetensors --vaegan runs/image/vaegan.safetensors \
        --vae runs/image/vae.safetensors --rbm runs/image/rbm.safetensors [--samples 2000] [--json out.json]

Sample quality is measured in the feature space of the project's own judge (the evaluator CNN for Fashion-MNIST,
the digits CNN for the 8x8 digits), not Inception's, whose weights would be downloaded: the Fréchet distance in judge
features (real training vs real test images give its floor), the Inception-score analogue (real test images give
its ceiling), the 1-nearest-neighbour two-sample accuracy (0.5 ideal), memorisation (each image's pixel distance to
its nearest training image, generated vs real test), and for a conditional generator the share of samples the judge
gives the asked class (at least 95% of the real test images' share is the bar).

Likelihoods on binarised images (pixels at one half or more are 1), in nats per image: the VAE by importance
sampling (k samples per image) on a fixed subset of the test split, the RBM by annealed importance sampling on the
whole test split, each against the best mixture of Bernoullis (components and smoothing chosen on the same test
images, which flatters the baseline) on the same images; the bar is 10% lower. Every process uses one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from server.checkpoint import read_meta
from server.image.evaluate import evaluate_generator, evaluate_rbm, evaluate_vae, mixture_baseline, nll_gain
from server.image.sampling import LATENT_SCALE

AGREEMENT_BAR = 0.95  # of the real test images' share
NLL_BAR = 0.10  # lower than the baseline by this share


def generator_rows(
    checkpoints: dict[str, Path], samples: int, judges: dict[str, Path | None], recompute: bool = False
) -> list[dict[str, Any]]:
    """Each generator's figures: the checkpoint's own when they were measured alike (the same function, judge file
    name and sample count, the same seeds), unless ``recompute``."""
    rows = []
    for family, path in checkpoints.items():
        meta = read_meta(path)
        dataset = meta["data"]["dataset"]
        saved: dict[str, Any] = (meta.get("metrics") or {}).get("quality") or {}
        judge = judges.get(dataset)
        count = min(samples, meta["data"]["test"])  # no more samples than real test images
        scale = LATENT_SCALE[family]  # figures measured at another latent scale are not the served model's
        alike = (
            bool(saved)
            and saved["samples"] == count
            and saved.get("latent_scale", 1.0) == scale
            and (judge is None or meta.get("judge") == judge.name)
        )
        report: dict[str, Any] = (
            saved if alike and not recompute else evaluate_generator(path, judge, samples).to_dict()
        )
        if report["class_agreement"] is not None:
            report["agreement_ratio"] = round(report["class_agreement"] / report["class_agreement_real"], 4)
            report["agreement_pass"] = report["agreement_ratio"] >= AGREEMENT_BAR
        rows.append({"family": family, "checkpoint": path.name, "dataset": dataset, **report})
    return rows


def likelihood_rows(
    vae: Path | None,
    rbm: Path | None,
    k: int,
    images: int,
    ais_runs: int,
    ais_betas: int,
    mixtures: dict[str, Any] | None = None,
    recompute: bool = False,
) -> list[dict[str, Any]]:
    """``mixtures``: the baseline's search (components, priors), if not the default. The VAE's NLL is its
    checkpoint's when measured alike (k, images), unless ``recompute``."""
    mixtures = mixtures or {}
    rows = []
    if vae is not None:
        meta = read_meta(vae)
        dataset = meta["data"]["dataset"]
        limit = meta["data"]["train"] if dataset == "fashion" else None
        saved = meta["metrics"].get("test_nll", {})
        alike = saved.get("k") == k and saved.get("images") == images and not recompute
        model = saved if alike else evaluate_vae(vae, k, images)  # the same function and seed as the trainer's
        base = mixture_baseline(dataset, test_images=images, train_limit=limit, **mixtures)
        gain = nll_gain(model["nats"], base["nats"])
        rows.append(
            {
                "family": "vae",
                "checkpoint": vae.name,
                "dataset": dataset,
                "nats": model["nats"],
                "method": f"importance sampling, k={k}",
                "test_images": model["images"],
                "baseline": base,
                "gain": gain,
                "pass": gain >= NLL_BAR,
            }
        )
    if rbm is not None:
        meta = read_meta(rbm)
        dataset = meta["data"]["dataset"]
        limit = meta["data"]["train"] if dataset == "fashion" else None
        model = evaluate_rbm(rbm, ais_runs, ais_betas)
        base = mixture_baseline(dataset, train_limit=limit, **mixtures)
        gain = nll_gain(model["test_nll"], base["nats"])
        rows.append(
            {
                "family": "rbm",
                "checkpoint": rbm.name,
                "dataset": dataset,
                "nats": model["test_nll"],
                "method": f"AIS, {ais_runs} runs x {ais_betas} temperatures",
                "log_z": model["log_z"],
                "log_z_range": model["log_z_range"],
                "exact_log_z": model["exact_log_z"],
                "test_images": base["test_images"],
                "baseline": base,
                "gain": gain,
                "pass": gain >= NLL_BAR,
            }
        )
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = []
    if result["generators"]:
        lines += [
            "| model | data | judge | Fréchet (judge features) | class score | 1-NN | nearest train (gen / real) "
            "| asked class |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in result["generators"]:
            asked = ""
            if r["class_agreement"] is not None:
                asked = f"{r['class_agreement']:.1%} (real {r['class_agreement_real']:.1%}; "
                asked += f"ratio {r['agreement_ratio']:.3f})"
            lines.append(
                f"| {r['family']} | {r['dataset']} | {r['judge']} "
                f"| {r['frechet']:.2f} (floor {r['frechet_floor']:.2f}) "
                f"| {r['class_score']:.2f} (real {r['class_score_ceiling']:.2f}) | {r['one_nn']:.3f} "
                f"(real {r['one_nn_real']:.3f}) | {r['nearest_train_generated']:.2f} / {r['nearest_train_test']:.2f} "
                f"| {asked} |"
            )
    if result["likelihoods"]:
        lines += [
            "",
            "| model | data | test NLL (nats) | method | best mixture of Bernoullis | lower by |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["likelihoods"]:
            b = r["baseline"]
            lines.append(
                f"| {r['family']} | {r['dataset']} ({r['test_images']:,} test images) | **{r['nats']:.2f}** "
                f"| {r['method']} "
                f"| {b['nats']:.2f} ({b['components']} components, prior {b['prior']}) | {r['gain']:.1%} |"
            )
    return "\n".join(lines)


def run(
    dcgan: Path | None = None,
    vaegan: Path | None = None,
    vae: Path | None = None,
    rbm: Path | None = None,
    samples: int = 2000,
    k: int = 1000,
    images: int = 2000,
    ais_runs: int = 500,
    ais_betas: int = 20000,
    judges: dict[str, Path | None] | None = None,
    mixtures: dict[str, Any] | None = None,
    recompute: bool = False,
) -> dict[str, Any]:
    torch.set_num_threads(1)
    generators = {name: path for name, path in (("dcgan", dcgan), ("vaegan", vaegan), ("vae", vae)) if path}
    return {
        "generators": generator_rows(generators, samples, judges or {}, recompute),
        "likelihoods": likelihood_rows(vae, rbm, k, images, ais_runs, ais_betas, mixtures, recompute),
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("dcgan", "vaegan", "vae", "rbm"):
        p.add_argument(f"--{name}", type=Path, default=None, help=f"the {name} checkpoint")
    p.add_argument("--fashion-judge", type=Path, default=None, help="default: models/image/evaluator.safetensors")
    p.add_argument("--digits-judge", type=Path, default=None, help="default: models/digits/digits_cnn.safetensors")
    p.add_argument("--samples", type=int, default=2000, help="generated images per generator (default: 2000)")
    p.add_argument("--k", type=int, default=1000, help="the VAE's importance samples per image (default: 1000)")
    p.add_argument("--images", type=int, default=2000, help="the VAE's fixed test subset (default: 2000)")
    p.add_argument("--ais-runs", type=int, default=500)
    p.add_argument("--ais-betas", type=int, default=20000)
    p.add_argument(
        "--mixture-components",
        default=None,
        help="the baseline's component counts, e.g. 100,200,400 "
        "(default: 10,25,50,100,200 for digits, 50,100,200,400 for fashion)",
    )
    p.add_argument("--mixture-priors", default="0.01,0.1,1.0", help="the baseline's smoothing pseudo-counts")
    p.add_argument("--recompute", action="store_true", help="measure again what a checkpoint already holds")
    p.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = p.parse_args(argv)
    judges = {"fashion": args.fashion_judge, "digits": args.digits_judge}
    mixtures: dict[str, Any] = {"priors": tuple(float(v) for v in args.mixture_priors.split(","))}
    if args.mixture_components:
        mixtures["components"] = tuple(int(v) for v in args.mixture_components.split(","))
    result = run(
        args.dcgan,
        args.vaegan,
        args.vae,
        args.rbm,
        args.samples,
        args.k,
        args.images,
        args.ais_runs,
        args.ais_betas,
        judges,
        mixtures,
        args.recompute,
    )
    print(markdown(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
