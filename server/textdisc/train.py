"""Train the text discriminator: real windows of the training plays against windows sampled from the text model.

The samples come from the project's own generation code (:mod:`server.textdisc.samples`), cached under the
antiphon cache. The test set is the held-out plays and fresh streams at other temperatures and seeds, so the
accuracy measures both unseen real text and unseen sampling settings. AdamW with a one-cycle learning rate,
batches drawn afresh every step; seconds to minutes on one CPU core.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import server
from server.checkpoint import file_sha256
from server.data.shakespeare import load_corpus
from server.errors import InvalidArgument
from server.text.checkpoint import load_text_model
from server.textdisc.checkpoint import save_textdisc_model
from server.textdisc.data import (
    LABELS,
    TEST_SAMPLES,
    TRAIN_SAMPLES,
    WINDOW,
    WindowSampler,
    stream_windows,
    test_windows,
)
from server.textdisc.evaluate import evaluate, predict_logits
from server.textdisc.model import TextDiscConfig, TextDiscriminator
from server.textdisc.samples import SampleSet, load_samples, variant_name
from server.vision.evaluate import format_confusion

log = logging.getLogger(__name__)

CHECK_EVERY = 20  # one training stream in 20 is held back to check for memorisation
CHECK_WINDOWS = 512


def evenly(rows: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` rows, evenly spaced."""
    return rows[np.unique(np.linspace(0, len(rows) - 1, count).astype(np.int64))]


def generated_share(model: TextDiscriminator, ids: np.ndarray) -> float:
    """The share of windows (N, WINDOW) judged generated."""
    return float(predict_logits(model, ids).argmax(axis=1).mean())


@dataclass
class TextDiscTrainOptions:
    text_checkpoint: Path  # the generator whose samples are the "generated" class
    out: Path = Path("runs/textdisc/text_disc.safetensors")
    corpus: Path | None = None  # None: Shakespeare (held-out plays test); a file: its last 5% tests
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-2
    seed: int = 0
    train_samples: SampleSet = field(default_factory=lambda: TRAIN_SAMPLES)
    test_samples: SampleSet = field(default_factory=lambda: TEST_SAMPLES)
    model: dict[str, Any] | None = None  # TextDiscConfig fields
    check_every: int = 1000  # steps between logs of the trained / unseen streams check
    progress: bool = True

    def validate(self) -> None:
        if self.steps < 1:
            raise InvalidArgument("steps", f"must be at least 1, got {self.steps}")
        if self.batch_size < 2:
            raise InvalidArgument("batch_size", f"must be at least 2, got {self.batch_size}")
        if not 0 < self.lr < 1:
            raise InvalidArgument("lr", f"must be in (0, 1), got {self.lr}")
        TextDiscConfig(vocab_size=2, **(self.model or {}))  # names a bad model option before any sampling
        self.train_samples.validate()
        self.test_samples.validate()
        if set(self.train_samples.temperatures) & set(self.test_samples.temperatures):
            raise InvalidArgument("test_samples", "test temperatures must differ from the training ones")
        if self.train_samples.seed == self.test_samples.seed:
            raise InvalidArgument("test_samples", "test seeds must differ from the training ones")


