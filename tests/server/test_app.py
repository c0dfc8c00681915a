"""``antiphon serve`` as a real process: the listening line, serving, SIGTERM drains and exits 0."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import websockets
from antiphon.v1 import generation_pb2_grpc, models_pb2, sampling_pb2, text_pb2

from server.app import (
    Server,
    chat_style,
    load_classifiers,
    load_image_engines,
    load_text_engine,
    require_checkpoint,
    warn_if_expiring,
    warn_if_exposed,
)
from server.engine.text import TextEngine
from server.errors import CheckpointError, InvalidArgument, ListenError
from server.settings import ServeSettings
from tests.certs import Certificates
from tests.conftest import timeout

LISTENING = re.compile(r"listening grpc=(\S+) ws=(\S+) http=(\S+)$")


async def _start(*args: str, env: dict[str, str] | None = None, **kw: Any) -> asyncio.subprocess.Process:
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "server.cli", "serve", "--http-port", "0", *args),
        env=environ,
        stderr=asyncio.subprocess.PIPE,
        **kw,
    )


async def _listening(process: asyncio.subprocess.Process) -> tuple[str, str, list[str]]:
    assert process.stderr is not None
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(process.stderr.readline(), timeout(60))).decode()
        if not line:
            raise AssertionError("server exited before listening:\n" + "".join(lines))
        lines.append(line)
        if match := LISTENING.search(line.rstrip("\n")):
            return match.group(1), match.group(2), lines


async def test_serve_drains_on_sigterm_and_exits_0(
    tiny_text_checkpoint: Path, tiny_audio_checkpoint: Path, tiny_digits_checkpoint: Path
) -> None:
    """SIGTERM lets a live stream finish within the grace period, and the process exits 0. The audio model and the
    classifier named by flags are served beside the text model."""
    process = await _start(
        "--text-checkpoint",
        str(tiny_text_checkpoint),
        "--audio-checkpoint",
        str(tiny_audio_checkpoint),
        "--classifiers",
        "digits",
        "--digits-checkpoint",
        str(tiny_digits_checkpoint),
        "--image-checkpoints",
        "none",
        "--grpc-port",
        "0",
        "--ws-port",
        "0",
        "--grace-s",
        "60",
        "--torch-threads",
        "1",  # two threads on a busy two-core machine make each tiny step slower, not faster
    )
    try:
        grpc_address, _, _ = await _listening(process)
        async with grpc.aio.insecure_channel(grpc_address) as channel:
            stub = generation_pb2_grpc.GenerationStub(channel)
            listed = await stub.ListModels(models_pb2.ListModelsRequest())
            assert [(m.id, m.kind) for m in listed.models] == [
                ("char-lstm", models_pb2.MODEL_KIND_TEXT),
                ("wavenet", models_pb2.MODEL_KIND_AUDIO),
                ("digits", models_pb2.MODEL_KIND_CLASSIFIER),
            ]
            request = text_pb2.GenerateTextRequest(prompt="Lear.\n", sampling=sampling_pb2.Sampling(max_tokens=2000))
            call = stub.GenerateText(request, metadata=(("x-request-id", "drained-1"),))
            first = await asyncio.wait_for(call.read(), timeout(10))
            process.send_signal(signal.SIGTERM)
            chunks = [first]
            while (chunk := await call.read()) is not grpc.aio.EOF:
                chunks.append(chunk)
        assert chunks[-1].finish_reason == sampling_pb2.FINISH_REASON_LENGTH
        assert len("".join(c.text for c in chunks)) == 2000
        assert await asyncio.wait_for(process.wait(), timeout(30)) == 0
        assert process.stderr is not None
        rest = (await process.stderr.read()).decode()
        done = re.search(
            r"request grpc-drained-1 model=char-lstm kind=text prompt_tokens=7 tokens=2000 ttft_ms=\S+ "
            r"duration_ms=\S+ finish=length",
            rest,
        )
        assert done is not None, rest
        assert rest.index("shutting down") < done.start(), rest  # drained after SIGTERM, not finished before
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_closes_idle_websocket_clients_and_exits_0(tiny_text_checkpoint: Path) -> None:
    """An idle WebSocket client gets close code 1001 at SIGTERM and does not hold the process open."""
    process = await _start("--text-checkpoint", str(tiny_text_checkpoint), "--grpc-port", "0", "--ws-port", "0",
                           "--grace-s", "1", "--torch-threads", "1")  # fmt: skip
    try:
        _, ws_address, _ = await _listening(process)
        async with websockets.connect(f"ws://{ws_address}/") as websocket:
            process.send_signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(websocket.recv(), timeout(30))
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert await asyncio.wait_for(process.wait(), timeout(30)) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_a_checkpoint_that_is_a_folder_is_named_so(tmp_path: Path) -> None:
    """A folder given as a checkpoint (the text model's, a classifier's) is "not a file", not "does not exist"."""
    with pytest.raises(CheckpointError, match=f"text checkpoint {tmp_path} is not a file: train one"):
        require_checkpoint(tmp_path, "text", "another with --text-checkpoint")
    settings = ServeSettings(classifiers=("digits",), digits_checkpoint=tmp_path)
    with pytest.raises(CheckpointError, match=f"digits checkpoint {tmp_path} is not a file"):
        load_classifiers(settings, {})


async def test_sigterm_while_loading_the_models_exits_0_with_a_line(tiny_text_checkpoint: Path) -> None:
    """SIGTERM before the server listens (a first start can load for half a minute) stops it at once with one INFO
    line and exit 0, as a stop asked for; it used to kill the process without a word. Sent as soon as loading
    begins, it lands while loading or, on a fast machine, after listening: either way a line and exit 0."""
    process = await _start("--text-checkpoint", str(tiny_text_checkpoint), "--grpc-port", "0", "--ws-port", "0",
                           "--grace-s", "1", "--torch-threads", "1", "--classifiers", "none")  # fmt: skip
    lines: list[str] = []
    try:
        await _read_until(process, "loading the models", lines)
        process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        rest = (await asyncio.wait_for(process.stderr.read(), timeout(30))).decode()
        assert await asyncio.wait_for(process.wait(), timeout(30)) == 0, rest
        assert "INFO" in rest and ("SIGTERM before listening: exiting" in rest or "shutting down on SIGTERM" in rest)
        assert "Traceback" not in rest, rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serve_without_checkpoint_fails_clearly(tmp_path: Path) -> None:
    """A missing checkpoint is a one-line error and exit code 1."""
    missing = tmp_path / "none.safetensors"
    process = await _start("--text-checkpoint", str(missing), "--grpc-port", "0", "--ws-port", "0")
    _, stderr = await asyncio.wait_for(process.communicate(), timeout(60))
    assert process.returncode == 1
    assert f"antiphon: error: text checkpoint {missing} does not exist" in stderr.decode()


async def test_serve_with_a_missing_audio_checkpoint_fails_clearly(tiny_text_checkpoint: Path, tmp_path: Path) -> None:
    missing = tmp_path / "wavenet.safetensors"
    args = ("--text-checkpoint", str(tiny_text_checkpoint), "--audio-checkpoint", str(missing))
    process = await _start(*args, "--grpc-port", "0", "--ws-port", "0")
    _, stderr = await asyncio.wait_for(process.communicate(), timeout(60))
    assert process.returncode == 1
    assert f"antiphon: error: audio checkpoint {missing} does not exist" in stderr.decode()


def test_chat_personas_come_from_the_checkpoint_unless_named() -> None:
    """--personas wins; else the checkpoint's recorded speakers; the user speaks as the first other persona."""
    recorded = ["KENT", "LEAR", "FOOL"]
    style = chat_style(ServeSettings(), recorded)
    assert (style.personas, style.default_persona, style.user_speaker) == (("KENT", "LEAR", "FOOL"), "KENT", "LEAR")
    style = chat_style(ServeSettings(personas=("Edgar", "Fool"), user_speaker="Gloucester"), recorded)
    assert (style.personas, style.default_persona, style.user_speaker) == (("Edgar", "Fool"), "Edgar", "Gloucester")


