"""Edge fixtures: the exported files, the ``antiphon-edge`` command, and a real server to chat with.

The edge tests run in three places against the same files:
- the main virtualenv (``pytest``): builds the files itself (tests/edge/build.py, torch) unless
  ``ANTIPHON_EDGE_FILES`` names a folder that ``python -m tests.edge.build`` wrote;
- ``.venv-edge`` (numpy 1, tflite-runtime, onnxruntime, no torch): ``ANTIPHON_EDGE_FILES`` must name that folder;
- arm64 (``make edge-arm64``): the same, with ``ANTIPHON_EDGE_PYTHON`` naming the emulated aarch64 Python that
  every command of the tests runs on.

``ANTIPHON_EDGE_PYTHON``: the Python (a command line) that runs ``-m edge_client`` (default: this one).
``ANTIPHON_SERVER_PYTHON``: the Python with torch that runs ``-m server.cli serve`` (default: this one where it has
torch; chat tests are skipped where none is given).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import timeout

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening grpcs?=(\S+) wss?=(\S+) https?=(\S+)$")  # grpcs= wss= https= over TLS


def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


@dataclass(frozen=True)
class EdgeFiles:
    root: Path

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.export / "manifest.json").read_text(encoding="utf-8"))
        return data

    @property
    def text_checkpoint(self) -> Path:
        return self.root / "text.safetensors"

    @property
    def audio_checkpoint(self) -> Path:
        return self.root / "audio.safetensors"

    @property
    def images(self) -> Path:
        """torch's images and the torch discriminator's verdicts (tests/edge/build.py write_image_samples)."""
        return self.root / "images"

    def image_record(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.images / "images.json").read_text(encoding="utf-8"))
        return data

    def digits(self) -> list[tuple[Path, str]]:
        """(image, its label) of the held-out digit images."""
        return [(p, p.stem.split("_")[1]) for p in sorted((self.root / "digits").glob("*.npy"))]


@pytest.fixture(scope="session")
def edge_files(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> EdgeFiles:
    given = os.environ.get("ANTIPHON_EDGE_FILES")
    if given:
        root = Path(given).resolve()
        if not (root / "export" / "manifest.json").is_file():
            pytest.fail(f"ANTIPHON_EDGE_FILES={given} has no export/manifest.json: run python -m tests.edge.build DIR")
        return EdgeFiles(root)
    if not _has_torch():
        pytest.skip("no exported files: set ANTIPHON_EDGE_FILES to a folder that python -m tests.edge.build wrote")
    from tests.edge.build import build

    checkpoint = request.getfixturevalue("tiny_text_checkpoint")
    corpus = request.getfixturevalue("tiny_corpus")
    return EdgeFiles(build(tmp_path_factory.mktemp("edge"), checkpoint, corpus))


def edge_python() -> list[str]:
    given = os.environ.get("ANTIPHON_EDGE_PYTHON")
    return shlex.split(given) if given else [sys.executable]


def edge_env() -> dict[str, str]:
    """The environment of edge commands: the repository and its stubs importable (an emulated Python gets its
    own environment from ANTIPHON_EDGE_PYTHON, which starts with ``env -i``)."""
    path = os.pathsep.join([str(REPO), str(REPO / "proto"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def emulated() -> bool:
    """Whether the edge Python is another machine's (its environment then comes from ANTIPHON_EDGE_PYTHON)."""
    return bool(os.environ.get("ANTIPHON_EDGE_PYTHON"))


def run_edge(
    *args: str,
    stdin: bytes | None = None,
    seconds: float = 60,
    env_path: str | None = None,
    env_more: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``antiphon-edge ARGS`` on the edge Python (with PATH=``env_path`` where given, and the variables of
    ``env_more``); stdout and stderr as text."""
    env = {**edge_env(), **(env_more or {})}
    if env_path is not None:
        env["PATH"] = env_path
    done = subprocess.run(
        [*edge_python(), "-m", "edge_client", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout(seconds),
        env=env,
        cwd=REPO,
        check=False,
    )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def installed_backends() -> list[str]:
    """The backends the edge Python has (asked of it, since it may be another machine's Python)."""
    code = "from edge_client.runtime import available_backends; print(','.join(available_backends()))"
    done = subprocess.run(
        [*edge_python(), "-c", code], capture_output=True, text=True, env=edge_env(), cwd=REPO, check=True
    )
    return done.stdout.strip().split(",")


BACKENDS = installed_backends()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- a real server -----------------------------------------------------------
def server_python() -> list[str] | None:
    given = os.environ.get("ANTIPHON_SERVER_PYTHON")
    if given:
        return shlex.split(given)
    return [sys.executable] if _has_torch() else None


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    grpc: str  # host:port
    ws: str
    log: list[str]
    drain: threading.Thread | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout(30))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.drain is not None:
            self.drain.join(timeout=timeout(5))
        if self.process.stderr is not None:
            self.process.stderr.close()


def start_server(
    checkpoint: Path,
    grpc_port: int = 0,
    ws_port: int = 0,
    audio: Path | None = None,
    options: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> RunningServer:
    """``antiphon serve`` with ``checkpoint`` (and the WaveNet ``audio``, else no audio model) on the given ports,
    with more ``options`` (flags) and ``env`` (more variables)."""
    python = server_python()
    if python is None:
        pytest.skip("no Python with torch to run the server: set ANTIPHON_SERVER_PYTHON")
    cmd = [
        *python,
        "-m",
        "server.cli",
        "serve",
        "--text-checkpoint",
        str(checkpoint),
        "--grpc-port",
        str(grpc_port),
        "--ws-port",
        str(ws_port),
        "--http-port",
        "0",
        "--torch-threads",
        "1",
        "--grace-s",
        "1",
        "--audio-checkpoint",
        str(audio) if audio else "none",
        "--audio-threads",
        "1",
        *options,
    ]
    process = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, env={**edge_env(), "OMP_NUM_THREADS": "1", **(env or {})}, cwd=REPO
    )
    assert process.stderr is not None
    lines: list[str] = []
    while True:  # the server prints its listening line within seconds; a dead server ends the stream
        line = process.stderr.readline().decode()
        if not line:
            process.wait()
            raise AssertionError("server exited before listening:\n" + "".join(lines))
        lines.append(line)
        if match := LISTENING.search(line.rstrip("\n")):
            running = RunningServer(process, match.group(1), match.group(2), lines)
            running.drain = threading.Thread(target=_drain, args=(process, lines), daemon=True)
            running.drain.start()  # a full pipe would block the server
            return running


def serving(checkpoint: Path, **options: Any) -> Iterator[RunningServer]:
    """A server fixture's body: :func:`start_server` with ``options``, the server while the fixture lasts, then
    stopped (``yield from serving(...)``)."""
    running = start_server(checkpoint, **options)
    yield running
    running.stop()


def _drain(process: subprocess.Popen[bytes], lines: list[str]) -> None:
    assert process.stderr is not None
    try:
        for line in process.stderr:
            lines.append(line.decode(errors="replace"))
    except ValueError:  # closed by stop()
        pass


@pytest.fixture(scope="module")
def server(edge_files: EdgeFiles) -> Iterator[RunningServer]:
    """A text-only server shared by a module's tests (each chat has its own session)."""
    yield from serving(edge_files.text_checkpoint)
