"""Checkpoints: weights in a safetensors file, everything else as JSON in its header.

A checkpoint holds what rebuilds the model (``kind`` and ``config``) and what
produced it (data hash, steps, wall time, metrics). No pickled modules: loading
never executes code from the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from server.errors import CheckpointError

META_KEY = "antiphon"


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write weights and metadata atomically (a reader never sees half a file). The file gets the permissions
    of any new file (safetensors' own ``save_file`` makes it readable by its owner alone)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    data = save(tensors, metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    replace_atomically(path, lambda tmp: tmp.write_bytes(data))


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a temporary file beside ``path``, then rename it to ``path``: an interrupted or failed write
    leaves ``path`` as it was and no temporary file. A file system that refuses (no such folder, no space, no
    permission) is a :class:`CheckpointError` naming ``path``."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two runs writing one path each rename a whole file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        tmp.replace(path)
    except BaseException as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


def read_meta(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a safetensors file")
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
