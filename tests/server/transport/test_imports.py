"""The transports never touch torch: importing them does not import it."""

from __future__ import annotations

import subprocess
import sys


def test_transports_do_not_import_torch() -> None:
    """A fresh interpreter imports both transports without loading torch."""
    code = "import sys, server.transport.grpc_service, server.transport.websocket; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
