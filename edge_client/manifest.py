"""Read the ``manifest.json`` that ``antiphon export`` writes, check each file's sha256, and open models from it.

The manifest (docs/export.md) names, per model, its files per format and precision with their sha256, input and
output tensors, and what the edge needs to read the outputs: ``labels`` for a classifier, ``vocabulary`` (and
``start_text``, ``layers``, ``hidden_size``) for a text step, ``sample_rate`` for audio. A file whose sha256
differs from the manifest's is refused before any interpreter reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_client.runtime import BACKENDS, Runner, backend_format, open_runner, resolve_backend
from server.errors import InvalidArgument, ModelFileError, NotFound

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PRECISIONS = ("auto", "int8", "float32")


X86_64 = ("x86_64", "AMD64")


def _miscomputed(backend: str, file: dict[str, Any]) -> bool:
    """Whether ``backend`` on this machine computes this file wrongly, as measured (docs/edge.md): dynamic-range
    int8 files (int8 weights, float activations) agree with their float files only on LiteRT (ai_edge_litert) and
    on onnxruntime on x86-64. On tflite-runtime 2.14 (x86-64 and aarch64) and on onnxruntime on aarch64 their
    outputs differ from the float file's by about their own size. Static int8 and float files agree everywhere."""
    if "dynamic" not in str(file.get("method", "")):
        return False
    return not (backend == "ai_edge_litert" or (backend == "onnxruntime" and platform.machine() in X86_64))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Model:
    """One model of the manifest opened on one backend: the runner plus the manifest's description."""

    name: str
    entry: dict[str, Any]  # the manifest's entry: kind, labels / vocabulary / sample_rate, files, ...
    file: dict[str, Any]  # the chosen file's entry: file, sha256, inputs, outputs, parity, ...
    path: Path
    precision: str
    runner: Runner = field(repr=False)

    @property
    def labels(self) -> list[str]:
        return list(self.entry.get("labels", []))

    @property
    def backend(self) -> str:
        return self.runner.backend


class Manifest:
    """The manifest of one export folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        path = folder / MANIFEST
        if not path.is_file():
            raise ModelFileError(
                f"{path}: no manifest here; export models with `antiphon export --out DIR` and copy DIR "
                "(the files and manifest.json) to this device, then pass --models DIR"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{path}: not a readable manifest ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ModelFileError(f"{path}: not an antiphon export manifest (no 'models' object)")
        self.data = data
        self.models: dict[str, dict[str, Any]] = data["models"]

    def has(self, name: str) -> bool:
        return name in self.models

    def first_of(self, *names: str) -> str | None:
        return next((n for n in names if n in self.models), None)

    def entry(self, name: str) -> dict[str, Any]:
        if name not in self.models:
            raise NotFound(
                f"model {name!r} is not in {self.folder / MANIFEST} (it has: {', '.join(self.models) or 'none'}); "
                f"export it with `antiphon export --models {name}`"
            )
        return self.models[name]

    def choose_file(self, name: str, backend: str, precision: str = "auto") -> tuple[str, dict[str, Any]]:
        """(precision, file entry) of ``name`` in ``backend``'s format. Auto: int8 for a classifier (smaller and
        faster, its labels checked against torch at export), float32 for a generator (the same text as torch); never
        a file the backend is known to miscompute."""
        if precision not in PRECISIONS:
            raise InvalidArgument("precision", f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
        entry = self.entry(name)
        fmt = backend_format(backend)
        files = entry.get("files", {}).get(fmt)
        if not files:
            others = [b for b, (f, _) in BACKENDS.items() if f in entry.get("files", {})]
            raise NotFound(
                f"model {name!r} has no {fmt} file for backend {backend}; export it with --formats {fmt}"
                + (f" or use --backend {others[0]}" if others else "")
            )
        if precision == "auto":
            order = ("int8", "float32") if "labels" in entry else ("float32", "int8")
            usable = [p for p in order if p in files and not _miscomputed(backend, files[p])]
            precision = usable[0] if usable else ""
        elif precision in files and _miscomputed(backend, files[precision]):
            log.warning(
                "%s: %s on %s computes dynamic-range int8 files wrongly (outputs off by about their own size); "
                "use --precision float32",
                files[precision].get("file"),
                backend,
                platform.machine(),
            )
        if precision not in files:
            raise NotFound(f"model {name!r} has no {precision or 'usable'} {fmt} file (it has: {', '.join(files)})")
        return precision, files[precision]

    def verified_path(self, file: dict[str, Any]) -> Path:
        """The file's path once its sha256 matches the manifest's."""
        path = self.folder / str(file.get("file", ""))
        if not path.is_file():
            raise ModelFileError(f"{path}: missing (the manifest lists it); copy the whole export folder")
        expected = str(file.get("sha256", ""))
        actual = file_sha256(path)
        if actual != expected:
            raise ModelFileError(
                f"{path}: sha256 {actual[:16]}... does not match the manifest's {expected[:16]}...; the file was "
                "altered or comes from another export; copy the export folder again"
            )
        return path

    def open(self, name: str, backend: str | None = None, precision: str = "auto", threads: int = 1) -> Model:
        """Open ``name`` on ``backend`` (auto: the first installed), after checking the file's sha256."""
        backend = resolve_backend(backend)
        chosen, file = self.choose_file(name, backend, precision)
        path = self.verified_path(file)
        inputs = [t["name"] for t in file.get("inputs", [])]
        outputs = [t["name"] for t in file.get("outputs", [])]
        runner = open_runner(backend, path, inputs, outputs, threads)
        return Model(name, self.entry(name), file, path, chosen, runner)
