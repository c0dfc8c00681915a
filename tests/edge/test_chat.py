"""``antiphon-edge chat`` against a real server over gRPC and WebSocket, and its fallback to the device's own
generator when the server is down, and back when it returns."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.certs import Certificates
from tests.conftest import timeout
from tests.edge.conftest import (
    REPO,
    EdgeFiles,
    RunningServer,
    edge_env,
    edge_python,
    run_edge,
    serving,
    start_server,
)
from tests.services import free_port

SEEDED = ["--seed", "3", "--temperature", "0.8", "--max-tokens", "40"]


def _url(server: RunningServer, transport: str, tls: bool = False) -> str:
    if transport == "grpc":
        return f"grpc{'s' if tls else ''}://{server.grpc}"
    return f"ws{'s' if tls else ''}://{server.ws}/chat"


def _chat(edge_files: EdgeFiles, url: str, *flags: str) -> list[str]:
    """The arguments of ``chat`` against ``url`` with the exported models, and ``flags``."""
    return ["chat", "--server", url, "--models", str(edge_files.export), *flags]


def _json_turn(
    edge_files: EdgeFiles, url: str, *flags: str, env_more: dict[str, str] | None = None
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """One seeded turn ("Good night, my lord.") with --json and ``flags``, which exits 0: its one JSON object, and the
    finished command."""
    args = _chat(edge_files, url, "--json", *flags, "--message", "Good night, my lord.", *SEEDED)
    done = run_edge(*args, env_more=env_more)
    assert done.returncode == 0, done.stderr
    (turn,) = [json.loads(line) for line in done.stdout.splitlines()]
    return turn, done


@pytest.mark.parametrize("transport", ["grpc", "ws"])
def test_chat_streams_the_server_reply(edge_files: EdgeFiles, server: RunningServer, transport: str) -> None:
    """A turn over either transport is answered by the server, streamed to stdout."""
    done = run_edge(*_chat(edge_files, _url(server, transport), "--message", "Good night, my lord.", *SEEDED))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert "answering on this device" not in done.stderr


def test_both_transports_give_the_same_seeded_reply(edge_files: EdgeFiles, server: RunningServer) -> None:
    """Same seed, same reply, whether it came over gRPC or WebSocket (--json: one object per turn)."""
    replies = []
    for transport in ("grpc", "ws"):
        turn, _ = _json_turn(edge_files, _url(server, transport))
        assert turn["source"] == "server"
        assert turn["finish_reason"] in ("stop", "length")
        replies.append(turn["text"])
    assert replies[0] == replies[1] != ""


def test_chat_answers_on_the_device_when_the_server_is_down(edge_files: EdgeFiles) -> None:
    """Nothing listening: after the retries the device's step model answers, and says so on stderr."""
    turn, done = _json_turn(
        edge_files,
        f"grpc://127.0.0.1:{free_port()}",
        "--retries",
        "1",
        "--backoff",
        "0.1",
        "--connect-timeout",
        "0.5",
    )
    assert turn["source"] == "device"
    assert "server unreachable" in done.stderr
    assert "answering on this device with text_small_step" in done.stderr


def test_chat_without_server_or_step_model_fails_clearly(edge_files: EdgeFiles, tmp_path: Path) -> None:
    """No server and no step model to fall back on: exit 1 saying both."""
    manifest = json.loads((edge_files.export / "manifest.json").read_text())
    manifest["models"] = {k: v for k, v in manifest["models"].items() if not k.startswith("text_")}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    done = run_edge(
        "chat",
        "--server",
        f"ws://127.0.0.1:{free_port()}/",
        "--models",
        str(tmp_path),
        "--retries",
        "0",
        "--message",
        "Hello there.",
    )
    assert done.returncode == 1
    assert "no text step model (text_small_step, text_step)" in done.stderr


