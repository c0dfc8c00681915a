"""Server settings: flags over ANTIPHON_* variables over defaults, each bad value named."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from server.errors import InvalidArgument
from server.settings import ServeSettings, add_arguments


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    """With no flags and no environment every field has its documented default."""
    settings = ServeSettings.from_sources(_parse(), {})
    assert (settings.host, settings.grpc_port, settings.ws_port) == ("127.0.0.1", 50051, 8765)
    assert settings.text_checkpoint is None and settings.personas is None


def test_flag_beats_environment_beats_default() -> None:
    """A flag wins over its ANTIPHON_* variable, which wins over the default."""
    env = {"ANTIPHON_GRPC_PORT": "7000", "ANTIPHON_WS_PORT": "7001", "ANTIPHON_PERSONAS": "KENT, LEAR"}
    settings = ServeSettings.from_sources(_parse("--grpc-port", "0", "--text-checkpoint", "m.safetensors"), env)
    assert (settings.grpc_port, settings.ws_port) == (0, 7001)
    assert settings.personas == ("KENT", "LEAR")
    assert settings.text_checkpoint == Path("m.safetensors")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--grpc-port", "70000"], {}, "--grpc-port: must be in 0..65535, got 70000"),
        (
            [],
            {"ANTIPHON_MAX_STREAMS": "many"},
            "ANTIPHON_MAX_STREAMS: cannot read 'many': invalid literal for int() with base 10: 'many'",
        ),
        (["--max-streams", "0"], {}, "--max-streams: must be at least 1, got 0"),
        (["--device", "tpu"], {}, "--device: cannot read 'tpu': must be auto, cpu or cuda"),
        (["--grace-s", "nan"], {}, "--grace-s: must be a finite number of seconds >= 0, got nan"),
        (["--personas", "A,B", "--default-persona", "C"], {}, "--default-persona: 'C' is not one of A, B"),
        (
            ["--classifiers", "kws,faces"],
            {},
            "--classifiers: unknown classifier 'faces'; known: kws, textdisc, digits, none",
        ),
        (["--max-audio-seconds", "0"], {}, "--max-audio-seconds: must be positive, got 0.0"),
        ([], {"ANTIPHON_AUDIO_THREADS": "0"}, "--audio-threads: must be at least 1, got 0"),
        (["--ws-compression", "gzip"], {}, "--ws-compression: cannot read 'gzip': must be none or deflate"),
    ],
)
def test_bad_values_name_their_source(argv: list[str], env: dict[str, str], message: str) -> None:
    """Each bad value is InvalidArgument naming the flag or variable it came from."""
    with pytest.raises(InvalidArgument) as info:
        ServeSettings.from_sources(_parse(*argv), env)
    assert str(info.value) == message


def test_api_keys_come_from_the_variable_and_the_key_file(tmp_path: Path) -> None:
    """ANTIPHON_API_KEY and every key line of --api-key-file (comments and blank lines skipped) are accepted."""
    keys = tmp_path / "keys"
    keys.write_text("# the team's\nfirst-key\n\n  second-key  # the CI's\n", encoding="utf-8")
    settings = ServeSettings.from_sources(_parse("--api-key-file", str(keys)), {"ANTIPHON_API_KEY": "env-key"})
    assert settings.api_keys() == {"env-key", "first-key", "second-key"}
    assert ServeSettings.from_sources(_parse(), {}).api_keys() == frozenset()


def test_an_empty_key_file_is_refused(tmp_path: Path) -> None:
    """A key file with no key (only comments) stops the server from starting open by mistake."""
    keys = tmp_path / "keys"
    keys.write_text("# none yet\n\n", encoding="utf-8")
    with pytest.raises(InvalidArgument) as info:
        ServeSettings.from_sources(_parse("--api-key-file", str(keys)), {}).api_keys()
    assert str(info.value) == f"--api-key-file: {keys} holds no key"


def test_image_checkpoints_name_the_models_or_none(tmp_path: Path) -> None:
    """--image-checkpoints lists paths (comma-separated); none serves no image model; by default, the committed ones."""
    named = ServeSettings.from_sources(_parse("--image-checkpoints", "a/rbm.safetensors, b/dcgan.safetensors"), {})
    assert named.image_models() == [Path("a/rbm.safetensors"), Path("b/dcgan.safetensors")]
    assert ServeSettings.from_sources(_parse(), {"ANTIPHON_IMAGE_CHECKPOINTS": "none"}).image_models() == []
    from server.paths import DEFAULT_IMAGE_MODELS

    default = sorted(DEFAULT_IMAGE_MODELS.glob("*.safetensors")) if DEFAULT_IMAGE_MODELS.is_dir() else []
    assert ServeSettings.from_sources(_parse(), {}).image_models() == default
    with pytest.raises(InvalidArgument) as info:
        ServeSettings.from_sources(_parse("--image-checkpoints", "none,a.safetensors"), {})
    assert str(info.value) == "--image-checkpoints: none serves no image model: name nothing else"
