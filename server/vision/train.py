"""Train the digits CNN on the fixed stratified split; write the checkpoint and its model card.

Mini-batch AdamW with a cosine learning rate over the budget (epochs or steps),
and light augmentation: each training image is shifted by up to one pixel.
Training takes seconds on one CPU core.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import server
from server.classifier_metrics import format_confusion
from server.device import resolve_device
from server.errors import InvalidArgument
from server.vision.checkpoint import save_digits_model
from server.vision.data import LABELS, SOURCE, split_digits
from server.vision.evaluate import evaluate
from server.vision.model import DigitsCNN, DigitsCNNConfig

log = logging.getLogger(__name__)


@dataclass
class DigitsTrainOptions:
    out: Path = Path("runs/digits/digits_cnn.safetensors")
    epochs: int | None = 60  # passes over the training images...
    steps: int | None = None  # ...or optimizer steps (given, it wins)
    seed: int = 0
    split_seed: int = 0
    test_fraction: float = 0.2
    device: str = "cpu"
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    shift: int = 1  # augmentation: random shift of up to this many pixels (0: off)
    model: dict[str, Any] | None = None  # DigitsCNNConfig fields

    def validate(self) -> None:
        if self.steps is None and self.epochs is None:
            raise InvalidArgument("steps", "give --steps or --epochs")
        if self.steps is not None and self.steps < 1:
            raise InvalidArgument("steps", f"must be at least 1, got {self.steps}")
        if self.epochs is not None and self.epochs < 1:
            raise InvalidArgument("epochs", f"must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InvalidArgument("batch_size", f"must be at least 1, got {self.batch_size}")
        if not 0 < self.lr < 1:
            raise InvalidArgument("lr", f"must be in (0, 1), got {self.lr}")
        if not 0 <= self.shift < 4:
            raise InvalidArgument("shift", f"must be in [0, 3], got {self.shift}")


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


def train_digits(opts: DigitsTrainOptions) -> dict[str, Any]:
    """Train, evaluate on the held-out split, write the checkpoint and card; returns the checkpoint's info."""
    opts.validate()
    device = resolve_device(opts.device)
    split = split_digits(opts.split_seed, opts.test_fraction)
    train_x, train_y = (torch.from_numpy(a) for a in split.train)
    test_x, test_y = split.test
    torch.manual_seed(opts.seed)
    generator = torch.Generator().manual_seed(opts.seed)
    model = DigitsCNN(DigitsCNNConfig(num_classes=len(LABELS), **(opts.model or {}))).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    per_epoch = math.ceil(len(train_y) / opts.batch_size)
    total = opts.steps if opts.steps is not None else per_epoch * (opts.epochs or 1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=opts.lr, total_steps=total, pct_start=0.15)
    t0 = time.monotonic()
    model.train()
    step = 0
    while step < total:
        order = torch.randperm(len(train_y), generator=generator)
        for start in range(0, len(order), opts.batch_size):
            idx = order[start : start + opts.batch_size]
            x = random_shift(train_x[idx], opts.shift, generator).to(device)  # (B, 8, 8)
            loss = F.cross_entropy(model(x), train_y[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step == total:
                break
        log.debug("step %d: loss %.4f", step, loss.item())
    elapsed = time.monotonic() - t0
    test = evaluate(model, test_x, test_y)
    train_eval = evaluate(model, *split.train)
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
        "training": {
            "steps": step,
            "epochs": round(step / per_epoch, 2),
            "wall_time_s": round(elapsed, 2),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        },
        "metrics": {
            "test_accuracy": round(test.accuracy, 4),
            "train_accuracy": round(train_eval.accuracy, 4),
            "test_confusion": test.confusion,
        },
        "parameters": model.num_parameters(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "antiphon_version": server.__version__,
    }
    model.eval()
    save_digits_model(opts.out, model, list(LABELS), info)
    write_model_card(opts.out, info, model.config.to_dict())
    log.info("test accuracy %.4f after %d steps (%.1f s); checkpoint %s", test.accuracy, step, elapsed, opts.out)
    return info


def write_model_card(out: Path, info: dict[str, Any], config: dict[str, Any]) -> Path:
    """A Markdown card beside the checkpoint: data, split, steps, time, device, accuracy, confusion matrix."""
    data, train, metrics = info["data"], info["training"], info["metrics"]
    opts, split = train["options"], data["split"]
    run = f"--steps {opts['steps']}" if opts["steps"] is not None else f"--epochs {opts['epochs']}"
    c = config["channels"]
    arch = (
        f"conv 3x3 {c}, conv 3x3 {c}, max-pool, conv 3x3 {2 * c}, max-pool, "
        f"linear {config['hidden']}, linear {config['num_classes']} (ReLU between, dropout {config['dropout']})"
    )
    card = f"""# {out.name}

Digits CNN trained by `antiphon train digits {run} --seed {opts["seed"]} --out {out}` \
(antiphon {info["antiphon_version"]}).

| | |
|---|---|
| architecture | {arch} |
| parameters | {info["parameters"]:,} |
| input | raw pixel intensities (1, 8, 8) float32 in [0, 16], as `load_digits` gives them |
| data | `{data["source"]}` (sha256 {data["sha256"][:16]}...), 1,797 images of 10 digits |
| split | {split["method"]}, seed {split["seed"]}: {split["train"]:,} train, {split["test"]:,} test \
(test indices recorded in the checkpoint) |
| training | {train["steps"]:,} steps ({train["epochs"]} epochs) of {opts["batch_size"]}, AdamW one-cycle, \
peak lr {opts["lr"]}, shifts of up to {opts["shift"]} pixel |
| time | {train["wall_time_s"]:.1f} s on {train["device"]}, {train["threads"]} thread(s) |
| test accuracy | **{metrics["test_accuracy"]:.2%}** (train {metrics["train_accuracy"]:.2%}) |
| created | {info["created"]} |

Confusion matrix on the test split (`antiphon eval digits`), rows true, columns predicted:

```
{format_confusion(metrics["test_confusion"], [str(d) for d in range(config["num_classes"])])}
```
"""
    path = out.with_suffix(".md")
    path.write_text(card, encoding="utf-8")
    return path