def train_textdisc(opts: TextDiscTrainOptions) -> dict[str, Any]:
    """Train, evaluate on the held-out windows, write the checkpoint and card; returns the checkpoint's info."""
    opts.validate()
    corpus = load_corpus(opts.corpus)
    _, vocab, text_meta = load_text_model(opts.text_checkpoint)
    test_samples = load_samples(opts.text_checkpoint, opts.test_samples, corpus.valid_text, opts.progress)
    train_samples = load_samples(opts.text_checkpoint, opts.train_samples, corpus.train, opts.progress)
    test = test_windows(vocab, corpus.valid_text, test_samples)
    # Every CHECK_EVERY-th training stream never trains: the gap between the accuracy on streams the model trained
    # on and on these shows whether it learns generated text or memorises its training streams.
    held_back = set(range(CHECK_EVERY - 1, len(train_samples), CHECK_EVERY)) or {len(train_samples) - 1}
    check = [s for i, s in enumerate(train_samples) if i in held_back]
    trained = [s for i, s in enumerate(train_samples) if i not in held_back]
    check_ids, seen_ids = (evenly(stream_windows(vocab, group)[0], CHECK_WINDOWS) for group in (check, trained))
    sampler = WindowSampler(vocab, corpus.train, trained, opts.seed)
    torch.manual_seed(opts.seed)
    model = TextDiscriminator(TextDiscConfig(vocab_size=len(vocab), num_classes=len(LABELS), **(opts.model or {})))
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=opts.lr, total_steps=opts.steps, pct_start=0.1)
    t0 = time.monotonic()
    model.train()
    bar = tqdm(range(opts.steps), desc="textdisc", unit="step", disable=not opts.progress, mininterval=2.0)
    running = 0.0
    for step in bar:
        ids, labels = sampler.batch(opts.batch_size)
        logits = model(torch.from_numpy(ids))  # (B, 2)
        loss = F.cross_entropy(logits, torch.from_numpy(labels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        acc = float((logits.argmax(dim=1).numpy() == labels).mean())
        running = acc if step == 0 else 0.98 * running + 0.02 * acc
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", train_acc=f"{running:.3f}")
        if (step + 1) % opts.check_every == 0 or step + 1 == opts.steps:
            seen, unseen = generated_share(model, seen_ids), generated_share(model, check_ids)
            log.info(
                "step %d: generated windows caught: %.3f of trained streams, %.3f of unseen", step + 1, seen, unseen
            )
    elapsed = time.monotonic() - t0
    result, by_group = evaluate(model, test)
    info = {
        "window": WINDOW,
        "generator": {
            "file": opts.text_checkpoint.name,
            "sha256": file_sha256(opts.text_checkpoint),
            "kind": text_meta["kind"],
        },
        "data": {
            "source": corpus.source,
            "sha256": corpus.sha256,
            "held_out": list(corpus.valid),
            "train_samples": asdict(opts.train_samples),
            "test_samples": asdict(opts.test_samples),
            "test_windows": result.count,
        },
        "training": {
            "steps": opts.steps,
            "wall_time_s": round(elapsed, 2),
            "threads": torch.get_num_threads(),
            "options": {  # the generator by name (its hash is under "generator"), not by this machine's path
                k: v.name if k == "text_checkpoint" else str(v) if isinstance(v, Path) else v
                for k, v in asdict(opts).items()
                if k not in ("train_samples", "test_samples")
            },
        },
        "metrics": {
            "test_accuracy": round(result.accuracy, 4),
            "test_by_source": by_group,
            "test_confusion": result.confusion,
            "train_batch_accuracy": round(running, 4),
            "trained_streams_caught": round(seen, 4),
            "unseen_streams_caught": round(unseen, 4),
        },
        "parameters": model.num_parameters(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "antiphon_version": server.__version__,
    }
    model.eval()
    save_textdisc_model(opts.out, model, vocab, list(LABELS), info)
    write_model_card(opts.out, info, model.config.to_dict())
    log.info(
        "test accuracy %.4f after %d steps (%.1f s); checkpoint %s", result.accuracy, opts.steps, elapsed, opts.out
    )
    return info


def write_model_card(out: Path, info: dict[str, Any], config: dict[str, Any]) -> Path:
    data, train, metrics = info["data"], info["training"], info["metrics"]
    opts = train["options"]
    tr, te = data["train_samples"], data["test_samples"]
    orders = config.get("ngram_orders", [])
    ngrams = (
        f" + hashed {', '.join(map(str, orders))}-gram embeddings ({config['ngram_buckets']:,} rows each)"
        if orders
        else ""
    )
    arch = (
        f"embedding {config['embed_dim']}{ngrams}, {len(config['dilations'])} conv1d {config['kernel_size']} x "
        f"{config['channels']} (dilations {', '.join(map(str, config['dilations']))}, ReLU, residual), "
        f"mean + max pooling, linear {config['num_classes']}"
    )
    groups = "\n".join(f"| {g} | {a:.2%} |" for g, a in metrics["test_by_source"].items())
    corpus = f" --corpus {opts['corpus']}" if opts["corpus"] else ""

    def described(sample_set: dict[str, Any], plain: str) -> str:
        variants = ", ".join(variant_name(k, p) for k, p in sample_set["variants"])
        prompt = f", each after a {sample_set['prompt']}-character prompt of {plain}" if sample_set["prompt"] else ""
        return (
            f"{len(sample_set['temperatures']) * len(sample_set['variants']) * sample_set['streams']:,} streams x "
            f"{sample_set['length']:,} characters ({sample_set['streams']} per setting{prompt}): temperatures "
            f"{', '.join(f'{t:g}' for t in sample_set['temperatures'])}, each {variants} "
            f"(seed set {sample_set['seed']})"
        )

    card = f"""# {out.name}

Text discriminator trained by `antiphon train textdisc --steps {train["steps"]} --seed {opts["seed"]}{corpus} \
--batch-size {opts["batch_size"]} --train-streams {tr["streams"]} \
--channels {config["channels"]} --dilations {",".join(map(str, config["dilations"]))} \
--ngrams {",".join(map(str, orders)) or "none"} --ngram-buckets {config["ngram_buckets"]} --out {out}` \
(antiphon {info["antiphon_version"]}): is a window of {info["window"]} characters real text or text \
sampled from the character LSTM `{info["generator"]["file"]}` (sha256 {info["generator"]["sha256"][:16]}...)?

| | |
|---|---|
| architecture | {arch} |
| parameters | {info["parameters"]:,} |
| input | character ids (1, {info["window"]}) int32 in the text model's vocabulary; labels real, generated |
| real text | {data["source"]} (sha256 {data["sha256"][:16]}...): training plays; test: {", ".join(data["held_out"])} |
| generated, train | {described(tr, "training text")} |
| generated, test | {described(te, "held-out text")}: other seeds, temperatures and top-k / top-p values |
| training | {train["steps"]:,} steps of {opts["batch_size"]} random windows (half real), AdamW one-cycle, \
peak lr {opts["lr"]} |
| time | {train["wall_time_s"]:.1f} s on the CPU, {train["threads"]} thread(s) |
| memorisation check | generated windows caught: {metrics["trained_streams_caught"]:.2%} of streams it trained on, \
{metrics["unseen_streams_caught"]:.2%} of held-back training streams (one in {CHECK_EVERY}, never trained on) |
| test accuracy | **{metrics["test_accuracy"]:.2%}** on {data["test_windows"]:,} windows, half real |
| created | {info["created"]} |

Test accuracy by source:

| source | accuracy |
|---|---|
{groups}

Confusion matrix on the test windows (`antiphon eval textdisc`), rows true, columns predicted:

```
{format_confusion(metrics["test_confusion"], list(LABELS))}
```
"""
    path = out.with_suffix(".md")
    path.write_text(card, encoding="utf-8")
    return path
