"""``antiphon-edge`` on real exported files: classify, listen, bench, and a clear error with a non-zero exit code
for every bad input."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_client.manifest import Manifest
from tests.conftest import timeout
from tests.edge.conftest import BACKENDS, REPO, EdgeFiles, edge_env, edge_python, emulated, run_edge
from tests.edge.test_audio import tone, wav_bytes
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
    assert "XNNPACK" not in done.stderr  # the interpreter's "all is well" line is not shown


@needs_espeak
def test_classify_audio_unknown_bias_trades_words_for_unknown(edge_files: EdgeFiles, tmp_path: Path) -> None:
    """--unknown-bias -5 hears a number word in a word the model calls unknown as trained; +5 keeps a number word's
    label less sure; a bias out of range is refused before any file is read."""
    paths = [str(espeak_wav(word, tmp_path / f"{word}.wav")) for word in ("seven", "elephant")]
    scores, classify = {}, ("classify", "audio", "--models", str(edge_files.export))
    for bias in ("-5", "0", "5"):
        done = run_edge(*classify, "--json", "--unknown-bias", bias, *paths)
        assert done.returncode == 0, done.stderr
        scores[bias] = json_lines(done.stdout)
    assert [r["label"] for r in scores["0"]] == ["seven", "unknown"]
    assert scores["-5"][1]["label"] not in ("unknown", "silence")
    assert scores["5"][0]["score"] < scores["0"][0]["score"]  # type: ignore[operator]
    done = run_edge(*classify, "--unknown-bias", "9", "missing.wav")
    _one_line_error(done, 2, "--unknown-bias: must be in -5..5, got 9.0")


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


def _fmt(backend: str) -> str:
    return "onnx" if backend == "onnxruntime" else "tflite"


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def test_classify_image_tells_generated_images_from_real_ones(
    edge_files: EdgeFiles, backend: str, tmp_path: Path
) -> None:
    """generate image writes a sample; classify image with the discriminator's int8 file (--model FILE) gives it,
    and real and generated images torch is sure of, torch's verdict and P(real) to 0.05."""
    record = edge_files.image_record()
    logits = record["dcgan"]["logits"]
    pick = int(np.argmax(np.abs(logits)))  # the seed whose verdict torch is surest of
    seed = record["dcgan"]["seeds"][pick]
    sample = tmp_path / "sample.png"
    done = run_edge(
        "generate", "image", *models(edge_files, backend), "--class", "1", "--seed", str(seed), "-o", str(sample)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{sample}: 1 image of Trouser (seed {seed}), 28x28 px, dcgan_generator {backend} float32\n"
    entry = edge_files.manifest["models"]["dcgan_discriminator"]["files"][_fmt(backend)]["int8"]
    judged = record["judged"]
    files = [str(edge_files.images / j["file"]) for j in judged] + [str(sample)]
    done = run_edge(
        "classify", "image", "--model", str(edge_files.export / entry["file"]), "--backend", backend,
        "--class", record["class"].lower(), "--json", *files,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = json_lines(done.stdout)
    want = [j["torch_label"] for j in judged] + ["real" if logits[pick] > 0 else "generated"]
    assert [r["label"] for r in got] == want
    assert {r["class"] for r in got} == {record["class"]}
    for r, logit in zip(got, [j["logit"] for j in judged] + [logits[pick]], strict=True):
        assert abs(float(r["p_real"]) - _sigmoid(logit)) < 0.05  # type: ignore[arg-type]


def _tiles(picture: np.ndarray, rows: int, columns: int, side: int, pad: int = 1) -> np.ndarray:
    return np.stack(
        [
            picture[pad + r * (side + pad) : pad + r * (side + pad) + side, pad + c * (side + pad) :][:, :side]
            for r in range(rows)
            for c in range(columns)
        ]
    )


def test_generate_image_gives_the_servers_samples(edge_files: EdgeFiles, backend: str, tmp_path: Path) -> None:
    """Seeds 3-6 of class Trouser come out as the images torch drew from the server's sampler with those seeds
    (8-bit levels within 1), as a 2x2 grid with white lines, and the JSON record says what was made."""
    from PIL import Image

    record = edge_files.image_record()
    want = np.load(edge_files.images / record["dcgan"]["file"])  # (4, 28, 28) in [0, 1]
    out = tmp_path / "trousers.png"
    done = run_edge(
        "generate", "image", *models(edge_files, backend), "--class", "trouser", "--seed", "3", "--count", "4",
        "--columns", "2", "--json", "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "file": str(out),
        "model": "dcgan_generator",
        "backend": backend,
        "precision": "float32",
        "class": "Trouser",
        "seeds": [3, 4, 5, 6],
        "size": [59, 59],
    }
    picture = np.asarray(Image.open(out))
    assert picture.shape == (59, 59) and picture.dtype == np.uint8
    assert (picture[0] == 255).all() and (picture[29] == 255).all()  # the grid's white lines
    got = _tiles(picture, 2, 2, 28).astype(np.int32)
    assert np.abs(got - np.round(want * 255)).max() <= 1


def test_generate_image_from_the_unconditional_vae_decoder(edge_files: EdgeFiles, tmp_path: Path) -> None:
    """The VAE's decoder takes no class; two seeds at --scale 2 are torch's images, each pixel 2x2."""
    if "onnxruntime" not in BACKENDS:
        pytest.skip("the tests' vae_decoder is ONNX only")
    from PIL import Image

    want = np.load(edge_files.images / edge_files.image_record()["vae"]["file"])  # (2, 28, 28)
    out = tmp_path / "vae.png"
    done = run_edge(
        "generate", "image", *models(edge_files, "onnxruntime"), "--model", "vae_decoder", "--count", "2",
        "--scale", "2", "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 images (seeds 0-1), 115x58 px, vae_decoder onnxruntime float32" in done.stdout
    got = _tiles(np.asarray(Image.open(out)), 1, 2, 56)[:, ::2, ::2].astype(np.int32)
    assert np.abs(got - np.round(want * 255)).max() <= 1


LABELS = "0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--class", "hat"], f"--class: unknown class 'hat'; known: {LABELS}"),
        ([], f"--class: dcgan_generator is class-conditional: give one of {LABELS}"),
        (["--class", "Bag", "--count", "0"], "--count: must be in [1, 1024], got 0"),
        (["--model", "nowhere/gen.onnx", "--class", "Bag"], "--model: nowhere/gen.onnx: no such file, nor a folder"),
        (
            ["--model", "vae_decoder", "--backend", "onnxruntime", "--class", "Bag"],
            "--class: vae_decoder is unconditional: give no --class",
        ),
    ],
    ids=["unknown class", "no class", "no images", "missing file", "class of an unconditional model"],
)
def test_generate_image_bad_flags_exit_2(edge_files: EdgeFiles, tmp_path: Path, args: list[str], message: str) -> None:
    """A bad --class, --count or --model is named, with the valid classes where it is the class; exit 2, no file."""
    out = tmp_path / "out.png"
    done = run_edge("generate", "image", "--models", str(edge_files.export), *args, "-o", str(out))
    assert done.returncode == 2
    assert f"antiphon-edge: error: {message}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


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
    # a classifier of each kind's runtime path, a step model, an image generator and the image discriminator
    names = ("digits", "kws", "text_small_step", "dcgan_generator", "dcgan_discriminator")
    done = run_edge(
        "bench",
        "--models",
        str(edge_files.export),
        "--json",
        "--seconds",
        "0.05",
        "--tokens",
        "50",
        "--images",
        "10",
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
    generators = [r for r in rows if r["model"] == "dcgan_generator"]
    assert generators and all(float(r["images_per_s"]) > 0 for r in generators)  # type: ignore[arg-type]


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
    target = export_copy / Manifest(export_copy).choose_file("digits", backend)[1]["file"]  # the file auto opens
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
    precision, _ = Manifest(export_copy).choose_file("digits", backend)  # the file auto opens
    entry = manifest["models"]["digits"]["files"][fmt][precision]
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


@needs_espeak
def test_classify_audio_reads_other_formats_through_sox(edge_files: EdgeFiles, tmp_path: Path) -> None:
    """A FLAC, an Ogg and an 8 kHz mu-law WAV file of "seven" (sox: the Debian package) are heard as seven."""
    source = espeak_wav("seven", tmp_path / "source.wav")
    paths = [tmp_path / "seven.flac", tmp_path / "seven.ogg", tmp_path / "seven-ulaw.wav"]
    for path, flags in zip(paths, ([], [], ["-r", "8000", "-e", "u-law"]), strict=True):
        subprocess.run(["sox", str(source), *flags, str(path)], check=True, capture_output=True)
    done = run_edge("classify", "audio", "--models", str(edge_files.export), "--json", *map(str, paths))
    assert done.returncode == 0, done.stderr
    assert [r["label"] for r in json_lines(done.stdout)] == ["seven"] * 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not audio at all", "not a WAV file, and sox cannot read it ("),  # the Makefile installs sox
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
    """A WAV of an encoding the reader does not decode (Microsoft ADPCM) names the encoding; exit 2."""
    fmt = struct.pack("<HHIIHH", 2, 1, 8000, 4096, 256, 4)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 4) + b"\x00" * 4
    path = tmp_path / "adpcm.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    done = run_edge("classify", "audio", "--models", str(edge_files.export), str(path))
    assert done.returncode == 2
    assert "unsupported WAV encoding (format 2, 4 bits)" in done.stderr


def test_missing_model_in_manifest_exits_1(edge_files: EdgeFiles, export_copy: Path) -> None:
    """A command whose model the export lacks says how to export it."""
    manifest = json.loads((export_copy / "manifest.json").read_text())
    del manifest["models"]["digits"]
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    done = run_edge("classify", "image", "--models", str(export_copy), *_digit_args(edge_files))
    assert done.returncode == 1
    assert "model 'digits' is not in" in done.stderr and "antiphon export --models digits" in done.stderr


# -- limits on flags and input files ------------------------------------------
def _wav_with(rate: int = 16000, channels: int = 1, before_data: bytes = b"", data: bytes = b"\x00\x00" * 160) -> bytes:
    """A 16-bit PCM WAV whose header says ``rate`` and ``channels``, with ``before_data`` chunks and ``data``."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, 0, 2 * channels, 16)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + before_data + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _one_line_error(done: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert done.returncode == code, done.stderr
    assert f"antiphon-edge: error: {message}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rate", "0"], "--rate: must be in 1..384000, got 0"),
        (["--rate", "-5"], "--rate: must be in 1..384000, got -5"),
        (["--rate", "99999999999"], "--rate: must be in 1..384000, got 99999999999"),
        (["--channels", "0"], "--channels: must be in 1..256, got 0"),
        (["--channels", "-1"], "--channels: must be in 1..256, got -1"),
        (["--hop", "5"], "--hop: must be in [0.01, 1] seconds, got 5.0"),
        (["--smooth", "0"], "--smooth: must be 1..20 windows, got 0"),
        (["--threshold", "nan"], "--threshold: must be in (0, 1], got nan"),
        (["--refractory", "-1"], "--refractory: must be 0..10 seconds, got -1.0"),
        (["--unknown-bias", "6"], "--unknown-bias: must be in -5..5, got 6.0"),
        (["--unknown-bias", "inf"], "--unknown-bias: must be a finite number, got inf"),
    ],
)
def test_listen_raw_pcm_rate_and_channels_out_of_range_exit_2(
    edge_files: EdgeFiles, flags: list[str], message: str
) -> None:
    """listen --device - names a flag out of range (--rate, --channels, and the window's --hop, --smooth,
    --threshold, --refractory); exit 2."""
    done = run_edge("listen", "--models", str(edge_files.export), "--device", "-", *flags, stdin=b"\x00" * 64000)
    _one_line_error(done, 2, message)


@pytest.mark.parametrize(
    ("rate", "channels", "message"),
    [
        (1_000_003, 1, "sample rate must be in 1..384,000 Hz, got 1,000,003"),
        (0xFFFFFFFF, 1, "sample rate must be in 1..384,000 Hz, got 4,294,967,295"),
        (16000, 300, "channel count must be in 1..256, got 300"),
    ],
)
def test_wav_rate_or_channels_out_of_range_exit_2(
    edge_files: EdgeFiles, tmp_path: Path, rate: int, channels: int, message: str
) -> None:
    """A WAV header's sample rate or channel count out of range names the file; exit 2, before any resampling."""
    path = tmp_path / "odd.wav"
    path.write_bytes(_wav_with(rate, channels))
    done = run_edge("classify", "audio", "--models", str(edge_files.export), str(path), seconds=20)
    _one_line_error(done, 2, f"{path}: {message}")


def test_wav_chunk_larger_than_the_file_is_a_truncated_file(edge_files: EdgeFiles, tmp_path: Path) -> None:
    """A LIST chunk declaring 0xFFFFFFF0 bytes before the data is skipped without reading it: a truncated file."""
    path = tmp_path / "huge-list.wav"
    path.write_bytes(_wav_with(before_data=b"LIST" + struct.pack("<I", 0xFFFFFFF0) + b"INFO"))
    done = run_edge("classify", "audio", "--models", str(edge_files.export), str(path), seconds=20)
    message = "not a readable WAV file (no data chunk: a 'LIST' chunk of 4,294,967,280 bytes runs past its end)"
    _one_line_error(done, 2, f"{path}: {message}")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_wav_with_a_non_finite_sample_exits_2(edge_files: EdgeFiles, tmp_path: Path, bad: float) -> None:
    """A float WAV with a NaN or infinite sample names the file; exit 2."""
    samples = np.zeros((1600, 1))
    samples[100] = bad
    path = tmp_path / "nan.wav"
    path.write_bytes(wav_bytes(samples, 16000, 32, floating=True))
    done = run_edge("classify", "audio", "--models", str(edge_files.export), str(path))
    _one_line_error(done, 2, f"{path}: float samples must be finite numbers (found NaN or infinity)")


def test_wav_with_no_samples_exits_2(edge_files: EdgeFiles, tmp_path: Path) -> None:
    """A WAV whose data chunk is empty is not read as silence; exit 2 naming the file."""
    path = tmp_path / "empty.wav"
    path.write_bytes(_wav_with(data=b""))
    done = run_edge("classify", "audio", "--models", str(edge_files.export), str(path))
    _one_line_error(done, 2, f"{path}: no audio (the data chunk holds no whole sample)")


def test_classify_text_refuses_standard_input_that_is_not_utf8(edge_files: EdgeFiles) -> None:
    """Standard input is decoded as UTF-8 whatever the locale's strictness; other bytes are exit 2."""
    done = run_edge(
        "classify",
        "text",
        "--models",
        str(edge_files.export),
        "-",
        stdin=b"caf\xe9 \xff\xfe\n",
        env_more={"PYTHONIOENCODING": "utf-8:strict"},
    )
    _one_line_error(done, 2, "standard input: is not UTF-8 text")


@pytest.mark.parametrize("threads", ["0", "65", "99999999999"])
def test_threads_out_of_range_exit_2(edge_files: EdgeFiles, threads: str) -> None:
    """--threads is 1 to 64; exit 2 naming it, before any model is opened."""
    done = run_edge(
        "classify", "image", "--models", str(edge_files.export), "--threads", threads, *_digit_args(edge_files)
    )
    _one_line_error(done, 2, f"--threads: must be in 1..64, got {threads}")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seconds", "0"], "--seconds: must be more than 0 and at most 3600, got 0.0"),
        (["--seconds", "-1"], "--seconds: must be more than 0 and at most 3600, got -1.0"),
        (["--seconds", "nan"], "--seconds: must be a finite number, got nan"),
        (["--tokens", "-1"], "--tokens: must be in 0..1000000, got -1"),
    ],
)
def test_bench_bad_seconds_or_tokens_exit_2(edge_files: EdgeFiles, flags: list[str], message: str) -> None:
    """bench names a --seconds or --tokens out of range; exit 2."""
    done = run_edge("bench", "--models", str(edge_files.export), *flags)
    _one_line_error(done, 2, message)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"labels": "0123456789"}, "model 'digits': 'labels' must be a list of strings, got str"),
        ({"labels": None}, "model 'digits': 'labels' must be a list of strings, got null"),
        ({"sample_rate": "sixteen"}, "model 'digits': 'sample_rate' must be a whole number of Hz in 1..384000"),
        ({"sample_rate": 0}, "model 'digits': 'sample_rate' must be a whole number of Hz in 1..384000, got 0"),
        ({"files": []}, "model 'digits': 'files' must be an object of formats, each an object of precisions"),
        (None, "model 'digits' is list, not an object"),
    ],
    ids=["labels a string", "labels null", "sample rate a word", "sample rate 0", "files a list", "entry a list"],
)
def test_manifest_of_the_wrong_structure_exits_1(
    edge_files: EdgeFiles, export_copy: Path, change: dict[str, object] | None, problem: str
) -> None:
    """A manifest whose model entry has the wrong shape says what is wrong; exit 1, no traceback."""
    path = export_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    if change is None:
        manifest["models"]["digits"] = [manifest["models"]["digits"]]
    else:
        manifest["models"]["digits"].update(change)
    path.write_text(json.dumps(manifest))
    done = run_edge("classify", "image", "--models", str(export_copy), *_digit_args(edge_files))
    _one_line_error(done, 1, f"{path}: not an antiphon export manifest ({problem}")


