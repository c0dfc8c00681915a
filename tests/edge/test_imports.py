"""The edge client needs no torch: none of its modules imports it, and the edge virtualenv does not have it."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.edge.conftest import REPO, edge_env, edge_python

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
