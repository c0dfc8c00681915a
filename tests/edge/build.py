"""Build the files the edge tests run against (needs torch: the main virtualenv).

``python -m tests.edge.build OUT`` writes OUT/export/ (manifest.json and every file) and OUT/text.safetensors
(the text checkpoint the tests' server loads):

- ``digits``: the committed digits CNN; ``text_step`` and ``text_small_step``: the tiny text LSTM of the test
  suite (trained in seconds on the tiny dialogue corpus);
- ``kws``: a tiny keyword spotter with the real model's interface (``pcm`` float32 (1, 16000) at 16 kHz ->
  ``logits`` (1, 12), labels zero..nine, unknown, silence), trained for seconds on espeak-ng renderings; where a
  real KWS export (``models/kws``) is available through ``antiphon export``, that one is used instead;
- ``textdisc``: a tiny text discriminator with the real model's interface (int32 ids (1, 256) -> logits (1, 2),
  labels human/machine, vocabulary in the manifest), trained for seconds to tell the corpus's lines from the same
  lines with the letters of each word shuffled.

Every file is exported and checked by the project's own export pipeline (float parity with torch, int8 label
agreement) and listed in the manifest with its sha256.
"""

from __future__ import annotations

import json
import random
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
from export.specs import ExportSpec, text_step_spec

REPO = Path(__file__).resolve().parents[2]
DIGITS_CHECKPOINT = REPO / "models" / "digits" / "digits_cnn.safetensors"
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


def train_tiny_kws(seed: int = 0, steps: int = 800) -> tuple[TinyKws, np.ndarray, np.ndarray]:
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
        input_names=("pcm",),
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


# -- a tiny text discriminator -----------------------------------------------
class TinyTextDisc(nn.Module):
    """(1, 256) int32 ids -> (1, 2) logits: embedding, one convolution, mean over the text (padding masked)."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 16)
        self.conv = nn.Conv1d(16, 32, 3, padding=1)
        self.head = nn.Linear(32, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).to(torch.float32)[:, None, :]  # (B, 1, T)
        x = self.embed(ids).transpose(1, 2)  # (B, 16, T)
        x = torch.relu(self.conv(x)) * mask  # (B, 32, T)
        pooled = x.sum(dim=2) / mask.sum(dim=2).clamp(min=1.0)  # (B, 32)
        return self.head(pooled)


def _scrambled(line: str, rng: random.Random) -> str:
    """The line with the letters of each word shuffled: what a broken generator might write."""
    return " ".join("".join(rng.sample(word, len(word))) for word in line.split())


def textdisc_spec(corpus: str, seed: int = 0) -> ExportSpec:
    rng = random.Random(seed)
    lines = [line for line in corpus.splitlines() if len(line) > 20]
    chars = ["<pad>", "\ufffd", *sorted(set(corpus) - {"\n"})]
    index = {c: i for i, c in enumerate(chars)}

    def encode(text: str) -> np.ndarray:
        ids = [index.get(c, 1) for c in text[:256]]
        return np.asarray(ids + [0] * (256 - len(ids)), dtype=np.int32)

    texts = [(line, 0) for line in lines[:400]] + [(_scrambled(line, rng), 1) for line in lines[400:800]]
    x = torch.from_numpy(np.stack([encode(t) for t, _ in texts]))
    y = torch.tensor([label for _, label in texts])
    torch.manual_seed(seed)
    model = TinyTextDisc(len(chars))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(400):
        batch = torch.randint(0, len(x), (64,))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    nprng = np.random.default_rng(seed)
    held = list(range(0, len(x), 7))
    return ExportSpec(
        name="textdisc",
        kind="tiny_textdisc",
        checkpoint=DIGITS_CHECKPOINT,
        module=model,
        input_names=("ids",),
        output_names=("logits",),
        real_inputs=[(x[i].numpy()[None],) for i in held],
        random_inputs=[(nprng.integers(0, len(chars), (1, 256)).astype(np.int32),) for _ in range(8)],
        targets=y[held].numpy(),
        calibration=None,
        info={
            "labels": ["human", "machine"],
            "chars": chars,
            "pad_id": 0,
            "unknown_id": 1,
            "input": "character ids by the vocabulary, padded with pad_id to 256",
            "output": "logits over labels",
        },
    )


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


# -- everything --------------------------------------------------------------
def build(out: Path, text_checkpoint: Path, corpus: str, seed: int = 0) -> Path:
    """Write OUT/export (manifest and files) and OUT/text.safetensors; returns OUT."""
    export_dir = out / "export"
    if export_dir.exists():
        shutil.rmtree(export_dir)
    opts = ExportOptions(
        out=export_dir,
        models=("digits", "text_step"),
        formats=("onnx", "tflite"),
        int8=True,
        digits_checkpoint=DIGITS_CHECKPOINT,
        text_checkpoint=text_checkpoint,
        text=corpus,
        seed=seed,
    )
    started = time.monotonic()
    manifest: dict[str, Any] = export_models(opts)
    print(f"digits, text_step: {time.monotonic() - started:.1f} s", file=sys.stderr)
    small = text_step_spec(text_checkpoint, corpus, seed)
    small.name = "text_small_step"
    manifest["models"]["text_small_step"] = _export_one(small, opts)
    print(f"text_small_step: {time.monotonic() - started:.1f} s", file=sys.stderr)
    kws, x, y = train_tiny_kws(seed)
    print(f"kws trained: {time.monotonic() - started:.1f} s", file=sys.stderr)
    # float only: int8 (dynamic or static) of this tiny model's log-mel front end loses its labels
    manifest["models"]["kws"] = _export_one(kws_spec(kws, x, y, seed), replace(opts, int8=False))
    print(f"kws: {time.monotonic() - started:.1f} s", file=sys.stderr)
    disc = textdisc_spec(corpus, seed)
    manifest["models"]["textdisc"] = _export_one(disc, opts)
    # the vocabulary goes in after the checks: export's checks read a "vocabulary" as a text generator's
    manifest["models"]["textdisc"]["vocabulary"] = manifest["models"]["textdisc"].pop("chars")
    print(f"textdisc: {time.monotonic() - started:.1f} s", file=sys.stderr)
    (export_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.copy(text_checkpoint, out / "text.safetensors")
    write_digit_samples(out / "digits")
    return out


def main(argv: list[str]) -> int:
    from server.text.train import TextTrainer, TextTrainOptions
    from tests.conftest import make_dialogue

    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    corpus_path = out / "dialogue.txt"
    corpus_path.write_text(make_dialogue(600), encoding="utf-8")
    checkpoint = out / "tiny.safetensors"
    TextTrainer(
        TextTrainOptions(
            corpus=corpus_path,
            out=checkpoint,
            steps=60,
            device="cpu",
            precision="fp32",
            batch_size=8,
            seq_len=32,
            lr=1e-2,
            warmup_steps=5,
            eval_every=1000,
            progress=False,
            model={"hidden_size": 32, "num_layers": 2, "embed_dim": 16},
        )
    ).train()
    build(out, checkpoint, corpus_path.read_text(encoding="utf-8"))
    print(out / "export")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
