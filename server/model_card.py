"""Model cards: the Markdown file beside a checkpoint (``out`` with ``.md``) that says what it is and how it was
made. Torch-free.

A family describes its checkpoint as a :class:`ModelCard` (from the checkpoint's metadata alone, so a card can be
written again from the file); :meth:`ModelCard.write` renders every card alike::

    # wavenet.safetensors

    WaveNet trained by `antiphon train audio --minutes 100 --out models/audio/wavenet.safetensors` (antiphon 0.1.0).

    | | |
    |---|---|
    | architecture | ... |

    Any further sections, one paragraph, table or code block each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.classifier_metrics import format_confusion


@dataclass(frozen=True)
class ModelCard:
    model: str  # what was trained: "Digits CNN"
    command: str  # the command that trained it, but its ``--out``
    version: str  # the antiphon version that trained it
    rows: Sequence[tuple[str, str]]  # the table: (what, value) in Markdown
    sections: Sequence[str] = ()  # Markdown blocks after the table
    summary_end: str = "."  # the first sentence's end (a question, for a discriminator)
    snapshot_of: str | None = None  # a snapshot (``--snapshot``): the ``--out`` of the run it was taken from

    def render(self, out: Path) -> str:
        table = "".join(f"| {name} | {value} |\n" for name, value in self.rows)
        where = f"--out {self.snapshot_of} --resume --snapshot {out}" if self.snapshot_of else f"--out {out}"
        head = f"# {out.name}\n\n{self.model} trained by `{self.command} {where}` (antiphon {self.version})"
        tail = "".join(f"\n{section}\n" for section in self.sections)
        return f"{head}{self.summary_end}\n\n| | |\n|---|---|\n{table}{tail}"

    def write(self, out: Path) -> Path:
        """Write the card of the checkpoint ``out`` beside it; returns its path."""
        path = out.with_suffix(".md")
        tmp = path.with_name(path.name + ".tmp")  # whole or not at all, as the checkpoint beside it
        tmp.write_text(self.render(out), encoding="utf-8")
        tmp.replace(path)
        return path


def snapshot_of(options: dict[str, Any]) -> str | None:
    """The run's ``--out`` when a checkpoint's options record says it is a snapshot of that run, else None."""
    return str(options["out"]) if options.get("snapshot") else None


def started_from(init: dict[str, Any], seen_key: str, seen: str, metric: str) -> tuple[str, str]:
    """The card's row for a run that started from a checkpoint (its ``init`` record): the file, its hash, the
    training it had (``seen``: what its ``seen_key`` counts, "samples") and its held-out figure ``metric``."""
    return (
        "started from",
        f"`{init['file']}` (sha256 {init['sha256'][:16]}...): {init['steps']:,} steps, "
        f"{init[seen_key]:,} {seen} seen, {init['wall_time_s'] / 60:.1f} minutes, held-out {metric}; "
        "the steps and time above are this run's",
    )


def code_block(text: str) -> str:
    return f"```\n{text}\n```"


def confusion_section(title: str, confusion: list[list[int]], labels: Sequence[str]) -> str:
    """A confusion matrix under its title: rows true, columns predicted."""
    return f"{title}:\n\n{code_block(format_confusion(confusion, list(labels)))}"
