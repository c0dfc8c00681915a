"""The image commands: generated train flags, and one command making a PNG grid of any family's samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import build_parser
from server.image.grid import read_png
from server.image.options import DCGANTrainOptions
from server.options import from_flags
from tests.server.image.conftest import train_tiny


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny presets of the four families the grid test draws from."""
    folder = tmp_path_factory.mktemp("image_commands")
    return {f: train_tiny(f, folder / f"{f}.safetensors") for f in ("dcgan", "vae", "rbm", "evaluator")}


def test_train_flags_come_from_the_options() -> None:
    """``antiphon train dcgan`` has the loop's, the data's, the quality's and the model's flags."""
    args = build_parser().parse_args(["train", "dcgan", "--dry-run", "--g-channels", "16", "--no-quality"])
    opts = from_flags(DCGANTrainOptions, args)
    assert (args.kind, opts.steps, opts.model["g_channels"], opts.quality) == ("dcgan", 20, 16, False)


@pytest.mark.parametrize(
    ("family", "extra", "size"),
    [
        ("dcgan", [], (10 * 17 + 1, 10 * 17 + 1)),
        ("vae", ["--walk"], (10 * 17 + 1, 10 * 17 + 1)),
        ("rbm", ["--steps", "50"], (10 * 17 + 1, 10 * 17 + 1)),
        ("evaluator", ["--rows", "2", "--columns", "3", "--scale", "1"], (2 * 113 + 1, 3 * 113 + 1)),
    ],
)
def test_one_command_writes_a_grid(
    checkpoints: dict[str, Path], tmp_path: Path, family: str, extra: list[str], size: tuple[int, int]
) -> None:
    """``antiphon sample image`` writes a PNG grid of samples, walks, Gibbs chains or a dream's steps."""
    out = tmp_path / f"{family}.png"
    argv = ["sample", "image", "--checkpoint", str(checkpoints[family]), "--out", str(out), *extra]
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    assert read_png(out).shape == size


def test_sample_image_refuses_a_folder_as_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out naming a folder exits 2 naming --out before sampling (an OSError's traceback after it)."""
    from server.cli import main

    with pytest.raises(SystemExit) as info:
        main(["sample", "image", "--checkpoint", str(tmp_path / "none.safetensors"), "--out", str(tmp_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"antiphon: error: --out: {tmp_path} is a directory; name the file to write\n"
