"""The model's state after conversation prefixes, keyed by the exact text read, for clients that resend the whole
conversation every turn (the OpenAI Chat Completions protocol).

After a reply completes, the engine keeps the state after everything read (the prompt and the reply) under the hash
of that text plus the newlines that close the reply (``closing``, not yet read). A later conversation that starts
with exactly that text resumes from the state: it reads ``closing`` and what follows, never the prefix again.
Entries are immutable and shared by any number of readers; the least recently used leave at ``capacity``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from server.engine.requests import TURN_END


@dataclass(frozen=True)
class Prefix:
    state: Any  # the backend's state for one row, after the text up to ``closing``
    closing: str  # the newlines of the key's text that the state has not read
    chars: int  # length of the key's text


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class PrefixCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[bytes, Prefix] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.chars_saved = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, text: str, state: Any, closing: str) -> None:
        """Keep ``state``, the state after ``text`` less its last ``closing`` characters."""
        if self.capacity <= 0:
            return
        key = _key(text)
        self._entries[key] = Prefix(state, closing, len(text))
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def longest(self, text: str) -> Prefix | None:
        """The entry for the longest prefix of ``text`` that ends a turn (a blank line) and is kept, or None. One
        pass hashes every such prefix."""
        keys: list[bytes] = []
        digest = hashlib.sha256()
        start = 0
        while (pos := text.find(TURN_END, start)) >= 0:
            end = pos + len(TURN_END)
            digest.update(text[start:end].encode("utf-8"))
            keys.append(digest.copy().digest())
            start = end
        for key in reversed(keys):
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                self.chars_saved += found.chars - len(found.closing)
                return found
        self.misses += 1
        return None
