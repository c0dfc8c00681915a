"""Images on the device: a latent generator's samples from seeds, and the GAN discriminator's verdict.

A generator (manifest kind ``image_generator``: the DCGAN's generator, the VAE's decoder) maps a latent ``z``
(1, Z), and for a class-conditional one a class index ``label`` (1,) int32, to ``images`` (1, H, W) float32 in
[0, 1] (0 black). The latent of a seed is the first Z standard normals of ``np.random.default_rng(seed)``, as
float32, times the manifest's ``latent_scale`` (0.7 for the DCGAN): what the server's sampler draws
(``server.image.sampling.seed_latents``), so the same seed and
class give the server's image (NumPy's PCG64 normals are the same on NumPy 1 and 2; tested against torch's images).

The discriminator (kind ``image_discriminator``) maps ``images`` (1, H, W) in [0, 1] to ``logits`` (1, K): its
realness logit under each of the K classes. An image is judged under one class (``--class``), or by the mean of the
K logits when its class is unknown; P(real) is the logit's sigmoid, and the verdict is real when it is above one
half.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_client.manifest import Model
from server.errors import InvalidArgument, ModelFileError

SEED_MAX = 2**63 - 1
VERDICTS = ("real", "generated")


def latents(seeds: Sequence[int], latent: int, scale: float = 1.0) -> np.ndarray:
    """Each seed's latent (N, Z) float32: its own generator's first Z standard normals times the model's latent
    scale (the server's draw, ``server.image.sampling.seed_latents``)."""
    z = np.stack([np.random.default_rng(s).standard_normal(latent).astype(np.float32) for s in seeds])
    return z * np.float32(scale)


def _key(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.strip().lower())


def resolve_class(labels: Sequence[str], value: str | None, flag: str = "--class") -> int | None:
    """The class index ``value`` names (an index, or a label name: case and -, _ or spaces ignored), None when
    ``value`` is None. An unknown one lists the valid ones."""
    if value is None:
        return None
    known = ", ".join(f"{i} {name}" for i, name in enumerate(labels))
    if not labels:
        raise InvalidArgument(flag, "this model is unconditional: it takes no class")
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        index = int(text)
        if 0 <= index < len(labels):
            return index
        raise InvalidArgument(flag, f"class index {index} is out of range; known: {known}")
    matches = [i for i, name in enumerate(labels) if _key(name) == _key(text)]
    if not matches:
        raise InvalidArgument(flag, f"unknown class {value!r}; known: {known}")
    return matches[0]


def _require_kind(model: Model, kind: str, what: str) -> None:
    """InvalidArgument naming ``--model`` unless the manifest says ``model`` is of ``kind`` (``what``, in words)."""
    found = model.entry.get("kind")
    if found != kind:
        raise InvalidArgument("--model", f"{model.name!r} is a model of kind {found}, not {what}")


def _entry_int(model: Model, key: str) -> int:
    value = model.entry.get(key)
    if not isinstance(value, int) or value < 1:
        raise ModelFileError(f"model {model.name!r}: the manifest has no {key}")
    return value


class ImageGenerator:
    """A latent generator of the manifest: ``generate(seeds, label)`` -> images (N, H, W) float32 in [0, 1]."""

    def __init__(self, model: Model) -> None:
        _require_kind(model, "image_generator", "an image generator")
        self.model = model
        self.latent = _entry_int(model, "latent")
        self.latent_scale = float(model.entry.get("latent_scale", 1.0))  # manifests before it was recorded: 1
        self.image_size = _entry_int(model, "image_size")
        self.labels = [str(v) for v in model.entry.get("labels") or []]
        self.conditional = bool(model.entry.get("conditional", bool(self.labels)))
        if self.conditional and not self.labels:
            raise ModelFileError(f"model {model.name!r}: a class-conditional generator without labels")

    def label(self, value: str | None) -> int | None:
        """The class index of ``--class``: required by a conditional generator, refused by an unconditional one."""
        if not self.conditional:
            if value is not None:
                raise InvalidArgument("--class", f"{self.model.name} is unconditional: give no --class")
            return None
        if value is None:
            known = ", ".join(f"{i} {name}" for i, name in enumerate(self.labels))
            raise InvalidArgument("--class", f"{self.model.name} is class-conditional: give one of {known}")
        return resolve_class(self.labels, value)

    def generate(self, seeds: Sequence[int], label: int | None) -> np.ndarray:
        """One image per seed (N, H, W) float32 in [0, 1], of class ``label`` for a conditional generator."""
        for seed in seeds:
            if not 0 <= seed <= SEED_MAX:
                raise InvalidArgument("--seed", f"each seed must be in [0, 2**63), got {seed}")
        z = latents(seeds, self.latent, self.latent_scale)  # (N, Z)
        out = []
        for row in z:
            args = [row[None]]
            if self.conditional:
                args.append(np.asarray([label], dtype=np.int32))
            (images,) = self.model.runner(*args)[:1]
            out.append(np.asarray(images, dtype=np.float32).reshape(self.image_size, self.image_size))
        return np.clip(np.stack(out), 0.0, 1.0)


@dataclass(frozen=True)
class Judgement:
    label: str  # real or generated
    score: float  # the probability of the label
    p_real: float
    logit: float
    under: str | None  # the class it was judged under; None: the mean over classes

    def to_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "score": round(self.score, 4),
            "p_real": round(self.p_real, 4),
            "logit": round(self.logit, 4),
            "class": self.under,
        }


class RealnessJudge:
    """The GAN discriminator of the manifest: ``judge(image, label)`` -> real or generated."""

    def __init__(self, model: Model) -> None:
        _require_kind(model, "image_discriminator", "an image discriminator")
        self.model = model
        self.image_size = _entry_int(model, "image_size")
        self.labels = [str(v) for v in model.entry.get("labels") or []]

    def judge(self, image: np.ndarray, label: int | None) -> Judgement:
        """``image`` (H, W) in [0, 1] under class ``label`` (None: the mean of every class's logit)."""
        (logits,) = self.model.runner(image.reshape(1, self.image_size, self.image_size).astype(np.float32))[:1]
        row = np.asarray(logits, dtype=np.float64).reshape(-1)  # (K,)
        logit = float(row[label]) if label is not None else float(row.mean())
        p_real = float(1.0 / (1.0 + np.exp(-logit)))
        verdict = VERDICTS[0] if p_real > 0.5 else VERDICTS[1]
        under = self.labels[label] if label is not None and self.labels else None
        return Judgement(verdict, p_real if verdict == VERDICTS[0] else 1.0 - p_real, p_real, logit, under)
