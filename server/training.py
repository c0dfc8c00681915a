"""The training toolkit: what every trainer shares.

:class:`TrainLoop` is the loop of the text and audio trainers: the budget (steps and/or minutes), the learning-rate
schedule, the loop with its progress bar, periodic held-out estimate and periodic saves, a clean stop on SIGINT or
SIGTERM, the agreement of ``torchrun`` ranks, and the resumable state file. A trainer subclasses it: it sets
``opts`` (:class:`LoopOptions` fields), ``dist``, ``device``, ``amp``, ``model``, ``ddp`` (the model, wrapped for
data parallelism under ``torchrun``) and ``optimizer``, and implements ``_step`` (one optimizer step; returns the
loss in bits per item), ``_estimate`` (a quick held-out figure), ``_save_resume_state`` and ``_finish`` (the exact
evaluation, the checkpoint and its card; :meth:`TrainLoop._provenance` is its ``training`` record).

:class:`ClassifierTrainer` is the loop of the classifiers (digits, keyword spotter, text discriminator): a family
gives its batches and its loss, and periodic checks if it has some. :func:`batched_logits` is their one way to
run a model over many inputs. The checkpoint's record of the run is a :class:`~server.provenance.Provenance`, its
card a :class:`~server.model_card.ModelCard`.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from server.checkpoint import file_sha256, replace_atomically
from server.errors import CheckpointError
from server.options import written_to
from server.provenance import Provenance, options_record

log = logging.getLogger(__name__)


class LoopOptions(Protocol):
    """The options every trainer has (its options dataclass has more)."""

    out: Path
    snapshot: Path | None  # write the resumed state's checkpoint here instead of training
    steps: int | None  # stop after this many optimizer steps...
    minutes: float | None  # ...or after this much training time, whichever comes first
    lr: float
    min_lr_ratio: float
    warmup_steps: int
    eval_every: int
    checkpoint_minutes: float
    progress: bool


@dataclass
class Distributed:
    """This process's place under ``torchrun`` (rank 0 of 1 without it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> Distributed:
    """Join the process group ``torchrun`` set up (gloo on the CPU, NCCL on GPUs); a lone process needs none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    if not dist.is_initialized():
        backend = "nccl" if device_name != "cpu" and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While training, SIGINT and SIGTERM ask for a clean stop instead of killing mid-step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def state_path(out: Path) -> Path:
    """Where the resumable training state of ``out`` lives."""
    return out.with_name(out.stem + ".state.pt")


def lr_at(opts: LoopOptions, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay over the run's progress (steps or time)."""
    warm = min(1.0, (step + 1) / opts.warmup_steps)
    floor = opts.lr * opts.min_lr_ratio
    return warm * (floor + 0.5 * (opts.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress))))


