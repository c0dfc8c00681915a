"""Checkpoints: weights in a safetensors file, everything else as JSON in its header.

A checkpoint holds what rebuilds the model (``kind`` and ``config``) and what
produced it (data hash, steps, wall time, metrics). No pickled modules: loading
never executes code from the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from server.errors import CheckpointError

META_KEY = "antiphon"


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write weights and metadata atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    tmp.replace(path)


def read_meta(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {exc}") from exc
    if META_KEY not in header:
        raise CheckpointError(f"checkpoint {path} has no antiphon metadata")
    meta: dict[str, Any] = json.loads(header[META_KEY])
    return meta


def load_checkpoint(path: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and metadata of a checkpoint of the given model ``kind``."""
    meta = read_meta(path)
    if meta.get("kind") != kind:
        raise CheckpointError(f"checkpoint {path} holds a {meta.get('kind')!r} model, not {kind!r}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: {exc}") from exc
    return state, meta


@contextmanager
def rebuilding(path: Path, kind: str) -> Iterator[None]:
    """Around rebuilding a ``kind`` model from a checkpoint's metadata and weights: a missing or mistyped field, or
    weights of other shapes, become a :class:`CheckpointError` that names the file."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not rebuild a {kind}: {exc}") from exc


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