@pytest.mark.parametrize("port", ["grpc_port", "ws_port", "http_port"])
async def test_port_in_use_is_a_clear_error(make_text_engine: Callable[..., TextEngine], port: str) -> None:
    """A port another server holds is a ListenError naming the flag; nothing is left listening."""
    first = Server(ServeSettings(grpc_port=0, ws_port=0, http_port=0), [make_text_engine()])
    await first.start()
    try:
        taken = {"grpc_port": first.grpc_port, "ws_port": first.ws_port, "http_port": first.http_port}[port]
        settings = ServeSettings(**{"grpc_port": 0, "ws_port": 0, "http_port": 0, port: taken})
        second = Server(settings, [make_text_engine()])
        with pytest.raises(ListenError, match=rf"^--{port.replace('_', '-')}: cannot listen on 127.0.0.1:{taken}: "):
            await second.start()
    finally:
        await first.stop()


async def test_image_checkpoints_load_under_their_stems(tiny_image_models: dict[str, Path], tmp_path: Path) -> None:
    """--image-checkpoints loads one engine per file, named by its stem; a missing or twice-named file is refused."""
    paths = f"{tiny_image_models['rbm']},{tiny_image_models['dcgan']}"
    engines = load_image_engines(ServeSettings(image_checkpoints=tuple(paths.split(","))).validated())
    try:
        assert [(e.model_id, e.family) for e in engines] == [("rbm", "rbm"), ("dcgan", "dcgan")]
    finally:
        await asyncio.gather(*(e.close() for e in engines))
    missing = tmp_path / "gan.safetensors"
    with pytest.raises(CheckpointError, match=f"image checkpoint {missing} does not exist"):
        load_image_engines(ServeSettings(image_checkpoints=(str(missing),)))
    twice = (str(tiny_image_models["rbm"]), str(tiny_image_models["rbm"]))
    with pytest.raises(InvalidArgument, match="two checkpoints are named 'rbm'"):
        load_image_engines(ServeSettings(image_checkpoints=twice))


