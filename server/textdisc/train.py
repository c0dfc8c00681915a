"""Train the text discriminator: real windows of the training plays against windows sampled from the text model.

The samples come from the project's own generation code (:mod:`server.textdisc.samples`), cached under the
antiphon cache. The test set is the held-out plays and fresh streams at other temperatures and seeds, so the
accuracy measures both unseen real text and unseen sampling settings. AdamW with a one-cycle learning rate,
batches drawn afresh every step; seconds to minutes on one CPU core.

With a scorer (a character LSTM read by the model, :mod:`server.textdisc.model`), reading every window with the
LSTM at every step would cost most of the training, so the windows are fixed instead: a pool of the trained
streams' non-overlapping windows and as many real windows at random offsets, whose scorer features are computed
once (cached under the antiphon cache by the scorer's and the windows' sha256) and passed to the model beside the
ids. The scorer is frozen, so the features are what the model's own forward computes; the test set goes through
the forward.

With a lexicon, a real window of a training document is read with that document taken off the lexicon's counts
(:class:`Unread`), as the test's held-out plays are. With a base (``--base``), only the head trains.
"""

from __future__ import annotations

import hashlib
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
from server.classifier_metrics import format_confusion
from server.data.cache import cache_dir
from server.data.shakespeare import load_corpus
from server.errors import InvalidArgument
from server.text.checkpoint import load_text_model
from server.text.model import CharLSTM
from server.text.vocab import Vocabulary
from server.textdisc.checkpoint import load_textdisc_model, save_textdisc_model
from server.textdisc.data import (
    LABELS,
    TEST_SAMPLES,
    TRAIN_SAMPLES,
    WINDOW,
    WindowSampler,
    encode,
    split_held_out,
    stream_windows,
    test_windows,
)
from server.textdisc.evaluate import evaluate, predict_logits
from server.textdisc.lexicon import LEXICON_FEATURES, MAX_DOCUMENTS, document_lexicon, own_words
from server.textdisc.model import (
    BAND_WIDTH,
    LEXICON_STATISTICS,
    POSITION_FEATURES,
    POSITIONS,
    RANK_WIDTH,
    SCORER_FEATURES,
    SCORER_SKIP,
    WARM_UP,
    WINDOW_STATISTICS,
    TextDiscConfig,
    TextDiscriminator,
)
from server.textdisc.samples import SampleSet, load_samples, variant_name

log = logging.getLogger(__name__)

CHECK_EVERY = 20  # one training stream in 20 is held back to check for memorisation
CHECK_WINDOWS = 512
FEATURE_VERSION = 2
FEATURE_BATCH = 128  # windows read by the scorer at once


