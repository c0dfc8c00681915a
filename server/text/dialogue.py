"""The corpus's dialogue form: a speaker's name alone on a line, then the speech.

    KENT.
    I thought the King had more affected the Duke of Albany.

Chat turns are written in the same form, so a persona is a speaker name the
model has read many times. The trainer stores the most frequent ones in the
checkpoint, so a server knows them without the corpus.
"""

from __future__ import annotations

import re
from collections import Counter

# A blank line (or the start), a capitalised name of up to 32 characters and a full stop alone on its line.
SPEAKER_LINE = re.compile(r"(?:\A|\n\n)([A-Z][A-Za-z' ]{0,30}[A-Za-z])\.\n(?=\S)")


def speakers(text: str, limit: int = 64, min_turns: int = 20) -> list[str]:
    """Speaker names with at least ``min_turns`` turns in ``text``, most frequent first."""
    counts = Counter(match.group(1) for match in SPEAKER_LINE.finditer(text))
    return [name for name, turns in counts.most_common(limit) if turns >= min_turns]