class TrainLoop:
    """The training loop; see the module's docstring for what a subclass provides."""

    opts: LoopOptions
    dist: Distributed
    device: torch.device
    amp: torch.dtype | None  # autocast's type; None: float32
    model: torch.nn.Module
    ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator  # a trainer's own NumPy draws (see _random_state); the text trainer has none
    loss_name = "bits"  # the progress bar's name for the running training loss
    rate_name = "items_s"  # ... and for the items (characters, samples) per second
    unit = "bits"  # the held-out estimate's unit, as the log prints it
    seen_key = "seen"  # the state file's name for ``seen`` (chars_seen, samples_seen)

    def __init__(self) -> None:
        self.step = 0
        self.elapsed = 0.0  # training time, summed over resumed runs
        self.seen = 0  # items (characters, samples) trained on, over every process
        self.init: dict[str, Any] | None = None  # the checkpoint an --init run started from (see _start_from)
        self._stop = threading.Event()

    # -- for subclasses ------------------------------------------------------
    def _step(self) -> float:
        raise NotImplementedError

    def _estimate(self) -> float:
        raise NotImplementedError

    def _save_resume_state(self) -> None:
        """Called on every rank (a subclass may gather from all of them); only rank 0 writes."""
        raise NotImplementedError

    def _finish(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------
    def _autocast(self) -> torch.autocast:
        """The forward pass in ``amp`` (float32 when it is None)."""
        return torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None)

    def _descend(self, loss: torch.Tensor, grad_clip: float, items: int, started: float) -> float:
        """Backpropagate ``loss`` (a mean cross-entropy in nats), clip the gradient's norm to ``grad_clip`` and step;
        count the step, the ``items`` each process trained on and the time since ``started``. Returns the loss in
        bits."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.optimizer.step()
        self.step += 1
        self.seen += items * self.dist.world
        self.elapsed += time.monotonic() - started
        return loss.item() / math.log(2.0)

    def _set_lr(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.opts, self.step, self._progress())

    def _progress(self) -> float:
        """The spent fraction of the budget: the larger of steps and time."""
        fractions = []
        if self.opts.steps is not None:
            fractions.append(self.step / self.opts.steps)
        if self.opts.minutes is not None:
            fractions.append(self.elapsed / (self.opts.minutes * 60))
        return max(fractions)

    def _sync(self) -> None:
        """Every rank follows rank 0's clock and stop request, so all agree on the learning rate, on when to save
        and on the step to stop at (a rank that stopped alone would hang the others' all-reduce)."""
        if self.dist.world > 1:
            shared = torch.tensor([self.elapsed, float(self._stop.is_set())], dtype=torch.float64)
            dist.broadcast(shared, src=0)
            self.elapsed = float(shared[0])
            if shared[1]:
                self._stop.set()

    def train(self) -> dict[str, Any]:
        """Train until the budget is spent; SIGINT or SIGTERM stop after the current step and save the state
        (then KeyboardInterrupt is raised; ``--resume`` continues exactly). With ``snapshot`` set, train nothing:
        write the checkpoint and card of the resumed state there (the state file is left as it was)."""
        opts = self.opts
        if opts.snapshot is not None:
            return self._snapshot(opts.snapshot)
        self.ddp.train()
        bar = tqdm(
            total=opts.steps,
            initial=self.step,
            disable=not (opts.progress and self.dist.main),
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30,
        )
        saved_at = self.elapsed  # the synchronized clock, so every rank saves at the same step
        estimate = float("nan")
        window: list[float] = []
        window_start = (time.monotonic(), self.seen)
        with stop_on_signals(self._stop):
            while self._progress() < 1.0 and not self._stop.is_set():
                window.append(self._step())
                self._sync()
                if self.dist.main and self.step % opts.eval_every == 0:
                    estimate = self._estimate()
                    self.ddp.train()
                    bar.write(f"step {self.step}: held-out ~{estimate:.3f} {self.unit}")
                if len(window) == 10:
                    if opts.steps is None:  # a time budget: estimate the total for the bar's ETA
                        bar.total = max(self.step, round(self.step / max(self._progress(), 1e-9)))
                    now = time.monotonic()
                    rate = (self.seen - window_start[1]) / (now - window_start[0])
                    shown = f"{estimate:.3f}" if math.isfinite(estimate) else "-"  # none before the first estimate
                    postfix = {self.loss_name: f"{sum(window) / len(window):.3f}", "valid": shown}
                    postfix |= {self.rate_name: f"{rate:.0f}", "lr": f"{self.optimizer.param_groups[0]['lr']:.1e}"}
                    bar.set_postfix(postfix, refresh=False)
                    window, window_start = [], (now, self.seen)
                bar.update(1)
                if self.elapsed - saved_at > opts.checkpoint_minutes * 60:
                    self._save_resume_state()
                    saved_at = self.elapsed
        bar.close()
        self._save_resume_state()
        if self._stop.is_set():
            log.warning("stopped at step %d; the state is saved: run again with --resume", self.step)
            raise KeyboardInterrupt
        result = self._finish() if self.dist.main else {}
        if self.dist.world > 1:
            dist.barrier()
        return result

    def _snapshot(self, path: Path) -> dict[str, Any]:
        """The checkpoint and card of the state just resumed, written to ``path`` instead of ``--out``."""
        log.info("snapshot of step %d (%.0f minutes of training) to %s", self.step, self.elapsed / 60, path)
        return self._finish() if self.dist.main else {}

    @property
    def checkpoint_out(self) -> Path:
        """Where ``_finish`` writes the checkpoint and its card: ``--snapshot`` if given, else ``--out``."""
        return written_to(self.opts)

    def _read_resume_state(self) -> dict[str, Any] | None:
        """The saved state of ``opts.out``, or None (with a warning) when there is none."""
        path = state_path(self.opts.out)
        if not path.is_file() and self.opts.snapshot is not None:
            raise CheckpointError(f"no training state at {path} to snapshot (--out names the run's checkpoint)")
        if not path.is_file():
            log.warning("no training state at %s; starting from scratch", path)
            return None
        try:
            saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several unrelated types for a bad file
            raise CheckpointError(f"cannot resume from {path}: {exc}") from exc
        log.info("resuming from %s at step %d", path, saved["step"])
        return saved

    def _start_from(self, path: Path, meta: dict[str, Any], known: dict[str, Any]) -> None:
        """Record that this run starts from the checkpoint ``path`` (its metadata ``meta``; ``known``: what the
        family keeps of it, its held-out figures as the family names them first). The record goes into the state
        file, the checkpoint's ``init`` entry and the card's "started from" row
        (:func:`~server.model_card.started_from`)."""
        before = Provenance.from_dict(meta["training"], self.seen_key)
        self.init = {
            "file": path.name,
            "sha256": file_sha256(path),
            "steps": before.steps,
            self.seen_key: before.seen,
            "wall_time_s": before.wall_time_s,
            **known,
        }

    def _loop_state(self) -> dict[str, Any]:
        """What every state file holds: weights, optimizer moments, the step, the clock and the items seen (and
        the checkpoint the run started from, if it did)."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            self.seen_key: self.seen,
        }
        return state | ({"init": self.init} if self.init is not None else {})

    def _restore_loop_state(self, saved: dict[str, Any]) -> None:
        """Take back what :meth:`_loop_state` saved (the model and optimizer built as the state describes)."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.step, self.elapsed, self.seen = saved["step"], saved["elapsed"], saved[self.seen_key]
        self.init = saved.get("init")

    def _random_state(self) -> dict[str, Any]:
        """Torch's generator and every rank's NumPy generator ``self.rng``, for the state file. Call it on every
        rank: under ``torchrun`` it gathers the ranks' generators, and only rank 0 gets them all."""
        mine = dict(self.rng.bit_generator.state)
        states: list[Any] = [mine]
        if self.dist.world > 1:
            states = [None] * self.dist.world
            dist.all_gather_object(states, mine)
        return {"rng": torch.get_rng_state(), "np_rng": states}

    def _restore_random_state(self, saved: dict[str, Any]) -> None:
        """Take back what :meth:`_random_state` saved, each rank its own NumPy generator."""
        torch.set_rng_state(saved["rng"])
        self.rng.bit_generator.state = saved["np_rng"][self.dist.rank]

    def _provenance(self) -> Provenance:
        """The checkpoint's record of this run."""
        device = str(self.device) if self.device.type == "cpu" else torch.cuda.get_device_name(self.device)
        return Provenance(
            steps=self.step,
            wall_time_s=round(self.elapsed, 1),
            threads=torch.get_num_threads(),
            options=options_record(self.opts),
            device=device,
            processes=self.dist.world,
            precision=str(self.amp or torch.float32).replace("torch.", ""),
            seen=self.seen,
            seen_key=self.seen_key,
        )

    def _write_resume_state(self, payload: dict[str, Any]) -> None:
        """Write the state file whole or not at all (a kill mid-write leaves the previous one)."""
        replace_atomically(state_path(self.opts.out), lambda tmp: torch.save(payload, tmp))


# -- the classifiers' loop -------------------------------------------------------------------------------------
Batch = tuple[Any, torch.Tensor]  # one step's inputs (what the loss reads) and labels (B,)


@dataclass
class ClassifierRun:
    """What :meth:`ClassifierTrainer.train` did."""

    steps: int
    wall_time_s: float
    train_batch_accuracy: float  # running mean of the training batches' accuracy (2% per step)
    checks: list[dict[str, Any]] = field(default_factory=list)  # {"step", "train_batch_accuracy", the check's}


class ClassifierTrainer:
    """AdamW with a one-cycle learning rate (warm for ``warmup_share`` of ``steps``), one batch per step, a
    progress bar with the loss and the running training accuracy, and a check every ``check_every`` steps and
    after the last (0: none)."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        steps: int,
        lr: float,
        weight_decay: float,
        warmup_share: float = 0.1,
        parameters: Iterable[torch.nn.Parameter] | None = None,  # the trained ones (default: all)
        name: str = "",
        progress: bool = False,
        check_every: int = 0,
    ) -> None:
        self.model, self.steps, self.name, self.progress, self.check_every = model, steps, name, progress, check_every
        params = model.parameters() if parameters is None else parameters
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=lr, total_steps=steps, pct_start=warmup_share
        )

    def train(
        self,
        batches: Iterator[Batch],
        loss: Callable[[Batch], tuple[torch.Tensor, torch.Tensor]] | None = None,
        check: Callable[[int, float], dict[str, float]] | None = None,
    ) -> ClassifierRun:
        """Take ``steps`` steps on ``batches``. ``loss`` gives a batch's loss and logits (B, classes) (default:
        the model's logits of the inputs, cross-entropy); ``check(steps done, running accuracy)`` its figures."""
        loss = loss or (lambda batch: cross_entropy(self.model(batch[0]), batch[1]))
        bar = tqdm(range(self.steps), desc=self.name, unit="step", disable=not self.progress, mininterval=2.0)
        run = ClassifierRun(0, 0.0, 0.0)
        figures: dict[str, float] = {}
        t0 = time.monotonic()
        self.model.train()
        for step in bar:
            batch = next(batches)
            value, logits = loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            value.backward()
            self.optimizer.step()
            self.schedule.step()
            accuracy = float((logits.detach().argmax(dim=1).cpu() == batch[1].cpu()).float().mean())
            running = accuracy if step == 0 else 0.98 * run.train_batch_accuracy + 0.02 * accuracy
            run.steps, run.train_batch_accuracy = step + 1, running
            if check is not None and self._check_due(run.steps):
                figures = check(run.steps, running)
                self.model.train()
                run.checks.append({"step": run.steps, "train_batch_accuracy": round(running, 4), **figures})
            shown = {"loss": value.item(), "train": running, **figures}
            bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)
        run.wall_time_s = time.monotonic() - t0
        return run

    def _check_due(self, steps: int) -> bool:
        return self.check_every > 0 and (steps % self.check_every == 0 or steps == self.steps)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A classifier's loss and its logits, as :meth:`ClassifierTrainer.train` takes them."""
    return F.cross_entropy(logits, labels.to(logits.device), **kw), logits


@torch.no_grad()
def batched_logits(
    model: torch.nn.Module,
    *arrays: np.ndarray,
    batch_size: int = 256,
    forward: Callable[..., torch.Tensor] | None = None,
    prepare: Callable[..., tuple[np.ndarray, ...]] | None = None,
) -> np.ndarray:
    """Logits (N, classes) float32 of the N rows of ``arrays`` (sliced alike), ``batch_size`` rows at a time, on
    the model's device, in eval mode (the model's mode is restored after). ``prepare`` turns a batch's slices into
    the model's inputs (rows built on the fly); ``forward`` is what is called (default: the model)."""
    device = next(model.parameters()).device
    call = forward or model
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(arrays[0]), batch_size):
            rows = tuple(a[i : i + batch_size] for a in arrays)
            inputs = prepare(*rows) if prepare is not None else rows
            out.append(call(*(torch.from_numpy(np.asarray(x)).to(device) for x in inputs)).float().cpu())
    finally:
        model.train(was_training)
    if not out:
        classes = getattr(getattr(model, "config", None), "num_classes", 0)
        return np.zeros((0, classes), dtype=np.float32)
    return torch.cat(out).numpy()
