"""The edge client needs no torch: none of its modules imports it, and the edge virtualenv does not have it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.edge.conftest import REPO, edge_env, edge_python, emulated, run_edge

IMPORT_ALL = """
import importlib, pkgutil, sys
import edge_client
names = [m.name for m in pkgutil.walk_packages(edge_client.__path__, "edge_client.")]
for name in names:
    if name != "edge_client.__main__":
        importlib.import_module(name)
import edge_client.runtime as r
for backend in r.available_backends():
    importlib.import_module(r.BACKENDS[backend][1])
print(len(names), sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_no_edge_module_imports_torch() -> None:
    """Importing every edge_client module and every installed interpreter loads no torch module."""
    done = subprocess.run(
        [*edge_python(), "-c", IMPORT_ALL], capture_output=True, text=True, env=edge_env(), cwd=REPO, check=True
    )
    count, loaded = done.stdout.strip().split(" ", 1)
    assert int(count) >= 9
    assert loaded == "[]"


@pytest.mark.skipif(os.environ.get("ANTIPHON_EDGE_VENV") != "1", reason="only in the edge virtualenv")
def test_torch_is_not_installed_in_the_edge_environment() -> None:
    """`import torch` fails where the edge tests run (.venv-edge, the arm64 root)."""
    done = subprocess.run(
        [*edge_python(), "-c", "import torch"], capture_output=True, text=True, env=edge_env(), cwd=REPO, check=False
    )
    assert done.returncode == 1
    assert "ModuleNotFoundError: No module named 'torch'" in done.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["classify", "audio"],
        ["classify", "text"],
        ["classify", "image"],
        ["generate", "image"],
        ["listen"],
        ["chat"],
        ["bench"],
    ],
)
def test_every_command_explains_itself(command: list[str]) -> None:
    """`--help` of each command exits 0 and names the shared options."""
    done = run_edge(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert "--models DIR" in done.stdout and "--backend" in done.stdout


def test_console_script_is_installed_where_the_edge_extra_is() -> None:
    """The `antiphon-edge` script beside the edge Python runs the same command."""
    script = Path(sys.executable).with_name("antiphon-edge")
    if emulated() or not script.exists():
        pytest.skip("no antiphon-edge script beside this Python (the project is not installed here)")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=edge_env(), check=False)
    assert done.returncode == 0
    assert all(command in done.stdout for command in ("classify", "generate", "listen", "chat", "bench"))
