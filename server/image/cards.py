"""The model cards of the image checkpoints, written from a checkpoint's metadata alone (so a card can be written
again from its file): what was trained, on what data under which licence, by which command, and its figures."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.image.options import TRAIN_OPTIONS
from server.model_card import ModelCard, confusion_section, snapshot_of

LEFT_OUT = ("out", "progress", "resume", "snapshot", "device")  # not part of what a run is


def command(family: str, options: dict[str, Any]) -> str:
    """``antiphon train FAMILY`` with the flags whose recorded values differ from the defaults."""
    cls = TRAIN_OPTIONS[family]
    defaults = dataclasses.asdict(cls())
    flags = []
    for f in dataclasses.fields(cls):
        flag = f.metadata.get("flag")
        if flag is None or f.name in LEFT_OUT or f.name not in options:
            continue
        value = options[f.name]
        if flag.nested is not None:  # model sizes: each given one
            sizes = {s.name: s.default for s in dataclasses.fields(flag.nested)}
            flags += [f"--{k.replace('_', '-')} {v}" for k, v in sorted((value or {}).items()) if sizes.get(k) != v]
            continue
        default = defaults[f.name]
        if value is None or value == (str(default) if isinstance(default, Path) else default):
            continue  # a budget left out is off; the other options' None is their default
        name = flag.dest(f.name).replace("_", "-")
        if flag.switch is not None:
            flags.append(f"--{name}")
        else:
            flags.append(f"--{name} {'none' if value is None else value}")
    return " ".join([f"antiphon train {family}", *flags])


def _data_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    data = info["data"]
    return [
        (
            "data",
            f"{data['source']}: {data['train']:,} training images of {data['image_size']}x{data['image_size']} "
            f"(sha256 {data['train_sha256'][:16]}...), {data['test']:,} test images",
        ),
        ("data licence", data["licence"]),
    ]


def _run_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    train = info["training"]
    return [
        ("parameters", f"{info['parameters']:,}"),
        ("steps", f"{train['steps']:,} of {train['options']['batch_size']} images, {train['images_seen']:,} seen"),
        (
            "time",
            f"{train['wall_time_s'] / 60:.1f} minutes on {train['device']}, {train['threads']} thread(s), "
            f"{train['processes']} process(es)",
        ),
    ]


def _quality_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    q = metrics.get("quality")
    if not q:
        return [("quality", "not measured (no judge)")]
    rows = [
        ("judge (feature space)", q["judge"]),
        (
            "Fréchet distance in judge features (not FID)",
            f"**{q['frechet']:.2f}** (real train vs test: {q['frechet_floor']:.2f}), {q['samples']:,} samples",
        ),
        (
            "class score (Inception-score analogue)",
            f"**{q['class_score']:.2f}** (real test images: {q['class_score_ceiling']:.2f})",
        ),
        ("1-NN two-sample accuracy", f"**{q['one_nn']:.3f}** (0.5 ideal; real train vs test: {q['one_nn_real']:.3f})"),
        (
            "memorisation",
            f"median pixel distance to the nearest training image: generated {q['nearest_train_generated']:.2f}, "
            f"real test images {q['nearest_train_test']:.2f}",
        ),
    ]
    if q.get("class_agreement") is not None:
        rows.append(
            (
                "asked class recognised",
                f"**{q['class_agreement']:.2%}** of samples (real test images, their own class: "
                f"{q['class_agreement_real']:.2%})",
            )
        )
    rows.append(("samples drawn at", f"latent scale {q.get('latent_scale', 1.0):g} (z = scale x a standard normal)"))
    return rows


def _served_scale_row(info: dict[str, Any], family: str) -> list[tuple[str, str]]:
    """Where the family is served at another latent scale than its card's figures were measured at."""
    from server.image.sampling import LATENT_SCALE

    measured = ((info["metrics"].get("quality") or {}).get("latent_scale")) or 1.0
    served = LATENT_SCALE[family]
    if measured == served:
        return []
    return [
        (
            "served at",
            f"latent scale {served:g}: `antiphon eval {family}` and `benchmarks/image_quality.py --recompute` measure "
            "it (benchmarks/RESULTS.md)",
        )
    ]


def evaluator_card(info: dict[str, Any]) -> ModelCard:
    config, metrics, opts = info["config"], info["metrics"], info["training"]["options"]
    c = config["channels"]
    arch = (
        f"2 x (conv 3x3 {c}, BN, ReLU), max-pool, 2 x (conv 3x3 {2 * c}, BN, ReLU), max-pool, dropout "
        f"{config['dropout']}, linear {config['hidden']} (the metrics' feature space), linear {config['num_classes']}"
    )
    rows = [
        ("architecture", arch),
        *_data_rows(info),
        *_run_rows(info),
        (
            "training",
            f"AdamW, peak lr {opts['lr']}, weight decay {opts['weight_decay']}, label smoothing "
            f"{opts['label_smoothing']}, random flips {'on' if opts['flip'] else 'off'}, shifts of up to "
            f"{opts['shift']} pixels",
        ),
        (
            "test accuracy",
            f"**{metrics['test_accuracy']:.2%}** on the standard test split (first 10,000 training images: "
            f"{metrics['train_accuracy']:.2%})",
        ),
        ("created", info["created"]),
    ]
    confusion = confusion_section(
        "Confusion matrix on the test split (`antiphon eval evaluator`), rows true, columns predicted",
        metrics["test_confusion"],
        [str(i) for i in range(config["num_classes"])],
    )
    names = "Classes: " + ", ".join(f"{i} {name}" for i, name in enumerate(info["labels"])) + "."
    command_line = command("evaluator", opts)
    return ModelCard(
        "Fashion-MNIST evaluator CNN",
        command_line,
        info["antiphon_version"],
        rows,
        [names, confusion],
        snapshot_of=snapshot_of(opts),
    )


