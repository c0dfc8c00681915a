"""Train the keyword spotter on augmented espeak-ng renderings; write the checkpoint and its model card.

Each step draws a fresh batch (labels uniform over the twelve, every clip augmented anew: see
:mod:`server.kws.augment`), computes the normalised log-mel inside the model, masks random bands and frames
(SpecAugment) and takes an AdamW step (one-cycle learning rate, label smoothing). The held-out voices are scored
every ``eval_every`` steps for the progress display and at the end for the card: clean, and through the same
augmentation with a fixed seed ("noisy").
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
from server.audio.constants import SAMPLE_RATE
from server.checkpoint import file_sha256
from server.classifier_metrics import format_confusion
from server.data.speech import espeak_version
from server.errors import InvalidArgument
from server.kws.audio_files import one_second
from server.kws.augment import AugmentConfig
from server.kws.checkpoint import load_kws_model, save_kws_model
from server.kws.data import (
    LABELS,
    MINE_POOLS,
    TEST_PER_LABEL,
    UNKNOWN_INDEX,
    BaseClips,
    ClipSampler,
    KWSDataConfig,
    at_half_scale,
    hard_negatives,
    heldout_clips,
    heldout_set,
    training_clips,
    unseen_clips,
    unseen_set,
)
from server.kws.evaluate import evaluate
from server.kws.model import CLIP_SAMPLES, KWSConfig, KWSNet

log = logging.getLogger(__name__)


@dataclass
class KWSTrainOptions:
    out: Path = Path("runs/kws/kws_dscnn.safetensors")
    steps: int = 4000
    batch_size: int = 64
    lr: float = 4e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    freq_masks: int = 2  # SpecAugment: masks of up to ``freq_mask`` mel bands...
    freq_mask: int = 6
    time_masks: int = 2  # ...and of up to ``time_mask`` frames
    time_mask: int = 12
    context: float = 0.5  # share of training words cut from running speech (other words right before and after)
    speed: tuple[float, float] = AugmentConfig.speed  # resampling factors of the speed/pitch augmentation
    unknown_share: float | None = None  # share of "unknown" clips in a batch (None: 1/12, like every label)
    hard_share: float = 0.0  # share of the "unknown" clips that are hard negatives (data.hard_renderings > 0)
    balanced_loss: bool = False  # logit-adjusted loss: the batches' label shares do not become the model's prior
    mine_share: float = 0.0  # share of the unknown clips drawn by the model's error on them (0: no mining)
    mine_every: int = 500  # steps between scorings of every unknown training clip for mining
    mine_pool: str = "unknown"  # what mining draws from: "unknown" (every unknown clip) or "hard" (hard negatives)
    keyword_gap: float = 0.0  # least pause (s) before the next word after a number word in running speech (0: any)
    seed: int = 0
    eval_every: int = 500
    test_per_label: int = TEST_PER_LABEL  # the test set's clips of each label, scored once at the end (0: none)
    render_workers: int = 2  # espeak-ng processes while rendering the base clips (once; cached)
    data: KWSDataConfig = field(default_factory=KWSDataConfig)
    model: dict[str, Any] | None = None  # KWSConfig fields
    init: Path | None = None  # start from this checkpoint's weights (and its model config) instead of at random
    progress: bool = True

    def validate(self) -> None:
        if self.steps < 1:
            raise InvalidArgument("steps", f"must be at least 1, got {self.steps}")
        if self.batch_size < 2:
            raise InvalidArgument("batch_size", f"must be at least 2, got {self.batch_size}")
        if not 0 < self.lr < 1:
            raise InvalidArgument("lr", f"must be in (0, 1), got {self.lr}")
        if not 0 <= self.label_smoothing < 1:
            raise InvalidArgument("label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        low, high = self.speed
        if not 0.5 <= low <= high <= 2.0:
            raise InvalidArgument("speed", f"must be two factors 0.5 <= low <= high <= 2, got {low:g},{high:g}")
        if not 0 <= self.context <= 1:
            raise InvalidArgument("context", f"must be in [0, 1], got {self.context}")
        if self.unknown_share is not None and not 0 < self.unknown_share < 1:
            raise InvalidArgument("unknown_share", f"must be in (0, 1), got {self.unknown_share}")
        if not 0 <= self.hard_share <= 1:
            raise InvalidArgument("hard_share", f"must be in [0, 1], got {self.hard_share}")
        if not 0 <= self.mine_share <= 1:
            raise InvalidArgument("mine_share", f"must be in [0, 1], got {self.mine_share}")
        if self.mine_pool not in MINE_POOLS:
            raise InvalidArgument("mine_pool", f"must be one of {', '.join(MINE_POOLS)}, got {self.mine_pool!r}")
        if self.mine_every < 1:
            raise InvalidArgument("mine_every", f"must be at least 1, got {self.mine_every}")
        if not 0 <= self.keyword_gap <= 0.5:
            raise InvalidArgument("keyword_gap", f"must be in [0, 0.5] seconds, got {self.keyword_gap}")
        if self.test_per_label < 0:
            raise InvalidArgument("test_per_label", f"must be at least 0, got {self.test_per_label}")
        if self.eval_every < 1:
            raise InvalidArgument("eval_every", f"must be at least 1, got {self.eval_every}")
        self.data.validate()


def spec_augment(features: torch.Tensor, opts: KWSTrainOptions, generator: torch.Generator) -> torch.Tensor:
    """Zero random mel bands and frames of normalised features (B, M, F) (zero is each band's mean)."""
    b, m, f = features.shape
    keep = torch.ones_like(features)
    for count, width, axis, size in ((opts.freq_masks, opts.freq_mask, 1, m), (opts.time_masks, opts.time_mask, 2, f)):
        for _ in range(count):
            w = torch.randint(0, width + 1, (b, 1), generator=generator)  # (B, 1)
            start = (torch.rand(b, 1, generator=generator) * (size - w)).long()  # (B, 1)
            pos = torch.arange(size)[None]  # (1, size)
            mask = ((pos >= start) & (pos < start + w)).float()  # (B, size)
            keep = keep * (1 - (mask[:, :, None] if axis == 1 else mask[:, None, :]))
    return features * keep


def centred(audio: np.ndarray) -> np.ndarray:
    """A trimmed word (any length) in the middle of one second (its loudest second if longer), peak 0.5."""
    return at_half_scale(one_second(audio))


@torch.no_grad()
def unknown_errors(model: KWSNet, base: BaseClips, indices: list[int], batch_size: int = 256) -> np.ndarray:
    """1 - p(unknown) (len(indices),) of base clips heard clean, centred in the second."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(indices), batch_size):
        waves = np.stack([centred(base.audio[j]) for j in indices[i : i + batch_size]])
        out.append(1 - torch.softmax(model(torch.from_numpy(waves)).float(), dim=1)[:, UNKNOWN_INDEX].numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _mine(model: KWSNet, sampler: ClipSampler, step: int) -> dict[str, Any]:
    """Score the unknown training clips, hand the errors to the sampler; what was found, for the checkpoint."""
    errors = unknown_errors(model, sampler.base, sampler.unknown_clips)
    sampler.set_unknown_errors(errors)
    texts = [sampler.base.clips[i].text for i in sampler.unknown_clips]
    top = np.argsort(-errors)[:12]
    top_words = [f"{texts[i]} {errors[i]:.2f}" for i in top]
    found: dict[str, Any] = {
        "step": step,
        "mean_error": round(float(errors.mean()), 4),
        "heard_as_number": int((errors > 0.5).sum()),
        "clips": len(errors),
        "top": top_words,
    }
    log.info("mining at step %d: mean error %.3f, %d of %d unknown clips heard as another label; %s", step,
             found["mean_error"], found["heard_as_number"], len(errors), ", ".join(top_words))  # fmt: skip
    return found


def train_kws(opts: KWSTrainOptions) -> dict[str, Any]:
    """Train, score the held-out voices, write the checkpoint and card; returns the checkpoint's info."""
    opts.validate()
    t_data = time.monotonic()
    base = training_clips(opts.data, opts.render_workers, opts.progress)
    held = heldout_clips(opts.data, opts.render_workers, opts.progress)
    clean_x, clean_y = heldout_set(held, noisy=False, seed=opts.data.seed)
    noisy_x, noisy_y = heldout_set(held, noisy=True, seed=opts.data.seed)
    test = (
        unseen_clips(opts.data, opts.test_per_label, opts.render_workers, opts.progress)
        if opts.test_per_label
        else None
    )
    log.info(
        "%d training clips, %d held-out clips (%.0f s)", len(base.clips), len(held.clips), time.monotonic() - t_data
    )
    sampler = ClipSampler(
        base, opts.seed, AugmentConfig(p_context=opts.context, speed=opts.speed), unknown_share=opts.unknown_share,
        hard_share=opts.hard_share, mine_share=opts.mine_share, keyword_gap=opts.keyword_gap, mine_pool=opts.mine_pool,
    )  # fmt: skip
    # Logit adjustment (Menon et al., 2021): the log of each label's share of the batches relative to 1/12 is added
    # to the logits inside the loss only, so the model's own logits keep equal priors (the held-out sets and the
    # edge client's threshold assume them) while it sees more "unknown" clips than one in twelve.
    adjust = torch.from_numpy(np.log(sampler.label_p * len(LABELS))).float() if opts.balanced_loss else None
    torch.manual_seed(opts.seed)
    generator = torch.Generator().manual_seed(opts.seed)
    if opts.init is not None:
        model, init_meta = load_kws_model(opts.init)
        model.train()
        init_info: dict[str, Any] | None = {
            "file": opts.init.name,
            "sha256": file_sha256(opts.init),
            "steps": init_meta["training"]["steps"],
            "heldout_clean_accuracy": init_meta["metrics"]["heldout_clean_accuracy"],
        }
    else:
        model = KWSNet(KWSConfig(num_classes=len(LABELS), **(opts.model or {})))
        init_info = None
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # depthwise convolutions: 2x faster
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=opts.lr, total_steps=opts.steps, pct_start=0.1)
    t0 = time.monotonic()
    model.train()
    bar = tqdm(range(opts.steps), desc="kws", unit="step", disable=not opts.progress, mininterval=2.0)
    running, held_acc, curve, mining = 0.0, float("nan"), [], []
    for step in bar:
        if opts.mine_share > 0 and step % opts.mine_every == 0:
            mining.append(_mine(model, sampler, step))
        waves, labels = sampler.batch(opts.batch_size)
        features = spec_augment(model.features(torch.from_numpy(waves)), opts, generator)  # (B, M, F)
        logits = model.classify(features)  # (B, classes)
        loss = F.cross_entropy(
            logits if adjust is None else logits + adjust,
            torch.from_numpy(labels),
            label_smoothing=opts.label_smoothing,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        acc = float((logits.argmax(dim=1).numpy() == labels).mean())
        running = acc if step == 0 else 0.98 * running + 0.02 * acc
        if (step + 1) % opts.eval_every == 0 or step + 1 == opts.steps:
            held_acc = evaluate(model, clean_x, clean_y).accuracy
            curve.append({"step": step + 1, "train_batch_accuracy": round(running, 4), "heldout_clean": held_acc})
            log.info("step %d: train %.3f, held-out clean %.4f", step + 1, running, held_acc)
        bar.set_postfix(loss=f"{loss.item():.3f}", train=f"{running:.3f}", heldout=f"{held_acc:.3f}")
    elapsed = time.monotonic() - t0
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    model.eval()
    clean = evaluate(model, clean_x, clean_y)
    noisy = evaluate(model, noisy_x, noisy_y)
    tested: dict[str, Any] = {}
    if test is not None:
        test_clean = evaluate(model, *unseen_set(test, noisy=False, config=opts.data))
        test_noisy = evaluate(model, *unseen_set(test, noisy=True, config=opts.data))
        tested = {
            "test_clean_accuracy": round(test_clean.accuracy, 4),
            "test_noisy_accuracy": round(test_noisy.accuracy, 4),
            "test_clean_confusion": test_clean.confusion,
            "test_noisy_confusion": test_noisy.confusion,
        }
    info = {
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
        "data": {
            "source": f"espeak-ng ({espeak_version().split('Data at')[0].strip().rstrip(':').strip()})",
            **opts.data.to_dict(),
            "hard_negatives": len(hard_negatives(opts.data)),
            "train_clips": len(base.clips),
            "heldout_clips": len(held.clips),
            "test_clips": len(test.clips) if test is not None else 0,
            "heldout_voices": "voices('heldout'): accents and variants never in training",
        },
        "training": {
            "steps": opts.steps,
            "init": init_info,
            "wall_time_s": round(elapsed, 1),
            "threads": torch.get_num_threads(),
            "curve": curve,
            "mining": mining,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items() if k not in ("data",)},
        },
        "metrics": {
            "heldout_clean_accuracy": round(clean.accuracy, 4),
            "heldout_noisy_accuracy": round(noisy.accuracy, 4),
            "heldout_clean_confusion": clean.confusion,
            "heldout_noisy_confusion": noisy.confusion,
            "train_batch_accuracy": round(running, 4),
            **tested,
        },
        "parameters": model.num_parameters(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "antiphon_version": server.__version__,
    }
    save_kws_model(opts.out, model, list(LABELS), info)
    write_model_card(opts.out, info, model.config)
    log.info(
        "held-out clean %.4f, noisy %.4f after %d steps (%.0f s)", clean.accuracy, noisy.accuracy, opts.steps, elapsed
    )
    return info


def write_model_card(out: Path, info: dict[str, Any], config: KWSConfig) -> Path:
    data, train, metrics = info["data"], info["training"], info["metrics"]
    opts = train["options"]
    fe = config.log_mel
    labels = list(LABELS)
    init = train.get("init")
    command = f"antiphon train kws --steps {train['steps']} --seed {opts['seed']}"
    if data["per_number"] != 250 or data["unknown_words"] != 1500:
        command += f" --per-number {data['per_number']} --unknown-words {data['unknown_words']}"
    accent_share = data.get("accent_share", 0.0)
    context = opts.get("context", 0.0)
    if context != 0.5:
        command += f" --context {context}"
    if accent_share != 0.25:
        command += f" --accent-share {accent_share}"
    speed = tuple(opts.get("speed", AugmentConfig.speed))
    if speed != AugmentConfig.speed:
        command += f" --speed-range {speed[0]:g},{speed[1]:g}"
    hard_renderings = data.get("hard_renderings", 0)
    if hard_renderings:
        command += f" --hard-renderings {hard_renderings}"
    unknown_share, hard_share = opts.get("unknown_share"), opts.get("hard_share", 0.0)
    if unknown_share is not None:
        command += f" --unknown-share {unknown_share}"
    if hard_share:
        command += f" --hard-share {hard_share}"
    if opts.get("balanced_loss"):
        command += " --balanced-loss"
    mine_share, mine_every, keyword_gap = (
        opts.get("mine_share", 0.0),
        opts.get("mine_every", 500),
        opts.get("keyword_gap", 0.0),
    )
    mine_pool = opts.get("mine_pool", "unknown")
    if mine_share:
        command += f" --mine-share {mine_share}" + (f" --mine-every {mine_every}" if mine_every != 500 else "")
        command += f" --mine-pool {mine_pool}" if mine_pool != "unknown" else ""
    if keyword_gap:
        command += f" --keyword-gap {keyword_gap}"
    if not init and (config.channels, config.blocks) != (88, 4):
        command += f" --channels {config.channels} --blocks {config.blocks}"
    if opts.get("lr") != 4e-3:
        command += f" --lr {opts['lr']}"
    test_per_label = opts.get("test_per_label", TEST_PER_LABEL)
    if test_per_label != TEST_PER_LABEL:
        command += f" --test-per-label {test_per_label}"
    if init:
        command += f" --init {init['file']}"
    started = (
        f"continued from `{init['file']}` (sha256 {init['sha256'][:16]}..., {init['steps']:,} steps, held-out clean "
        f"{init['heldout_clean_accuracy']:.2%}); "
        if init
        else ""
    )
    hard = (
        f"; {hard_renderings} renderings of each of {data['hard_negatives']} hard negatives (other words that share "
        "a number word's onset, rhyme or a syllable, or hold one inside, and short common words: "
        "`server.kws.data.HARD_NEGATIVES`)"
        if hard_renderings
        else ""
    )
    mix = (
        f"{unknown_share if unknown_share is not None else 1 / len(labels):.0%} of the clips of each batch unknown"
        + (f" ({hard_share:.0%} of them hard negatives)" if hard_renderings and hard_share else "")
        + ", the other labels alike"
        + (
            "; the shares' log added to the logits in the loss, so the model's priors stay equal"
            if opts.get("balanced_loss")
            else ""
        )
        + (
            f"; {mine_share:.0%} of the unknown clips mined: drawn in proportion to the model's error on them, every "
            f"{'hard negative' if mine_pool == 'hard' else 'unknown training clip'} heard clean every {mine_every:,} "
            "steps"
            if mine_share
            else ""
        )
    )
    gap_text = f"; after a number word the next word {keyword_gap * 1000:.0f} ms or more later" if keyword_gap else ""
    test_rows, test_confusion = "", ""
    if "test_clean_accuracy" in metrics:
        test_rows = f"""
| test set, clean | **{metrics["test_clean_accuracy"]:.2%}** ({data["test_clips"]:,} clips: {test_per_label} of each \
label by the held-out voices; their other words read by no training) |
| test set, augmented | **{metrics["test_noisy_accuracy"]:.2%}** |"""
        test_confusion = f"""
Confusion on the test set, clean:

```
{format_confusion(metrics["test_clean_confusion"], labels)}
```
"""
    curve = "\n".join(
        f"| {c['step']:,} | {c['train_batch_accuracy']:.2%} | {c['heldout_clean']:.2%} |" for c in train["curve"]
    )
    card = f"""# {out.name}

Keyword spotter trained by `{command} --out {out}` (antiphon {info["antiphon_version"]}).

| | |
|---|---|
| input | one second of PCM, (1, 16000) float32 in [-1, 1] at 16 kHz (resample 8 kHz and other rates first) |
| labels | {", ".join(labels)} |
| front end (inside the model) | log-mel: {fe.n_fft}-sample Hann frames every {fe.hop_length} samples, \
{fe.n_mels} mel bands {fe.f_min:g} Hz to {fe.f_max:g} Hz (phone and wide-band audio look alike), \
each band's mean over the second subtracted |
| network | DS-CNN: conv 10x4 stride 2 x {config.channels}, {config.blocks} depthwise-separable blocks \
(the first with stride 2), average pooling, linear {config.num_classes} |
| parameters | {info["parameters"]:,} |
| data | {data["source"]}: {data["per_number"]} training renderings of each number word and \
{data["unknown_words"]:,} other words of the training plays (train voices, speeds, pitches, amplitudes); \
{accent_share:.0%} of the number words spoken as other accents and learners pronounce them (espeak-ng phonemes: \
`server.kws.data.PRONUNCIATIONS`){hard} |
| augmentation | speed/pitch resampling (x{speed[0]:g} to x{speed[1]:g}), time shift ({context:.0%} of the words \
between parts of other words, as cut \
from running speech{gap_text}), reverberation, random EQ, telephone band, \
white/pink/brown/babble noise at 0-30 dB SNR, gain and clipping, hum; SpecAugment \
{opts["freq_masks"]} x {opts["freq_mask"]} bands, {opts["time_masks"]} x {opts["time_mask"]} frames |
| training | {started}{train["steps"]:,} steps of {opts["batch_size"]} fresh clips ({mix}), AdamW one-cycle \
peak lr {opts["lr"]}, label smoothing {opts["label_smoothing"]} |
| time | {train["wall_time_s"] / 60:.1f} minutes on the CPU, {train["threads"]} thread(s) |
| held-out voices, clean | **{metrics["heldout_clean_accuracy"]:.2%}** ({data["heldout_clips"]} clips: \
{data["heldout_per_label"]} of each label) |
| held-out voices, augmented | **{metrics["heldout_noisy_accuracy"]:.2%}** (the same clips through the training \
augmentation, fixed seed) |{test_rows}
| created | {info["created"]} |

The held-out voices share neither accent nor variant with the training voices. Real people are not espeak-ng:
expect lower figures on recordings (`antiphon eval kws DIR`). The test set (`antiphon eval kws --test-per-label N`)
is the larger sample of the same voices, and its figure is the one to report: with 40 clips of each label, the
held-out figure moves by about a point with the words drawn. Choose between runs by the development set
(`benchmarks/kws_devset.py`), not by either.

Progress:

| step | training batches (augmented, running) | held-out clean |
|---|---|---|
{curve}

Confusion on the held-out voices, clean (`antiphon eval kws`), rows true, columns predicted:

```
{format_confusion(metrics["heldout_clean_confusion"], labels)}
```

Confusion on the held-out voices, augmented:

```
{format_confusion(metrics["heldout_noisy_confusion"], labels)}
```
{test_confusion}"""
    path = out.with_suffix(".md")
    path.write_text(card, encoding="utf-8")
    return path