def evenly(rows: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` rows, evenly spaced."""
    return rows[np.unique(np.linspace(0, len(rows) - 1, count).astype(np.int64))]


def generated_share(model: TextDiscriminator, ids: np.ndarray, features: np.ndarray | None = None) -> float:
    """The share of windows (N, WINDOW) judged generated (``features``: their scorer features, precomputed)."""
    if features is None:
        return float(predict_logits(model, ids).argmax(axis=1).mean())
    model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [
                model.classify(torch.from_numpy(ids[i : i + 256]), torch.from_numpy(features[i : i + 256]).float())
                for i in range(0, len(ids), 256)
            ]
        )
    model.train()
    return float(logits.argmax(dim=1).float().mean())


@torch.no_grad()
def scorer_features(model: TextDiscriminator, ids: np.ndarray, scorer_sha256: str, progress: bool) -> np.ndarray:
    """The scorer features (N, WINDOW, F) float16 of windows (N, WINDOW) (:meth:`TextDiscriminator.score`), cached
    by the scorer's (and the reference's) and the windows' sha256."""
    key = f"{FEATURE_VERSION}:{scorer_sha256}:{model.config.rank_width:g}:{ids.shape}"
    digest = hashlib.sha256(key.encode() + ids.tobytes()).hexdigest()
    path = cache_dir() / "textdisc" / f"features-{digest[:20]}.npy"
    if path.is_file():
        return np.load(path)
    out = []
    bar = tqdm(total=len(ids), desc="scoring", unit="window", disable=not progress, mininterval=2.0)
    for i in range(0, len(ids), FEATURE_BATCH):
        out.append(model.score(torch.from_numpy(ids[i : i + FEATURE_BATCH])).numpy().astype(np.float16))
        bar.update(len(out[-1]))
    bar.close()
    features = np.concatenate(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, features)
    tmp.replace(path)
    return features


class FeaturePool:
    """Fixed training windows with their scorer features: the generated windows ``fake`` (N, WINDOW) and as many
    real windows at random offsets of ``real_text`` (a share ``mix`` of them from ``other_text``); batches are half
    real."""

    def __init__(
        self,
        model: TextDiscriminator,
        fake: np.ndarray,
        real_text: np.ndarray,
        sha256: str,
        seed: int,
        progress: bool,
        other_text: np.ndarray | None = None,
        mix: float = 0.0,
        spans: tuple[tuple[int, int], ...] = (),
        other_spans: tuple[tuple[int, int], ...] = (),
    ) -> None:
        self.rng = np.random.default_rng(seed)
        rng = np.random.default_rng(seed + 1)
        n_other = round(len(fake) * mix) if other_text is not None else 0
        rows: list[np.ndarray] = []
        documents: list[np.ndarray] = []  # of each real window: see data.WindowSampler
        for text, count, text_spans in ((real_text, len(fake) - n_other, spans), (other_text, n_other, other_spans)):
            if count and text is not None:
                starts = np.sort(rng.integers(0, len(text) - WINDOW + 1, count))
                rows.extend(text[s : s + WINDOW] for s in starts)
                first = np.array([a for a, _ in text_spans], dtype=np.int64)
                found = np.searchsorted(first, starts, side="right") - 1 if len(first) else np.full(count, -1)
                documents.append(found)
        real = np.stack(rows)
        self.ids = np.concatenate([real, fake]).astype(np.int32)
        self.labels = np.concatenate([np.zeros(len(real)), np.ones(len(fake))]).astype(np.int64)
        self.documents = np.concatenate([*documents, np.full(len(fake), -1)]).astype(np.int64)
        self.features = scorer_features(model, self.ids, sha256, progress)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Ids (size, WINDOW), features (size, WINDOW, F) float32, labels (size,) and documents (size,), half
        real."""
        half = len(self.ids) // 2
        n_real = size // 2
        pick = np.concatenate(
            [self.rng.integers(0, half, n_real), half + self.rng.integers(0, len(self.ids) - half, size - n_real)]
        )
        pick = pick[self.rng.permutation(size)]
        return self.ids[pick], self.features[pick].astype(np.float32), self.labels[pick], self.documents[pick]


def freeze_to_head(model: TextDiscriminator, base: TextDiscriminator) -> None:
    """Copy ``base``'s weights (embedding, lexicon, convolutions) into ``model`` and freeze them; ``model``'s head
    starts as ``base``'s, with zero weights for the scorer's statistics, so training starts from the base's
    answers."""
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen_elsewhere = ("head.", "scorer", "scorer_view.", "scorer_stats.", "reference.")
    if unexpected or any(not k.startswith(frozen_elsewhere) for k in missing):
        raise InvalidArgument("base", f"does not fit the model: missing {missing}, unexpected {unexpected}")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("head."))
    width = base.head.in_features
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.weight[:, :width] = base.head.weight
        model.head.bias.copy_(base.head.bias)


@torch.no_grad()
def standardise_statistics(model: TextDiscriminator, pool: FeaturePool, unread: Unread | None) -> None:
    """Set the window statistics' standardisation to their mean and spread over the training pool's windows."""
    raw = []
    for i in range(0, len(pool.ids), 512):
        ids = pool.ids[i : i + 512]
        exclude = unread(ids, pool.documents[i : i + 512]) if unread is not None else None
        view, words = (
            model.lexicon_view(torch.from_numpy(ids), exclude) if model.config.lexicon_documents else (None, None)
        )
        raw.append(model.scorer_stats.raw(torch.from_numpy(pool.features[i : i + 512]).float(), words, view))
    stats = torch.cat(raw)
    model.scorer_stats.mean.copy_(stats.mean(dim=0))
    # A statistic that barely varies over the pool (a band hardly any character falls in, with a small scorer)
    # must not be magnified: its rounding would move the output.
    model.scorer_stats.scale.copy_(stats.std(dim=0).clamp(min=1e-2))


class Unread:
    """What training takes off the lexicon's counts so that a window of a training document reads as one of a
    document nobody read (the test's held-out plays): that document's own words (:func:`lexicon.own_words`)."""

    def __init__(self, model: TextDiscriminator, own: list[np.ndarray]) -> None:
        self.model = model
        self.own = own

    @torch.no_grad()
    def __call__(self, ids: np.ndarray, documents: np.ndarray) -> torch.Tensor | None:
        if not (documents >= 0).any():
            return None
        words = self.model.words(torch.from_numpy(ids))
        return torch.from_numpy(own_words(words.hashes.numpy(), words.ends.numpy(), documents, self.own))


@dataclass
class TextDiscTrainOptions:
    text_checkpoint: Path  # the generator whose samples are the "generated" class
    scorer_checkpoint: Path | None = None  # a character LSTM (frozen) whose view of each window the model reads
    pool_windows: int = 0  # with a scorer: generated training windows in the fixed pool (0: all)
    # The share of the held-out text (from its start) whose windows are the real class instead of the training
    # plays', the test's real windows coming from the rest (data.split_held_out); 0: the training plays.
    real_train_share: float = 0.0
    real_train_plays: float = 0.0  # with real_train_share and a scorer: the share of real windows from the plays
    lexicon: bool = True  # the training documents' words, in the graph (server.textdisc.lexicon)
    # A trained discriminator without a scorer whose embedding, lexicon and convolutions are copied and frozen:
    # only the head trains, over their pooled vector and the scorer's window statistics (scorer_pooled).
    base_checkpoint: Path | None = None
    # With a base: a second character LSTM (same vocabulary; the small one), frozen inside the model, whose view
    # of the window beside the scorer's enters the head (model.REFERENCE_STATISTICS).
    reference_checkpoint: Path | None = None
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
        split_held_out("\n" * (4 * WINDOW), self.real_train_share)  # names a bad share before any work
        if not 0 <= self.real_train_plays < 1:
            raise InvalidArgument("real_train_plays", f"must be in [0, 1), got {self.real_train_plays}")
        if self.pool_windows < 0:
            raise InvalidArgument("pool_windows", f"must be 0 (all) or more, got {self.pool_windows}")
        if not (self.model or {}).get("characters", True) and self.scorer_checkpoint is None:
            raise InvalidArgument("characters", "a model without characters needs a scorer")
        if self.scorer_checkpoint is not None and not self.scorer_checkpoint.is_file():
            raise InvalidArgument("scorer", f"no such checkpoint: {self.scorer_checkpoint}")
        if self.base_checkpoint is not None:
            if self.scorer_checkpoint is None:
                raise InvalidArgument("base", "a base model is the frozen part beside a scorer: give --scorer")
            if not self.base_checkpoint.is_file():
                raise InvalidArgument("base", f"no such checkpoint: {self.base_checkpoint}")
        if self.reference_checkpoint is not None:
            if self.base_checkpoint is None:
                raise InvalidArgument("reference", "a reference model reads beside the scorer over a base: give --base")
            if not self.reference_checkpoint.is_file():
                raise InvalidArgument("reference", f"no such checkpoint: {self.reference_checkpoint}")
        self.train_samples.validate()
        self.test_samples.validate()
        if set(self.train_samples.temperatures) & set(self.test_samples.temperatures):
            raise InvalidArgument("test_samples", "test temperatures must differ from the training ones")
        if self.train_samples.seed == self.test_samples.seed:
            raise InvalidArgument("test_samples", "test seeds must differ from the training ones")


def frozen_lstm(path: Path, vocab: Vocabulary, field: str) -> tuple[CharLSTM, dict[str, Any]]:
    """A character LSTM the model reads windows with (the scorer, the reference) and what the checkpoint records of
    it; ``field`` names it in errors."""
    model, its_vocab, meta = load_text_model(path)
    if its_vocab.chars != vocab.chars:
        raise InvalidArgument(field, f"{path.name} has another vocabulary than the generator")
    return model, {
        "file": path.name,
        "sha256": file_sha256(path),
        "kind": meta["kind"],
        "parameters": model.num_parameters(),
    }


def train_textdisc(opts: TextDiscTrainOptions) -> dict[str, Any]:
    """Train, evaluate on the held-out windows, write the checkpoint and card; returns the checkpoint's info."""
    opts.validate()
    corpus = load_corpus(opts.corpus)
    _, vocab, text_meta = load_text_model(opts.text_checkpoint)
    test_samples = load_samples(opts.text_checkpoint, opts.test_samples, corpus.valid_text, opts.progress)
    train_samples = load_samples(opts.text_checkpoint, opts.train_samples, corpus.train, opts.progress)
    real_train, real_test = split_held_out(corpus.valid_text, opts.real_train_share)
    real_text = real_train or corpus.train
    test = test_windows(vocab, real_test, test_samples)
    # Every CHECK_EVERY-th training stream never trains: the gap between the accuracy on streams the model trained
    # on and on these shows whether it learns generated text or memorises its training streams.
    held_back = set(range(CHECK_EVERY - 1, len(train_samples), CHECK_EVERY)) or {len(train_samples) - 1}
    check = [s for i, s in enumerate(train_samples) if i in held_back]
    trained = [s for i, s in enumerate(train_samples) if i not in held_back]
    check_ids, seen_ids = (evenly(stream_windows(vocab, group)[0], CHECK_WINDOWS) for group in (check, trained))
    torch.manual_seed(opts.seed)
    scorer: dict[str, Any] | None = None
    config = {"vocab_size": len(vocab), "num_classes": len(LABELS), **(opts.model or {})}
    if opts.scorer_checkpoint is not None:
        scorer_model, scorer = frozen_lstm(opts.scorer_checkpoint, vocab, "scorer")
        config |= {
            "scorer": scorer_model.config.to_dict(),
            "scorer_start_id": vocab.encode("\n")[0],
            "rank_width": (opts.model or {}).get("rank_width", RANK_WIDTH),
        }
    documents = corpus.documents
    base: dict[str, Any] | None = None
    if opts.base_checkpoint is not None:
        base_model, base_vocab, base_meta = load_textdisc_model(opts.base_checkpoint)
        if base_vocab.chars != vocab.chars or base_model.scorer is not None:
            raise InvalidArgument("base", f"{opts.base_checkpoint.name} needs the generator's vocabulary and no scorer")
        base = {
            "file": opts.base_checkpoint.name,
            "sha256": file_sha256(opts.base_checkpoint),
            "test_accuracy": base_meta["metrics"]["test_accuracy"],
        }
        keep = ("vocab_size", "num_classes", "scorer", "scorer_start_id", "rank_width")
        config = {k: v for k, v in config.items() if k in keep} | {
            k: v for k, v in base_model.config.to_dict().items() if k not in keep
        }
        asked = opts.model or {}
        config |= {
            "scorer_pooled": True,
            "band_width": asked.get("band_width", BAND_WIDTH),
            "position_statistics": asked.get("position_statistics", bool(config.get("lexicon_documents"))),
            "scorer_skip": asked.get("scorer_skip", WARM_UP),
        }
    reference: dict[str, Any] | None = None
    if opts.reference_checkpoint is not None:
        reference_model, reference = frozen_lstm(opts.reference_checkpoint, vocab, "reference")
        config["reference"] = reference_model.config.to_dict()
    use_lexicon = bool(config.get("lexicon_documents")) if base is not None else opts.lexicon
    if use_lexicon and base is None:
        if len(documents) > MAX_DOCUMENTS:
            raise InvalidArgument(
                "lexicon", f"counts at most {MAX_DOCUMENTS} documents, the corpus has {len(documents)}"
            )
        config["lexicon_documents"] = len(documents)
    model = TextDiscriminator(TextDiscConfig(**config))
    unread: Unread | None = None
    lexicon: dict[str, Any] | None = None
    if use_lexicon:
        table, own = document_lexicon(vocab, documents)
        model.set_lexicon(vocab.chars, table)
        unread = Unread(model, own)
        lexicon = {"documents": len(documents), "words": int(np.count_nonzero(table)), "buckets": len(table)}
        log.info("lexicon: %d word hashes from %d documents", lexicon["words"], len(documents))
    if base is not None:
        freeze_to_head(model, base_model)
        if use_lexicon and not torch.equal(model.lexicon, torch.from_numpy(table)):
            raise InvalidArgument("base", f"{base['file']}'s lexicon holds another corpus's words")
    pool: FeaturePool | None = None
    seen_features = check_features = None
    if model.scorer is not None:
        model.scorer.load_state_dict(scorer_model.state_dict())
        assert scorer is not None
        scorers = scorer["sha256"]  # what the cached features depend on
        if model.reference is not None:
            assert reference is not None
            model.reference.load_state_dict(reference_model.state_dict())
            scorers += f"+{reference['sha256']}"
        fake = stream_windows(vocab, trained)[0]
        if opts.pool_windows:
            fake = evenly(fake, opts.pool_windows)
        plays = encode(vocab, corpus.train) if real_train else None
        pool = FeaturePool(
            model,
            fake,
            encode(vocab, real_text),
            scorers,
            opts.seed,
            opts.progress,
            plays,
            opts.real_train_plays,
            spans=() if real_train else corpus.spans,
            other_spans=corpus.spans,
        )
        seen_features = scorer_features(model, seen_ids, scorers, opts.progress)
        check_features = scorer_features(model, check_ids, scorers, opts.progress)
        log.info("training pool: %d windows, half real, scorer %s", len(pool.ids), scorer["file"])
        if model.config.scorer_pooled:
            standardise_statistics(model, pool, unread)
    sampler = WindowSampler(vocab, real_text, trained, opts.seed, () if real_train else corpus.spans)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=opts.lr, total_steps=opts.steps, pct_start=0.1)
    t0 = time.monotonic()
    model.train()
    bar = tqdm(range(opts.steps), desc="textdisc", unit="step", disable=not opts.progress, mininterval=2.0)
    running = 0.0
    for step in bar:
        if pool is not None:
            ids, feats, labels, docs = pool.batch(opts.batch_size)
            features: torch.Tensor | None = torch.from_numpy(feats)
        else:
            ids, labels, docs = sampler.batch(opts.batch_size)
            features = None
        exclude = unread(ids, docs) if unread is not None else None
        logits = model.classify(torch.from_numpy(ids), features, exclude)  # (B, 2)
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
            seen = generated_share(model, seen_ids, seen_features)
            unseen = generated_share(model, check_ids, check_features)
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
        "scorer": scorer,
        "reference": reference,
        "lexicon": lexicon,
        "base": base,
        "data": {
            "source": corpus.source,
            "sha256": corpus.sha256,
            "held_out": list(corpus.valid),
            "train_samples": asdict(opts.train_samples),
            "test_samples": asdict(opts.test_samples),
            "test_windows": result.count,
            "pool_windows": len(pool.ids) if pool is not None else 0,
            "real_train_share": opts.real_train_share,
            "real_train_plays": opts.real_train_plays,
            "real_train_characters": len(real_train),
        },
        "training": {
            "steps": opts.steps,
            "wall_time_s": round(elapsed, 2),
            "threads": torch.get_num_threads(),
            "options": {  # the generator by name (its hash is under "generator"), not by this machine's path
                k: v.name
                if k in ("text_checkpoint", "scorer_checkpoint", "reference_checkpoint") and v
                else str(v)
                if isinstance(v, Path)
                else v
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
    scorer = info.get("scorer")
    reference = info.get("reference")
    base = info.get("base")
    scorer_arch = (
        f" + a linear map of the frozen scorer's per-character features ({', '.join(SCORER_FEATURES)}; the "
        f"{config['scorer']['num_layers']} x {config['scorer']['hidden_size']} "
        f"LSTM `{scorer['file']}`, sha256 {scorer['sha256'][:16]}..., {scorer['parameters']:,} parameters, inside "
        "the model)"
        if scorer
        else ""
    )
    lexicon = info.get("lexicon")
    lexicon_arch = (
        f" + a linear map of the lexicon's per-word features ({'; '.join(LEXICON_FEATURES)}; "
        f"{lexicon['words']:,} word hashes of {lexicon['documents']} training documents in a table of "
        f"{lexicon['buckets']:,} bytes; training takes a window's own document off the counts)"
        if lexicon
        else ""
    )
    chars = f"embedding {config['embed_dim']}" if config.get("characters", True) else "no character embedding"
    if config.get("scorer_pooled"):
        assert scorer is not None and base is not None
        width = config.get("band_width", 0.0)
        bands = f" (soft band edges, {width:g} nats wide)" if width else " (hard band edges)"
        lexicon_stats = f"; per word: {', '.join(LEXICON_STATISTICS)}" if config.get("lexicon_documents") else ""
        positions = (
            f"; {', '.join(POSITION_FEATURES)} at {', '.join(POSITIONS)}" if config.get("position_statistics") else ""
        )
        reference_arch = (
            f" and the frozen reference `{reference['file']}` (a {config['reference']['num_layers']} x "
            f"{config['reference']['hidden_size']} LSTM, sha256 {reference['sha256'][:16]}..., "
            f"{reference['parameters']:,} parameters: the same features)"
            if reference
            else ""
        )
        reference_stats = "; the mean and spread of each scorer feature less the reference's" if reference else ""
        arch = (
            f"the frozen discriminator `{base['file']}` (sha256 {base['sha256'][:16]}..., test accuracy "
            f"{base['test_accuracy']:.2%}: {chars}{lexicon_arch}, {len(config['dilations'])} conv1d "
            f"{config['kernel_size']} x {config['channels']}, mean + max pooling) and the frozen scorer "
            f"`{scorer['file']}` (the {config['scorer']['num_layers']} x {config['scorer']['hidden_size']} LSTM, "
            f"sha256 {scorer['sha256'][:16]}..., {scorer['parameters']:,} parameters: per character "
            f"{', '.join(SCORER_FEATURES)}){reference_arch}, its features pooled over the window "
            f"({', '.join(WINDOW_STATISTICS)}{bands}{lexicon_stats}{positions}{reference_stats}, from character "
            f"{config.get('scorer_skip', SCORER_SKIP)} on, standardised); a trained linear head over both, "
            f"{config['num_classes']} outputs"
        )
    else:
        arch = (
            f"{chars}{ngrams}{scorer_arch}{lexicon_arch}, {len(config['dilations'])} conv1d "
            f"{config['kernel_size']} x "
            f"{config['channels']} (dilations {', '.join(map(str, config['dilations']))}, ReLU, residual), "
            f"mean + max pooling, linear {config['num_classes']}"
        )
    groups = "\n".join(f"| {g} | {a:.2%} |" for g, a in metrics["test_by_source"].items())
    corpus = f" --corpus {opts['corpus']}" if opts["corpus"] else ""
    held_out = ", ".join(data["held_out"])
    share = data.get("real_train_share", 0.0)
    real = (
        f"training: the first {share:.1%} of the held-out text ({held_out}; {data['real_train_characters']:,} "
        "characters, cut at a line start), which the scorer never read; test: the rest"
        if share
        else f"training plays; test: {held_out}"
    )
    scorer_opts = f" --scorer {scorer['file']} --pool-windows {opts['pool_windows']}" if scorer else ""
    scorer_opts += "" if config.get("characters", True) else " --no-characters"
    scorer_opts += f" --real-train-share {share:g}" if share else ""
    plays = data.get("real_train_plays", 0.0)
    scorer_opts += f" --real-train-plays {plays:g}" if plays else ""
    scorer_opts += "" if lexicon else " --no-lexicon"
    scorer_opts += f" --base {base['file']}" if base else ""
    scorer_opts += f" --reference {reference['file']}" if reference else ""
    scorer_opts += f" --rank-width {config.get('rank_width', 0.0):g}" if scorer else ""
    if config.get("scorer_pooled"):
        scorer_opts += f" --band-width {config.get('band_width', 0.0):g}"
        scorer_opts += "" if config.get("position_statistics") else " --no-position-statistics"
        scorer_opts += f" --scorer-skip {config.get('scorer_skip', SCORER_SKIP)}"
    frozen = f" + {scorer['parameters']:,} of the frozen scorer" if scorer else ""
    frozen += f" + {reference['parameters']:,} of the frozen reference" if reference else ""
    training = (
        f"{train['steps']:,} steps of {opts['batch_size']} windows (half real) drawn from a fixed pool of "
        f"{data['pool_windows']:,} whose scorer features are computed once"
        if scorer
        else f"{train['steps']:,} steps of {opts['batch_size']} random windows (half real)"
    )

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
--ngrams {",".join(map(str, orders)) or "none"} --ngram-buckets {config["ngram_buckets"]}{scorer_opts} --out {out}` \
(antiphon {info["antiphon_version"]}): is a window of {info["window"]} characters real text or text \
sampled from the character LSTM `{info["generator"]["file"]}` (sha256 {info["generator"]["sha256"][:16]}...)?

| | |
|---|---|
| architecture | {arch} |
| parameters | {info["parameters"]:,} trained{frozen} |
| input | character ids (1, {info["window"]}) int32 in the text model's vocabulary; labels real, generated |
| real text | {data["source"]} (sha256 {data["sha256"][:16]}...): {real} |
| generated, train | {described(tr, "training text")} |
| generated, test | {described(te, "held-out text")}: other seeds, temperatures and top-k / top-p values |
| training | {training}, AdamW one-cycle, \
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