def test_bad_server_url_exits_2(edge_files: EdgeFiles) -> None:
    """The URL must be grpc://HOST:PORT or ws://HOST:PORT/PATH."""
    done = run_edge(*_chat(edge_files, "http://127.0.0.1:80", "--message", "x"))
    assert done.returncode == 2
    assert (
        "server: give grpc://HOST:PORT or ws://HOST:PORT/PATH (grpcs://, wss:// over TLS), got 'http://127.0.0.1:80'"
        in done.stderr
    )


@pytest.mark.parametrize("transport", ["grpc", "ws"])
def test_chat_falls_back_and_resumes(edge_files: EdgeFiles, transport: str) -> None:
    """Server up: the server answers; server stopped: the device answers; server back on its port: the server."""
    grpc_port, ws_port = free_port(), free_port()
    server = start_server(edge_files.text_checkpoint, grpc_port, ws_port)
    url = f"grpc://127.0.0.1:{grpc_port}" if transport == "grpc" else f"ws://127.0.0.1:{ws_port}/chat"
    chat = subprocess.Popen(
        [
            *edge_python(),
            "-m",
            "edge_client",
            *_chat(edge_files, url, "--json", "--retries", "2", "--backoff", "0.2", "--connect-timeout", "1", *SEEDED),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=edge_env(),
        cwd=REPO,
    )
    assert chat.stdin is not None and chat.stdout is not None

    def turn(message: str) -> dict[str, object]:
        assert chat.stdin is not None and chat.stdout is not None
        chat.stdin.write(message.encode() + b"\n")
        chat.stdin.flush()
        line = chat.stdout.readline()
        assert line, "chat exited: " + (chat.stderr.read().decode() if chat.stderr else "")
        return dict(json.loads(line))

    try:
        assert turn("Good night, my lord.")["source"] == "server"
        server.stop()
        assert turn("Where is the king?")["source"] == "device"
        server = start_server(edge_files.text_checkpoint, grpc_port, ws_port)
        assert turn("Come hither, sir.")["source"] == "server"
    finally:
        chat.stdin.close()
        chat.wait(timeout=timeout(30))
        server.stop()
    assert chat.returncode == 0
    assert chat.stderr is not None
    log = chat.stderr.read().decode()
    chat.stdout.close()
    chat.stderr.close()
    assert "answering on this device" in log and "answers again; back on the server" in log


def test_speak_without_an_audio_model_still_answers(
    edge_files: EdgeFiles, server: RunningServer, tmp_path: Path
) -> None:
    """--speak to a server with no audio model: the turn is asked again without audio and says no audio came."""
    out = tmp_path / "reply.wav"
    done = run_edge(
        *_chat(edge_files, _url(server, "grpc"), "--speak-to", str(out), "--message", "Good night, my lord.", *SEEDED)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert "asking again without audio" in done.stderr and "no audio came with this reply" in done.stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def speaking_server(edge_files: EdgeFiles) -> Iterator[RunningServer]:
    """A server with the tiny WaveNet as its audio model."""
    yield from serving(edge_files.text_checkpoint, audio=edge_files.audio_checkpoint)


@pytest.mark.parametrize("transport", ["grpc", "ws"])
def test_speak_writes_the_reply_audio(
    speaking_server: RunningServer, edge_files: EdgeFiles, transport: str, tmp_path: Path
) -> None:
    """With an audio model on the server, --speak-to writes the reply's streamed audio as a WAV at its rate."""
    from edge_client.audio import read_wav_header

    out = tmp_path / "reply.wav"
    args = ["--speak-to", str(out), "--message", "Good night, my lord.", "--seed", "3", "--max-tokens", "12"]
    done = run_edge(*_chat(edge_files, _url(speaking_server, transport), *args), seconds=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert f"wrote the spoken reply to {out}" in done.stderr
    with out.open("rb") as f:
        fmt = read_wav_header(f, str(out))
        samples = len(f.read()) // 2
    assert (fmt.channels, fmt.bits) == (1, 16)
    assert fmt.sample_rate in (8000, 16000)
    assert samples > fmt.sample_rate // 10  # at least a tenth of a second of speech


# -- API keys and TLS --------------------------------------------------------
KEY = "sk-edge/device+1"
MISSING = "missing API key: send it as Authorization: Bearer KEY"
WRONG = "wrong API key: it is not one this server accepts"
HINT = "(give the server's key with --api-key or ANTIPHON_API_KEY)"


@pytest.fixture(scope="module")
def secure_server(
    edge_files: EdgeFiles, certificates: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server over TLS (grpcs, wss, https) with the test authority's certificate, taking the keys of a key file."""
    keys = tmp_path_factory.mktemp("keys") / "keys"
    keys.write_text(f"# the devices' keys\n{KEY}\nsk-another-device\n", encoding="utf-8")
    options = ["--tls-cert", str(certificates.cert), "--tls-key", str(certificates.key), "--api-key-file", str(keys)]
    yield from serving(edge_files.text_checkpoint, options=options)


@pytest.mark.parametrize("transport", ["grpc", "ws"])
def test_chat_over_tls_with_the_key(
    edge_files: EdgeFiles, secure_server: RunningServer, certificates: Certificates, transport: str
) -> None:
    """grpcs:// and wss:// with --ca-file (the private authority) and the key from ANTIPHON_API_KEY: the server
    answers; the server's listening line said the TLS schemes."""
    turn, _ = _json_turn(
        edge_files,
        _url(secure_server, transport, tls=True),
        "--ca-file",
        str(certificates.ca),
        env_more={"ANTIPHON_API_KEY": KEY},
    )
    assert turn["source"] == "server" and turn["text"]
    assert any(
        f"listening grpcs={secure_server.grpc} wss={secure_server.ws} https=" in line for line in secure_server.log
    )


@pytest.mark.parametrize("transport", ["grpc", "ws"])
@pytest.mark.parametrize(("key", "reason"), [(None, MISSING), ("sk-not-a-device", WRONG)])
def test_chat_without_the_right_key_exits_2(
    edge_files: EdgeFiles,
    secure_server: RunningServer,
    certificates: Certificates,
    transport: str,
    key: str | None,
    reason: str,
) -> None:
    """No key, or a wrong one (--api-key): one line saying so and how to give it, exit 2, no traceback, and no
    answer from the device (a refused key is not an unreachable server)."""
    url = _url(secure_server, transport, tls=True)
    key_flags = ["--api-key", key] if key else []
    done = run_edge(
        *_chat(edge_files, url, "--ca-file", str(certificates.ca), "--message", "Good night, my lord.", *key_flags)
    )
    assert done.returncode == 2
    assert done.stderr == f"antiphon-edge: error: {url}: {reason} {HINT}\n"
    assert done.stdout == ""


@pytest.mark.parametrize("transport", ["grpc", "ws"])
def test_chat_does_not_trust_a_server_another_authority_signed(
    edge_files: EdgeFiles, secure_server: RunningServer, certificates: Certificates, transport: str
) -> None:
    """--ca-file of an authority that did not sign the server's certificate: the server is not trusted (the
    certificate check fails, as an unreachable server does), and the device answers."""
    turn, done = _json_turn(
        edge_files,
        _url(secure_server, transport, tls=True),
        "--ca-file",
        str(certificates.other_ca),
        "--api-key",
        KEY,
        "--retries",
        "0",
    )
    assert turn["source"] == "device"
    assert "CERTIFICATE_VERIFY_FAILED" in turn["note"]
    assert "Handshake failed" not in done.stderr  # said once, by this client, not again by gRPC's C core


@pytest.mark.parametrize(
    ("server_url", "message"),
    [
        ("grpc://127.0.0.1:1", "ca-file: is only read for grpcs:// and wss:// servers, got 'grpc://127.0.0.1:1'"),
        ("wss://127.0.0.1:1/", "ca-file: cannot read certificates from "),
    ],
)
def test_a_ca_file_it_cannot_use_exits_2(edge_files: EdgeFiles, tmp_path: Path, server_url: str, message: str) -> None:
    """--ca-file with a plain-text server, or a file of no certificate: exit 2 naming the option."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n", encoding="utf-8")
    done = run_edge(*_chat(edge_files, server_url, "--ca-file", str(ca), "--message", "x"))
    assert done.returncode == 2
    assert done.stderr.startswith(f"antiphon-edge: error: {message}")


# -- bad flags, and a server that stops answering ----------------------------
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "-1"], "--seed: must be in 0..2**64-1 (an unsigned 64-bit integer), got -1"),
        (["--seed", "99999999999999999999999"], "--seed: must be in 0..2**64-1 (an unsigned 64-bit integer), got 9"),
        (["--backoff", "-1"], "--backoff: must be in 0..60, got -1.0"),
        (["--backoff", "1e308"], "--backoff: must be in 0..60, got 1e+308"),
        (["--connect-timeout", "nan"], "--connect-timeout: must be a finite number, got nan"),
        (["--connect-timeout", "0"], "--connect-timeout: must be more than 0 and at most 3600, got 0.0"),
        (["--connect-timeout", "-1"], "--connect-timeout: must be more than 0 and at most 3600, got -1.0"),
        (["--stall-timeout", "0"], "--stall-timeout: must be more than 0 and at most 3600, got 0.0"),
        (["--retries", "-1"], "--retries: must be in 0..20, got -1"),
        (["--max-tokens", "-5"], "--max-tokens: must be in 1..4096, got -5"),
        (["--max-tokens", "0"], "--max-tokens: must be in 1..4096, got 0"),
        (["--temperature", "-1"], "--temperature: must be in 0..100, got -1.0"),
        (["--temperature", "nan"], "--temperature: must be a finite number, got nan"),
        (["--server", "grpc://127.0.0.1:99999"], "--server: Port out of range 0-65535 in 'grpc://127.0.0.1:99999'"),
        (["--server", "grpc://[::1"], "--server: Invalid IPv6 URL in 'grpc://[::1'"),
        (["--message", "caf\udce9"], "--message: is not valid UTF-8 text"),
    ],
)
def test_chat_bad_flags_exit_2(edge_files: EdgeFiles, flags: list[str], message: str) -> None:
    """A chat flag out of range (or a message that is not UTF-8) is named before any turn, server or device;
    exit 2, no traceback, no reply."""
    done = run_edge(*_chat(edge_files, f"grpc://127.0.0.1:{free_port()}", "--message", "Hello there.", *flags))
    assert done.returncode == 2, done.stderr
    assert f"antiphon-edge: error: {message}" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_chat_standard_input_that_is_not_utf8_exits_2(edge_files: EdgeFiles) -> None:
    """Lines of standard input are decoded as UTF-8 whatever the locale; other bytes are exit 2 naming the line."""
    done = run_edge(
        *_chat(edge_files, f"grpc://127.0.0.1:{free_port()}", "--retries", "0"),
        stdin=b"caf\xe9\n",
        env_more={"PYTHONIOENCODING": "utf-8:strict"},
    )
    assert done.returncode == 2, done.stderr
    assert "antiphon-edge: error: standard input: line 1 is not UTF-8 text" in done.stderr
    assert "Traceback" not in done.stderr


def test_offline_local_model_that_is_no_step_model_exits_2(edge_files: EdgeFiles) -> None:
    """--local-model naming a model with no vocabulary (the keyword spotter) is the user's mistake: exit 2."""
    done = run_edge(
        *_chat(edge_files, f"grpc://127.0.0.1:{free_port()}", "--retries", "0", "--local-model", "kws"),
        "--message",
        "Hello there.",
    )
    assert done.returncode == 2, done.stderr
    assert "antiphon-edge: error: --local-model: 'kws' is not a text step model (it has no vocabulary)" in done.stderr


@pytest.mark.parametrize("transport", ["grpc", "ws"])
def test_a_message_the_server_refuses_exits_2(edge_files: EdgeFiles, server: RunningServer, transport: str) -> None:
    """The server's INVALID_ARGUMENT (a message over its 4,000 characters) is a bad argument: exit 2 with its
    message, neither retried nor answered on the device."""
    done = run_edge(*_chat(edge_files, _url(server, transport), "--message", "x" * 4001))
    assert done.returncode == 2, done.stderr
    assert "antiphon-edge: error: server: INVALID_ARGUMENT: " in done.stderr
    assert "answering on this device" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("transport", ["grpc", "ws"])
def test_chat_answers_on_the_device_when_the_server_stops_answering(edge_files: EdgeFiles, transport: str) -> None:
    """A server that stops answering on an open connection (SIGSTOP) gives nothing for --stall-timeout: the turn
    counts as unreachable and the device answers, within seconds instead of never."""
    server = start_server(edge_files.text_checkpoint)
    url = _url(server, transport)
    flags = ["--json", "--retries", "0", "--connect-timeout", "1", "--stall-timeout", "1", *SEEDED]
    chat = subprocess.Popen(
        [*edge_python(), "-m", "edge_client", *_chat(edge_files, url, *flags)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=edge_env(),
        cwd=REPO,
    )
    assert chat.stdin is not None and chat.stdout is not None and chat.stderr is not None

    def turn(message: str) -> dict[str, object]:
        assert chat.stdin is not None and chat.stdout is not None
        chat.stdin.write(message.encode() + b"\n")
        chat.stdin.flush()
        ready, _, _ = select.select([chat.stdout], [], [], timeout(30))
        assert ready, "no reply: the chat hangs"
        line = chat.stdout.readline()
        assert line, "chat exited"
        return dict(json.loads(line))

    stopped = False
    try:
        assert turn("Good night, my lord.")["source"] == "server"
        os.kill(server.process.pid, signal.SIGSTOP)
        stopped = True
        began = time.monotonic()
        reply = turn("Where is the king?")
        assert reply["source"] == "device"
        assert "no answer for 1 s" in str(reply["note"])
        assert time.monotonic() - began < timeout(20)
    finally:
        if stopped:
            os.kill(server.process.pid, signal.SIGCONT)
        chat.stdin.close()
        chat.wait(timeout=timeout(30))
        server.stop()
    log = chat.stderr.read().decode()
    chat.stdout.close()
    chat.stderr.close()
    assert chat.returncode == 0, log
    assert "Traceback" not in log


@pytest.mark.parametrize(("target", "message"), [("missing/reply.wav", "is not a folder"), (".", "is a folder")])
def test_speak_to_that_cannot_be_written_exits_2_before_any_turn(
    edge_files: EdgeFiles, tmp_path: Path, target: str, message: str
) -> None:
    """--speak-to in a folder that does not exist, or naming a folder, is refused before the first turn (not after
    the reply, with a traceback); exit 2."""
    path = tmp_path / target
    done = run_edge(
        *_chat(edge_files, f"grpc://127.0.0.1:{free_port()}", "--retries", "0"),
        "--message",
        "Hello there.",
        "--speak-to",
        str(path),
    )
    assert done.returncode == 2, done.stderr
    assert f"antiphon-edge: error: --speak-to: {path if target == '.' else path.parent} {message}" in done.stderr
    assert "answering on this device" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("transport", ["grpc", "ws"])
def test_closed_standard_output_is_not_a_lost_connection(
    edge_files: EdgeFiles, server: RunningServer, transport: str
) -> None:
    """Standard output closed by its reader (``| head -c 1``) ends the run quietly, exit 0: the broken pipe is not
    reported as a connection lost mid-reply."""
    chat = subprocess.Popen(
        [*edge_python(), "-m", "edge_client", *_chat(edge_files, _url(server, transport), *SEEDED)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=edge_env(),
        cwd=REPO,
    )
    assert chat.stdout is not None
    chat.stdout.close()  # the reader is gone before the first token
    _, err = chat.communicate(b"Good night, my lord.\nWhere is the king?\n", timeout=timeout(60))
    log = err.decode()
    assert chat.returncode == 0, log
    assert "connection lost" not in log and "Broken pipe" not in log and "Traceback" not in log
