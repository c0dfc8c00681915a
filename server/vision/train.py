"""Train the digits CNN on the fixed stratified split; write the checkpoint and its model card.

Mini-batch AdamW with a one-cycle learning rate over the budget (epochs or steps; the loop is
:class:`server.training.ClassifierTrainer`), and light augmentation: each training image is shifted by up to one
pixel. Training takes seconds on one CPU core. The options are :class:`~server.vision.options.DigitsTrainOptions`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from server.device import resolve_device
from server.model_card import ModelCard, confusion_section
from server.provenance import Provenance, options_record, stamp
from server.training import Batch, ClassifierTrainer
from server.vision.checkpoint import save_digits_model
from server.vision.data import LABELS, SOURCE, DigitsSplit, split_digits
from server.vision.evaluate import evaluate
from server.vision.model import DigitsCNN, DigitsCNNConfig
from server.vision.options import DigitsTrainOptions

log = logging.getLogger(__name__)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image (B, 8, 8) moved by up to ``max_shift`` pixels in each direction, zeros filling in."""
    if max_shift == 0:
        return images
    b, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)  # (B, 8 + 2s, 8 + 2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, :, None]  # (B, 8, 1)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, :]  # (B, 1, 8)
    return padded[torch.arange(b)[:, None, None], rows, cols]  # (B, 8, 8)


def shifted_batches(
    split: DigitsSplit, opts: DigitsTrainOptions, generator: torch.Generator, device: torch.device
) -> Iterator[Batch]:
    """Epoch after epoch, the training images in a fresh order, ``batch_size`` at a time, each shifted."""
    train_x, train_y = (torch.from_numpy(a) for a in split.train)
    while True:
        order = torch.randperm(len(train_y), generator=generator)
        for start in range(0, len(order), opts.batch_size):
            idx = order[start : start + opts.batch_size]
            yield random_shift(train_x[idx], opts.shift, generator).to(device), train_y[idx]  # (B, 8, 8), (B,)


def train_digits(opts: DigitsTrainOptions) -> dict[str, Any]:
    """Train, evaluate on the held-out split, write the checkpoint and card; returns the checkpoint's info."""
    opts.validate()
    device = resolve_device(opts.device)
    split = split_digits(opts.split_seed, opts.test_fraction)
    torch.manual_seed(opts.seed)
    generator = torch.Generator().manual_seed(opts.seed)
    model = DigitsCNN(DigitsCNNConfig(num_classes=len(LABELS), **(opts.model or {}))).to(device)
    per_epoch = math.ceil(len(split.train[1]) / opts.batch_size)
    total = opts.steps if opts.steps is not None else per_epoch * (opts.epochs or 1)
    trainer = ClassifierTrainer(model, steps=total, lr=opts.lr, weight_decay=opts.weight_decay, warmup_share=0.15)
    run = trainer.train(shifted_batches(split, opts, generator, device))
    test = evaluate(model, *split.test)
    train_eval = evaluate(model, *split.train)
    training = Provenance(
        steps=run.steps,
        wall_time_s=round(run.wall_time_s, 2),
        threads=torch.get_num_threads(),
        options=options_record(opts),
        device=str(device),
        extra={"epochs": round(run.steps / per_epoch, 2)},
    )
    info = {
        "data": {
            "source": SOURCE,
            "sha256": split.sha256,
            "split": {
                "method": "stratified by label",
                "seed": opts.split_seed,
                "test_fraction": opts.test_fraction,
                "train": len(split.train_indices),
                "test": len(split.test_indices),
            },
            "test_indices": split.test_indices.tolist(),
        },
        "training": training.to_dict(),
        "metrics": {
            "test_accuracy": round(test.accuracy, 4),
            "train_accuracy": round(train_eval.accuracy, 4),
            "test_confusion": test.confusion,
        },
        "parameters": model.num_parameters(),
        **stamp(),
    }
    model.eval()
    save_digits_model(opts.out, model, list(LABELS), info)
    digits_card(info, model.config.to_dict()).write(opts.out)
    log.info("test accuracy %.4f after %d steps (%.1f s); checkpoint %s", test.accuracy, run.steps, run.wall_time_s,
             opts.out)  # fmt: skip
    return info


def digits_card(info: dict[str, Any], config: dict[str, Any]) -> ModelCard:
    """The card of a digits checkpoint (its info and model config): data, split, steps, time, device, accuracy,
    confusion matrix."""
    data, train, metrics = info["data"], info["training"], info["metrics"]
    opts, split = train["options"], data["split"]
    run = f"--steps {opts['steps']}" if opts["steps"] is not None else f"--epochs {opts['epochs']}"
    c = config["channels"]
    arch = (
        f"conv 3x3 {c}, conv 3x3 {c}, max-pool, conv 3x3 {2 * c}, max-pool, "
        f"linear {config['hidden']}, linear {config['num_classes']} (ReLU between, dropout {config['dropout']})"
    )
    rows = [
        ("architecture", arch),
        ("parameters", f"{info['parameters']:,}"),
        ("input", "raw pixel intensities (1, 8, 8) float32 in [0, 16], as `load_digits` gives them"),
        ("data", f"`{data['source']}` (sha256 {data['sha256'][:16]}...), 1,797 images of 10 digits"),
        (
            "split",
            f"{split['method']}, seed {split['seed']}: {split['train']:,} train, {split['test']:,} test "
            "(test indices recorded in the checkpoint)",
        ),
        (
            "training",
            f"{train['steps']:,} steps ({train['epochs']} epochs) of {opts['batch_size']}, AdamW one-cycle, "
            f"peak lr {opts['lr']}, shifts of up to {opts['shift']} pixel",
        ),
        ("time", f"{train['wall_time_s']:.1f} s on {train['device']}, {train['threads']} thread(s)"),
        ("test accuracy", f"**{metrics['test_accuracy']:.2%}** (train {metrics['train_accuracy']:.2%})"),
        ("created", info["created"]),
    ]
    confusion = confusion_section(
        "Confusion matrix on the test split (`antiphon eval digits`), rows true, columns predicted",
        metrics["test_confusion"],
        [str(d) for d in range(config["num_classes"])],
    )
    command = f"antiphon train digits {run} --seed {opts['seed']}"
    return ModelCard("Digits CNN", command, info["antiphon_version"], rows, [confusion])
