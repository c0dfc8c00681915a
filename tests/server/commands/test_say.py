"""``antiphon say``: a real WAV file from the tiny WaveNet, stdout, and clear errors."""

from __future__ import annotations

import io
import os
import wave
from pathlib import Path

import numpy as np
import pytest

from server.cli import main


def run(args: list[str]) -> int:
    """``antiphon ARGS``' exit code (bad arguments exit through argparse)."""
    try:
        return main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_say_writes_a_wav(tiny_audio_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hello.wav"
    code = main(["say", "Good night.", "-o", str(out), "--seed", "4", "--checkpoint", str(tiny_audio_checkpoint)])
    assert code == 0
    with wave.open(str(out)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16_000, 1, 2)
        frames = w.getnframes()
        pcm = np.frombuffer(w.readframes(frames), dtype="<i2")
    assert frames > 4000 and np.abs(pcm).max() > 100
    err = capsys.readouterr().err
    assert f"wrote {out}: {frames / 16_000:.2f} s of audio" in err and ", stop)" in err


def test_say_to_stdout_is_the_same_wav(
    tiny_audio_checkpoint: Path, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    args = ["say", "seven", "--seed", "9", "--quiet", "--checkpoint", str(tiny_audio_checkpoint)]
    assert main([*args, "-o", "-"]) == 0
    piped = capfdbinary.readouterr().out
    assert main([*args, "-o", str(tmp_path / "seven.wav")]) == 0
    assert piped == (tmp_path / "seven.wav").read_bytes()
    with wave.open(io.BytesIO(piped)) as w:
        assert w.getnframes() > 1000


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--voice", "en-us+nobody"], 1, "voice: 'en-us+nobody' is not a voice"),
        (["--threads", "0"], 2, "--threads: must be in 1..64"),
        (["--max-seconds", "-1"], 2, "--max-seconds: must be in"),
    ],
)
def test_say_errors_name_the_argument(
    tiny_audio_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    out = tmp_path / "x.wav"
    assert run(["say", "one", "-o", str(out), "--checkpoint", str(tiny_audio_checkpoint), *args]) == code
    assert message in capsys.readouterr().err


def test_say_without_a_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["say", "one", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "checkpoint:" in capsys.readouterr().err


@pytest.mark.parametrize(("out", "message"), [("", "is a directory"), ("file/x.wav", "file is not a directory")])
def test_say_refuses_an_out_it_cannot_write(
    tiny_audio_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str, message: str
) -> None:
    """-o naming a folder, or a file inside a file, exits 2 naming -o before any speech (an OSError's traceback)."""
    (tmp_path / "file").write_text("", encoding="utf-8")
    assert run(["say", "one", "-o", str(tmp_path / out), "--checkpoint", str(tiny_audio_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("antiphon: error: --out: ") and message in err


def test_a_player_that_cannot_play_says_why(
    tiny_audio_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Played aloud where there is no sound card, aplay's own reason is told (it was "exit code 1": aplay -q hid
    it), with the way out; here an aplay on PATH that fails as Debian's does on a machine without sound."""
    fake = tmp_path / "bin" / "aplay"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        'echo "ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM default" >&2\n'
        'echo "aplay: main:831: audio open error: No such file or directory" >&2\nexit 1\n',
        encoding="utf-8",
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    assert run(["say", "one", "--seed", "1", "--checkpoint", str(tiny_audio_checkpoint)]) == 1
    err = capsys.readouterr().err
    assert "aplay: main:831: audio open error: No such file or directory (no sound card? write a file with -o" in err
