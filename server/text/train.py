"""Train the character LSTM: stateful truncated BPTT, resumable, data-parallel.

Each process reads ``batch_size`` contiguous streams of the training text and
carries the LSTM state from one chunk of ``seq_len`` characters to the next,
so the model learns to use context far beyond one chunk. Under ``torchrun``
every process takes its own streams and gradients are averaged (gloo on the
CPU, NCCL on GPUs); only rank 0 evaluates, writes and reports. The loop, the
budget, the signals and the resume are :class:`server.training.TrainLoop`'s;
the options are :class:`~server.text.options.TextTrainOptions`.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from server.data.shakespeare import DOCUMENT_SEPARATOR, Corpus, load_corpus
from server.device import autocast_dtype, resolve_device
from server.errors import InvalidArgument
from server.model_card import ModelCard, snapshot_of, started_from
from server.provenance import stamp
from server.text.checkpoint import load_text_model, save_text_model
from server.text.dialogue import speakers
from server.text.evaluate import bits_per_char, streamed_bits_per_char
from server.text.model import CharLSTM, CharLSTMConfig, State
from server.text.options import MODEL_FLAGS, CharLSTMSizes, TextTrainOptions
from server.text.vocab import Vocabulary
from server.training import TrainLoop, init_distributed, state_path

log = logging.getLogger(__name__)

# The config's fields that an --init run takes from its own flags; the sizes are the checkpoint's.
DROPOUTS = ("dropout", "embed_dropout", "output_dropout")
# The options a card's command names when a run changed them (the budget, --init and the paths are named apart).
RECIPE = ("lr", "warmup_steps", "batch_size", "seq_len", "weight_decay", "min_lr_ratio", "seed")


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
        start: CharLSTM | None = None
        if resume is not None:
            self.vocab = Vocabulary(resume["vocab"])
            config = CharLSTMConfig(**resume["config"])
        elif opts.init is not None:
            start, self.vocab, meta = load_text_model(opts.init)
            read = meta["corpus"]  # the card says whether the start read what this run holds out
            self._start_from(
                opts.init,
                meta,
                {
                    "held_out_bits_per_char": meta["metrics"]["held_out_bits_per_char"],
                    "corpus_sha256": read["sha256"],
                    "not_trained_on": [*read["held_out"], *(read.get("dev") or {})],
                },
            )
            dropouts = {k: v for k, v in opts.model.items() if k in DROPOUTS}
            config = CharLSTMConfig(**{**start.config.to_dict(), **dropouts})
        else:
            self.vocab = Vocabulary.from_text(self.corpus.train)
            config = CharLSTMConfig(vocab_size=len(self.vocab), **opts.model)
        torch.manual_seed(opts.seed)
        random.seed(opts.seed)
        self.model = CharLSTM(config).to(self.device)
        if start is not None:
            self.model.load_state_dict(start.state_dict())
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
            raise InvalidArgument(  # the command line's mistake (most often --corpus left out): exit 2
                "corpus",
                f"{path} was trained on another corpus (its hash differs); give that run's --corpus, or train "
                "afresh without --resume",
            )
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
        with self._autocast():
            logits, self.state = self.ddp(x, state)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        return self._descend(loss, opts.grad_clip, x.numel(), t0)

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
            "training": self._provenance().to_dict(),
            "metrics": metrics,
            "init": self.init,
            "speakers": speakers(self.corpus.train),
            "parameters": self.model.num_parameters(),
            **stamp(),
        }
        save_text_model(self.checkpoint_out, self.model, self.vocab, info)
        text_card(info, self.model.config.to_dict()).write(self.checkpoint_out)
        log.info("held-out %.4f bits/char; checkpoint %s", overall, self.checkpoint_out)
        return info


def recipe_flags(opts: dict[str, Any], sizes: bool) -> str:
    """The flags of a run's recipe (an options record) that differ from the trainer's defaults, as a card's command
    names them; ``sizes``: the model's size flags too (an --init run takes its sizes from the checkpoint)."""
    defaults, model_defaults = TextTrainOptions(), CharLSTMSizes()
    shown = [
        f" --{name.replace('_', '-')} {opts[name]:g}"
        for name in RECIPE
        if opts.get(name, getattr(defaults, name)) != getattr(defaults, name)
    ]
    for name, value in opts.get("model", {}).items():
        if (sizes or name in DROPOUTS) and value is not None and value != getattr(model_defaults, name):
            shown.append(f" --{MODEL_FLAGS[name].replace('_', '-')} {value:g}")
    return "".join(shown)


