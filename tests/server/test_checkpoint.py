"""Checkpoint files: written whole or not at all, readable by whoever may read the folder, and clear errors for a
path that is no checkpoint."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from server.checkpoint import load_checkpoint, read_meta, replace_atomically, save_checkpoint
from server.errors import CheckpointError

WEIGHTS = {"w": torch.ones(3)}


def test_a_checkpoint_gets_the_permissions_of_any_new_file(tmp_path: Path) -> None:
    """The file is readable by the group and others as the umask allows (safetensors' own writer made it 0600, so a
    server running as another user could not read a checkpoint its trainer wrote)."""
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "m.safetensors", WEIGHTS, {"kind": "k"})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o644
    assert load_checkpoint(tmp_path / "m.safetensors", "k")[1] == {"kind": "k"}


def test_an_interrupted_write_leaves_the_earlier_file(tmp_path: Path) -> None:
    """Ctrl-C during a write leaves the file as it was and no temporary file beside it."""
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, WEIGHTS, {"kind": "first"})

    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"half a fi")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_atomically(path, interrupted)
    assert read_meta(path) == {"kind": "first"}
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_a_folder_that_cannot_be_made_is_a_checkpoint_error(tmp_path: Path) -> None:
    """A file system that refuses the write is a CheckpointError naming the path, not an OSError's traceback."""
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"cannot write .*file/m\.safetensors: "):
        save_checkpoint(tmp_path / "file" / "m.safetensors", WEIGHTS, {"kind": "k"})


def test_a_directory_is_not_a_checkpoint(tmp_path: Path) -> None:
    """A folder named as a checkpoint says so (safetensors answered 'No such device (os error 19)')."""
    with pytest.raises(CheckpointError) as info:
        read_meta(tmp_path)
    assert str(info.value) == f"checkpoint {tmp_path} is a directory, not a safetensors file"


def test_a_truncated_checkpoint_is_not_readable(tmp_path: Path) -> None:
    """A checkpoint cut short (a copy that stopped) is refused before its weights are read."""
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"w": torch.ones(1000)}, {"kind": "k"})
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
        load_checkpoint(path, "k")
