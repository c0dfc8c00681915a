"""Frames from the image models: the sampling API the serving engine streams from.

Torch stays behind the boundary: a sampler is built from a checkpoint (:func:`open_sampler`), takes plain Python
values and NumPy arrays, validates its knobs (raising :class:`~server.errors.InvalidArgument` naming the knob), and
yields :class:`Frame` objects whose ``images`` are NumPy float32 (B, H, W) in [0, 1], one row per seed.

- :meth:`LatentSampler.sample` (DCGAN, VAE, VAE-GAN): one frame, a batch of samples.
- :meth:`LatentSampler.walk`: a latent walk, ``frames`` frames along the great circle between two seeds' latents.
- :meth:`GibbsSampler.chains` (RBM): one frame per Gibbs step, batched over chains.
- :meth:`DeepDream.dream` (the evaluator): one frame per gradient step.

Every random draw of a row comes from that row's own generator, seeded by its seed alone, so the same seed gives
the same frames whether it is sampled alone or in a batch with others (up to float rounding of batched arithmetic
for the continuous models; the RBM's binary states are compared in float64 and agree exactly in practice).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from server.errors import InvalidArgument
from server.image.evaluator import LAYERS, Evaluator
from server.image.gan import DCGAN
from server.image.rbm import BernoulliRBM
from server.image.vae import VAEGAN, ConvVAE

MAX_BATCH = 64
MAX_STEPS = 10000
SEED_RANGE = (0, 2**63 - 1)


@dataclass(frozen=True)
class Frame:
    index: int  # 0, 1, ... within the stream
    images: np.ndarray  # (B, H, W) float32 in [0, 1]
    final: bool  # the stream's last frame


@dataclass(frozen=True)
class ImageModelInfo:
    """What a client may ask of a model: its family, its image side, its class names (empty: unconditional)."""

    family: str  # "dcgan", "vae", "vaegan", "rbm", "dream"
    image_size: int
    labels: tuple[str, ...]
    latent: int | None  # None: no latent space (RBM, Deep Dream)


def check_seeds(seeds: Sequence[int], name: str = "seeds") -> list[int]:
    """1..MAX_BATCH integer seeds in [0, 2**63)."""
    seeds = list(seeds)
    if not 1 <= len(seeds) <= MAX_BATCH:
        raise InvalidArgument(name, f"give 1 to {MAX_BATCH} seeds, got {len(seeds)}")
    for seed in seeds:
        if (
            isinstance(seed, bool)
            or not isinstance(seed, int | np.integer)
            or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]
        ):
            raise InvalidArgument(name, f"each seed must be an integer in [0, 2**63), got {seed!r}")
    return [int(s) for s in seeds]


def check_count(value: int, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
        raise InvalidArgument(name, f"must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# -- GAN, VAE, VAE-GAN -------------------------------------------------------------------------------------------
# Each family's latent scale (the "truncation" of BigGAN, the temperature of Glow): a GAN's samples near the middle of
# its latent space are its most typical, so the DCGAN draws z at 0.7 of a standard normal. Chosen on the training
# images, not the test split (benchmarks/RESULTS.md): at 0.7 the evaluator recognises the asked class 96% as often as
# in real images (88% at 1.0) and the Frechet distance is lowest; a VAE's decoder is trained on its prior and is best
# at 1.0.
LATENT_SCALE = {"dcgan": 0.7, "vae": 1.0, "vaegan": 1.0}


def seed_latents(seeds: Sequence[int], latent: int, scale: float) -> np.ndarray:
    """Each seed's latent (N, Z) float32: the first Z standard normals of ``np.random.default_rng(seed)`` as float32,
    times ``scale`` (in float32). The edge client draws the same (``edge_client.imagegen.latents``)."""
    normals = np.stack([np.random.default_rng(s).standard_normal(latent).astype(np.float32) for s in seeds])
    return normals * np.float32(scale)


class LatentSampler:
    """Images decoded from scaled standard normal latents (:data:`LATENT_SCALE`): the DCGAN's generator, the VAE's
    or the VAE-GAN's decoder."""

    def __init__(self, model: DCGAN | ConvVAE | VAEGAN, labels: Sequence[str] = ()) -> None:
        self.model = model.eval()
        if isinstance(model, DCGAN):
            family, size, latent = "dcgan", model.config.image_size, model.config.latent
            self.labels = tuple(labels) if model.config.classes else ()
        else:
            vae = model.vae if isinstance(model, VAEGAN) else model
            family = "vaegan" if isinstance(model, VAEGAN) else "vae"
            size, latent, self.labels = vae.config.image_size, vae.config.latent, ()
        if isinstance(model, DCGAN) and model.config.classes and len(self.labels) != model.config.classes:
            self.labels = tuple(str(i) for i in range(model.config.classes))
        self.info = ImageModelInfo(family, size, self.labels, latent)
        self.latent_scale = LATENT_SCALE[family]

    def latents(self, seeds: Sequence[int]) -> np.ndarray:
        """Each seed's latent (B, Z) float32: its own generator's first Z standard normals, times the family's
        latent scale."""
        return seed_latents(seeds, self.info.latent or 0, self.latent_scale)

    def _check_labels(self, labels: Sequence[int] | None, count: int) -> list[int] | None:
        if not self.labels:
            if labels is not None:
                raise InvalidArgument("labels", f"the {self.info.family} is unconditional: give no labels")
            return None
        if labels is None or len(labels) != count:
            raise InvalidArgument("labels", f"the {self.info.family} is class-conditional: give one label per seed")
        for label in labels:
            check_count(label, "labels", 0, len(self.labels) - 1)
        return [int(v) for v in labels]

    @torch.no_grad()
    def _decode(self, z: np.ndarray, labels: list[int] | None) -> np.ndarray:
        device = _device(self.model)
        zt = torch.from_numpy(z).to(device)  # (B, Z)
        if isinstance(self.model, DCGAN):
            lab = None if labels is None else torch.tensor(labels, device=device)
            images = self.model.generator(zt, lab)  # (B, H, W)
        else:
            vae = self.model.vae if isinstance(self.model, VAEGAN) else self.model
            images = vae.decode(zt)  # (B, H, W)
        return images.float().cpu().numpy()

    def sample(self, seeds: Sequence[int], labels: Sequence[int] | None = None) -> Iterator[Frame]:
        """One frame: a sample per seed (and its label, for a conditional model)."""
        seeds = check_seeds(seeds)
        asked = self._check_labels(labels, len(seeds))
        yield Frame(0, self._decode(self.latents(seeds), asked), True)

    def walk(
        self, pairs: Sequence[tuple[int, int]], frames: int, labels: Sequence[int] | None = None
    ) -> Iterator[Frame]:
        """``frames`` frames from each pair's first seed's latent to its second's, along the great circle
        (spherical interpolation keeps the latents' norm typical); one row per pair."""
        frames = check_count(frames, "frames", 2, 1000)
        starts = check_seeds([a for a, _ in pairs], "pairs")
        ends = check_seeds([b for _, b in pairs], "pairs")
        asked = self._check_labels(labels, len(starts))
        za, zb = self.latents(starts).astype(np.float64), self.latents(ends).astype(np.float64)
        cos = np.sum(za * zb, 1) / (np.linalg.norm(za, axis=1) * np.linalg.norm(zb, axis=1) + 1e-12)
        omega = np.arccos(np.clip(cos, -1.0, 1.0))[:, None]  # (B, 1)
        for i, t in enumerate(np.linspace(0.0, 1.0, frames)):
            sin = np.sin(omega)
            linear = sin < 1e-6
            wa = np.where(linear, 1 - t, np.sin((1 - t) * omega) / np.where(linear, 1.0, sin))
            wb = np.where(linear, t, np.sin(t * omega) / np.where(linear, 1.0, sin))
            z = (wa * za + wb * zb).astype(np.float32)  # (B, Z)
            yield Frame(i, self._decode(z, asked), i == frames - 1)


