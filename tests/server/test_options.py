"""The checks the trainers' options share (:mod:`server.options`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.errors import InvalidArgument
from server.options import check_output


def test_an_out_in_folders_still_to_be_made_passes(tmp_path: Path) -> None:
    """A file in folders that do not exist yet is fine: the run makes them."""
    check_output(tmp_path / "a" / "b" / "m.safetensors", "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_an_out_in_a_folder_without_write_permission_is_named(tmp_path: Path) -> None:
    """A folder this user may not write in is refused before any work, naming the folder."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(InvalidArgument) as info:
            check_output(locked / "new" / "m.safetensors", "out")
    finally:
        locked.chmod(0o755)
    assert str(info.value) == f"out: cannot write {locked / 'new' / 'm.safetensors'}: {locked} is not writable"
