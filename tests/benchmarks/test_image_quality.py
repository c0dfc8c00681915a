"""benchmarks/image_quality.py on tiny models: every figure present, of the right kind, beside its reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import image_quality
from server.image.options import DCGANTrainOptions, RBMTrainOptions, VAETrainOptions


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from server.image.train_gan import train_dcgan
    from server.image.train_rbm import train_rbm
    from server.image.train_vae import train_vae

    folder = tmp_path_factory.mktemp("image_quality")
    paths = {name: folder / f"{name}.safetensors" for name in ("dcgan", "vae", "rbm")}
    train_dcgan(DCGANTrainOptions.dry_run(out=paths["dcgan"], quality=False))
    train_vae(VAETrainOptions.dry_run(out=paths["vae"]))
    train_rbm(RBMTrainOptions.dry_run(out=paths["rbm"]))
    return paths


def test_the_benchmark_reports_every_figure_beside_real_data(tiny: dict[str, Path]) -> None:
    """Generators get their feature-space figures with references; likelihood models their baseline and gain."""
    result = image_quality.run(
        dcgan=tiny["dcgan"], vae=tiny["vae"], rbm=tiny["rbm"], samples=200, k=50, images=100, ais_runs=20,
        ais_betas=200, mixtures={"components": (10,), "priors": (0.1,)},
    )  # fmt: skip
    generators = {r["family"]: r for r in result["generators"]}
    assert set(generators) == {"dcgan", "vae"}
    gan = generators["dcgan"]
    assert gan["judge"] == "digits CNN (digits_cnn.safetensors)" and gan["samples"] == 200
    assert gan["frechet"] > gan["frechet_floor"] >= 0
    assert 0.5 <= gan["one_nn"] <= 1.0 and gan["agreement_pass"] is False  # 20 steps make no digits
    assert generators["vae"]["class_agreement"] is None
    likelihoods = {r["family"]: r for r in result["likelihoods"]}
    assert likelihoods["vae"]["test_images"] == 100
    assert likelihoods["rbm"]["test_images"] == 359
    assert likelihoods["rbm"]["baseline"]["components"] == 10
    for row in likelihoods.values():
        assert row["gain"] == pytest.approx(1 - row["nats"] / row["baseline"]["nats"], abs=1e-4)
    table = image_quality.markdown(result)
    assert "Fréchet (judge features)" in table and "best mixture of Bernoullis" in table