def test_labels_that_do_not_match_the_outputs_exit_1(edge_files: EdgeFiles, export_copy: Path, backend: str) -> None:
    """A classifier with fewer labels than its file has outputs is refused when the model is opened; exit 1."""
    path = export_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["models"]["digits"]["labels"] = ["0", "1", "2"]
    path.write_text(json.dumps(manifest))
    done = run_edge("classify", "image", "--models", str(export_copy), "--backend", backend, *_digit_args(edge_files))
    _one_line_error(done, 1, f"{path}: not an antiphon export manifest (model 'digits' has 3 labels but ")
    assert "gives 10 outputs)" in done.stderr


@pytest.mark.parametrize("model", ["digits", "dcgan_discriminator"])
@pytest.mark.parametrize(("values", "kind"), [(["a"], "<U1"), ([0.5 + 0j], "complex128")])
def test_classify_image_refuses_npy_of_other_than_real_numbers(
    edge_files: EdgeFiles, tmp_path: Path, model: str, values: list[object], kind: str
) -> None:
    """A .npy of strings or complex numbers names the file and its type; exit 2."""
    side = 8 if model == "digits" else 28
    path = tmp_path / "odd.npy"
    np.save(path, np.array(values * side * side).reshape(side, side))
    done = run_edge("classify", "image", "--models", str(edge_files.export), "--model", model, str(path))
    _one_line_error(done, 2, f"{path}: a .npy array of {kind} values; give real numbers")
    assert "Warning" not in done.stderr