async def _read_until(process: asyncio.subprocess.Process, text: str, lines: list[str]) -> None:
    """Read the server's log into ``lines`` until a line holds ``text``."""
    assert process.stderr is not None
    while not any(text in line for line in lines):
        line = (await asyncio.wait_for(process.stderr.readline(), timeout(60))).decode()
        if not line:
            raise AssertionError(f"server exited before logging {text!r}:\n" + "".join(lines))
        lines.append(line)


async def test_sighup_drains_like_sigterm(tiny_text_checkpoint: Path) -> None:
    """SIGHUP (a closed terminal) lets a live stream finish within the grace period, and the process exits 0."""
    process = await _start("--text-checkpoint", str(tiny_text_checkpoint), "--grpc-port", "0", "--ws-port", "0",
                           "--audio-checkpoint", "none", "--grace-s", "60", "--torch-threads", "1")  # fmt: skip
    try:
        grpc_address, _, _ = await _listening(process)
        async with grpc.aio.insecure_channel(grpc_address) as channel:
            stub = generation_pb2_grpc.GenerationStub(channel)
            request = text_pb2.GenerateTextRequest(prompt="Lear.\n", sampling=sampling_pb2.Sampling(max_tokens=1000))
            call = stub.GenerateText(request)
            chunks = [await asyncio.wait_for(call.read(), timeout(10))]
            process.send_signal(signal.SIGHUP)
            while (chunk := await call.read()) is not grpc.aio.EOF:
                chunks.append(chunk)
        assert chunks[-1].finish_reason == sampling_pb2.FINISH_REASON_LENGTH
        assert len("".join(c.text for c in chunks)) == 1000
        assert await asyncio.wait_for(process.wait(), timeout(30)) == 0
        assert process.stderr is not None
        assert "shutting down on SIGHUP: live streams have 60.0 s to finish" in (await process.stderr.read()).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_second_signal_cancels_the_streams_left(tiny_text_checkpoint: Path) -> None:
    """A second SIGTERM during the drain cancels the live streams at once (one log line), and the process exits 0
    long before the grace period ends."""
    process = await _start("--text-checkpoint", str(tiny_text_checkpoint), "--grpc-port", "0", "--ws-port", "0",
                           "--audio-checkpoint", "none", "--grace-s", "600", "--stream-buffer", "1",
                           "--torch-threads", "1")  # fmt: skip
    try:
        grpc_address, _, lines = await _listening(process)
        async with grpc.aio.insecure_channel(grpc_address) as channel:
            stub = generation_pb2_grpc.GenerationStub(channel)
            request = text_pb2.GenerateTextRequest(prompt="Lear.\n", sampling=sampling_pb2.Sampling(max_tokens=2048))
            call = stub.GenerateText(request, metadata=(("x-request-id", "left-1"),))
            await asyncio.wait_for(call.read(), timeout(10))  # then unread: the stream pauses and cannot finish
            process.send_signal(signal.SIGTERM)
            await _read_until(process, "shutting down on SIGTERM", lines)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), timeout(30)) == 0
            call.cancel()
        assert process.stderr is not None
        rest = "".join(lines) + (await process.stderr.read()).decode()
        assert "SIGTERM again: cancelling the live streams now" in rest
        assert re.search(r"request grpc-left-1 .* finish=cancelled", rest), rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_bad_key_and_tls_files_stop_the_server_before_the_models_load(
    tmp_path: Path, certificates: Certificates
) -> None:
    """A key file that is not UTF-8 and an encrypted TLS key are one-line errors, exit 2, before any model loads (the
    text checkpoint named does not exist); a misspelt ANTIPHON_* variable is a warning naming the right one."""
    keys = tmp_path / "keys"
    keys.write_bytes(b"caf\xe9\n")
    missing = str(tmp_path / "none.safetensors")
    process = await _start("--api-key-file", str(keys), "--text-checkpoint", missing, env={"ANTIPHON_API_KEYS": "k"})
    _, stderr = await asyncio.wait_for(process.communicate(), timeout(60))
    assert process.returncode == 2
    log = stderr.decode()
    assert log.endswith(f"antiphon: error: --api-key-file: {keys} is not UTF-8 text\n"), log
    assert "ANTIPHON_API_KEYS is not a setting of antiphon serve and is ignored (did you mean ANTIPHON_API_KEY?)" in log
    assert "Traceback" not in log and "loading the models" not in log
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "ec", "-in", str(certificates.key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
        check=True,
        capture_output=True,
    )
    process = await _start("--tls-cert", str(certificates.cert), "--tls-key", str(encrypted), "--text-checkpoint",
                           missing, stdin=asyncio.subprocess.DEVNULL)  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout(60))
    assert process.returncode == 2
    assert stderr.decode().endswith(
        f"antiphon: error: --tls-key: {encrypted} is encrypted: give an unencrypted key "
        "(openssl pkey -in KEY -out PLAIN)\n"
    )


