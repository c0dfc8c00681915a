"""The layers, and the imports allowed between them, read from the source (every import, at module level or inside
a function). docs/architecture.md draws the same picture; change both together.

    commands, cli      -> anything below
    app                -> transport, engine, settings, model packages
    transport          -> engine's torch-free modules (requests, streams, registry, speech), errors, metrics, sampling
    engine             -> model packages, errors, sampling
    model packages     -> each other's torch-free helpers, data, errors, sampling, checkpoint, training
    edge_client        -> server.errors only
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MODEL_PACKAGES = ("text", "audio", "kws", "textdisc", "vision", "image", "data")
UPPER_LAYERS = ("server.engine", "server.transport", "server.app", "server.commands", "server.cli", "server.settings")
# What a transport may import of the project: the engine's torch-free contract and the small shared modules.
TRANSPORT_ALLOWED = (
    "server.engine.requests",
    "server.engine.streams",
    "server.engine.registry",
    "server.engine.speech",
    "server.transport",
    "server.errors",
    "server.metrics",
    "server.sampling",
    "server.audio.constants",
    "server.audio.mulaw",
    "antiphon.v1",
)
EDGE_ALLOWED = ("server.errors",)


def imports_of(path: Path, source: str | None = None) -> set[str]:
    """Every module ``path`` (or ``source``, read as if it stood at ``path``) imports, resolved to absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source, str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:  # "from pkg import mod" imports pkg.mod; "from mod import name" imports mod
                submodule = REPO.joinpath(*module.split("."), alias.name)
                is_module = submodule.with_suffix(".py").exists() or submodule.is_dir()
                found.add(f"{module}.{alias.name}" if is_module else module)
    return found


def modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def project(name: str) -> bool:
    return within(name, ("server", "export", "edge_client", "antiphon"))


def wrong_imports(folder: str, wrong: Callable[[str], bool]) -> list[str]:
    """``PATH: MODULE`` for every import of a module under ``folder`` that ``wrong`` refuses, sorted."""
    return sorted(
        {f"{path.relative_to(REPO)}: {name}" for path in modules(folder) for name in imports_of(path) if wrong(name)}
    )


@pytest.mark.parametrize("package", MODEL_PACKAGES)
def test_model_packages_import_no_upper_layer(package: str) -> None:
    """A model package never imports the engine, the transports, the app, the settings or the commands."""
    assert wrong_imports(f"server/{package}", lambda name: within(name, UPPER_LAYERS)) == []


def test_transports_import_only_the_engine_contract() -> None:
    """A transport imports no torch and, of the project, only the engine's torch-free contract."""

    def wrong(name: str) -> bool:
        return within(name, ("torch", "numba")) or (project(name) and not within(name, TRANSPORT_ALLOWED))

    assert wrong_imports("server/transport", wrong) == []


def test_engine_imports_no_transport_app_or_command() -> None:
    """The engine serves every transport: it imports none of them, nor the app or the commands."""
    upper = ("server.transport", "server.app", "server.commands", "server.cli")
    assert wrong_imports("server/engine", lambda name: within(name, upper)) == []


def test_engine_contract_is_torch_free() -> None:
    """What the transports see of the engine imports neither torch nor a torch-using engine module."""
    contract = ("requests", "streams", "registry")
    wrong = {
        f"server/engine/{name}.py: {imported}"
        for name in contract
        for imported in imports_of(REPO / "server" / "engine" / f"{name}.py")
        if within(imported, ("torch",))
        or (
            within(imported, ("server",))
            and not within(imported, ("server.engine", "server.errors", "server.sampling"))
        )
        or (within(imported, ("server.engine",)) and imported.split(".")[2] not in contract)
    }
    assert sorted(wrong) == []


def test_edge_client_imports_nothing_of_the_server_but_its_errors() -> None:
    """The edge client runs without the server: of it, only server.errors may be imported."""

    def wrong(name: str) -> bool:
        return within(name, ("server", "export", "torch")) and not within(name, EDGE_ALLOWED)

    assert wrong_imports("edge_client", wrong) == []


def test_the_checker_sees_a_wrong_import() -> None:
    """The graph reader resolves absolute and relative imports, so a wrong one cannot hide."""
    source = "from ..engine import text\nfrom server.engine.requests import ChatTurn\nimport server.app\n"
    # read as if it stood in server/text, without writing into the tree the other test workers read
    found = imports_of(REPO / "server" / "text" / "_layers_probe.py", source)
    assert found == {"server.engine.text", "server.engine.requests", "server.app"}
