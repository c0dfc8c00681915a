"""``antiphon-edge`` on real exported files: classify, listen, bench, and a clear error with a non-zero exit code
for every bad input."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.edge.conftest import BACKENDS, EdgeFiles, emulated, run_edge
from tests.edge.test_audio import wav_bytes
from tests.edge.test_image import png_bytes

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng renders the test speech")


def espeak_wav(text: str, path: Path, *args: str) -> Path:
    """``text`` spoken by espeak-ng's default voice (22,050 Hz mono 16-bit) into ``path``."""
    subprocess.run(["espeak-ng", *args, "-w", str(path), text], check=True, capture_output=True)
    return path


def models(files: EdgeFiles, backend: str) -> list[str]:
    return ["--models", str(files.export), "--backend", backend]


def json_lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# -- classify ----------------------------------------------------------------
def test_classify_image_reads_the_held_out_digits(edge_files: EdgeFiles, backend: str, tmp_path: Path) -> None:
    """Held-out digits as .npy, and the same images as dark-ink PNG and PGM, get their true labels."""
    samples = edge_files.digits()
    paths, labels = [], []
    for path, label in samples:
        intensities = np.load(path)
        paper = np.round(255 - intensities / 16 * 255).astype(np.uint8)
        png, pgm = tmp_path / f"{path.stem}.png", tmp_path / f"{path.stem}.pgm"
        png.write_bytes(png_bytes(paper, [4]))
        pgm.write_bytes(b"P5\n8 8\n255\n" + paper.tobytes())
        paths += [str(path), str(png), str(pgm)]
        labels += [label] * 3
    done = run_edge("classify", "image", *models(edge_files, backend), "--json", *paths)
    assert done.returncode == 0, done.stderr
    got = [r["label"] for r in json_lines(done.stdout)]
    assert sum(g == w for g, w in zip(got, labels, strict=True)) >= len(labels) - 3  # the model is 99% accurate
    assert got[0::3] == got[1::3] == got[2::3]  # each format reads the same image


@needs_espeak
def test_classify_audio_hears_number_words(edge_files: EdgeFiles, backend: str, tmp_path: Path) -> None:
    """Number words rendered by espeak-ng (22,050 Hz, one as 44.1 kHz stereo) get their labels."""
    words = ["zero", "four", "six", "nine"]
    paths = [espeak_wav(word, tmp_path / f"{word}.wav") for word in words]
    from edge_client.audio import read_wav

    stereo = np.repeat(read_wav(paths[1], 44100)[:, None], 2, axis=1)
    (tmp_path / "four-stereo.wav").write_bytes(wav_bytes(stereo, 44100))
    done = run_edge(
        "classify", "audio", *models(edge_files, backend), "--json", *map(str, paths), str(tmp_path / "four-stereo.wav")
    )
    assert done.returncode == 0, done.stderr
    records = json_lines(done.stdout)
    assert [r["label"] for r in records] == [*words, "four"]
    assert all(len(r["top"]) == 3 for r in records)  # type: ignore[arg-type]


def test_classify_text_agrees_with_torch(edge_files: EdgeFiles, backend: str) -> None:
    """Windows of the discriminator's evaluation set, real and generated, get torch's label (text as an argument,
    and from stdin with -)."""
    samples = json.loads((edge_files.root / "textdisc.json").read_text(encoding="utf-8"))
    picked = [*samples[:2], *samples[-2:]]  # real windows come first, generated ones last
    assert {s["torch_label"] for s in picked} == set(edge_files.manifest["models"]["textdisc"]["labels"])
    got = []
    for i, sample in enumerate(picked):
        args = ["classify", "text", *models(edge_files, backend), "--json"]
        done = run_edge(*args, "-", stdin=sample["text"].encode()) if i % 2 else run_edge(*args, sample["text"])
        assert done.returncode == 0, done.stderr
        got.append(json.loads(done.stdout)["label"])
    assert got == [s["torch_label"] for s in picked]


# -- listen ------------------------------------------------------------------
@needs_espeak
def test_listen_on_a_piped_wav_prints_the_word(edge_files: EdgeFiles, backend: str, tmp_path: Path) -> None:
    """A WAV of one number word piped to `listen -` gives exactly one line with that word."""
    wav = espeak_wav("seven", tmp_path / "seven.wav")
    done = run_edge(
        "listen", "--device", "-", *models(edge_files, backend), "--json", "--threshold", "0.5", stdin=wav.read_bytes()
    )
    assert done.returncode == 0, done.stderr
    records = json_lines(done.stdout)
    assert [r["word"] for r in records] == ["seven"]
    assert 0.0 < float(records[0]["time"]) < 2.5  # type: ignore[arg-type]


