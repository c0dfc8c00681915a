"""Character vocabulary with one unknown symbol."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

UNKNOWN = "\ufffd"  # index 0: every character the training text did not contain


class Vocabulary:
    """Maps characters to ids; id 0 is the unknown symbol."""

    def __init__(self, chars: Sequence[str]) -> None:
        if not chars or chars[0] != UNKNOWN:
            raise ValueError("vocabulary must start with the unknown symbol")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("vocabulary entries must be distinct single characters")
        self.chars: list[str] = list(chars)
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: Iterable[str]) -> Vocabulary:
        return cls([UNKNOWN, *sorted(set(text) - {UNKNOWN})])

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: str) -> bool:
        return char in self._index

    def encode(self, text: str) -> list[int]:
        index = self._index
        return [index.get(c, 0) for c in text]

    def encode_tensor(self, text: str) -> torch.Tensor:
        return torch.tensor(self.encode(text), dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        chars = self.chars
        return "".join(chars[i] for i in ids)


# Every text the model reads, scores or continues starts after this context: the
# separator it saw between documents in training. Scoring the first character
# of a file therefore needs no special case.
START_TEXT = "\n"
