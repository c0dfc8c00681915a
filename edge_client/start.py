"""The ``antiphon-edge`` entry point: the command line's modules (NumPy, the model runtimes) load inside the handling
of Ctrl-C, which on a small board can come while they still load (seconds on a Raspberry Pi)."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from edge_client.cli import main as run
    except KeyboardInterrupt:
        print("antiphon-edge: interrupted", file=sys.stderr)
        return 130
    return run()
