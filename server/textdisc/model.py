"""A small convolutional text discriminator: character and hashed n-gram embeddings, dilated 1-D convolutions,
mean and max pooling.

Input: character ids (B, 256) int32 in the text LSTM's vocabulary. Output: logits (B, 2) over ("real",
"generated"). Each position's vector is its character's embedding plus, for every n-gram order, the embedding of
the n characters ending there, hashed into ``ngram_buckets`` rows (``((id_1 * V + id_2) * V + ...) mod buckets``,
folded one character at a time so int32 never overflows): a lexicon of the character n-grams real text uses,
which is what sampled text gets wrong, at the cost of a few gathers. Plain integer arithmetic, gathers,
convolutions and reductions, so the graph exports to ONNX and TFLite as it is.

With a scorer (``scorer``: the config of a character LSTM, whose frozen weights the trainer copies in from a text
checkpoint), each position also gets the scorer's view of its character: the LSTM reads the window (a newline
first, from the zero state) and gives, for every character, its surprise ``-log p``, the entropy of the predicted
distribution, their difference, ``log(1 + rank)`` of the character among the predictions, ``-log`` of the top
prediction's probability, the probability of the likelier characters and ``log sum p^(1/T)`` at a few temperatures
(:data:`SCORER_FEATURES`). A linear map of these numbers is added to the character's embedding. Sampled text is as
surprising as the model expects (at T=1) or surprising in its own way (hot samples: unlikely characters anywhere,
not where real text has them); real text is more surprising than the model expects.

With a lexicon (``lexicon_documents``: :mod:`server.textdisc.lexicon`), each whole word adds, where it ends, whether
the training documents know it and how many use it: a sampled word that does not exist is the surest sign of a hot
sample. With ``scorer_pooled``, the scorer's features do not enter position by position; :class:`ScorerStatistics`
pools them (and the lexicon's view, per word) over the window into the head, beside the frozen convolutions of a
base model (``antiphon train textdisc --base``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from server.errors import InvalidArgument
from server.text.model import CharLSTM, CharLSTMConfig
from server.textdisc.lexicon import (
    BUCKETS,
    LEXICON_FEATURES,
    MAX_DOCUMENTS,
    WordHasher,
    Words,
    gather,
    lexicon_features,
    word_means,
)

# log Z_T = log sum_v p_v^(1/T): with the surprise, the log-likelihood ratio of a character between the scorer's
# distribution and its sampling at temperature T is (1 - 1/T) log p + log Z_T, linear in the features.
SCORER_TEMPERATURES = (0.6, 0.8, 1.2, 1.4)
# The scorer reads each window from a newline: its view of the first characters is not its usual one, so the pooled
# statistics start at character TextDiscConfig.scorer_skip. The first models skipped SCORER_SKIP; the trainer gives
# new ones WARM_UP: with 248 characters instead of 224 the statistics' noise falls by more than the cold start's bias
# adds (docs/discriminators.md).
SCORER_SKIP = 32
WARM_UP = 8
MAX_SKIP = 128  # half a window
ENTROPY_BANDS = (0.5, 1.2)  # nats: edges of the entropy bands of the pooled statistics
WINDOW_STATISTICS = ("mean", "spread", "mean at entropy < 0.5", "mean at 0.5-1.2", "mean at >= 1.2")
BAND_WIDTH = 0.05  # nats: the soft band edges' width (TextDiscConfig.band_width) that the trainer gives new models
RANK_WIDTH = 0.01  # nats: the soft comparisons' width of the rank and the mass above (TextDiscConfig.rank_width)
# Means of three of the scorer's features by where a character stands: a generator sampled hot goes wrong inside
# words (a letter no real word has there) more than at their first letter, which even real text makes hard to guess.
POSITION_FEATURES = {"surprise": 0, "surprise - entropy": 2, "log(1 + rank)": 3}  # names -> SCORER_FEATURES index
POSITIONS = ("a word's first letter", "a word's other letters", "other characters")
POSITION_STATISTICS = tuple(f"{name} at {where}" for where in POSITIONS for name in POSITION_FEATURES)
LEXICON_STATISTICS = (
    "unknown words",
    "unknown capitalised words",
    "mean frequency",
    "words / 64",
    # The scorer's view of each whole word (from character TextDiscConfig.scorer_skip on), averaged over its
    # characters: a word the generator invented is one it found likely enough to sample; a real word it never read
    # surprises it.
    "surprise of unknown words",
    "surprise - entropy of unknown words",
    "surprise of known words",
    "surprise - entropy of known words",
)
SCORER_FEATURES = (
    "surprise",
    "entropy",
    "surprise - entropy",
    "log(1 + rank)",
    "-log p(top)",
    "mass above",
    *(f"log Z at T={t:g}" for t in SCORER_TEMPERATURES),
)

# With a reference model (a second, weaker character LSTM): the scorer's features less the reference's, per
# character. Text the scorer sampled is much likelier to it than to the reference; real text neither read is
# hard for both (the idea of Binoculars, Hans et al. 2024, with the generator as the stronger model).
REFERENCE_STATISTICS = tuple(
    f"{stat} of scorer - reference: {name}" for stat in ("mean", "spread") for name in SCORER_FEATURES
)


@dataclass(frozen=True)
class TextDiscConfig:
    vocab_size: int
    num_classes: int = 2
    embed_dim: int = 32
    channels: int = 64
    kernel_size: int = 5
    dilations: tuple[int, ...] = (1, 2, 4, 8)  # receptive field 1 + (k - 1) * sum = 61 characters
    dropout: float = 0.1
    ngram_orders: tuple[int, ...] = ()  # e.g. (3, 5): hashed n-gram embeddings; () for characters only
    ngram_buckets: int = 16381  # a prime; rows of each n-gram table
    scorer: dict[str, int | float] | None = None  # a CharLSTMConfig (same vocabulary); None: no scorer features
    scorer_start_id: int = 0  # the id the scorer reads before the window (a newline's)
    characters: bool = True  # the character embedding; False (with a scorer): the scorer's features only
    # A lexicon (server.textdisc.lexicon): how many training documents use each word; 0 documents: no lexicon.
    lexicon_documents: int = 0
    # With a scorer: its features enter as statistics over the window (ScorerStatistics) beside the pooled
    # convolutions, into the head, instead of position by position into the convolutions.
    scorer_pooled: bool = False
    # The pooled statistics' entropy bands: 0 for hard edges (models before soft edges), else the width in nats of
    # the logistic step at each edge. A character on a hard edge can fall in either band after rounding, which moves
    # the window's statistics by a step; a soft edge moves them by as little as the rounding.
    band_width: float = 0.0
    # With a scorer: the rank of each character and the mass above it count the likelier characters with hard
    # comparisons (0; models before soft ones), or with a logistic step this wide in nats. Two characters within
    # rounding of a tie swap places between runtimes, and a hard count moves by one.
    rank_width: float = 0.0
    position_statistics: bool = False  # with a lexicon: POSITION_STATISTICS beside the others
    # With scorer_pooled: a second character LSTM config (same vocabulary), frozen inside the model like the scorer,
    # whose view of the window enters as REFERENCE_STATISTICS; None: none.
    reference: dict[str, int | float] | None = None
    scorer_skip: int = SCORER_SKIP  # with scorer_pooled: the first character the statistics count (see WARM_UP)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dilations", tuple(self.dilations))  # JSON gives a list
        object.__setattr__(self, "ngram_orders", tuple(self.ngram_orders))
        if any(not 2 <= n <= 8 for n in self.ngram_orders) or len(set(self.ngram_orders)) != len(self.ngram_orders):
            raise InvalidArgument("ngrams", f"give distinct orders in 2..8, got {self.ngram_orders}")
        if not 1 <= self.ngram_buckets <= 2**31 // max(self.vocab_size, 1) - 1:
            raise InvalidArgument("ngram_buckets", f"must be in 1..{2**31 // max(self.vocab_size, 1) - 1}")
        if self.scorer is not None and self.scorer.get("vocab_size") != self.vocab_size:
            raise InvalidArgument("scorer", "the scorer's vocabulary must be the discriminator's")
        if not 0 <= self.scorer_start_id < self.vocab_size:
            raise InvalidArgument("scorer_start_id", f"must be an id in 0..{self.vocab_size - 1}")
        if not self.characters and self.ngram_orders:
            raise InvalidArgument("characters", "a model without characters has no n-grams either")
        if self.scorer_pooled and (self.scorer is None or not self.characters):
            raise InvalidArgument("scorer_pooled", "needs a scorer and the characters")
        if not 0 <= self.band_width <= 1:
            raise InvalidArgument("band_width", f"must be in [0, 1] nats, got {self.band_width}")
        if not 0 <= self.rank_width <= 1:
            raise InvalidArgument("rank_width", f"must be in [0, 1] nats, got {self.rank_width}")
        if self.reference is not None and not self.scorer_pooled:
            raise InvalidArgument("reference", "a reference model needs a pooled scorer (a base model)")
        if self.reference is not None and self.reference.get("vocab_size") != self.vocab_size:
            raise InvalidArgument("reference", "the reference's vocabulary must be the discriminator's")
        if self.position_statistics and not (self.scorer_pooled and self.lexicon_documents):
            raise InvalidArgument("position_statistics", "needs a pooled scorer and a lexicon (its words)")
        if not 1 <= self.scorer_skip <= MAX_SKIP:
            raise InvalidArgument("scorer_skip", f"must be in 1..{MAX_SKIP} characters, got {self.scorer_skip}")
        if not 0 <= self.lexicon_documents <= MAX_DOCUMENTS:
            raise InvalidArgument("lexicon", f"counts 0 to {MAX_DOCUMENTS} documents, got {self.lexicon_documents}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ScorerView(nn.Module):
    """The features of the scorer's logits (B, T, V) at the window's characters (B, T): a submodule of its own
    (with the LSTM, what int8 exports keep in float: logs and exponentials of probabilities)."""

    def __init__(self, vocab_size: int, rank_width: float = 0.0) -> None:
        super().__init__()
        self.rank_width = rank_width  # see TextDiscConfig
        self.onehot: torch.Tensor
        self.register_buffer("onehot", torch.eye(vocab_size), persistent=False)

    def forward(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=-1)  # (B, T, V)
        onehot = F.embedding(ids, self.onehot)  # (B, T, V): a gather of rows, as the embeddings (exports as is)
        actual = (logp * onehot).sum(dim=2, keepdim=True)  # (B, T, 1)
        surprise = -actual
        entropy = -(logp.exp() * logp).sum(dim=2, keepdim=True)
        # (B, T, V): the characters the scorer found likelier, each counted by a logistic step when soft
        if self.rank_width:
            above = torch.sigmoid((logp - actual) / self.rank_width) * (1 - onehot)
        else:
            above = (logp > actual).float()
        rank = above.sum(dim=2, keepdim=True)
        mass = (logp.exp() * above).sum(dim=2, keepdim=True)  # what top-p sampling leaves out lies above 1 - p
        top = -logp.amax(dim=2, keepdim=True)
        log_z = [torch.logsumexp(logp / t, dim=2, keepdim=True) for t in SCORER_TEMPERATURES]
        return torch.cat([surprise, entropy, surprise - entropy, torch.log1p(rank), top, mass, *log_z], dim=2)


def mean_spread(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and the standard deviation (B, F) of features (B, T, F) over positions."""
    mean = f.mean(dim=1)
    return mean, ((f - mean[:, None]) ** 2).mean(dim=1).clamp(min=1e-12).sqrt()


