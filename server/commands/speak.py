"""What ``antiphon say`` runs: the audio engine in this process, its speech streamed to a player or a WAV file.

(The argument parsing is ``server/commands/say.py``. This drives the engine, so it lives with the commands, not in
the ``server.audio`` model package, which never imports the engine.)

The audio engine generates in chunks; each chunk goes to ``aplay`` (so speech starts before the rest is made) or
into the WAV file as it arrives. A progress bar on stderr shows the seconds made and the speed against real time.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
import wave
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from server.audio.constants import SAMPLE_RATE
from server.engine.audio import AudioEngine, AudioLimits
from server.engine.requests import AudioRequest
from server.errors import FailedPrecondition
from server.transport.wire import encode_codes

# not -q: it hides aplay's own error too ("audio open error: No such file or directory" on a machine without sound)
PLAYER = ("aplay", "-t", "raw", "-f", "S16_LE", "-r", str(SAMPLE_RATE), "-c", "1", "-")


@dataclass(frozen=True)
class SayOptions:
    text: str
    checkpoint: Path
    out: Path | None = None  # None: play; "-": a WAV file on stdout
    voice: str = ""
    temperature: float | None = None
    seed: int | None = None
    max_seconds: float | None = None
    threads: int = 1
    progress: bool = True


@dataclass
class SayResult:
    samples: int
    seconds: float  # wall time from the request to the last sample
    first_chunk_s: float
    finish_reason: str | None


class _Sink:
    """Where the PCM goes: a WAV file (or stdout) or the player's stdin."""

    def __init__(self, out: Path | None, stack: ExitStack) -> None:
        self.player: subprocess.Popen[bytes] | None = None
        self.player_failed = False  # a failure of the player already raised (it is not raised again at the close)
        self.wav: wave.Wave_write | None = None
        if out is None:
            if shutil.which(PLAYER[0]) is None:
                raise FailedPrecondition(
                    "out: no audio player: aplay (Debian package alsa-utils) is not installed; write a file with -o"
                )
            self.player = subprocess.Popen(PLAYER, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            stack.callback(self._close_player)
            return
        target: BinaryIO = sys.stdout.buffer if str(out) == "-" else stack.enter_context(open(out, "wb"))  # noqa: SIM115
        self.wav = stack.enter_context(wave.open(target, "wb"))  # noqa: SIM115
        self.wav.setnchannels(1)
        self.wav.setsampwidth(2)
        self.wav.setframerate(SAMPLE_RATE)

    def write(self, pcm: bytes) -> None:
        if self.wav is not None:
            self.wav.writeframes(pcm)
            return
        assert self.player is not None and self.player.stdin is not None
        try:
            self.player.stdin.write(pcm)
            self.player.stdin.flush()
        except BrokenPipeError:
            self.player_failed = True
            raise FailedPrecondition(f"out: the player stopped: {self._player_error()}") from None

    def _player_error(self) -> str:
        assert self.player is not None and self.player.stderr is not None
        self.player.wait(timeout=5)
        said = self.player.stderr.read().decode("utf-8", "replace").strip().splitlines()
        why = said[-1] if said else f"exit code {self.player.returncode}"  # its last line says what failed
        return f"{why} (no sound card? write a file with -o FILE)"

    def _close_player(self) -> None:
        assert self.player is not None and self.player.stdin is not None
        assert self.player.stderr is not None
        with suppress(BrokenPipeError):
            self.player.stdin.close()
        try:
            if self.player.wait(timeout=60) != 0 and not self.player_failed:  # (a failure told once)
                raise FailedPrecondition(f"out: aplay failed: {self._player_error()}")
        finally:
            self.player.stderr.close()


async def say(options: SayOptions) -> SayResult:
    """Generate ``options.text`` and stream it to the player or the file."""
    from tqdm import tqdm

    engine = AudioEngine.from_checkpoint(options.checkpoint, limits=AudioLimits(max_streams=1, threads=options.threads))
    await asyncio.to_thread(engine.warm_up)
    engine.start()
    bar = tqdm(
        desc="speaking",
        unit="s",
        bar_format="{desc}: {n:.2f} s of audio [{elapsed}{postfix}]",
        disable=not options.progress,
        file=sys.stderr,
    )
    try:
        with ExitStack() as stack:
            sink = _Sink(options.out, stack)
            request = AudioRequest(
                text=options.text,
                voice=options.voice,
                max_seconds=options.max_seconds,
                temperature=options.temperature,
                seed=options.seed,
                request_id="say",
            )
            started = time.perf_counter()
            first: float | None = None
            stream = engine.generate(request)
            try:
                async for codes in stream:
                    first = first if first is not None else time.perf_counter() - started
                    await asyncio.to_thread(sink.write, encode_codes(codes, "pcm16"))
                    bar.update(codes.size / SAMPLE_RATE)
                    elapsed = time.perf_counter() - started
                    bar.set_postfix_str(f"{stream.samples / SAMPLE_RATE / elapsed:.2f}x real time")
            finally:
                stream.cancel()
            elapsed = time.perf_counter() - started
        return SayResult(stream.samples, elapsed, first or elapsed, stream.finish_reason)
    finally:
        bar.close()
        await engine.close()