# -- the RBM ---------------------------------------------------------------------------------------------------
class GibbsSampler:
    """Block Gibbs chains of an RBM, one step a frame: each frame shows p(v = 1 | h) of every chain."""

    def __init__(self, rbm: BernoulliRBM) -> None:
        self.rbm = rbm.eval()
        self.info = ImageModelInfo("rbm", rbm.config.image_size, (), None)

    @torch.no_grad()
    def chains(self, seeds: Sequence[int], steps: int, start: np.ndarray | None = None) -> Iterator[Frame]:
        """``steps`` Gibbs steps (v -> h -> v) of one chain per seed, from uniform noise or from ``start`` (B, H, W)
        binary images. Each chain's uniforms come from its own seed."""
        seeds = check_seeds(seeds)
        steps = check_count(steps, "steps", 1, MAX_STEPS)
        size, visible, hidden = self.info.image_size, self.rbm.config.visible, self.rbm.config.hidden
        rngs = [np.random.default_rng(s) for s in seeds]
        if start is None:
            v = np.stack([rng.random(visible) < 0.5 for rng in rngs]).astype(np.float64)  # (B, V)
        else:
            if start.shape != (len(seeds), size, size):
                raise InvalidArgument("start", f"must be ({len(seeds)}, {size}, {size}) images, got {start.shape}")
            v = (start.reshape(len(seeds), visible) >= 0.5).astype(np.float64)
        w = self.rbm.weight.detach().double().cpu()  # (V, H)
        b = self.rbm.visible_bias.detach().double().cpu()
        c = self.rbm.hidden_bias.detach().double().cpu()
        for step in range(steps):
            h_p = torch.sigmoid(torch.from_numpy(v) @ w + c).numpy()  # (B, H)
            h = (np.stack([rng.random(hidden) for rng in rngs]) < h_p).astype(np.float64)
            v_p = torch.sigmoid(torch.from_numpy(h) @ w.T + b).numpy()  # (B, V)
            v = (np.stack([rng.random(visible) for rng in rngs]) < v_p).astype(np.float64)
            images = v_p.reshape(len(seeds), size, size).astype(np.float32)
            yield Frame(step, images, step == steps - 1)


