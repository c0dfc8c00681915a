"""``antiphon export``: convert each model to each format (float32 and, with ``int8``, int8), check every file
against torch, and write ``manifest.json`` beside the files.

A file that fails its parity check stops the export with an ExportError: the
manifest only ever describes files that passed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import server
from export.convert import onnx_int8, tflite_int8, to_onnx, to_tflite
from export.image_specs import IMAGE_SAMPLES, dcgan_discriminator_spec, dcgan_generator_spec, vae_decoder_spec
from export.parity import (
    FLOAT_TOLERANCE,
    INT8_AGREEMENT,
    greedy_text_figures,
    label_figures,
    max_abs_between,
    max_abs_difference,
    run_file,
)
from export.runtime import open_runner
from export.specs import MODELS, ExportSpec, check_model_names, digits_spec, text_step_spec, textdisc_spec
from server.checkpoint import file_sha256
from server.errors import CheckpointError, ExportError, InvalidArgument
from server.kws.data import TEST_PER_LABEL
from server.options import MAX_SEED, check_output
from server.paths import DEFAULT_IMAGE_MODELS

log = logging.getLogger(__name__)

FORMATS: dict[str, str] = {"onnx": ".onnx", "tflite": ".tflite"}
MANIFEST = "manifest.json"
IMAGE_MODELS = ("dcgan_generator", "vae_decoder", "dcgan_discriminator")
MAX_CHECK_WORKERS = 256

Converter = Callable[[ExportSpec, Path], None]
Quantizer = Callable[[ExportSpec, Path, Path], str]
CONVERTERS: dict[str, tuple[Converter, Quantizer]] = {"onnx": (to_onnx, onnx_int8), "tflite": (to_tflite, tflite_int8)}


@dataclass
class ExportOptions:
    out: Path = Path("runs/export")
    models: tuple[str, ...] = tuple(MODELS)
    formats: tuple[str, ...] = tuple(FORMATS)
    int8: bool = False
    digits_checkpoint: Path | None = None
    text_checkpoint: Path | None = None  # the default text model: text_step, and textdisc's generator
    small_text_checkpoint: Path | None = None
    textdisc_checkpoint: Path | None = None
    kws_checkpoint: Path | None = None
    kws_data: Any = None  # a KWSDataConfig for kws's evaluation and calibration clips (None: the checkpoint's)
    kws_test_per_label: int = (
        TEST_PER_LABEL  # kws's evaluation set: the test set's clips of each label (0: the held-out set)
    )
    text: str | None = None  # held-out text: the text steps' checks (first 1,000 characters), textdisc's real windows
    # The image models: the committed checkpoints unless named; dcgan_generator and dcgan_discriminator both come
    # from the DCGAN checkpoint (its generator and its discriminator).
    dcgan_checkpoint: Path | None = DEFAULT_IMAGE_MODELS / "dcgan.safetensors"
    vae_checkpoint: Path | None = DEFAULT_IMAGE_MODELS / "vae.safetensors"  # a VAE or VAE-GAN checkpoint
    image_judge: Path | None = None  # the generators' int8 check: None takes the committed judge of their data
    image_samples: int = IMAGE_SAMPLES  # the image models' evaluation set: seeds, or test + generated images
    seed: int = 0
    check_workers: int = 0  # threads checking each file against torch, each with its own runner (0: one per core)

    def validate(self) -> None:
        if not self.models:
            raise InvalidArgument("models", "give at least one model")
        check_model_names(list(self.models))
        if not self.formats:
            raise InvalidArgument("formats", "give at least one format")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise InvalidArgument("formats", f"unknown format {unknown[0]!r}; known: {', '.join(FORMATS)}")
        for field in ("models", "formats"):  # each would be converted and checked again
            names: tuple[str, ...] = getattr(self, field)
            if twice := next((n for i, n in enumerate(names) if n in names[:i]), None):
                raise InvalidArgument(field, f"{twice} is named twice")
        if "digits" in self.models and self.digits_checkpoint is None:
            raise InvalidArgument("digits_checkpoint", "the digits model needs a checkpoint")
        needs = {
            "digits": ("digits_checkpoint",),
            "text_step": ("text_checkpoint",),
            "text_small_step": ("small_text_checkpoint",),
            "textdisc": ("textdisc_checkpoint", "text_checkpoint"),
            "kws": ("kws_checkpoint",),
            "dcgan_generator": ("dcgan_checkpoint",),
            "dcgan_discriminator": ("dcgan_checkpoint",),
            "vae_decoder": ("vae_checkpoint",),
        }
        for model in self.models:
            for name in needs.get(model, ()):
                if getattr(self, name) is None:
                    raise InvalidArgument(name, f"{model} needs a checkpoint ({name})")

        if any(m in self.models for m in IMAGE_MODELS) and not 2 <= self.image_samples <= 100_000:
            raise InvalidArgument("image_samples", f"must be in [2, 100000], got {self.image_samples}")
        if not 0 <= self.seed <= MAX_SEED:
            raise InvalidArgument("seed", f"must be in 0..2**63-1, got {self.seed}")
        if not 0 <= self.check_workers <= MAX_CHECK_WORKERS:
            raise InvalidArgument("check_workers", f"must be in 0..{MAX_CHECK_WORKERS}, got {self.check_workers}")
        if self.out.exists() and not self.out.is_dir():
            raise InvalidArgument("out", f"{self.out} is a file; name a folder for the files and {MANIFEST}")
        check_output(self.out / MANIFEST, "out")
        # Every checkpoint asked for is there before the first conversion (minutes, with --int8), not after it.
        for name in dict.fromkeys(n for model in self.models for n in needs.get(model, ())):
            path: Path = getattr(self, name)
            if not path.is_file():
                state = "is a directory" if path.is_dir() else "does not exist"
                raise CheckpointError(f"checkpoint {path} {state} (--{name.replace('_', '-')})")

    @property
    def workers(self) -> int:
        """The checking threads: ``check_workers``, or with 0 one per core this process may run on, at most
        ``$OMP_NUM_THREADS`` where it is set (a test run or a shared machine asks for fewer threads that way)."""
        if self.check_workers:
            return self.check_workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        limit = os.environ.get("OMP_NUM_THREADS", "")
        return min(cores, int(limit)) if limit.isdigit() and int(limit) > 0 else cores

    @property
    def needs_text(self) -> bool:
        return any(m in self.models for m in ("text_step", "text_small_step", "textdisc"))


def build_spec(name: str, opts: ExportOptions) -> ExportSpec:
    if name == "digits":
        assert opts.digits_checkpoint is not None  # validate() checked
        return digits_spec(opts.digits_checkpoint, opts.seed)
    if name in IMAGE_MODELS:
        return _image_spec(name, opts)
    if name == "kws":
        from export.specs import kws_spec

        assert opts.kws_checkpoint is not None
        return kws_spec(opts.kws_checkpoint, opts.seed, data=opts.kws_data, test_per_label=opts.kws_test_per_label)
    if not opts.text:
        raise InvalidArgument("text", f"{name}'s checks need real text")
    if name == "text_small_step":
        assert opts.small_text_checkpoint is not None
        return text_step_spec(opts.small_text_checkpoint, opts.text, opts.seed, name=name)
    assert opts.text_checkpoint is not None
    if name == "textdisc":
        assert opts.textdisc_checkpoint is not None
        return textdisc_spec(opts.textdisc_checkpoint, opts.text_checkpoint, opts.text, opts.seed)
    return text_step_spec(opts.text_checkpoint, opts.text, opts.seed)


def _image_spec(name: str, opts: ExportOptions) -> ExportSpec:
    samples = opts.image_samples
    if name == "vae_decoder":
        assert opts.vae_checkpoint is not None
        return vae_decoder_spec(opts.vae_checkpoint, opts.image_judge, opts.seed, n_samples=samples)
    assert opts.dcgan_checkpoint is not None
    if name == "dcgan_generator":
        return dcgan_generator_spec(opts.dcgan_checkpoint, opts.image_judge, opts.seed, n_samples=samples)
    return dcgan_discriminator_spec(opts.dcgan_checkpoint, opts.seed, n_samples=samples)


def _still_valid(path: Path, skip: tuple[str, ...]) -> dict[str, Any]:
    """The models of an earlier manifest at ``path`` that this export does not write again and whose files are all
    still there as listed (same sha256), so that exporting one model into a folder keeps the others; a model
    whose files changed or went is left out (the edge would refuse it)."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))["models"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(earlier, dict):
        return {}
    kept: dict[str, Any] = {}
    for name, entry in earlier.items():
        if name in skip:
            continue
        try:
            files = [f for per_format in entry["files"].values() for f in per_format.values()]
            if files and all(file_sha256(path.parent / f["file"]) == f["sha256"] for f in files):
                kept[name] = entry
        except (OSError, KeyError, TypeError, AttributeError):
            continue
    return kept


