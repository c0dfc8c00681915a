"""Read the ``manifest.json`` that ``antiphon export`` writes, check each file's sha256, and open models from it.

The manifest (docs/export.md) names, per model, its files per format and precision with their sha256, input and
output tensors, and what the edge needs to read the outputs: ``labels`` for a classifier, ``vocabulary`` (and
``start_text``, ``layers``, ``hidden_size``) for a text step, ``sample_rate`` for audio, ``latent``,
``image_size`` and ``labels`` (the classes it is conditioned on) for an image generator or discriminator. A file
whose sha256 differs from the manifest's is refused before any interpreter reads it. A model is opened by name
(:meth:`Manifest.open`) or by one of its files (:meth:`Manifest.open_file`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_client.audio import MAX_SAMPLE_RATE
from edge_client.runtime import (
    BACKENDS,
    Runner,
    available_backends,
    backend_format,
    open_runner,
    resolve_backend,
)
from server.errors import InvalidArgument, ModelFileError, NotFound

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PRECISIONS = ("auto", "int8", "float32")


X86_64 = ("x86_64", "AMD64")


def _is_classifier(entry: dict[str, Any]) -> bool:
    """A model with ``labels`` (auto takes its int8 file where it runs fast), but for an image generator, whose
    labels are the classes it draws: a generator (auto takes its float32 file, torch's images)."""
    return "labels" in entry and entry.get("kind") != "image_generator"


def _int8_is_slower(backend: str) -> bool:
    """Whether ``backend`` runs int8 files slower than float ones, as measured (docs/edge.md): tflite-runtime's
    wheels (2.14, its last) hand only float operators to XNNPACK and run int8 ones on TFLite's own kernels, so a
    classifier's int8 file takes 2.5 to 6 times its float file's time there (the keyword spotter 4.0 ms against
    0.7 ms on x86-64). LiteRT and onnxruntime run int8 files as fast as float ones or faster."""
    return backend == "tflite_runtime"


def _miscomputed(backend: str, file: dict[str, Any]) -> bool:
    """Whether ``backend`` on this machine computes this file wrongly, as measured (docs/edge.md): dynamic-range
    int8 files (int8 weights, float activations) agree with their float files only on LiteRT (ai_edge_litert) and
    on onnxruntime on x86-64. On tflite-runtime 2.14 (x86-64 and aarch64) and on onnxruntime on aarch64 their
    outputs differ from the float file's by about their own size. Static int8 and float files agree everywhere."""
    if "dynamic" not in str(file.get("method", "")):
        return False
    return not (backend == "ai_edge_litert" or (backend == "onnxruntime" and platform.machine() in X86_64))


def _warn_miscomputed(file: dict[str, Any], backend: str) -> None:
    log.warning(
        "%s: %s on %s computes dynamic-range int8 files wrongly (outputs off by about their own size); "
        "use --precision float32",
        file.get("file"),
        backend,
        platform.machine(),
    )


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _entry_problem(name: str, entry: object) -> str | None:
    """What is wrong with the shape of one model entry (the fields the edge reads), or None."""
    if not isinstance(entry, dict):
        return f"model {name!r} is {_type_name(entry)}, not an object"
    files = entry.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(by_precision, dict) and all(isinstance(f, dict) for f in by_precision.values())
        for by_precision in files.values()
    ):
        return f"model {name!r}: 'files' must be an object of formats, each an object of precisions"
    for key in ("labels", "vocabulary"):
        if key in entry:
            value = entry[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return f"model {name!r}: {key!r} must be a list of strings, got {_type_name(value)}"
    if "sample_rate" in entry:
        rate = entry["sample_rate"]
        if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= MAX_SAMPLE_RATE:
            return f"model {name!r}: 'sample_rate' must be a whole number of Hz in 1..{MAX_SAMPLE_RATE}, got {rate!r}"
    return None


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
        for name, entry in data["models"].items():
            if problem := _entry_problem(name, entry):
                raise ModelFileError(f"{path}: not an antiphon export manifest ({problem})")
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
        faster, its labels checked against torch at export) where the backend runs int8 fast, float32 for a
        generator (the same text or images as torch) and on tflite-runtime; never a file the backend is known to
        miscompute."""
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
            int8_first = _is_classifier(entry) and not _int8_is_slower(backend)
            order = ("int8", "float32") if int8_first else ("float32", "int8")
            usable = [p for p in order if p in files and not _miscomputed(backend, files[p])]
            precision = usable[0] if usable else ""
        elif precision in files and _miscomputed(backend, files[precision]):
            _warn_miscomputed(files[precision], backend)
        if precision not in files:
            raise NotFound(f"model {name!r} has no {precision or 'usable'} {fmt} file (it has: {', '.join(files)})")
        return precision, files[precision]

    def find_file(self, filename: str) -> tuple[str, str, str]:
        """(model, format, precision) of the manifest's file named ``filename``."""
        for name, entry in self.models.items():
            for fmt, files in (entry.get("files") or {}).items():
                for precision, file in files.items():
                    if file.get("file") == filename:
                        return name, fmt, precision
        raise InvalidArgument(
            "--model",
            f"{self.folder / filename} is not listed in {self.folder / MANIFEST}; give a file `antiphon export` "
            "wrote, with its manifest.json beside it",
        )

    def open_file(self, filename: str, backend: str | None = None, precision: str = "auto", threads: int = 1) -> Model:
        """Open the manifest's file named ``filename`` (its model and precision), on ``backend`` (auto: the first
        installed one that runs its format)."""
        name, fmt, chosen = self.find_file(filename)
        if precision not in ("auto", chosen):
            raise InvalidArgument("precision", f"{filename} is the {chosen} file of {name}, not {precision}")
        if backend in (None, "", "auto"):
            have = [b for b in available_backends() if backend_format(b) == fmt]
            if not have:
                raise InvalidArgument(
                    "--model",
                    f"{filename} is a {fmt} file and no backend that runs {fmt} files is installed here "
                    f"(installed: {', '.join(available_backends()) or 'none'})",
                )
            backend = have[0]
        backend = resolve_backend(backend)
        if backend_format(backend) != fmt:
            raise InvalidArgument("backend", f"{backend} runs {backend_format(backend)} files; {filename} is {fmt}")
        file = self.models[name]["files"][fmt][chosen]
        if _miscomputed(backend, file):
            _warn_miscomputed(file, backend)
        path = self.verified_path(file)
        inputs = [t["name"] for t in file.get("inputs", [])]
        outputs = [t["name"] for t in file.get("outputs", [])]
        runner = open_runner(backend, path, inputs, outputs, threads)
        return self._checked(Model(name, self.entry(name), file, path, chosen, runner))

    def _checked(self, model: Model) -> Model:
        """``model``, once its labels match its file's outputs: a classifier (not an image generator, whose labels
        are the classes it draws) has one output value per label."""
        labels = model.entry.get("labels")
        if labels is None or model.entry.get("kind") == "image_generator" or not model.runner.outputs:
            return model
        width = model.runner.outputs[0].shape[-1] if model.runner.outputs[0].shape else 0
        if width > 0 and width != len(labels):
            raise ModelFileError(
                f"{self.folder / MANIFEST}: not an antiphon export manifest (model {model.name!r} has "
                f"{len(labels)} labels but {model.path.name} gives {width} outputs)"
            )
        return model

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
        return self._checked(Model(name, self.entry(name), file, path, chosen, runner))
