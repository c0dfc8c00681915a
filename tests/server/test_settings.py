"""Server settings: flags over ANTIPHON_* variables over defaults, each bad value named."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from server.errors import InvalidArgument
from server.settings import ServeSettings, add_arguments, redacted, stray_variables


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
        (["--text-model-id", "a:b"], {}, "--text-model-id: must be 1..64 letters, digits, '.', '_' or '-', got 'a:b'"),
        (
            [],
            {"ANTIPHON_AUDIO_MODEL_ID": ""},
            "--audio-model-id: must be 1..64 letters, digits, '.', '_' or '-', got nothing",
        ),
        ([], {"ANTIPHON_AUDIO_THREADS": "0"}, "--audio-threads: must be at least 1, got 0"),
        (["--ws-compression", "gzip"], {}, "--ws-compression: cannot read 'gzip': must be none or deflate"),
        ([], {"ANTIPHON_HOST": ""}, "--host: must not be empty: 127.0.0.1, 0.0.0.0 or :: (every interface)"),
        (["--grace-s", "1e308"], {}, "--grace-s: must be at most 3,600, got 1e+308"),
        (["--max-tokens", "99999999999"], {}, "--max-tokens: must be at most 1,000,000, got 99,999,999,999"),
        (["--max-streams", "1000000000"], {}, "--max-streams: must be at most 4,096, got 1,000,000,000"),
        (["--text-threads", "500"], {}, "--text-threads: must be at most 128, got 500"),
        (
            ["--ws-max-message-bytes", "99999999999999"],
            {},
            "--ws-max-message-bytes: must be at most 67,108,864, got 99,999,999,999,999",
        ),
        (["--audio-buffer-ms", "1000000000"], {}, "--audio-buffer-ms: must be at most 60,000, got 1,000,000,000"),
        (["--session-ttl-s", "1e16"], {}, "--session-ttl-s: must be at most 315,360,000, got 1e+16"),
        (["--session-ttl-s", "1e300"], {}, "--session-ttl-s: must be at most 315,360,000, got 1e+300"),
        (["--stall-timeout-s", "-1"], {}, "--stall-timeout-s: must be a finite number of seconds >= 0, got -1.0"),
        (
            [],
            {"ANTIPHON_STALL_TIMEOUT_S": "inf"},
            "--stall-timeout-s: must be a finite number of seconds >= 0, got inf",
        ),
        (
            ["--session-store", "redis://127.0.0.1:notaport/0"],
            {},
            "--session-store: cannot read 'redis://127.0.0.1:notaport/0': its port must be a number in 1..65535",
        ),
        (
            ["--session-store", "redis://:s3cret@db:70000/0"],
            {},
            "--session-store: cannot read 'redis://:***@db:70000/0': its port must be a number in 1..65535",
        ),
        (
            [],
            {"ANTIPHON_SESSION_STORE": "redis://db:6379/zero?password=s3cret"},
            "ANTIPHON_SESSION_STORE: cannot read 'redis://db:6379/zero?password=***': the database must be a number "
            "0 or more, got 'zero'",
        ),
        (
            ["--session-store", "redis:///0"],
            {},
            "--session-store: cannot read 'redis:///0': names no host: redis://HOST:PORT/DB",
        ),
        (
            ["--session-store", "http://db:6379/0"],
            {},
            "--session-store: cannot read 'http://db:6379/0': must be memory or a Redis URL (redis://HOST:PORT/DB, "
            "rediss://..., unix://PATH)",
        ),
    ],
)
def test_bad_values_name_their_source(argv: list[str], env: dict[str, str], message: str) -> None:
    """Each bad value is InvalidArgument naming the flag or variable it came from."""
    with pytest.raises(InvalidArgument) as info:
        ServeSettings.from_sources(_parse(*argv), env)
    assert str(info.value) == message


def test_api_keys_come_from_the_variable_and_the_key_file(tmp_path: Path) -> None:
    """ANTIPHON_API_KEY and every key line of --api-key-file (comment lines and blank lines skipped) are accepted."""
    keys = tmp_path / "keys"
    keys.write_text("# the team's\nfirst-key\n\n  # the CI's\n  second-key  \n", encoding="utf-8")
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


def test_the_documented_values_are_within_the_bounds() -> None:
    """Every default, and the values the docs and tests use, pass the upper bounds."""
    values = {"max_tokens": 100_000, "grace_s": 60.0, "session_ttl_s": 1800.0, "ws_max_message_bytes": 1 << 20}
    assert ServeSettings(**values).validated().max_tokens == 100_000
    assert ServeSettings().validated() == ServeSettings()


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "rediss://:pw@db.internal:6380/2", "redis://[::1]:6379", "unix:///run/r.sock?db=3"],
)
def test_good_session_store_urls_are_accepted(url: str) -> None:
    """Redis URLs of every documented form pass."""
    assert ServeSettings.from_sources(_parse("--session-store", url), {}).session_store == url


def test_every_password_form_is_masked() -> None:
    """The userinfo password and the password query parameter are both masked; nothing else changes."""
    assert redacted("redis://127.0.0.1:6379/0?password=s3cret") == "redis://127.0.0.1:6379/0?password=***"
    assert (
        redacted("redis://:s3cret@[::1]:6380/2?db=1&password=x&a=b")
        == "redis://:***@[::1]:6380/2?db=1&password=***&a=b"
    )
    assert redacted("unix://u:s3cret@/run/r.sock?db=0") == "unix://u:***@/run/r.sock?db=0"
    assert redacted("redis://u@db/0") == "redis://u@db/0"


def test_a_hash_inside_a_key_is_part_of_it(tmp_path: Path) -> None:
    """Only a line that starts with # (after blanks) is a comment: ha#sh is one key, not ha."""
    keys = tmp_path / "keys"
    keys.write_text("ha#sh\n  # a comment\n#another\nplain \n", encoding="utf-8")
    assert ServeSettings.from_sources(_parse("--api-key-file", str(keys)), {}).api_keys() == {"ha#sh", "plain"}


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark (as some editors write) is dropped."""
    keys = tmp_path / "keys"
    keys.write_bytes("\ufefffirst\nsecond\n".encode())
    assert ServeSettings.from_sources(_parse("--api-key-file", str(keys)), {}).api_keys() == {"first", "second"}


def test_a_key_file_that_is_not_utf8_is_one_line_error(tmp_path: Path) -> None:
    """A key file in another encoding is InvalidArgument naming --api-key-file."""
    keys = tmp_path / "keys"
    keys.write_bytes(b"caf\xe9-key\n")
    with pytest.raises(InvalidArgument) as info:
        ServeSettings.from_sources(_parse("--api-key-file", str(keys)), {}).api_keys()
    assert str(info.value) == f"--api-key-file: {keys} is not UTF-8 text"


def test_stray_variables_are_named_with_the_nearest_setting() -> None:
    """A misspelt ANTIPHON_* variable is reported with the nearest setting; settings and other known variables are
    not."""
    environ = {
        "ANTIPHON_API_KEYS": "secret",
        "ANTIPHON_API_KEY": "k",
        "ANTIPHON_CACHE": "/tmp/c",
        "ANTIPHON_EDGE_FILES": "x",
        "ANTIPHON_GRPC_SERVERS": "server a:1;",
        "ANTIPHON_ZZZ": "1",
        "PATH": "/bin",
    }
    assert stray_variables(environ) == [
        "ANTIPHON_API_KEYS is not a setting of antiphon serve and is ignored (did you mean ANTIPHON_API_KEY?)",
        "ANTIPHON_ZZZ is not a setting of antiphon serve and is ignored",
    ]
