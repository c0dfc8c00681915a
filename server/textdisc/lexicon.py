"""Words and a lexicon inside the text discriminator's graph.

A character LSTM sampled hot writes words that do not exist ("thandered", "womberly"); real text, even a play none
of the models read, mostly uses words the training plays use too. Measured on the test windows: 1.8% of the
lower-case words of the held-out plays are missing from the training plays' vocabulary, against 4.6% of a T=0.9
sample's and 9.3% of a T=1.1 sample's. A convolution over characters cannot learn a 25,000-word vocabulary from
its training windows without learning the windows (see docs/discriminators.md); a lexicon gives it the answer.

:class:`WordHasher` finds the words of a window of character ids and hashes each, in plain integer arithmetic
that exports to ONNX and TFLite as it is: a word is a run of ASCII letters (an apostrophe between two letters
belongs to it: "o'er", "is't"), lower-cased, at most :data:`MAX_WORD` long; its hash is
``sum(code[k] * BASE**(n-1-k)) mod BUCKETS`` over its letters (a = 1 ... z = 26, apostrophe 27). Each term is below
2**25, so the sum of :data:`MAX_WORD` terms never overflows int32. A word is reported where it ends, and only when
it is whole: one cut by either edge of the window, or longer than :data:`MAX_WORD`, is not a word here.

The lexicon is a table of :data:`BUCKETS` bytes: for each hash, how many training documents (plays) use the word.
:func:`document_lexicon` builds it with the same hasher, so the table and the graph always agree, hash collisions
included (25,000 words in a million buckets: an unknown word finds a known one's bucket 2.4% of the time).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from server.text.vocab import Vocabulary

BUCKETS = 1_048_573  # a prime: rows of the lexicon table (one byte each)
BASE = 257
MAX_WORD = 16
APOSTROPHE = 27
MAX_DOCUMENTS = 127  # the table holds counts in int8 (TFLite constants are signed)


def letter_codes(chars: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per vocabulary id: its letter's code (a/A = 1 ... z/Z = 26, apostrophe 27, anything else 0) and whether it
    is an upper-case letter."""
    code = np.zeros(len(chars), dtype=np.int32)
    upper = np.zeros(len(chars), dtype=np.int32)
    for i, c in enumerate(chars):
        if c.isascii() and c.isalpha():
            code[i] = ord(c.lower()) - ord("a") + 1
            upper[i] = int(c.isupper())
        elif c == "'":
            code[i] = APOSTROPHE
    return code, upper