def dcgan_card(info: dict[str, Any]) -> ModelCard:
    config, opts = info["config"], info["training"]["options"]
    g, d = config["g_channels"], config["d_channels"]
    cond = f"class-conditional ({config['classes']} classes)" if config["classes"] else "unconditional"
    arch = (
        f"{cond}; generator: latent {config['latent']} (+ label embedding {config['embed']}) -> linear, "
        f"transposed conv {2 * g} -> {g} -> 1 (BN, ReLU, tanh); discriminator: conv {d}, {2 * d} (leaky ReLU, "
        "spectral norm), linear score + class projection"
    )
    training = f"non-saturating GAN loss, Adam (beta1 {opts['beta1']}), peak lr {opts['lr']} for both players"
    if config.get("aux_classifier"):  # checkpoints from before the option have neither key
        arch += " + auxiliary classifier (AC-GAN)"
        training += (
            f"; auxiliary classifier fitted to real images' labels, its cross-entropy on the samples against the "
            f"asked class in the generator's loss, both weighted {opts['aux_class_weight']}"
        )
    rows = [
        ("architecture", arch),
        *_data_rows(info),
        *_run_rows(info),
        ("training", training),
        *_quality_rows(info["metrics"]),
        *_served_scale_row(info, "dcgan"),
        ("created", info["created"]),
    ]
    return ModelCard("DCGAN", command("dcgan", opts), info["antiphon_version"], rows, snapshot_of=snapshot_of(opts))


def vae_card(info: dict[str, Any]) -> ModelCard:
    config, metrics, opts = info["config"], info["metrics"], info["training"]["options"]
    c = config["channels"]
    arch = (
        f"encoder conv {c}, {2 * c} (stride 2), linear {config['hidden']}, latent {config['latent']} (Gaussian); "
        f"decoder mirrored, Bernoulli pixels"
    )
    nll = metrics["test_nll"]
    rows = [
        ("architecture", arch),
        *_data_rows(info),
        ("binarised", "pixels at one half or more are 1 (training and test alike)"),
        *_run_rows(info),
        ("training", f"the ELBO, Adam, peak lr {opts['lr']}"),
        (
            "test NLL (binarised)",
            f"**{nll['nats']:.2f} nats per image** by importance sampling, k = {nll['k']:,}, on a fixed subset of "
            f"{nll['images']:,} test images (seed 0); its ELBO {metrics['test_elbo']:.2f}",
        ),
        ("created", info["created"]),
    ]
    return ModelCard(
        "Convolutional VAE", command("vae", opts), info["antiphon_version"], rows, snapshot_of=snapshot_of(opts)
    )


def vaegan_card(info: dict[str, Any]) -> ModelCard:
    config, opts = info["config"], info["training"]["options"]
    vae, disc = config["vae"], config["discriminator"]
    arch = (
        f"the convolutional VAE (channels {vae['channels']}, hidden {vae['hidden']}, latent {vae['latent']}) whose "
        f"decoder is the generator; an unconditional discriminator (conv {disc['d_channels']}, "
        f"{2 * disc['d_channels']}) whose last convolution's features are the reconstruction loss's space"
    )
    rows = [
        ("architecture", arch),
        *_data_rows(info),
        *_run_rows(info),
        (
            "training",
            f"Larsen et al. 2016: encoder KL x {opts['kl_weight']} + feature reconstruction; decoder feature "
            f"reconstruction x {opts['feature_weight']} + GAN loss; discriminator on real, reconstructed and prior "
            f"samples; Adam (beta1 {opts['beta1']}), peak lr {opts['lr']}",
        ),
        *_quality_rows(info["metrics"]),
        ("created", info["created"]),
    ]
    return ModelCard("VAE-GAN", command("vaegan", opts), info["antiphon_version"], rows, snapshot_of=snapshot_of(opts))


def rbm_card(info: dict[str, Any]) -> ModelCard:
    config, metrics, opts = info["config"], info["metrics"], info["training"]["options"]
    method = f"CD-{opts['k']}"
    if opts["persistent"]:
        method = f"persistent CD ({opts['batch_size']} chains, {opts['k']} step(s) per update)"
    ais = metrics["ais"]
    rows = [
        ("architecture", f"Bernoulli RBM, {config['image_size'] ** 2} visible, {config['hidden']} hidden units"),
        *_data_rows(info),
        ("binarised", "pixels at one half or more are 1 (training and test alike)"),
        *_run_rows(info),
        ("training", f"{method}, SGD momentum {opts['momentum']}, peak lr {opts['lr']}, L2 {opts['weight_decay']}"),
        (
            "test NLL (binarised)",
            f"**{metrics['test_nll']:.2f} nats per image** (train {metrics['train_nll']:.2f}); log Z by AIS: "
            f"{ais['log_z']:.3f} ({ais['runs']} runs, {ais['betas']:,} temperatures; +-3 s.e. "
            f"[{ais['log_z_low']:.3f}, {ais['log_z_high']:.3f}])",
        ),
    ]
    if metrics.get("exact_log_z") is not None:
        rows.append(("exact log Z (enumerated)", f"{metrics['exact_log_z']:.3f}"))
    rows.append(("created", info["created"]))
    return ModelCard(
        "Bernoulli RBM", command("rbm", opts), info["antiphon_version"], rows, snapshot_of=snapshot_of(opts)
    )


# The card of each family's checkpoints, by family (``antiphon train FAMILY``).
CARDS: dict[str, Callable[[dict[str, Any]], ModelCard]] = {
    "evaluator": evaluator_card,
    "dcgan": dcgan_card,
    "vae": vae_card,
    "vaegan": vaegan_card,
    "rbm": rbm_card,
}