class ScorerStatistics(nn.Module):
    """Statistics over a window of the scorer's features (B, T, F) -> (B, width): their mean and spread, and their
    mean among the characters the scorer predicted with low, middle and high entropy, from character ``skip`` on;
    with a lexicon, also its view per word (:data:`LEXICON_STATISTICS`) and, with ``positions``, the scorer's view
    by where a character stands in a word (:data:`POSITION_STATISTICS`); with a ``reference``, how its view differs
    from the scorer's (:data:`REFERENCE_STATISTICS`). All of them standardised by the training
    pool's (``mean``, ``scale``: buffers the trainer sets). ``band_width``: see :class:`TextDiscConfig`.

    A head that sees these numbers of the whole window has a few hundred weights: it cannot learn a play by heart,
    which the convolutions over per-position features did (docs/discriminators.md)."""

    def __init__(
        self,
        features: int,
        lexicon: bool,
        band_width: float = 0.0,
        positions: bool = False,
        reference: bool = False,
        skip: int = SCORER_SKIP,
    ) -> None:
        super().__init__()
        self.features = features
        self.skip = skip
        self.lexicon = lexicon
        self.band_width = band_width
        self.positions = positions
        self.reference = reference
        self.width = (
            features * len(WINDOW_STATISTICS)
            + (len(LEXICON_STATISTICS) if lexicon else 0)
            + (len(POSITION_STATISTICS) if positions else 0)
            + (len(REFERENCE_STATISTICS) if reference else 0)
        )
        self.mean: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("mean", torch.zeros(self.width))
        self.register_buffer("scale", torch.ones(self.width))

    def bands(self, entropy: torch.Tensor) -> list[torch.Tensor]:
        """Each character's membership (B, T', 1) of each entropy band: 0 or 1 with hard edges, a logistic step
        across each inner edge with soft ones (they sum to 1 either way)."""
        if not self.band_width:
            edges = (-1.0, *ENTROPY_BANDS, 1e9)
            return [((entropy >= low) & (entropy < high)).float() for low, high in pairwise(edges)]
        above = [torch.sigmoid((entropy - edge) / self.band_width) for edge in ENTROPY_BANDS]
        return [1 - above[0], *(a - b for a, b in pairwise(above)), above[-1]]

    def raw(self, features: torch.Tensor, words: Words | None = None, view: torch.Tensor | None = None) -> torch.Tensor:
        """Unstandardised statistics of the scorer's ``features`` (with a reference, the reference's follow them on
        the last axis) and, with a lexicon, of the window's ``words`` (:class:`lexicon.Words`) and the lexicon's
        ``view`` of them (B, T, len(LEXICON_FEATURES))."""
        features, theirs = features[:, :, : self.features], features[:, :, self.features :]
        skip = self.skip
        f = features[:, skip:]  # (B, T', F)
        mean, spread = mean_spread(f)
        out = [mean, spread]
        for inside in self.bands(f[:, :, 1:2]):
            out.append((f * inside).sum(dim=1) / inside.sum(dim=1).clamp(min=1.0))
        if self.lexicon:
            assert words is not None and view is not None, "a lexicon's statistics need its view"
            lengths = words.lengths
            count = (view.abs().sum(dim=2) > 0).float().sum(dim=1, keepdim=True)  # (B, 1): whole words
            out.append(view.sum(dim=1) / count.clamp(min=1.0))  # per word: unknown, unknown capitalised, frequency
            out.append(count / 64)
            per_word = word_means(torch.stack([features[:, :, 0], features[:, :, 2]], dim=2), lengths)  # (B, T, 2)
            position = torch.arange(features.shape[1], device=features.device)
            scored = ((lengths > 0) & (position - lengths + 1 >= skip)).float()  # (B, T)
            unknown = (view[:, :, 0] + view[:, :, 1]) * scored
            known = (view[:, :, 2] > 0).float() * scored
            for mask in (unknown, known):
                out.append((per_word * mask.unsqueeze(2)).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0))
        if self.positions:
            assert words is not None, "the position statistics need the window's words"
            inside = words.inside.int()[:, skip - 1 :] > 0  # (B, 1 + T'): from the character before
            here, before = inside[:, 1:], inside[:, :-1]
            picked = f[:, :, list(POSITION_FEATURES.values())]  # (B, T', 3)
            for where in (here & ~before, here & before, ~here):
                mask = where.float().unsqueeze(2)
                out.append((picked * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0))
        if self.reference:
            assert theirs.shape[2] == self.features, "the reference's features follow the scorer's"
            out.extend(mean_spread(f - theirs[:, skip:]))
        return torch.cat(out, dim=1)

    def forward(
        self, features: torch.Tensor, words: Words | None = None, view: torch.Tensor | None = None
    ) -> torch.Tensor:
        return (self.raw(features, words, view) - self.mean) / self.scale


