"""Where fetched and generated data lives: ``$ANTIPHON_CACHE`` or ``~/.cache/antiphon``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("ANTIPHON_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "antiphon"
    path.mkdir(parents=True, exist_ok=True)
    return path