# -- Deep Dream -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DreamSettings:
    """Deep Dream's knobs: the objective (a layer, one of its channels, or a class's logit), the octaves, the
    jitter and the normalised gradient steps."""

    layer: str = "block2"  # one of LAYERS; "logits" with ``target`` a class
    channel: int | None = None  # a channel of block1/block2 or a unit of hidden (None: the whole layer's energy)
    target: int | None = None  # with layer "logits": the class whose logit is raised
    steps: int = 10  # gradient steps per octave
    octaves: int = 3
    octave_scale: float = 1.4
    step_size: float = 0.02  # each step moves the image by this times its normalised gradient
    jitter: int = 2  # random shift (pixels) before each step, undone after
    size: int = 112  # the dreamed image's side

    def validate(self, evaluator: Evaluator) -> None:
        if self.layer not in LAYERS:
            raise InvalidArgument("layer", f"must be one of {', '.join(LAYERS)}, got {self.layer!r}")
        widths = {
            "block1": evaluator.config.channels,
            "block2": 2 * evaluator.config.channels,
            "hidden": evaluator.config.hidden,
        }
        if self.layer == "logits":
            if self.target is None:
                raise InvalidArgument("target", "layer logits needs a target class")
            check_count(self.target, "target", 0, evaluator.config.num_classes - 1)
            if self.channel is not None:
                raise InvalidArgument("channel", "layer logits takes a target class, not a channel")
        else:
            if self.target is not None:
                raise InvalidArgument("target", "a target class goes with layer logits")
            if self.channel is not None:
                check_count(self.channel, "channel", 0, widths[self.layer] - 1)
        check_count(self.steps, "steps", 1, 1000)
        check_count(self.octaves, "octaves", 1, 8)
        check_count(self.jitter, "jitter", 0, 32)
        check_count(self.size, "size", evaluator.config.image_size, 1024)
        if not 1.0 <= self.octave_scale <= 4.0:
            raise InvalidArgument("octave_scale", f"must be in [1, 4], got {self.octave_scale}")
        if not 0.0 < self.step_size <= 1.0:
            raise InvalidArgument("step_size", f"must be in (0, 1], got {self.step_size}")


