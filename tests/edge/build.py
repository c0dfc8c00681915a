"""Build the files the edge tests run against (needs torch: the main virtualenv).

``python -m tests.edge.build OUT`` writes OUT/export/ (manifest.json and every file), OUT/text.safetensors and
OUT/audio.safetensors (the tiny text LSTM and WaveNet the tests' server loads), OUT/digits/ (held-out digit
images), OUT/textdisc.json (texts with torch's label) and OUT/images/ (torch's images and verdicts):

- ``digits``: the committed digits CNN; ``text_step`` and ``text_small_step``: the tiny text LSTM of the test
  suite (trained in seconds on the tiny dialogue corpus); ``textdisc``: the project's text discriminator trained
  for seconds against that LSTM's samples (as tests/conftest.py's fixture);
- ``kws``: the committed keyword spotter (``models/kws/kws_dscnn.safetensors``) where it exists; else a tiny one
  with its interface (``audio`` float32 (1, 16000) at 16 kHz -> ``logits`` (1, 12), labels zero..nine, unknown,
  silence), trained for seconds on espeak-ng renderings.
- ``dcgan_generator`` and ``dcgan_discriminator``: the committed DCGAN (``models/image/dcgan.safetensors``), every
  format and precision, checked on 200 seeds (the discriminator: 100 test and 100 generated images);
  ``vae_decoder``: the committed VAE's decoder, ONNX float only (the unconditional generator's path). OUT/images/
  holds torch's images of a few seeds (drawn by the server's sampler) and PNG images with the torch discriminator's
  verdict (OUT/images/images.json).

Every file is exported and checked by the project's own export pipeline (float parity with torch, int8 label
agreement) and listed in the manifest with its sha256.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.pipeline import MANIFEST, ExportOptions, _export_one, export_models
from export.specs import ExportSpec
from tests.conftest import train_tiny_textdisc

REPO = Path(__file__).resolve().parents[2]
DIGITS_CHECKPOINT = REPO / "models" / "digits" / "digits_cnn.safetensors"
REAL_KWS = REPO / "models" / "kws" / "kws_dscnn.safetensors"
DCGAN_CHECKPOINT = REPO / "models" / "image" / "dcgan.safetensors"
VAE_CHECKPOINT = REPO / "models" / "image" / "vae.safetensors"
IMAGE_SAMPLES = 200  # the image models' evaluation set here (the export's default is 1,000)
JUDGED_CLASS = "Trouser"  # the class of the images the discriminator test judges
GENERATED_SEEDS = [3, 4, 5, 6]  # dcgan_generator's images of JUDGED_CLASS kept from torch
KWS_LABELS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "unknown", "silence")
OTHER_WORDS = (
    "king",
    "night",
    "good",
    "lord",
    "hither",
    "shall",
    "love",
    "come",
    "sir",
    "father",
    "daughter",
    "storm",
    "crown",
    "heaven",
    "mercy",
    "peace",
    "speak",
    "nothing",
    "honest",
    "fool",
    "castle",
    "sword",
    "letter",
    "blind",
)
WINDOW = 16000


# -- a tiny keyword spotter --------------------------------------------------
class TinyKws(nn.Module):
    """(1, 16000) PCM -> (1, 12) logits: the project's log-mel (with the mel matrix on the right, which dynamic
    int8 TFLite can run), fixed normalization, two strided convolutions, max over time."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        from server.audio.features import LogMel

        features = LogMel()
        self.config = features.config
        self.register_buffer("basis", features.basis.clone())
        self.register_buffer("mel_t", features.mel.t().contiguous().clone())  # (n_freqs, n_mels)
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        self.conv1 = nn.Conv1d(40, 48, 5, stride=2)
        self.conv2 = nn.Conv1d(48, 48, 5, stride=2)
        self.head = nn.Linear(48, len(KWS_LABELS))

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(pcm))

    def features(self, pcm: torch.Tensor) -> torch.Tensor:
        spec = nn.functional.conv1d(pcm[:, None, :], self.basis, stride=self.config.hop_length)
        real, imag = spec.split(self.config.n_freqs, dim=1)  # (B, F, 97) each
        power = (real * real + imag * imag).transpose(1, 2)  # (B, 97, F)
        mel = torch.log(torch.matmul(power, self.mel_t) + self.config.log_floor)  # (B, 97, 40)
        return (mel.transpose(1, 2) - self.mean) / self.std  # (B, 40, 97)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))  # (B, 48, 47)
        x = torch.relu(self.conv2(x))  # (B, 48, 22)
        return self.head(x.amax(dim=2))  # (B, 12)