def export_models(opts: ExportOptions) -> dict[str, Any]:
    """Write every file and the manifest under ``opts.out``; returns the manifest.

    Each model's files are written and checked in a staging folder inside ``opts.out``, then moved into place and
    the manifest rewritten, model by model: an export that fails or is interrupted leaves every earlier file and
    the manifest that lists them as they were (the models done before it included)."""
    opts.validate()
    opts.out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {}
    for name in opts.models:
        spec = build_spec(name, opts)
        with _staging(opts.out) as staging:
            entry = _export_one(spec, opts, staging)
            manifest = _commit(opts.out, staging, name, entry)
    return manifest


STAGING_PREFIX = ".export-"


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A staging folder in ``out``, locked while this export writes in it, then removed. Made under the folder's
    lock, where the staging folders of exports killed before they could remove theirs (SIGKILL, a power cut: no
    process holds their lock) are removed first, and a running export's are left alone."""
    with _locked(out):
        for folder in out.glob(STAGING_PREFIX + "*"):
            if folder.is_dir() and not folder.is_symlink():
                with _locked(folder, wait=False) as abandoned:
                    if abandoned:
                        shutil.rmtree(folder, ignore_errors=True)
                        log.info("removed %s, left by an export that was killed", folder)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
        held = ExitStack()
        held.enter_context(_locked(staging))
        held.callback(shutil.rmtree, staging, ignore_errors=True)  # removed before its lock is let go
    with held:
        yield staging


