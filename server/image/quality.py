"""Sample quality measured in a classifier's feature space (the judge's), beside real data.

Inception-network scores (FID, Inception score) need weights downloaded from elsewhere, so these are their analogues
with the project's own judge: the evaluator CNN for Fashion-MNIST, the digits CNN for the 8x8 digits. They are
labelled so wherever they are reported, and every figure has its real-data reference beside it:

- ``frechet``: the Fréchet distance between Gaussians fitted to the judge's features of generated and of real test
  images; real training images against the real test images give its floor.
- ``class_score``: the Inception-score analogue, exp(E_x KL(p(y|x) || p(y))) under the judge; the real test
  images give its ceiling (10 at most for 10 classes).
- ``one_nn``: leave-one-out 1-nearest-neighbour accuracy telling generated from real test images in the judge's
  features (0.5: indistinguishable; 1.0: every image's neighbour is of its own set).
- memorisation: each generated image's pixel distance to its nearest training image, against the same for real
  test images (a generator that copies its training data is much closer than the test images are).
- ``class_agreement``: for a conditional generator, the share of samples the judge assigns the asked class,
  against the share of real test images it assigns their own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from server.checkpoint import read_meta
from server.errors import CheckpointError


class Judge:
    """A classifier seen as features (N, D) and class probabilities (N, C) of images (N, H, W) in [0, 1]."""

    def __init__(self, name: str, model: torch.nn.Module, image_size: int, feature_fn: Any, logit_fn: Any) -> None:
        self.name, self.model, self.image_size = name, model, image_size
        self._features, self._logits = feature_fn, logit_fn

    @torch.no_grad()
    def _run(self, fn: Any, images: np.ndarray, batch: int = 500) -> np.ndarray:
        device = next(self.model.parameters()).device
        self.model.eval()
        parts = [
            fn(torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).float().to(device)).cpu()
            for i in range(0, len(images), batch)
        ]
        return torch.cat(parts).double().numpy()

    def features(self, images: np.ndarray) -> np.ndarray:
        return self._run(self._features, images)

    def probs(self, images: np.ndarray) -> np.ndarray:
        return self._run(lambda x: F.softmax(self._logits(x), dim=1), images)


def load_judge(path: Path, device: torch.device | str = "cpu") -> Judge:
    """The judge in a checkpoint: the image evaluator (Fashion-MNIST) or the digits CNN (8x8 digits)."""
    kind = read_meta(path).get("kind")
    if kind == "image_evaluator":
        from server.image.checkpoint import load_image_model

        model, _ = load_image_model(path, kind, device)
        return Judge(f"evaluator CNN ({path.name})", model, model.config.image_size, model.features, model)
    if kind == "digits_cnn":
        from server.vision.checkpoint import load_digits_model

        digits, _ = load_digits_model(path, device)

        def features(x: torch.Tensor) -> torch.Tensor:  # (B, 8, 8) in [0, 1] -> the hidden layer (B, hidden)
            return digits.classifier[:-1](digits.features(x.unsqueeze(1)))

        def logits(x: torch.Tensor) -> torch.Tensor:
            return digits(x * 16.0)  # the digits CNN reads load_digits' 0..16 intensities

        return Judge(f"digits CNN ({path.name})", digits, 8, features, logits)
    raise CheckpointError(f"checkpoint {path} holds a {kind!r} model, which judges no images")


# -- the figures -------------------------------------------------------------------------------------------------
def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature rows a (N, D) and b (M, D):
    |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2), the last term from the eigenvalues of the symmetric
    S_a^1/2 S_b S_a^1/2 (which has those of S_a S_b), so a singular covariance needs no special case."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum()
    value = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    return float(max(value, 0.0))


def class_score(probs: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of class probabilities (N, C): the Inception-score analogue."""
    p = np.clip(probs, 1e-12, 1.0)
    marginal = p.mean(axis=0, keepdims=True)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), axis=1))))


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (N, M) of rows a (N, D) and b (M, D)."""
    return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :], 0.0)


def one_nn_accuracy(generated: np.ndarray, real: np.ndarray) -> float:
    """Leave-one-out 1-NN accuracy of telling feature rows of the two sets apart (0.5 ideal)."""
    x = np.concatenate([generated, real]).astype(np.float64)
    is_real = np.r_[np.zeros(len(generated), bool), np.ones(len(real), bool)]
    d = _squared_distances(x, x)
    np.fill_diagonal(d, np.inf)
    return float(np.mean(is_real[d.argmin(axis=1)] == is_real))


def nearest_distances(queries: np.ndarray, reference: np.ndarray, chunk: int = 500) -> np.ndarray:
    """Each query image's (N, H, W) Euclidean pixel distance to its nearest reference image (M, H, W): (N,)."""
    q = queries.reshape(len(queries), -1).astype(np.float32)
    r = reference.reshape(len(reference), -1).astype(np.float32)
    r_norms = (r * r).sum(1)
    out = []
    for i in range(0, len(q), chunk):
        part = q[i : i + chunk]
        d = (part * part).sum(1)[:, None] - 2 * part @ r.T + r_norms[None, :]
        out.append(np.sqrt(np.maximum(d.min(axis=1), 0.0)))
    return np.concatenate(out)