class DeepDream:
    """Gradient ascent on the input of the evaluator CNN, one frame per step."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator.eval()
        self.info = ImageModelInfo("dream", evaluator.config.image_size, (), None)

    def objective(self, images: torch.Tensor, settings: DreamSettings) -> torch.Tensor:
        """What a step raises, per image (B,): the chosen activation's mean square, or the class's logit. The layers
        after the convolutions read the image resized to the network's input size; the convolutions read it at the
        octave's size."""
        size = self.evaluator.config.image_size
        if settings.layer in ("hidden", "logits") and images.shape[-1] != size:
            images = F.interpolate(images.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        act = self.evaluator.activations(images, settings.layer)[settings.layer]
        if settings.layer == "logits":
            return act[:, settings.target]  # (B,)
        if settings.channel is not None:
            act = act[:, settings.channel]
        return act.pow(2).flatten(1).mean(dim=1)  # (B,)

    def dream(self, images: np.ndarray, seeds: Sequence[int], settings: DreamSettings) -> Iterator[Frame]:
        """Dream on images (B, H, W) in [0, 1] (any size; resized to ``settings.size``), one seed per image for its
        jitter. ``octaves * steps`` frames, each (B, size, size)."""
        seeds = check_seeds(seeds)
        settings.validate(self.evaluator)
        if images.ndim != 3 or len(images) != len(seeds):
            raise InvalidArgument("images", f"give one (H, W) image per seed, got {images.shape}")
        device = _device(self.evaluator)
        rngs = [np.random.default_rng(s) for s in seeds]
        out = settings.size
        x = torch.from_numpy(np.asarray(images, dtype=np.float32)).to(device)
        x = F.interpolate(x.unsqueeze(1), size=(out, out), mode="area" if x.shape[-1] > out else "bilinear")[:, 0]
        sizes = [max(8, round(out / settings.octave_scale**k)) for k in reversed(range(settings.octaves))]
        base = x.clone()  # (B, S, S): the input at full size; the dream is base + detail
        detail = torch.zeros_like(base)
        index, total = 0, settings.octaves * settings.steps
        for side in sizes:
            small_base = F.interpolate(base.unsqueeze(1), size=(side, side), mode="area")[:, 0]  # (B, s, s)
            small = (small_base + F.interpolate(detail.unsqueeze(1), size=(side, side), mode="bilinear")[:, 0]).clamp(
                0, 1
            )
            for _ in range(settings.steps):
                shifts = [tuple(int(v) for v in rng.integers(-settings.jitter, settings.jitter + 1, 2)) for rng in rngs]
                rolled = torch.stack([torch.roll(img, s, dims=(0, 1)) for img, s in zip(small, shifts, strict=True)])
                rolled = rolled.detach().requires_grad_(True)
                self.objective(rolled, settings).sum().backward()
                grad = rolled.grad
                if grad is None:  # backward fills it; a model without a path to the input would not
                    raise RuntimeError(f"the layer {settings.layer} does not depend on the image")
                grad = grad / (
                    grad.abs().flatten(1).mean(dim=1)[:, None, None] + 1e-8
                )  # (B, s, s): normalised per image
                stepped = (rolled.detach() + settings.step_size * grad).clamp(0, 1)
                small = torch.stack(
                    [torch.roll(img, (-a, -b), dims=(0, 1)) for img, (a, b) in zip(stepped, shifts, strict=True)]
                )
                detail = F.interpolate((small - small_base).unsqueeze(1), size=(out, out), mode="bilinear")[:, 0]
                frame = (base + detail).clamp(0, 1)
                yield Frame(index, frame.detach().float().cpu().numpy(), index == total - 1)
                index += 1


def sample_many(sampler: LatentSampler, count: int, first_seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """``count`` samples (N, H, W) of seeds ``first_seed``, ``first_seed + 1``, ..., MAX_BATCH at a time, and for a
    conditional model the classes asked (N,): every class in turn (seed ``s`` asks class ``s mod classes``)."""
    classes = len(sampler.labels)
    images, asked = [], []
    for start in range(first_seed, first_seed + count, MAX_BATCH):
        seeds = list(range(start, min(start + MAX_BATCH, first_seed + count)))
        labels = [s % classes for s in seeds] if classes else None
        images.append(next(iter(sampler.sample(seeds, labels))).images)
        asked += labels or []
    return np.concatenate(images), (np.asarray(asked, dtype=np.int64) if classes else None)


# -- opening a checkpoint ----------------------------------------------------------------------------------------
def open_sampler(path: Path, device: str = "cpu") -> Any:
    """The sampler of an image checkpoint: LatentSampler, GibbsSampler or DeepDream (for the evaluator)."""
    from server.image.checkpoint import load_image_model

    model, meta = load_image_model(path, None, device)
    if isinstance(model, Evaluator):
        return DeepDream(model)
    if isinstance(model, BernoulliRBM):
        return GibbsSampler(model)
    return LatentSampler(model, meta.get("labels", ()))