@needs_espeak
def test_listen_reads_raw_pcm_of_another_rate(edge_files: EdgeFiles, tmp_path: Path) -> None:
    """Raw PCM16 at 22,050 Hz on stdin (--rate) is heard like the WAV."""
    wav = espeak_wav("seven", tmp_path / "seven.wav").read_bytes()
    done = run_edge(
        "listen",
        "--device",
        "-",
        "--models",
        str(edge_files.export),
        "--rate",
        "22050",
        "--threshold",
        "0.5",
        stdin=wav[44:],
    )
    assert done.returncode == 0, done.stderr
    assert [line.split()[1] for line in done.stdout.splitlines()] == ["seven"]


@needs_espeak
def test_listen_finds_three_number_words_in_order(edge_files: EdgeFiles, tmp_path: Path) -> None:
    """A sentence with three number words among other words gives exactly those three, in order (the real KWS)."""
    if edge_files.manifest["models"]["kws"]["kind"] == "tiny_kws":
        pytest.skip("needs the committed KWS model (models/kws/kws_dscnn.safetensors); the tests' tiny one is here")
    wav = espeak_wav(
        "The king gave three crowns, the fool sang seven songs, and the lord counted four horses.",
        tmp_path / "sentence.wav",
        "-s",
        "150",
    )
    done = run_edge("listen", "--device", "-", "--models", str(edge_files.export), "--json", stdin=wav.read_bytes())
    assert done.returncode == 0, done.stderr
    assert [r["word"] for r in json_lines(done.stdout)] == ["three", "seven", "four"]


@pytest.mark.skipif(emulated(), reason="the emulated Python's PATH is fixed by ANTIPHON_EDGE_PYTHON")
def test_listen_without_arecord_is_a_clear_error(edge_files: EdgeFiles) -> None:
    """No arecord on the PATH: exit 1 and a message that says what to install."""
    done = run_edge("listen", "--models", str(edge_files.export), "--device", "hw:7,0", env_path="/nonexistent")
    assert done.returncode == 1
    assert "arecord not found" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(shutil.which("arecord") is None, reason="needs ALSA's arecord")
def test_listen_on_a_missing_device_is_a_clear_error(edge_files: EdgeFiles) -> None:
    """arecord on a device that does not exist: exit 1 and arecord's reason, not a traceback."""
    done = run_edge("listen", "--models", str(edge_files.export), "--device", "hw:7,0")
    assert done.returncode == 1
    assert "antiphon-edge: error: microphone 'hw:7,0': " in done.stderr
    assert "Traceback" not in done.stderr


# -- bench -------------------------------------------------------------------
def test_bench_measures_every_file(edge_files: EdgeFiles) -> None:
    """One row per model, installed backend and precision, with latency, memory and tokens/s for step models."""
    names = ("digits", "kws", "text_small_step")  # a classifier of each kind's runtime path and a step model
    done = run_edge(
        "bench",
        "--models",
        str(edge_files.export),
        "--json",
        "--seconds",
        "0.05",
        "--tokens",
        "50",
        "--only",
        ",".join(names),
        seconds=180,
    )
    assert done.returncode == 0, done.stderr
    rows = json_lines(done.stdout)
    formats = {"ai_edge_litert": "tflite", "tflite_runtime": "tflite", "onnxruntime": "onnx"}
    expected = {
        (name, backend, precision)
        for backend in BACKENDS
        for name in names
        for precision in edge_files.manifest["models"][name]["files"].get(formats[backend], {})
    }
    assert {(r["model"], r["backend"], r["precision"]) for r in rows} == expected
    assert all(float(r["median_ms"]) > 0 and int(r["runs"]) >= 20 for r in rows)  # type: ignore[arg-type]
    steps = [r for r in rows if r["model"] == "text_small_step"]
    assert steps and all(float(r["tokens_per_s"]) > 0 for r in steps)  # type: ignore[arg-type]


# -- bad inputs --------------------------------------------------------------
@pytest.fixture
def export_copy(edge_files: EdgeFiles, tmp_path: Path) -> Path:
    out = tmp_path / "export"
    shutil.copytree(edge_files.export, out)
    return out


