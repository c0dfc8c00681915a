"""What produced a checkpoint: the typed record every trainer writes under ``training`` in its metadata. Torch-free.

    {"steps": 3000, "wall_time_s": 708.9, "device": "cpu", "threads": 1, "processes": 1, "precision": "bfloat16",
     "samples_seen": 107112000, "options": {...}, ...the family's own: "epochs", "init", "curve", "mining"}

A field a trainer does not know is left out (the classifiers record no processes or precision), and ``seen`` is
written under the trainer's name for it (``samples_seen``, ``chars_seen``), so a record reads as the checkpoints
before it did. :meth:`Provenance.from_dict` reads any of them back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import server

_OPTIONAL = ("device", "processes", "precision")


@dataclass(frozen=True)
class Provenance:
    steps: int  # optimizer steps of this run
    wall_time_s: float  # training time of this run (summed over resumed parts)
    threads: int  # torch's CPU threads
    options: dict[str, Any]  # the trainer's options as JSON (:func:`options_record`)
    device: str | None = None  # "cpu", or the GPU's name
    processes: int | None = None  # data-parallel processes
    precision: str | None = None  # "float32", "bfloat16"
    seen: int | None = None  # items trained on, over every process...
    seen_key: str = "seen"  # ...and their name in the record ("samples_seen")
    extra: dict[str, Any] = field(default_factory=dict)  # the family's own entries

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"steps": self.steps, "wall_time_s": self.wall_time_s, "threads": self.threads}
        record |= {name: getattr(self, name) for name in _OPTIONAL if getattr(self, name) is not None}
        if self.seen is not None:
            record[self.seen_key] = self.seen
        return record | self.extra | {"options": self.options}

    @classmethod
    def from_dict(cls, record: dict[str, Any], seen_key: str = "seen") -> Provenance:
        """A checkpoint's ``training`` record (``seen_key``: its trainer's name for the items seen)."""
        known = {"steps", "wall_time_s", "threads", "options", seen_key, *_OPTIONAL}
        return cls(
            steps=record["steps"],
            wall_time_s=record["wall_time_s"],
            threads=record["threads"],
            options=record["options"],
            seen=record.get(seen_key),
            seen_key=seen_key,
            extra={k: v for k, v in record.items() if k not in known},
            **{name: record.get(name) for name in _OPTIONAL},
        )


def jsonable(value: Any) -> Any:
    """Options as JSON for checkpoint metadata: paths become strings."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def options_record(opts: Any, leave_out: Iterable[str] = (), by_name: Iterable[str] = ()) -> dict[str, Any]:
    """A trainer's options (a dataclass) as the checkpoint records them: paths as strings, the fields
    ``by_name`` (checkpoints read from this machine's paths) by their file name only, ``leave_out`` left out (the
    record has them elsewhere)."""
    record: dict[str, Any] = jsonable(dataclasses.asdict(opts))
    for name in by_name:
        if record.get(name):
            record[name] = Path(record[name]).name
    return {k: v for k, v in record.items() if k not in set(leave_out)}


def stamp() -> dict[str, str]:
    """When and by which version a checkpoint was made: its ``created`` and ``antiphon_version``."""
    return {"created": datetime.now(UTC).isoformat(timespec="seconds"), "antiphon_version": server.__version__}