@dataclass(frozen=True)
class QualityReport:
    judge: str
    samples: int
    frechet: float  # generated vs real test images
    frechet_floor: float  # real training vs real test images
    class_score: float
    class_score_ceiling: float  # of the real test images
    one_nn: float  # generated vs real test images (0.5 ideal)
    one_nn_real: float  # real training vs real test images (the same figure for two real sets)
    nearest_train_generated: float  # median pixel distance of a generated image to its nearest training image
    nearest_train_test: float  # ... of a real test image to its nearest training image
    class_agreement: float | None = None  # share of samples classified as the asked class
    class_agreement_real: float | None = None  # share of real test images classified as their own class
    latent_scale: float = 1.0  # the sampler's (server.image.sampling.LATENT_SCALE)

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def measure(
    judge: Judge,
    generated: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    asked: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    seed: int = 0,
) -> QualityReport:
    """Every figure of generated images (N, H, W) in [0, 1] beside real ones: ``test`` (N real test images; the
    test split or a fixed subset of it), ``train`` (the whole training split: memorisation looks through all of it;
    a random N of it give the floors). ``asked``: the classes a conditional generator was asked for."""
    n = len(generated)
    if len(test) < n:
        raise ValueError(f"{n} generated images need as many real test images, got {len(test)}")
    rng = np.random.default_rng(seed)
    test_pick = rng.choice(len(test), n, replace=False) if len(test) > n else np.arange(n)
    train_pick = rng.choice(len(train), n, replace=False)
    real_test, real_train = test[test_pick], train[train_pick]
    f_gen, f_test, f_train = (judge.features(x) for x in (generated, real_test, real_train))
    p_gen, p_test = judge.probs(generated), judge.probs(real_test)
    agreement = agreement_real = None
    if asked is not None:
        agreement = float(np.mean(p_gen.argmax(1) == asked))
    if test_labels is not None:
        agreement_real = float(np.mean(p_test.argmax(1) == test_labels[test_pick]))
    return QualityReport(
        judge=judge.name,
        samples=n,
        frechet=frechet_distance(f_gen, f_test),
        frechet_floor=frechet_distance(f_train, f_test),
        class_score=class_score(p_gen),
        class_score_ceiling=class_score(p_test),
        one_nn=one_nn_accuracy(f_gen, f_test),
        one_nn_real=one_nn_accuracy(f_train, f_test),
        nearest_train_generated=float(np.median(nearest_distances(generated, train))),
        nearest_train_test=float(np.median(nearest_distances(real_test, train))),
        class_agreement=agreement,
        class_agreement_real=agreement_real,
    )


def measure_generator(
    sampler: Any, judge: Judge, train: Any, test: Any, samples: int, first_seed: int = 0
) -> QualityReport:
    """:func:`measure` of a latent sampler's first ``samples`` seeds (no more than the real test images there are),
    against an :class:`~server.image.data.ImageSet`'s training and test images."""
    from server.image.sampling import sample_many

    generated, asked = sample_many(sampler, min(samples, len(test)), first_seed)
    report = measure(judge, generated, train.images, test.images, asked, test.labels)
    return replace(report, latent_scale=sampler.latent_scale)


def resolve_judge(path: Path | None, dataset: str) -> Path | None:
    """The judge's checkpoint: the one given (which must exist), else the data set's default when it exists."""
    from server.errors import InvalidArgument
    from server.image.options import DEFAULT_JUDGES

    if path is not None:
        if not path.is_file():
            raise InvalidArgument("judge", f"{path} does not exist")
        return path
    default = DEFAULT_JUDGES[dataset]
    return default if default.is_file() else None