async def test_plain_clients_on_a_tls_grpc_port_write_no_lines_of_grpcs_own(
    tiny_text_checkpoint: Path, certificates: Certificates
) -> None:
    """A plain-text client (or a scanner) on the gRPC TLS port fails its handshake; gRPC's C core would write a line
    of its own format to stderr for each one: the server keeps them out of its log."""
    process = await _start(
        "--text-checkpoint", str(tiny_text_checkpoint), "--tls-cert", str(certificates.cert),
        "--tls-key", str(certificates.key), "--grpc-port", "0", "--ws-port", "0",
        env={key: value for key, value in os.environ.items() if key != "GRPC_VERBOSITY"},
    )  # fmt: skip
    lines: list[str] = []
    await _read_until(process, "listening grpcs=", lines)
    host, port = lines[-1].split("grpcs=")[1].split()[0].rsplit(":", 1)
    for _ in range(3):
        _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
    process.send_signal(signal.SIGTERM)
    _, rest = await asyncio.wait_for(process.communicate(), timeout(60))
    assert process.returncode == 0
    assert "Handshake failed" not in rest.decode()


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("192.0.2.1", "--host: 192.0.2.1 is not an address of this machine"),
        ("no.such.host.invalid", "--host: cannot resolve no.such.host.invalid: "),
    ],
)
async def test_a_host_that_is_not_this_machines_names_host(
    make_text_engine: Callable[..., TextEngine], host: str, message: str
) -> None:
    """A host that does not resolve, or is not an address of this machine, is a ListenError naming --host, not a
    port."""
    server = Server(ServeSettings(host=host, grpc_port=0, ws_port=0, http_port=0), [make_text_engine()])
    with pytest.raises(ListenError) as info:
        await server.start()
    await server.stop(0)
    assert str(info.value).startswith(message)


