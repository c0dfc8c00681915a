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
from collections.abc import Collection

# A capitalised name of up to 32 characters.
NAME = r"[A-Z][A-Za-z' ]{0,30}[A-Za-z]"
# A blank line (or the start), a name and a full stop alone on its line.
SPEAKER_LINE = re.compile(rf"(?:\A|\n\n)({NAME})\.\n(?=\S)")
NAME_LINE = re.compile(rf"({NAME})\.")


def speakers(text: str, limit: int = 64, min_turns: int = 20) -> list[str]:
    """Speaker names with at least ``min_turns`` turns in ``text``, most frequent first."""
    counts = Counter(match.group(1) for match in SPEAKER_LINE.finditer(text))
    return [name for name, turns in counts.most_common(limit) if turns >= min_turns]


def names_a_speaker(line: str, known: Collection[str] = ()) -> bool:
    """Whether ``line`` is a speaker's name line rather than speech: a name and a full stop, the name in capitals
    (most plays' spelling) or one of ``known``. "KING." and, with Lear known, "Lear." are names; "Peace." is
    speech."""
    match = NAME_LINE.fullmatch(line)
    return match is not None and (match.group(1).isupper() or match.group(1) in known)