def _place(word: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    clip = np.zeros(WINDOW, dtype=np.float32)
    word = word[:WINDOW]
    start = int(rng.integers(0, WINDOW - len(word) + 1))
    clip[start : start + len(word)] = word
    level = float(rng.choice([0.0, rng.uniform(0.0, 0.005)]))  # digital silence or a little noise around it
    return clip + rng.normal(0, level, WINDOW).astype(np.float32)


def _cut(word: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The word with 45-80% of it outside the window, at the start or the end."""
    keep = int(len(word) * rng.uniform(0.2, 0.55))
    clip = np.zeros(WINDOW, dtype=np.float32)
    if rng.random() < 0.5:
        clip[:keep] = word[len(word) - keep :]
    else:
        clip[WINDOW - keep :] = word[:keep]
    return clip


def kws_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clips (N, 16000) and labels: each number word in 20 training voices, other words, quiet noise."""
    from server.data.speech import random_rendering, render, trim_silence

    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for label, word in enumerate(KWS_LABELS[:10]):
        for _ in range(20):
            audio = trim_silence(render(word, random_rendering(rng, "train")))
            for _ in range(3):
                clips.append(_place(audio, rng))
                labels.append(label)
            clips.append(_cut(audio, rng))  # a word half out of the window is no word yet (listen slides over it)
            labels.append(KWS_LABELS.index("unknown"))
    for word in OTHER_WORDS:
        for _ in range(6):
            audio = trim_silence(render(word, random_rendering(rng, "train")))
            for _ in range(2):
                clips.append(_place(audio, rng))
                labels.append(KWS_LABELS.index("unknown"))
    for _ in range(120):
        clips.append(rng.normal(0, float(rng.choice([0.0, rng.uniform(0.0, 0.01)])), WINDOW).astype(np.float32))
        labels.append(KWS_LABELS.index("silence"))
    return np.stack(clips), np.asarray(labels)


def train_tiny_kws(seed: int = 0, steps: int = 600) -> tuple[TinyKws, np.ndarray, np.ndarray]:
    from server.audio.features import log_mel_numpy

    torch.manual_seed(seed)
    x, y = kws_data(seed)
    feats = np.stack([log_mel_numpy(c) for c in x[:64]])
    model = TinyKws(float(feats.mean()), float(feats.std()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    with torch.no_grad():  # the front end is fixed: train the rest on its features
        ft = model.features(torch.from_numpy(x))
    yt = torch.from_numpy(y)
    for _ in range(steps):
        batch = torch.from_numpy(rng.integers(0, len(x), 64))
        loss = nn.functional.cross_entropy(model.classify(ft[batch]), yt[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), x, y


def kws_spec(model: TinyKws, x: np.ndarray, y: np.ndarray, seed: int) -> ExportSpec:
    rng = np.random.default_rng(seed + 1)
    pick = rng.permutation(len(x))
    return ExportSpec(
        name="kws",
        kind="tiny_kws",
        checkpoint=DIGITS_CHECKPOINT,  # no checkpoint file of its own: the manifest records this one's hash
        module=model,
        input_names=("audio",),
        output_names=("logits",),
        real_inputs=[(x[i][None],) for i in pick[:120]],
        random_inputs=[(rng.uniform(-0.5, 0.5, (1, WINDOW)).astype(np.float32),) for _ in range(8)],
        targets=y[pick[:120]],
        calibration=None,  # dynamic int8: static int8 of the log-mel front end loses the labels
        info={
            "labels": list(KWS_LABELS),
            "sample_rate": 16000,
            "input": "one second of mono PCM, float32 in [-1, 1] at 16 kHz",
            "output": "logits over labels",
        },
    )


# -- the text discriminator -------------------------------------------------
def write_textdisc_samples(spec: ExportSpec, path: Path) -> None:
    """Texts of textdisc's evaluation windows with torch's label for each, for the edge to agree with."""
    vocab = spec.info["vocabulary"]
    labels = spec.info["labels"]
    rows = []
    pick = np.linspace(0, len(spec.real_inputs) - 1, 12).astype(int)
    for i in sorted(set(pick.tolist())):
        (ids,) = spec.real_inputs[i]
        text = "".join(vocab[j] for j in ids[0])
        (logits,) = spec.reference(spec.real_inputs[i])
        rows.append({"text": text, "torch_label": labels[int(np.argmax(logits))]})
    path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


def write_digit_samples(folder: Path, count: int = 10) -> None:
    """Held-out images of the committed digits model's test split as ``{index}_{label}.npy`` (intensities in
    [0, 16])."""
    from sklearn.datasets import load_digits

    from server.vision.checkpoint import load_digits_model

    _, meta = load_digits_model(DIGITS_CHECKPOINT)
    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    for index in list(meta["data"]["test_indices"])[:count]:
        np.save(folder / f"{index}_{digits.target[index]}.npy", digits.images[index].astype(np.float32))


def train_tiny_audio(out: Path) -> Path:
    """The server tests' tiny WaveNet (30 steps on a few espeak-ng renderings): the tests' server speaks with it."""
    from server.audio.train import AudioTrainer, AudioTrainOptions
    from tests.server.conftest import TINY_AUDIO_MODEL

    opts = AudioTrainOptions(
        out=out, steps=30, device="cpu", precision="fp32", batch_size=4, segment=800, lr=1e-2, warmup_steps=5,
        eval_every=1000, progress=False, lines=6, number_renderings=1, heldout_lines=2, heldout_number_renderings=0,
        model=TINY_AUDIO_MODEL,
    )  # fmt: skip
    AudioTrainer(opts).train()
    return out


# -- the image models --------------------------------------------------------
def export_images(out: Path, export_dir: Path, opts: ExportOptions) -> dict[str, Any]:
    """dcgan_generator and dcgan_discriminator (every format, float and int8) and vae_decoder (ONNX float) into
    ``export_dir``; their manifest entries."""
    image = replace(
        opts,
        out=out / "image",
        models=("dcgan_generator", "dcgan_discriminator"),
        dcgan_checkpoint=DCGAN_CHECKPOINT,
        image_samples=IMAGE_SAMPLES,
    )
    models: dict[str, Any] = export_models(image)["models"]
    vae = replace(
        image, out=out / "vae", models=("vae_decoder",), formats=("onnx",), int8=False, vae_checkpoint=VAE_CHECKPOINT
    )
    models.update(export_models(vae)["models"])
    for folder in (out / "image", out / "vae"):
        for file in folder.iterdir():
            if file.name != MANIFEST:  # the partial manifest's entries are in the one returned
                shutil.move(file, export_dir / file.name)
    return models


def write_image_samples(folder: Path, seed: int = 0) -> None:
    """OUT/images: torch's images of GENERATED_SEEDS (class JUDGED_CLASS) and of the VAE's seeds 0, 1, drawn by the
    server's sampler (``server.image.sampling``), as .npy; and 8-bit PNGs of JUDGED_CLASS (real test images,
    generated ones) whose verdict the torch discriminator gets right and is sure of (|logit| > 0.15), two of
    each, with torch's logit of the 8-bit image. images.json says which is which."""
    from PIL import Image

    from server.image.checkpoint import load_image_model
    from server.image.data import load_images
    from server.image.sampling import open_sampler

    folder.mkdir(parents=True, exist_ok=True)
    gan = open_sampler(DCGAN_CHECKPOINT)
    label = gan.labels.index(JUDGED_CLASS)
    (frame,) = gan.sample(GENERATED_SEEDS, [label] * len(GENERATED_SEEDS))
    np.save(folder / "dcgan.npy", frame.images)  # (4, 28, 28)
    (vae_frame,) = open_sampler(VAE_CHECKPOINT).sample([0, 1])
    np.save(folder / "vae.npy", vae_frame.images)

    model, _ = load_image_model(DCGAN_CHECKPOINT, "dcgan")
    test = load_images("fashion", "test")
    real = test.images[test.labels == label][:40]
    (fake,) = gan.sample(list(range(100, 140)), [label] * 40)
    candidates = [(f"real_{i}", x) for i, x in enumerate(real)] + [(f"gen_{i}", x) for i, x in enumerate(fake.images)]
    candidates += [(f"seed_{s}", x) for s, x in zip(GENERATED_SEEDS, frame.images, strict=True)]
    rounded = np.stack([np.round(x * 255) / 255 for _, x in candidates]).astype(np.float32)  # what a PNG holds
    with torch.no_grad():
        logits = model.discriminator(torch.from_numpy(rounded), torch.full((len(rounded),), label)).numpy()
    sure_real = [i for i in range(len(real)) if logits[i] > 0.15][:2]  # real images the critic calls real
    sure_fake = [i for i in range(len(real), len(real) + 40) if logits[i] < -0.15][:2]  # generated, generated
    judged = []
    for i in sure_real + sure_fake:
        name, _ = candidates[i]
        Image.fromarray(np.round(rounded[i] * 255).astype(np.uint8)).save(folder / f"{name}.png")
        judged.append({"file": f"{name}.png", "torch_label": "real" if logits[i] > 0 else "generated",
                       "logit": float(logits[i])})  # fmt: skip
    record = {
        "class": JUDGED_CLASS,
        "dcgan": {"file": "dcgan.npy", "seeds": GENERATED_SEEDS, "logits": [float(v) for v in logits[-4:]]},
        "vae": {"file": "vae.npy", "seeds": [0, 1]},
        "judged": judged,
    }
    (folder / "images.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


# -- everything --------------------------------------------------------------
def build(out: Path, text_checkpoint: Path, corpus: Path, seed: int = 0) -> Path:
    """Write OUT/export (manifest and files), OUT/text.safetensors, OUT/digits/*.npy and OUT/textdisc.json;
    returns OUT."""
    export_dir = out / "export"
    if export_dir.exists():
        shutil.rmtree(export_dir)
    started = time.monotonic()
    cache = os.environ.get("ANTIPHON_CACHE")
    os.environ["ANTIPHON_CACHE"] = str(out / "cache")  # the discriminator's samples of the tiny LSTM, kept apart
    try:
        disc = train_tiny_textdisc(out / "textdisc.safetensors", text_checkpoint, corpus)
        manifest, opts = _export_all(out, export_dir, text_checkpoint, corpus, disc, seed, started)
    finally:
        if cache is None:
            del os.environ["ANTIPHON_CACHE"]
        else:
            os.environ["ANTIPHON_CACHE"] = cache
    if REAL_KWS.is_file():  # the committed keyword spotter, checked on 20 held-out clips of each label
        from server.kws.data import KWSDataConfig

        kws_opts = replace(
            opts,
            models=("kws",),
            kws_checkpoint=REAL_KWS,
            kws_data=KWSDataConfig(per_number=10, unknown_words=40, heldout_per_label=20),
            kws_test_per_label=0,
        )
        manifest["models"]["kws"] = export_models(replace(kws_opts, out=out / "kws"))["models"]["kws"]
        for file in (out / "kws").glob("kws*"):
            shutil.move(file, export_dir / file.name)
    else:
        kws, x, y = train_tiny_kws(seed)
        # float only: int8 (dynamic or static) of this tiny model's log-mel front end loses its labels
        manifest["models"]["kws"] = _export_one(kws_spec(kws, x, y, seed), replace(opts, int8=False))
    print(f"kws: {time.monotonic() - started:.1f} s", file=sys.stderr)
    manifest["models"].update(export_images(out, export_dir, opts))
    write_image_samples(out / "images", seed)
    print(f"image models: {time.monotonic() - started:.1f} s", file=sys.stderr)
    (export_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.copy(text_checkpoint, out / "text.safetensors")
    train_tiny_audio(out / "audio.safetensors")
    print(f"audio: {time.monotonic() - started:.1f} s", file=sys.stderr)
    write_digit_samples(out / "digits")
    return out


def _export_all(
    out: Path, export_dir: Path, text_checkpoint: Path, corpus: Path, disc: Path, seed: int, started: float
) -> tuple[dict[str, Any], ExportOptions]:
    from export.specs import textdisc_spec
    from server.data.shakespeare import load_corpus

    print(f"textdisc trained: {time.monotonic() - started:.1f} s", file=sys.stderr)
    held_out = load_corpus(corpus).valid_text
    opts = ExportOptions(
        out=export_dir,
        models=("digits", "text_step", "textdisc"),
        formats=("onnx", "tflite"),
        int8=True,
        digits_checkpoint=DIGITS_CHECKPOINT,
        text_checkpoint=text_checkpoint,
        small_text_checkpoint=text_checkpoint,
        textdisc_checkpoint=disc,
        text=held_out,
        seed=seed,
    )
    manifest: dict[str, Any] = export_models(opts)
    # the tiny LSTM again as the small step, float only (the fallback test needs it by name; int8 is text_step's)
    small = replace(opts, out=out / "small", models=("text_small_step",), int8=False)
    manifest["models"]["text_small_step"] = export_models(small)["models"]["text_small_step"]
    for file in (out / "small").glob("text_small_step*"):
        shutil.move(file, export_dir / file.name)
    print(f"digits, text steps, textdisc: {time.monotonic() - started:.1f} s", file=sys.stderr)
    write_textdisc_samples(textdisc_spec(disc, text_checkpoint, held_out, seed), out / "textdisc.json")
    return manifest, opts


def main(argv: list[str]) -> int:
    from server.text.options import TextTrainOptions
    from server.text.train import TextTrainer
    from tests.conftest import make_dialogue

    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    corpus_path = out / "dialogue.txt"
    corpus_path.write_text(make_dialogue(600), encoding="utf-8")
    checkpoint = out / "tiny.safetensors"
    TextTrainer(TextTrainOptions.dry_run(corpus=corpus_path, out=checkpoint)).train()  # the tests' tiny LSTM
    build(out, checkpoint, corpus_path)
    print(out / "export")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
