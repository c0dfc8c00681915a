"""What the text and audio trainers share: the budget (steps and/or minutes), the learning-rate schedule, the loop
with its progress bar, periodic held-out estimate and periodic saves, a clean stop on SIGINT or SIGTERM, the
agreement of ``torchrun`` ranks, and the resumable state file.

A trainer subclasses :class:`TrainLoop`: it sets ``opts`` (:class:`LoopOptions` fields), ``dist``, ``model``,
``ddp`` (the model, wrapped for data parallelism under ``torchrun``) and ``optimizer``, and implements ``_step``
(one optimizer step; returns the loss in bits per item), ``_estimate`` (a quick held-out figure),
``_save_resume_state`` and ``_finish`` (the exact evaluation, the checkpoint and its card).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from tqdm import tqdm

from server.errors import CheckpointError

log = logging.getLogger(__name__)


class LoopOptions(Protocol):
    """The options every trainer has (its options dataclass has more)."""

    out: Path
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


def jsonable(value: Any) -> Any:
    """Options as JSON for checkpoint metadata: paths become strings."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


class TrainLoop:
    """The training loop; see the module's docstring for what a subclass provides."""

    opts: LoopOptions
    dist: Distributed
    model: torch.nn.Module
    ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_name = "bits"  # the progress bar's name for the running training loss
    rate_name = "items_s"  # ... and for the items (characters, samples) per second
    unit = "bits"  # the held-out estimate's unit, as the log prints it
    seen_key = "seen"  # the state file's name for ``seen`` (chars_seen, samples_seen)

    def __init__(self) -> None:
        self.step = 0
        self.elapsed = 0.0  # training time, summed over resumed runs
        self.seen = 0  # items (characters, samples) trained on, over every process
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
        (then KeyboardInterrupt is raised; ``--resume`` continues exactly)."""
        opts = self.opts
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
                    postfix = {self.loss_name: f"{sum(window) / len(window):.3f}", "valid": f"{estimate:.3f}"}
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

    def _read_resume_state(self) -> dict[str, Any] | None:
        """The saved state of ``opts.out``, or None (with a warning) when there is none."""
        path = state_path(self.opts.out)
        if not path.is_file():
            log.warning("no training state at %s; starting from scratch", path)
            return None
        try:
            saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several unrelated types for a bad file
            raise CheckpointError(f"cannot resume from {path}: {exc}") from exc
        log.info("resuming from %s at step %d", path, saved["step"])
        return saved

    def _loop_state(self) -> dict[str, Any]:
        """What every state file holds: weights, optimizer moments, the step, the clock and the items seen."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            self.seen_key: self.seen,
        }

    def _restore_loop_state(self, saved: dict[str, Any]) -> None:
        """Take back what :meth:`_loop_state` saved (the model and optimizer built as the state describes)."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.step, self.elapsed, self.seen = saved["step"], saved["elapsed"], saved[self.seen_key]

    def _write_resume_state(self, payload: dict[str, Any]) -> None:
        """Write the state file whole or not at all (a kill mid-write leaves the previous one)."""
        path = state_path(self.opts.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)