def _commit(out: Path, staging: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Move model ``name``'s checked files from ``staging`` into ``out`` and rewrite the manifest: the earlier one's
    other models whose files are unchanged, then ``name``'s ``entry``. Under a lock on the folder, so that two
    exports into one folder each keep what the other wrote."""
    path = out / MANIFEST
    with _locked(out):
        for files in entry["files"].values():
            for info in files.values():
                (staging / info["file"]).replace(out / info["file"])
        kept = _still_valid(path, skip=(name,))
        manifest: dict[str, Any] = {
            "antiphon_version": server.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "tolerances": {"float_max_abs": FLOAT_TOLERANCE, "int8_top_label_agreement": INT8_AGREEMENT},
            "models": {**kept, name: entry},
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    log.info("wrote %s (%s)", path, ", ".join(manifest["models"]))
    return manifest


@contextmanager
def _locked(folder: Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on ``folder`` itself (no lock file to ship with the export), held by one process at once.
    Yields whether it is held: with ``wait`` False, False at once where another process holds it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)  # releases the lock


def _export_one(spec: ExportSpec, opts: ExportOptions, folder: Path) -> dict[str, Any]:
    """Write and check ``spec``'s files in ``folder``; returns its manifest entry."""
    torch_figures: dict[str, Any] = {"evaluated": len(spec.real_inputs)}
    if spec.targets is not None:
        labels = spec.labels_of(spec.real_outputs)
        torch_figures["accuracy"] = float((labels == spec.targets).mean())
    entry: dict[str, Any] = {
        "kind": spec.kind,
        "checkpoint": {"file": spec.checkpoint.name, "sha256": file_sha256(spec.checkpoint)},
        **spec.info,
        "torch": torch_figures,
        "int8_top_label_agreement_needed": spec.int8_agreement or INT8_AGREEMENT,
        "float_max_abs_allowed": spec.float_tolerance or FLOAT_TOLERANCE,
        "files": {},
    }
    for fmt in opts.formats:
        convert, quantize = CONVERTERS[fmt]
        float_path = folder / f"{spec.name}{FORMATS[fmt]}"
        started = time.monotonic()
        convert(spec, float_path)
        files = {"float32": _describe(spec, fmt, float_path, "float32", f"{fmt} float32", started, opts.workers)}
        if opts.int8:
            int8_path = folder / f"{spec.name}.int8{FORMATS[fmt]}"
            started = time.monotonic()
            method = quantize(spec, float_path, int8_path)
            files["int8"] = _describe(spec, fmt, int8_path, "int8", method, started, opts.workers)
        entry["files"][fmt] = files
    return entry


def _describe(
    spec: ExportSpec, fmt: str, path: Path, precision: str, method: str, started: float, workers: int = 1
) -> dict[str, Any]:
    """Check one file against torch and describe it for the manifest; an ExportError if it fails."""
    order = (spec.input_names, spec.output_names)
    runner = open_runner(fmt, path, order)
    outputs = run_file(lambda: open_runner(fmt, path, order), spec.real_inputs, f"{path.name}: checking", workers)
    parity: dict[str, Any] = label_figures(spec, outputs)
    if precision == "float32":
        parity["max_abs_real"] = max_abs_between(outputs, spec.real_outputs)
        parity["max_abs_random"] = max_abs_difference(spec, runner, spec.random_inputs)
        worst = max(parity["max_abs_real"], parity["max_abs_random"])
        if worst > (tolerance := spec.float_tolerance or FLOAT_TOLERANCE):
            raise ExportError(f"{path.name}: differs from torch by {worst:.2e} (tolerance {tolerance:.0e})")
    elif parity["top_label_agreement"] < (needed := spec.int8_agreement or INT8_AGREEMENT):
        raise ExportError(
            f"{path.name}: top label agrees with torch on {parity['top_label_agreement']:.2%} of "
            f"{parity['evaluated']} inputs (at least {needed:.1%} needed)"
        )
    if spec.kind == "char_lstm_step":
        parity.update(greedy_text_figures(spec, runner))
        if precision == "float32" and not parity["greedy_matches"]:
            raise ExportError(
                f"{path.name}: greedy text differs from torch after {parity['greedy_same_tokens']} tokens"
            )
    log.info("%s: %s, %d bytes, %s", path.name, method, path.stat().st_size, _summary(parity))
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "method": method,
        "inputs": [t.to_dict() for t in runner.inputs],
        "outputs": [t.to_dict() for t in runner.outputs],
        "parity": parity,
        "seconds": round(time.monotonic() - started, 2),
    }


def _summary(parity: dict[str, Any]) -> str:
    """The parity figures on one log line (a text, the greedy prompt, quoted: its newlines escaped)."""

    def shown(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else f"{value}"

    return ", ".join(f"{k} {shown(v)}" for k, v in parity.items() if k != "greedy_text")