def _digit_args(edge_files: EdgeFiles) -> list[str]:
    return [str(edge_files.digits()[0][0])]


def test_unknown_backend_exits_2(edge_files: EdgeFiles) -> None:
    """--backend names the known backends; exit 2."""
    done = run_edge(
        "classify", "image", "--models", str(edge_files.export), "--backend", "tpu", *_digit_args(edge_files)
    )
    assert done.returncode == 2
    assert "backend: unknown backend 'tpu'; known: auto, ai_edge_litert, tflite_runtime, onnxruntime" in done.stderr


def test_altered_file_is_refused_by_its_sha256(edge_files: EdgeFiles, export_copy: Path, backend: str) -> None:
    """A model file whose bytes differ from the manifest's sha256 is refused before any interpreter reads it."""
    manifest = json.loads((export_copy / "manifest.json").read_text())
    fmt = "onnx" if backend == "onnxruntime" else "tflite"
    target = export_copy / manifest["models"]["digits"]["files"][fmt]["int8"]["file"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1
    target.write_bytes(bytes(data))
    done = run_edge("classify", "image", "--models", str(export_copy), "--backend", backend, *_digit_args(edge_files))
    assert done.returncode == 1
    assert f"{target}: sha256 " in done.stderr and "does not match the manifest's" in done.stderr


def test_corrupt_file_with_matching_sha_is_a_clear_error(
    edge_files: EdgeFiles, export_copy: Path, backend: str
) -> None:
    """A file that is not a model (its sha256 updated to match) fails to load with the backend's reason; exit 1."""
    from edge_client.manifest import file_sha256

    manifest = json.loads((export_copy / "manifest.json").read_text())
    fmt = "onnx" if backend == "onnxruntime" else "tflite"
    entry = manifest["models"]["digits"]["files"][fmt]["int8"]
    target = export_copy / entry["file"]
    target.write_bytes(b"this is not a model" * 100)
    entry["sha256"] = file_sha256(target)
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    done = run_edge("classify", "image", "--models", str(export_copy), "--backend", backend, *_digit_args(edge_files))
    assert done.returncode == 1
    assert f"antiphon-edge: error: {target}: {backend} cannot load this file (" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_manifest_is_a_clear_error(tmp_path: Path, edge_files: EdgeFiles) -> None:
    """A folder without manifest.json says how to make one; exit 1."""
    done = run_edge("classify", "image", "--models", str(tmp_path), *_digit_args(edge_files))
    assert done.returncode == 1
    assert "manifest.json: no manifest here; export models with `antiphon export --out DIR`" in done.stderr


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not audio at all", "not a WAV file (no RIFF/WAVE header)"),
        (b"RIFF\x00\x00\x00\x00WAVE", "not a readable WAV file (it ends inside the chunk list)"),
    ],
)
def test_unreadable_wav_exits_2(edge_files: EdgeFiles, tmp_path: Path, data: bytes, message: str) -> None:
    """classify audio names the unreadable file; exit 2."""
    path = tmp_path / "broken.wav"
    path.write_bytes(data)
    done = run_edge("classify", "audio", "--models", str(edge_files.export), str(path))
    assert done.returncode == 2
    assert f"antiphon-edge: error: {path}: {message}" in done.stderr


def test_unsupported_wav_encoding_exits_2(edge_files: EdgeFiles, tmp_path: Path) -> None:
    """A WAV of an encoding the reader does not decode (A-law) names the encoding; exit 2."""
    fmt = struct.pack("<HHIIHH", 6, 1, 8000, 8000, 1, 8)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 4) + b"\x00" * 4
    path = tmp_path / "alaw.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    done = run_edge("classify", "audio", "--models", str(edge_files.export), str(path))
    assert done.returncode == 2
    assert "unsupported WAV encoding (format 6, 8 bits)" in done.stderr


def test_missing_model_in_manifest_exits_1(edge_files: EdgeFiles, export_copy: Path) -> None:
    """A command whose model the export lacks says how to export it."""
    manifest = json.loads((export_copy / "manifest.json").read_text())
    del manifest["models"]["digits"]
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    done = run_edge("classify", "image", "--models", str(export_copy), *_digit_args(edge_files))
    assert done.returncode == 1
    assert "model 'digits' is not in" in done.stderr and "antiphon export --models digits" in done.stderr