class TextDiscriminator(nn.Module):
    def __init__(self, config: TextDiscConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.embed.requires_grad_(config.characters)  # unused without characters
        self.ngrams = nn.ModuleList(nn.Embedding(config.ngram_buckets, config.embed_dim) for _ in config.ngram_orders)
        k = config.kernel_size
        convs, width = [], config.embed_dim
        for d in config.dilations:
            convs.append(nn.Conv1d(width, config.channels, k, dilation=d, padding=d * (k - 1) // 2))
            width = config.channels
        self.convs = nn.ModuleList(convs)
        self.drop = nn.Dropout(config.dropout)
        pooled = 0
        self.scorer: CharLSTM | None = None
        self.reference: CharLSTM | None = None
        if config.scorer is not None:
            self.scorer = CharLSTM(CharLSTMConfig(**config.scorer))  # type: ignore[arg-type]
            self.scorer.requires_grad_(False)
            self.scorer.eval()
            self.scorer_view = ScorerView(config.vocab_size, config.rank_width)
            if config.reference is not None:
                self.reference = CharLSTM(CharLSTMConfig(**config.reference))  # type: ignore[arg-type]
                self.reference.requires_grad_(False)
                self.reference.eval()
            if config.scorer_pooled:
                self.scorer_stats = ScorerStatistics(
                    len(SCORER_FEATURES),
                    bool(config.lexicon_documents),
                    config.band_width,
                    config.position_statistics,
                    config.reference is not None,
                    config.scorer_skip,
                )
                pooled = self.scorer_stats.width
            else:
                self.features = nn.Linear(len(SCORER_FEATURES), config.embed_dim)
        self.head = nn.Linear(2 * config.channels + pooled, config.num_classes)
        if config.lexicon_documents:
            self.words = WordHasher(config.vocab_size)
            self.lexicon: torch.Tensor
            self.register_buffer("lexicon", torch.zeros(BUCKETS, dtype=torch.int8))  # filled by the trainer
            self.lexicon_map = nn.Linear(len(LEXICON_FEATURES), config.embed_dim)

    def train(self, mode: bool = True) -> TextDiscriminator:
        super().train(mode)
        for frozen in self.frozen_models():
            frozen.eval()  # never their dropout
        return self

    def frozen_models(self) -> list[CharLSTM]:
        """The scorer and the reference, where there are."""
        if self.scorer is None:
            return []
        return [self.scorer] if self.reference is None else [self.scorer, self.reference]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def score(self, ids: torch.Tensor) -> torch.Tensor:
        """The scorer's features (B, T, len(SCORER_FEATURES)) of character ids (B, T): position t describes
        character t as predicted from the ones before it in the window (the first from a newline). With a
        reference, its features follow on the last axis (B, T, 2 * len(SCORER_FEATURES))."""
        assert self.scorer is not None
        start = torch.full_like(ids[:, :1], self.config.scorer_start_id)
        inputs = torch.cat([start, ids[:, :-1]], dim=1)  # (B, T): the character before each
        views = []
        for model in self.frozen_models():
            out, _ = model.lstm(model.embed(inputs))  # from the zero state; (B, T, H)
            views.append(self.scorer_view(ids, model.head(out)))
        return views[0] if len(views) == 1 else torch.cat(views, dim=2)

    def set_lexicon(self, chars: Sequence[str], table: np.ndarray) -> None:
        """The vocabulary's letters and the lexicon table (BUCKETS,) int8 of
        :func:`server.textdisc.lexicon.document_lexicon`."""
        if not self.config.lexicon_documents:
            raise InvalidArgument("lexicon", "this model was built without a lexicon")
        if table.shape != (BUCKETS,) or table.dtype != np.int8:
            raise InvalidArgument("lexicon", f"needs a ({BUCKETS},) uint8 table, got {table.shape} {table.dtype}")
        self.words.set_vocabulary(chars)
        self.lexicon.copy_(torch.from_numpy(table))

    def word_view(self, ids: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """The lexicon's features (B, T, len(LEXICON_FEATURES)) of character ids (B, T). ``exclude`` (B, T): counts
        to take off the table's (training sees a window of a training play as if its play were unread)."""
        return self.lexicon_view(ids, exclude)[0]

    def lexicon_view(self, ids: torch.Tensor, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, Words]:
        """:meth:`word_view` and the words it describes."""
        words = self.words(ids)
        counts = gather(self.lexicon, words.hashes).float()  # (B, T): from a byte table
        if exclude is not None:
            counts = counts - exclude.float()
        view = lexicon_features(words.ends, words.upper, counts * words.ends.float(), self.config.lexicon_documents)
        return view, words

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Character ids (B, T) int32 or int64 -> logits (B, num_classes)."""
        return self.classify(ids, self.score(ids) if self.scorer is not None else None)

    def classify(
        self, ids: torch.Tensor, features: torch.Tensor | None, exclude: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, num_classes) of character ids (B, T) and, with a scorer, their features (:meth:`score`;
        training passes them precomputed); ``exclude``: see :meth:`word_view`."""
        pooled = self.config.scorer_pooled
        view: torch.Tensor | None = None
        words: Words | None = None
        if features is not None and not self.config.characters:
            x = self.features(features)  # (B, T, E)
        else:
            x = F.embedding(ids, self.embed.weight)  # (B, T, E)
            if features is not None and not pooled:
                x = x + self.features(features)
        if self.config.lexicon_documents:
            view, words = self.lexicon_view(ids, exclude)
            x = x + self.lexicon_map(view)
        orders = self.config.ngram_orders
        if orders:
            width = ids.shape[1]
            padded = F.pad(ids, (max(orders) - 1, 0))  # (B, P + T), id 0 before the window
            start = max(orders) - 1
            h = ids
            for j in range(1, max(orders)):
                h = (h * self.config.vocab_size + padded[:, start - j : start - j + width]) % self.config.ngram_buckets
                if j + 1 in orders:
                    table = cast(nn.Embedding, self.ngrams[orders.index(j + 1)])
                    x = x + F.embedding(h, table.weight)
        x = x.transpose(1, 2)  # (B, E, T)
        for i, conv in enumerate(self.convs):
            y = F.relu(conv(x))  # (B, C, T)
            x = y if i == 0 else x + y  # residual from the second layer on
        summary = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)  # (B, 2C)
        if pooled:
            assert features is not None, "a pooled scorer's model needs its features"
            stats = self.scorer_stats(features, words, view)
            summary = torch.cat([summary, stats], dim=1)  # (B, 2C + S)
        return self.head(self.drop(summary))  # (B, num_classes)

    def num_parameters(self) -> int:
        """Trainable parameters (not the frozen scorer's)."""
        return sum(p.numel() for p in self.trainable_parameters())

    def scorer_parameters(self) -> int:
        """The frozen scorer's and reference's parameters."""
        return sum(p.numel() for model in self.frozen_models() for p in model.parameters())