def test_classify_image_refuses_a_huge_png_without_pillows_warning(edge_files: EdgeFiles, tmp_path: Path) -> None:
    """A 10,000 x 10,000 PNG is refused by its size alone; Pillow's decompression bomb warning is not shown."""
    from PIL import Image

    path = tmp_path / "huge.png"
    Image.new("L", (10000, 10000)).save(path)
    done = run_edge("classify", "image", "--models", str(edge_files.export), str(path))
    _one_line_error(done, 2, f"{path}: image is 10000x10000; at most 16777216 pixels")
    assert "DecompressionBombWarning" not in done.stderr


def test_generate_image_refuses_a_name_other_than_png(edge_files: EdgeFiles, tmp_path: Path) -> None:
    """-o with a .jpg name is refused (the file is PNG); exit 2, no file."""
    out = tmp_path / "out.jpg"
    done = run_edge("generate", "image", "--models", str(edge_files.export), "--class", "Bag", "-o", str(out))
    _one_line_error(done, 2, f"--out: {out}: the picture is written as PNG; give a file name ending in .png")
    assert not out.exists()


def test_classify_image_refuses_a_decompression_bomb_as_too_large(edge_files: EdgeFiles, tmp_path: Path) -> None:
    """A PNG whose header claims 100,000 x 100,000 pixels (Pillow refuses it at open) is too large, not corrupt."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    done = run_edge("classify", "image", "--models", str(edge_files.export), str(path))
    _one_line_error(done, 2, f"{path}: image too large, at most 16777216 pixels (Image size (10000000000 pixels)")
    assert "corrupt" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["listen", "--device", "-"],
        ["classify", "text", "-"],
        ["chat", "--server", "grpc://127.0.0.1:1", "--retries", "0"],
    ],
)
def test_closed_standard_input_exits_2(edge_files: EdgeFiles, args: list[str]) -> None:
    """A command reading standard input started with it closed (``<&-``) says so; exit 2, no traceback."""
    command = [*edge_python(), "-m", "edge_client", *args, "--models", str(edge_files.export)]
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *command],
        capture_output=True,
        text=True,
        env=edge_env(),
        cwd=REPO,
        timeout=timeout(60),
        check=False,
    )
    _one_line_error(done, 2, "standard input: is closed; give the input through a pipe or a file")


def test_classify_audio_reads_a_long_wav_in_bounded_memory(
    edge_files: EdgeFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two minutes of 16 kHz audio in 4 channels (15 MB) are classified a chunk at a time: NumPy never holds the whole
    file nor all its samples (before, 52 MiB here, growing with the length), so an hour's recording fits a small
    board."""
    import tracemalloc

    from edge_client.cli import main

    path = tmp_path / "long.wav"
    frames = np.zeros((120 * 16000, 4), dtype=np.float32)
    frames[60 * 16000 : 61 * 16000] = tone(440, 16000)[:, None]
    path.write_bytes(wav_bytes(frames, 16000))
    del frames
    monkeypatch.setenv("GRPC_VERBOSITY", "ERROR")  # what main sets, undone after the test
    tracemalloc.start()
    try:
        code = main(
            ["classify", "audio", "--models", str(edge_files.export), "--backend", BACKENDS[0], "--json", str(path)]
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 0
    (record,) = json_lines(capsys.readouterr().out)
    assert record["file"] == str(path)
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


class _Repeated(io.RawIOBase):
    """``count`` copies of ``piece`` and then ``end``, made as they are read (never held whole)."""

    def __init__(self, piece: bytes, count: int, end: bytes) -> None:
        self.piece, self.left, self.end = piece, count, end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.left > 0:
            n = min(self.left, len(buffer) // len(self.piece))
            data = self.piece * max(1, n)
            self.left -= max(1, n)
        else:
            data, self.end = self.end, b""
        buffer[: len(data)] = data
        return len(data)


@pytest.mark.parametrize("end", [b"A dog barks.", b"A dog barks." + b" " * 300 + b"\n"])
def test_classify_text_reads_long_standard_input_in_bounded_memory(
    edge_files: EdgeFiles, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, end: bytes
) -> None:
    """16 MB of text on standard input give the label of their end (what the discriminator reads) while NumPy and
    Python hold no more than a few pieces of it (before: the bytes and the text whole, 32 MiB); a text blank only at
    its end is not taken for an empty one."""
    import tracemalloc

    from edge_client.cli import main

    monkeypatch.setenv("GRPC_VERBOSITY", "ERROR")  # what main sets, undone after the test
    flags = ["classify", "text", "--models", str(edge_files.export), "--backend", BACKENDS[0], "--json"]
    piece = b"Good night, sweet prince: and flights of angels sing thee to thy rest! "
    assert main([*flags, (piece * 20 + end).decode()]) == 0
    expected = json_lines(capsys.readouterr().out)
    source = _Repeated(piece, 16 * 2**20 // len(piece), end)
    stdin = io.TextIOWrapper(io.BufferedReader(source), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    tracemalloc.start()
    try:
        code = main([*flags, "-"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 0 and source.left == 0 and source.end == b""  # read to its end
    assert json_lines(capsys.readouterr().out) == expected
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_every_command_help_ends_with_examples() -> None:
    """Each command's --help gives its flags' defaults and ends with example command lines of that command, one a
    line as written."""
    from edge_client.cli import build_parser

    def leaves(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            yield parser.prog, parser
        for action in actions:
            for sub in action.choices.values():
                yield from leaves(sub)

    found = dict(leaves(build_parser()))
    assert set(found) == {
        f"antiphon-edge {c}"
        for c in ("classify audio", "classify text", "classify image", "generate image", "listen", "chat", "bench")
    }
    for prog, parser in found.items():
        text = parser.format_help()
        examples = text[text.index("\nexamples:\n") :].splitlines()[2:]
        assert examples and all(line.startswith("  ") and prog in line for line in examples), text
        assert "(default: " in text


def test_ctrl_c_while_the_command_line_loads_is_one_line() -> None:
    """SIGINT while antiphon-edge still imports its modules (seconds on a small board) ends it with 130 and one
    line, no traceback."""
    code = (
        "import builtins, os, signal, sys\n"
        "real = builtins.__import__\n"
        "def importing(name, *args, **kwargs):\n"
        "    if name == 'edge_client.runtime':\n"  # Ctrl-C while the command line's modules load
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = importing\n"
        "from edge_client.start import main\n"
        "sys.exit(main())\n"
    )
    done = subprocess.run(
        [*edge_python(), "-c", code, "--help"], capture_output=True, text=True, env=edge_env(), cwd=REPO, check=False
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr == "antiphon-edge: interrupted\n"
