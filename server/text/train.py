"""Train the character LSTM: stateful truncated BPTT, resumable, data-parallel.

Each process reads ``batch_size`` contiguous streams of the training text and
carries the LSTM state from one chunk of ``seq_len`` characters to the next,
so the model learns to use context far beyond one chunk. Under ``torchrun``
every process takes its own streams and gradients are averaged (gloo on the
CPU, NCCL on GPUs); only rank 0 evaluates, writes and reports.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import server
from server.data.shakespeare import DOCUMENT_SEPARATOR, Corpus, check_dev_plays, load_corpus
from server.device import autocast_dtype, resolve_device
from server.errors import CheckpointError, InvalidArgument
from server.text.checkpoint import save_text_model
from server.text.dialogue import speakers
from server.text.evaluate import LN2, bits_per_char, streamed_bits_per_char
from server.text.model import CharLSTM, CharLSTMConfig, State
from server.text.vocab import Vocabulary
from server.training import TrainLoop, init_distributed, jsonable, state_path

log = logging.getLogger(__name__)


@dataclass
class TextTrainOptions:
    corpus: Path | None = None  # None: the Shakespeare corpus
    out: Path = Path("runs/text/model.safetensors")
    steps: int | None = None  # stop after this many optimizer steps...
    minutes: float | None = None  # ...or after this much wall time (whichever comes first)
    device: str = "auto"
    precision: str = "auto"
    resume: bool = False
    seed: int = 1234
    batch_size: int = 64  # streams per process
    seq_len: int = 128
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 500
    checkpoint_minutes: float = 5.0
    progress: bool = True
    model: dict[str, Any] = field(default_factory=dict)  # CharLSTMConfig fields but vocab_size
    # Training plays held out as a development split (server.data.shakespeare.DEV_PLAYS, say): the progress
    # estimate reads them and the checkpoint reports them beside the held-out plays. (): train on every play.
    dev_plays: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.steps is None and self.minutes is None:
            raise InvalidArgument("steps", "give --steps or --minutes")
        if self.steps is not None and self.steps < 1:
            raise InvalidArgument("steps", f"must be at least 1, got {self.steps}")
        if self.minutes is not None and self.minutes <= 0:
            raise InvalidArgument("minutes", f"must be positive, got {self.minutes}")
        for name in ("batch_size", "seq_len", "eval_every", "warmup_steps"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"must be at least 1, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise InvalidArgument("lr", f"must be in (0, 1), got {self.lr}")
        if not 0 <= self.weight_decay < 1:
            raise InvalidArgument("weight_decay", f"must be in [0, 1), got {self.weight_decay}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise InvalidArgument("min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        if self.dev_plays and self.corpus is not None:
            raise InvalidArgument("dev_plays", "only the Shakespeare corpus has plays to hold out; drop --corpus")
        check_dev_plays(self.dev_plays)


class TextTrainer(TrainLoop):
    model: CharLSTM
    loss_name, rate_name, unit, seen_key = "bpc", "chars_s", "bits/char", "chars_seen"

    def __init__(self, opts: TextTrainOptions, corpus: Corpus | None = None) -> None:
        super().__init__()
        opts.validate()
        self.opts: TextTrainOptions = opts
        self.dist = init_distributed(opts.device)
        self.device = resolve_device(opts.device, self.dist.local_rank)
        self.amp = autocast_dtype(opts.precision, self.device)
        self.corpus = corpus if corpus is not None else load_corpus(opts.corpus, dev_plays=opts.dev_plays)
        self.state: State | None = None  # LSTM state carried between chunks (None: zero)
        resume = self._load_resume_state() if opts.resume else None
        if resume is not None:
            self.vocab = Vocabulary(resume["vocab"])
            config = CharLSTMConfig(**resume["config"])
        else:
            self.vocab = Vocabulary.from_text(self.corpus.train)
            config = CharLSTMConfig(vocab_size=len(self.vocab), **opts.model)
        torch.manual_seed(opts.seed)
        random.seed(opts.seed)
        self.model = CharLSTM(config).to(self.device)
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2 and not n.startswith("embed")]
        rest = [p for n, p in self.model.named_parameters() if p.dim() < 2 or n.startswith("embed")]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": opts.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=opts.lr,
            betas=(0.9, 0.99),
        )
        if resume is not None:
            self._restore_loop_state(resume)
            if "h" in resume:  # older states lack the recurrent state and RNG: start those afresh
                self.state = (resume["h"].to(self.device), resume["c"].to(self.device))
                torch.set_rng_state(resume["rng"])
        self.ddp: torch.nn.Module = self.model
        if self.dist.world > 1:
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.streams = self._make_streams()
        # The progress estimate reads the development plays when there are some: a recipe is chosen on them, and
        # the held-out plays are only scored at the end.
        estimated = self.corpus.dev or self.corpus.valid
        if self.corpus.dev:
            self.unit = "bits/char (development plays)"
        self.valid_ids = self.vocab.encode_tensor(DOCUMENT_SEPARATOR.join(estimated.values()))

    # -- data ---------------------------------------------------------------
    def _make_streams(self) -> torch.Tensor:
        """This process's rows of the training text, (batch_size, stream_len)."""
        ids = self.vocab.encode_tensor(self.corpus.train)
        total = self.opts.batch_size * self.dist.world
        stream_len = len(ids) // total
        if stream_len < self.opts.seq_len + 1:
            raise InvalidArgument(
                "seq_len", f"{len(ids)} training characters cannot fill {total} streams of {self.opts.seq_len + 1}"
            )
        rows = ids[: total * stream_len].view(total, stream_len)
        start = self.dist.rank * self.opts.batch_size
        return rows[start : start + self.opts.batch_size].contiguous()

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs, targets (B, T) for ``step`` and whether a new pass over the streams begins."""
        t = self.opts.seq_len
        per_pass = (self.streams.shape[1] - 1) // t
        j = step % per_pass
        x = self.streams[:, j * t : j * t + t]
        y = self.streams[:, j * t + 1 : j * t + t + 1]
        return x.to(self.device), y.to(self.device), j == 0

    # -- resume -------------------------------------------------------------
    def _load_resume_state(self) -> dict[str, Any] | None:
        saved = self._read_resume_state()
        if saved is not None and saved.get("corpus_sha256") != self.corpus.sha256:
            path = state_path(self.opts.out)
            raise CheckpointError(f"{path} was trained on other data (corpus hash differs); train afresh")
        return saved

    def _save_resume_state(self) -> None:
        if not self.dist.main:
            return
        self._write_resume_state(
            {
                **self._loop_state(),
                "config": self.model.config.to_dict(),
                "vocab": self.vocab.chars,
                "corpus_sha256": self.corpus.sha256,
                "h": self._state()[0].cpu(),
                "c": self._state()[1].cpu(),
                "rng": torch.get_rng_state(),
            }
        )

    # -- loop ---------------------------------------------------------------
    def _state(self) -> State:
        if self.state is None:
            self.state = self.model.init_state(self.opts.batch_size)
        return self.state

    def _step(self) -> float:
        """One optimizer step on the next chunk of every stream; returns the loss in bits/char."""
        opts = self.opts
        t0 = time.monotonic()
        x, y, fresh = self._batch(self.step)
        if fresh:
            self.state = None
        h, c = self._state()
        state = (h.detach(), c.detach())  # truncate backpropagation at the chunk boundary
        self._set_lr()
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            logits, self.state = self.ddp(x, state)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), opts.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.seen += x.numel() * self.dist.world
        self.elapsed += time.monotonic() - t0
        return loss.item() / LN2

    def _estimate(self) -> float:
        self.model.eval()
        return streamed_bits_per_char(self.model, self.valid_ids)

    def _score(self, texts: dict[str, str]) -> tuple[float, dict[str, float]]:
        """Exact bits per character over ``texts`` (weighted by length) and per document."""
        per_doc = {name: bits_per_char(self.model, self.vocab, text) for name, text in texts.items()}
        overall = sum(per_doc[n] * len(texts[n]) for n in per_doc) / sum(len(t) for t in texts.values())
        return overall, per_doc

    def _finish(self) -> dict[str, Any]:
        """Exact held-out (and development) evaluation, then the checkpoint and its model card."""
        self.model.eval()
        overall, per_doc = self._score(self.corpus.valid)
        metrics: dict[str, Any] = {
            "held_out_bits_per_char": round(overall, 4),
            "held_out_bits_per_char_by_document": {n: round(v, 4) for n, v in per_doc.items()},
        }
        if self.corpus.dev:
            dev, dev_by_doc = self._score(self.corpus.dev)
            metrics["dev_bits_per_char"] = round(dev, 4)
            metrics["dev_bits_per_char_by_document"] = {n: round(v, 4) for n, v in dev_by_doc.items()}
            log.info("development %.4f bits/char", dev)
        info = {
            "corpus": {
                "source": self.corpus.source,
                "sha256": self.corpus.sha256,
                "train_chars": len(self.corpus.train),
                "held_out": {name: len(text) for name, text in self.corpus.valid.items()},
                "dev": {name: len(text) for name, text in self.corpus.dev.items()},
            },
            "training": {
                "steps": self.step,
                "chars_seen": self.seen,
                "wall_time_s": round(self.elapsed, 1),
                "device": str(self.device) if self.device.type == "cpu" else torch.cuda.get_device_name(self.device),
                "threads": torch.get_num_threads(),
                "processes": self.dist.world,
                "precision": str(self.amp or torch.float32).replace("torch.", ""),
                "options": jsonable(asdict(self.opts)),
            },
            "metrics": metrics,
            "speakers": speakers(self.corpus.train),
            "parameters": self.model.num_parameters(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "antiphon_version": server.__version__,
        }
        save_text_model(self.opts.out, self.model, self.vocab, info)
        write_model_card(self.opts.out, info, self.model.config.to_dict())
        log.info("held-out %.4f bits/char; checkpoint %s", overall, self.opts.out)
        return info


def write_model_card(out: Path, info: dict[str, Any], config: dict[str, Any]) -> Path:
    """A Markdown card beside the checkpoint: data, split, steps, time, device, metrics."""
    train, corpus, metrics = info["training"], info["corpus"], info["metrics"]
    opts = train["options"]
    by_doc = "\n".join(
        f"| {name} | {chars:,} | {metrics['held_out_bits_per_char_by_document'][name]:.4f} |"
        for name, chars in corpus["held_out"].items()
    )
    run = f"--steps {opts['steps']}" if opts["steps"] is not None else f"--minutes {opts['minutes']}"
    arch = (
        f"embedding {config['embed_dim']}, LSTM {config['num_layers']} x {config['hidden_size']}, "
        f"vocabulary {config['vocab_size']}"
    )
    head_dropout = config["dropout"] if config.get("output_dropout") is None else config["output_dropout"]
    recipe = (
        f"dropout {config.get('embed_dropout', 0.0)} on the embedding, {config['dropout']} between layers, "
        f"{head_dropout} on the output; AdamW lr {opts['lr']}, weight decay {opts['weight_decay']}, "
        f"cosine to {opts['min_lr_ratio']} of it"
    )
    steps = (
        f"{train['steps']:,} of {opts['batch_size']} x {opts['seq_len']} characters per process, "
        f"{train['processes']} process(es), {train['chars_seen']:,} characters seen"
    )
    dev = corpus.get("dev") or {}
    dev_rows = "".join(
        f"| {name} (development) | {chars:,} | {metrics['dev_bits_per_char_by_document'][name]:.4f} |\n"
        for name, chars in dev.items()
    )
    split = f"held out, never trained on: {', '.join(corpus['held_out'])}"
    if dev:
        split += f"; development plays, not trained on: {', '.join(dev)}"
    dev_line = f"| development bits per character | {metrics['dev_bits_per_char']:.4f} |\n" if dev else ""
    card = f"""# {out.name}

Character-level LSTM trained by `antiphon train text {run} --out {out}` (antiphon {info["antiphon_version"]}).

| | |
|---|---|
| architecture | {arch} |
| parameters | {info["parameters"]:,} |
| recipe | {recipe} |
| data | {corpus["source"]} (sha256 {corpus["sha256"][:16]}...), {corpus["train_chars"]:,} training characters |
| split | {split} |
| steps | {steps} |
| time | {train["wall_time_s"] / 60:.1f} minutes |
| device | {train["device"]}, {train["threads"]} threads, {train["precision"]} |
| held-out bits per character | **{metrics["held_out_bits_per_char"]:.4f}** |
{dev_line}| created | {info["created"]} |

Held-out documents, scored with `antiphon eval text` (state carried through each whole file):

| document | characters | bits/char |
|---|---|---|
{by_doc}
{dev_rows}"""
    path = out.with_suffix(".md")
    path.write_text(card, encoding="utf-8")
    return path