def test_a_certificate_near_or_past_its_end_is_a_warning(
    certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    """A certificate that has expired, or expires within a week, is a WARNING with its date; a later one is not."""
    caplog.set_level(logging.WARNING, logger="antiphon.server")
    now = datetime.now(UTC)  # the test certificate is valid for 2 days
    warn_if_expiring(certificates.cert, now - timedelta(days=30))
    assert caplog.records == []
    warn_if_expiring(certificates.cert, now)
    warn_if_expiring(certificates.cert, now + timedelta(days=3))
    messages = [r.getMessage() for r in caplog.records]
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert re.fullmatch(rf"--tls-cert: {certificates.cert} expires on \d{{4}}-\d\d-\d\d \d\d:\d\d UTC: .*", messages[0])
    assert re.fullmatch(rf"--tls-cert: {certificates.cert} expired on \d{{4}}-\d\d-\d\d \d\d:\d\d UTC: .*", messages[1])


def test_an_open_or_clear_text_server_off_loopback_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Off the loopback interface: no key is a WARNING, keys without TLS another; on loopback neither."""
    caplog.set_level(logging.WARNING, logger="antiphon.server")
    warn_if_exposed(ServeSettings(host="127.0.0.1"), keys=False, tls=False)
    warn_if_exposed(ServeSettings(host="::1"), keys=True, tls=False)
    warn_if_exposed(ServeSettings(host="0.0.0.0"), keys=True, tls=True)
    assert caplog.records == []
    warn_if_exposed(ServeSettings(host="0.0.0.0"), keys=False, tls=True)
    warn_if_exposed(ServeSettings(host="::"), keys=True, tls=False)
    messages = [r.getMessage() for r in caplog.records]
    assert "anyone who can reach it may use it" in messages[0]
    assert "keys travel in plain text" in messages[1]


async def test_sessions_in_redis_are_told_the_models_shape(tiny_text_checkpoint: Path) -> None:
    """With --session-store, the engine's sessions know the model's (layers, hidden, vocabulary), so a state of
    another shape in Redis is refused before the model reads it."""
    engine = load_text_engine(ServeSettings(session_store="redis://127.0.0.1:1/0"), tiny_text_checkpoint)
    try:
        assert engine.shared is not None
        row = engine.backend.dump_row(engine.backend.zero_state(1))
        assert engine.shared.shape == (row.h.shape[0], row.h.shape[2], row.logits.shape[1])
    finally:
        await engine.close()