def gather(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 1-D table and int32 indices of any shape, as one Gather in ONNX and TFLite (plain
    indexing with a 2-D index exports as ONNX GatherND, which takes int64 indices only)."""
    return table.index_select(0, index.reshape(-1)).reshape(index.shape)


class Words(NamedTuple):
    """What :class:`WordHasher` finds, each (B, T), at the position where a whole word ends."""

    hashes: torch.Tensor  # int32 in [0, BUCKETS)
    ends: torch.Tensor  # bool: a whole word ends here
    upper: torch.Tensor  # bool: it begins with a capital
    lengths: torch.Tensor  # int32: its length in characters (0 where no whole word ends)
    inside: torch.Tensor  # bool: the character is part of a word (whole or not)


def word_means(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-character values (B, T, C) averaged over each whole word, at the position where it ends (``lengths``
    from :class:`Words`); zero elsewhere. Shifts and masks only, like the hasher."""
    width = values.shape[1]
    padded = F.pad(values, (0, 0, MAX_WORD, 0))  # (B, MAX_WORD + T, C)
    total = torch.zeros_like(values)
    for k in range(MAX_WORD):
        inside = (lengths > k).float().unsqueeze(2)
        total = total + padded[:, MAX_WORD - k : MAX_WORD - k + width] * inside
    return total / lengths.clamp(min=1).float().unsqueeze(2)


class WordHasher(nn.Module):
    """Character ids (B, T) -> for each position, the hash of the word ending there (int32, in [0, BUCKETS)),
    whether a whole word ends there, and whether that word begins with a capital (a name, or a line's first word
    in verse). The letter of each id is a buffer of the model (:meth:`set_vocabulary`), saved with its weights."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.code: torch.Tensor
        self.upper: torch.Tensor
        self.register_buffer("code", torch.zeros(vocab_size, dtype=torch.int32))
        self.register_buffer("upper", torch.zeros(vocab_size, dtype=torch.int32))
        self.powers = [pow(BASE, k, BUCKETS) for k in range(MAX_WORD)]

    def set_vocabulary(self, chars: Sequence[str]) -> None:
        if len(chars) != len(self.code):
            raise ValueError(f"the hasher has {len(self.code)} ids, the vocabulary {len(chars)}")
        code, upper = letter_codes(chars)
        self.code.copy_(torch.from_numpy(code))
        self.upper.copy_(torch.from_numpy(upper))

    def forward(self, ids: torch.Tensor) -> Words:
        ids = ids.int()
        width = ids.shape[1]
        code = gather(self.code, ids)  # (B, T) int32: all of it, as TFLite wants
        upper = gather(self.upper, ids)
        letter = (code > 0) & (code != APOSTROPHE)
        around = F.pad(letter.int(), (1, 1)) > 0  # int32 padded: TFLite runtimes before 2.15 lack PAD of bool
        inside = letter | ((code == APOSTROPHE) & around[:, :-2] & around[:, 2:])  # (B, T) part of a word
        # Looking back k characters from each position. Before the window everything counts as a word character,
        # so a word cut by the window's start never looks whole.
        k_max = MAX_WORD
        inside_p = F.pad(inside.int(), (k_max, 0), value=1) > 0
        code_p = F.pad(code, (k_max, 0))
        upper_p = F.pad(upper, (k_max, 0))
        h = torch.zeros_like(code)
        run = torch.ones_like(inside)  # the characters k back .. here are all inside one word
        whole = torch.zeros_like(inside)  # the word's start lies within MAX_WORD characters
        first_upper = torch.zeros_like(upper)
        length = torch.zeros_like(code)
        for k in range(k_max):
            at = slice(k_max - k, k_max - k + width)
            still = run & inside_p[:, at]
            whole = whole | (run & ~inside_p[:, at])
            h = h + code_p[:, at] * still.int() * self.powers[k]
            first_upper = torch.where(still, upper_p[:, at], first_upper)
            length = length + still.int()
            run = still
        after = F.pad(inside.int(), (0, 1), value=1)[:, 1:] > 0  # the window's last word may go on after it
        ends = inside & ~after & whole
        return Words(h % BUCKETS, ends, first_upper > 0, length * ends.int(), inside)


@torch.no_grad()
def document_lexicon(vocab: Vocabulary, documents: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The lexicon of ``documents``: the table (BUCKETS,) int8 of how many documents use each word hash, and each
    document's own hashes (sorted, unique), which training subtracts to see a document as a play nobody read."""
    if not 1 <= len(documents) <= MAX_DOCUMENTS:
        raise ValueError(f"a lexicon counts 1 to {MAX_DOCUMENTS} documents, got {len(documents)}")
    hasher = WordHasher(len(vocab))
    hasher.set_vocabulary(vocab.chars)
    table = np.zeros(BUCKETS, dtype=np.int32)
    own = []
    for text in documents:
        ids = torch.tensor([vocab.encode("\n" + text + "\n")])
        found = hasher(ids)
        words = np.unique(found.hashes[found.ends].numpy())
        table[words] += 1
        own.append(words)
    return table.astype(np.int8), own


LEXICON_FEATURES = (
    "an unknown word ends here, lower-case",
    "an unknown word ends here, capitalised",
    "a known word ends here: log(1 + documents using it) / log(1 + documents)",
)


def lexicon_features(ends: torch.Tensor, upper: torch.Tensor, counts: torch.Tensor, documents: int) -> torch.Tensor:
    """(B, T, len(LEXICON_FEATURES)) float32 from :class:`WordHasher`'s ``ends`` and ``upper`` and each position's
    document count ``counts`` (B, T) float32 (zero where no word ends)."""
    end = ends.float()
    known = (counts > 0).float()
    unknown = end * (1 - known)
    capital = upper.float()
    frequency = end * known * torch.log1p(counts.clamp(min=0)) / float(np.log1p(documents))
    return torch.stack([unknown * (1 - capital), unknown * capital, frequency], dim=2)


def own_words(hashes: np.ndarray, ends: np.ndarray, documents: np.ndarray, own: Sequence[np.ndarray]) -> np.ndarray:
    """(B, T) int8: 1 where a word of row b ends whose hash is one of its document's own (``own[documents[b]]``,
    sorted), 0 elsewhere and in rows whose document is -1 (generated text, or text of no training document)."""
    out = np.zeros(hashes.shape, dtype=np.int8)
    for row in np.flatnonzero(documents >= 0):
        words = own[documents[row]]
        if not len(words):
            continue
        at = np.minimum(np.searchsorted(words, hashes[row]), len(words) - 1)
        out[row] = (words[at] == hashes[row]) & ends[row]
    return out