def text_card(info: dict[str, Any], config: dict[str, Any]) -> ModelCard:
    """The card of a character LSTM checkpoint (its info and model config): data, split, recipe, steps, time,
    device, metrics, and the bits per character of each held-out (and development) document."""
    train, corpus, metrics = info["training"], info["corpus"], info["metrics"]
    opts = train["options"]
    run = f"--steps {opts['steps']}" if opts["steps"] is not None else f"--minutes {opts['minutes']}"
    init = info.get("init")
    if init:
        run += f" --init {init['file']}"
    run += recipe_flags(opts, sizes=not init)
    arch = (
        f"embedding {config['embed_dim']}, LSTM {config['num_layers']} x {config['hidden_size']}, "
        f"vocabulary {config['vocab_size']}"
    )
    steps = (
        f"{train['steps']:,} of {opts['batch_size']} x {opts['seq_len']} characters per process, "
        f"{train['processes']} process(es), {train['chars_seen']:,} characters seen"
    )
    dev = corpus.get("dev") or {}
    split = f"held out, never trained on: {', '.join(corpus['held_out'])}"
    if dev:
        split += f"; development plays, not trained on: {', '.join(dev)}"
    start = init if init and "corpus_sha256" in init else None  # the first --init records did not keep it
    if start and start["corpus_sha256"] != corpus["sha256"]:
        split += f" (by this run: the start `{start['file']}` was trained on other text, which may hold them)"
    elif start and (read := [n for n in [*corpus["held_out"], *dev] if n not in start["not_trained_on"]]):
        split += f" (by this run: the start `{start['file']}` was trained on {', '.join(read)})"
    rows = [("architecture", arch), ("parameters", f"{info['parameters']:,}")]
    # A checkpoint made before the recipe's dropouts were options (its config has no embed_dropout) was carded
    # without this row; its card is written again as it was.
    if "embed_dropout" in config:
        head_dropout = config["dropout"] if config["output_dropout"] is None else config["output_dropout"]
        recipe = (
            f"dropout {config['embed_dropout']} on the embedding, {config['dropout']} between layers, "
            f"{head_dropout} on the output; AdamW lr {opts['lr']}, weight decay {opts['weight_decay']}, "
            f"cosine to {opts['min_lr_ratio']} of it"
        )
        rows.append(("recipe", recipe))
    rows += [
        (
            "data",
            f"{corpus['source']} (sha256 {corpus['sha256'][:16]}...), {corpus['train_chars']:,} training characters",
        ),
        ("split", split),
        ("steps", steps),
        ("time", f"{train['wall_time_s'] / 60:.1f} minutes"),
    ]
    if init:
        rows.append(started_from(init, "chars_seen", "characters", f"{init['held_out_bits_per_char']:.4f} bits/char"))
    rows += [
        ("device", f"{train['device']}, {train['threads']} threads, {train['precision']}"),
        ("held-out bits per character", f"**{metrics['held_out_bits_per_char']:.4f}**"),
    ]
    if dev:
        rows.append(("development bits per character", f"{metrics['dev_bits_per_char']:.4f}"))
    rows.append(("created", info["created"]))
    documents = [
        f"| {name} | {chars:,} | {metrics['held_out_bits_per_char_by_document'][name]:.4f} |"
        for name, chars in corpus["held_out"].items()
    ]
    documents += [
        f"| {name} (development) | {chars:,} | {metrics['dev_bits_per_char_by_document'][name]:.4f} |"
        for name, chars in dev.items()
    ]
    sections = [
        "Held-out documents, scored with `antiphon eval text` (state carried through each whole file):",
        "| document | characters | bits/char |\n|---|---|---|\n" + "\n".join(documents),
    ]
    return ModelCard(
        "Character-level LSTM",
        f"antiphon train text {run}",
        info["antiphon_version"],
        rows,
        sections,
        snapshot_of=snapshot_of(opts),
    )
