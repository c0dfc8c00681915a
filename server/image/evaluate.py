"""The figures of a saved image model, again from its checkpoint: what ``antiphon eval FAMILY`` prints and what
``benchmarks/image_quality.py`` tabulates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from server.errors import InvalidArgument
from server.image.checkpoint import load_image_model
from server.image.data import ImageSet, binarise, fixed_subset, load_images
from server.image.likelihood import (
    best_bernoulli_mixture,
    rbm_log_partition_ais,
    rbm_log_partition_exact,
    rbm_nll,
    vae_nll,
)
from server.image.quality import QualityReport, load_judge, measure_generator, resolve_judge
from server.image.sampling import LatentSampler
from server.image.train_evaluator import accuracy


def data_of(meta: dict[str, Any]) -> tuple[ImageSet, ImageSet]:
    """The training and test images a checkpoint was made with (their hashes are checked)."""
    data = meta["data"]
    train = load_images(data["dataset"], "train", data["train"] if data["dataset"] == "fashion" else None)
    test = load_images(data["dataset"], "test")
    for name, images in (("train", train), ("test", test)):
        if images.sha256 != data[f"{name}_sha256"]:
            raise InvalidArgument("checkpoint", f"the {name} images here differ from the checkpoint's")
    return train, test


def evaluate_evaluator(path: Path) -> dict[str, Any]:
    model, meta = load_image_model(path, "image_evaluator")
    _, test = data_of(meta)
    acc, confusion = accuracy(model, test.images, test.labels)
    return {"accuracy": round(acc, 4), "count": len(test), "confusion": confusion, "labels": meta["labels"]}


def evaluate_generator(path: Path, judge: Path | None = None, samples: int = 2000) -> QualityReport:
    model, meta = load_image_model(path)
    if meta["kind"] not in ("dcgan", "conv_vae", "vae_gan"):
        raise InvalidArgument("checkpoint", f"{path} holds a {meta['kind']}, not a generator with a latent space")
    train, test = data_of(meta)
    judge_path = resolve_judge(judge, meta["data"]["dataset"])
    if judge_path is None:
        raise InvalidArgument("judge", f"no judge for {meta['data']['dataset']}: give --judge")
    return measure_generator(LatentSampler(model, meta["labels"]), load_judge(judge_path), train, test, samples)


def evaluate_vae(path: Path, k: int = 1000, images: int = 2000) -> dict[str, Any]:
    model, meta = load_image_model(path, "conv_vae")
    _, test = data_of(meta)
    subset = fixed_subset(len(test), images, seed=0)
    nats = vae_nll(model, binarise(test.images[subset]), k=k, seed=0)
    return {"nats": round(nats, 3), "k": k, "images": len(subset), "subset_seed": 0}


def evaluate_rbm(path: Path, runs: int = 500, betas: int = 20000) -> dict[str, Any]:
    model, meta = load_image_model(path, "rbm")
    train, test = data_of(meta)
    train_v = binarise(train.images).reshape(len(train), -1)
    test_v = binarise(test.images).reshape(len(test), -1)
    ais = rbm_log_partition_ais(model, train_v.mean(axis=0), runs=runs, betas=betas, seed=0)
    exact = rbm_log_partition_exact(model) if model.config.hidden <= 20 else None
    return {
        "test_nll": round(rbm_nll(model, test_v, ais.log_z), 3),
        "log_z": round(ais.log_z, 4),
        "log_z_range": [round(ais.log_z_low, 4), round(ais.log_z_high, 4)],
        "exact_log_z": None if exact is None else round(exact, 4),
        "exact_test_nll": None if exact is None else round(rbm_nll(model, test_v, exact), 3),
    }


def mixture_baseline(
    dataset: str,
    test_images: int | None = None,
    train_limit: int | None = None,
    components: tuple[int, ...] | None = None,
    priors: tuple[float, ...] = (0.01, 0.1, 1.0),
) -> dict[str, Any]:
    """The best mixture of Bernoullis on the binarised split (the likelihood models' baseline): on all test images,
    or on the fixed subset of ``test_images`` the VAE is measured on; the best of ``components`` x ``priors``."""
    train, test = load_images(dataset, "train", train_limit), load_images(dataset, "test")
    if test_images is not None:
        test = test.take(fixed_subset(len(test), test_images, seed=0))
    x_train = binarise(train.images).reshape(len(train), -1)
    x_test = binarise(test.images).reshape(len(test), -1)
    if components is None:
        components = (10, 25, 50, 100, 200) if dataset == "digits" else (50, 100, 200, 400)
    k, prior, nats = best_bernoulli_mixture(x_train, x_test, components=components, priors=priors)
    return {"nats": round(nats, 3), "components": k, "prior": prior, "test_images": len(test)}


def nll_gain(model_nats: float, baseline_nats: float) -> float:
    """How much lower the model's NLL is than the baseline's, as a share of the baseline's (0.1: 10% lower)."""
    return float(np.round(1 - model_nats / baseline_nats, 4))
