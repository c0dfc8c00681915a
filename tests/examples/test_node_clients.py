"""The Node example clients (examples/node), each run as a subprocess against a real server in the test's loop."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.transport import grpc_options
from tests.conftest import timeout
from tests.server.helpers import reference_text

NODE_DIR = Path(__file__).resolve().parents[2] / "examples" / "node"
PROTO_DIR = NODE_DIR.parents[1] / "proto"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not on PATH: the Node example clients need Node 20"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules").is_dir(),
        reason="examples/node/node_modules is absent: run `npm ci --prefix examples/node` (make test does)",
    ),
    # The clients speak to the transports, whatever the engine's backend: the default one keeps this file short.
    pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True),
]

StartServer = Callable[..., Any]
STOP = ("\n\n",)


@dataclass
class Run:
    status: int | None
    stdout: str
    stderr: str


async def node(script: str, *args: str, env: dict[str, str] | None = None) -> Run:
    """Run ``node script args`` in examples/node without blocking the loop the server runs in."""
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE,
        script,
        *args,
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout(30))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return Run(process.returncode, out.decode("utf-8"), err.decode("utf-8"))


async def test_grpc_client_streams_the_reference_text(start_server: StartServer, tiny_text_model: Any) -> None:
    """grpc_client.mjs prints the seeded text of the reference loop, then the models, finish reason and usage."""
    server = await start_server()
    run = await node(
        "grpc_client.mjs",
        *("--address", server.grpc_address, "--prompt", "Kent.\\n"),  # typed as in a shell: \n is a newline
        *("--temperature", "1.0", "--seed", "21", "--max-tokens", "150"),
    )
    expected, reason = reference_text(tiny_text_model, "Kent.\n", temperature=1.0, seed=21, max_tokens=150)
    assert (run.status, run.stdout) == (0, expected), run.stderr
    assert run.stderr.splitlines() == [
        "models: tiny (text, default)",
        f"finish_reason={reason} prompt_tokens=7 completion_tokens=150",
    ]
    assert reason == "length"


async def test_ws_client_chat_turns_continue_the_session(start_server: StartServer, tiny_text_model: Any) -> None:
    """Two runs of ws_client.mjs on one session: each reply is the reference's for the whole history so far."""
    server = await start_server()
    address = ("--address", server.ws_address, "--session-id", "s1")
    first = await node("ws_client.mjs", *address, "--persona", "Fool", "--message", "Good night.", "--seed", "1")
    second = await node("ws_client.mjs", *address, "--message", "My lord.", "--seed", "2")

    turn1, turn2 = "Kent.\nGood night.\n\nFool.\n", "Kent.\nMy lord.\n\nLear.\n"
    expected1, reason1 = reference_text(tiny_text_model, turn1, seed=1, stop=STOP)
    said = expected1 + ("\n\n" if reason1 == "stop" else "")
    closing = "" if said.endswith("\n\n") else "\n" if said.endswith("\n") else "\n\n"
    expected2, reason2 = reference_text(tiny_text_model, turn1 + said + closing + turn2, seed=2, stop=STOP)
    prompt1 = len("\n" + turn1)  # the start-of-text newline, then the turn
    generated2 = len(expected2) + (len("\n\n") if reason2 == "stop" else 0)  # the blank line that ends it counts

    assert (first.status, first.stdout) == (0, expected1), first.stderr
    assert first.stderr.splitlines() == [
        f"finish_reason={reason1} turns=1 prompt_tokens={prompt1} completion_tokens={len(said)}"
    ]
    assert (second.status, second.stdout) == (0, expected2), second.stderr
    assert second.stderr.splitlines() == [
        f"finish_reason={reason2} turns=2 prompt_tokens={len(closing + turn2)} completion_tokens={generated2}"
    ]


@pytest.mark.parametrize(
    ("script", "port", "args"),
    [
        ("grpc_client.mjs", "grpc_address", ()),
        ("ws_client.mjs", "ws_address", ("--session-id", "s1", "--message", "Hello.")),
    ],
)
async def test_bad_sampling_ends_with_invalid_argument(
    start_server: StartServer, script: str, port: str, args: tuple[str, ...]
) -> None:
    """A temperature out of range ends the client with status 1 and the server's INVALID_ARGUMENT on stderr."""
    server = await start_server()
    run = await node(script, "--address", getattr(server, port), *args, "--temperature", "500")
    assert (run.status, run.stdout) == (1, "")
    assert run.stderr.splitlines()[-1] == (
        "error: INVALID_ARGUMENT: sampling.temperature: must be between 0 and 100 (0 is greedy), got 500.0"
    )


async def test_openai_node_sdk_streams_what_the_api_answers(start_server: StartServer) -> None:
    """openai_chat.mjs, OpenAI's own Node SDK streaming a chat completion with a persona, prints the reply the API
    gives the same request whole, with its finish reason and usage (stream_options.include_usage)."""
    server = await start_server(settings={"api_key": "sk-node"})
    base = f"http://{server.http_address}/v1"
    run = await node(
        "openai_chat.mjs",
        *("--base-url", base, "--model", "tiny/fool", "--message", "Good night, my lord."),
        *("--seed", "7", "--max-tokens", "60"),
        env={"OPENAI_API_KEY": "sk-node"},
    )
    body = {
        "model": "tiny/fool",
        "messages": [{"role": "user", "content": "Good night, my lord."}],
        "seed": 7,
        "max_completion_tokens": 60,
    }
    async with httpx.AsyncClient(headers={"Authorization": "Bearer sk-node"}, timeout=timeout(30)) as client:
        whole = (await client.post(f"{base}/chat/completions", json=body)).json()
    choice, usage = whole["choices"][0], whole["usage"]
    assert (run.status, run.stdout) == (0, choice["message"]["content"]), run.stderr
    assert run.stderr.splitlines() == [
        f"finish_reason={choice['finish_reason']} prompt_tokens={usage['prompt_tokens']} "
        f"completion_tokens={usage['completion_tokens']}"
    ]


async def test_openai_node_sdk_streams_a_response(start_server: StartServer) -> None:
    """openai_chat.mjs --api responses: the Node SDK streaming the Responses API's events prints the reply the API
    gives the same request whole, with its status and usage."""
    server = await start_server()
    base = f"http://{server.http_address}/v1"
    run = await node(
        "openai_chat.mjs",
        *("--api", "responses", "--base-url", base, "--model", "tiny/fool", "--message", "Good night, my lord."),
        *("--system", "A castle.", "--seed", "7", "--max-tokens", "60"),
    )
    body = {
        "model": "tiny/fool",
        "input": "Good night, my lord.",
        "instructions": "A castle.",
        "seed": 7,
        "max_output_tokens": 60,
    }
    async with httpx.AsyncClient(timeout=timeout(30)) as client:
        whole = (await client.post(f"{base}/responses", json=body)).json()
    text, usage = whole["output"][0]["content"][0]["text"], whole["usage"]
    assert (run.status, run.stdout) == (0, text), run.stderr
    assert run.stderr.splitlines() == [
        f"status={whole['status']} input_tokens={usage['input_tokens']} output_tokens={usage['output_tokens']}"
    ]


async def test_the_vercel_ai_sdk_streams_a_response(start_server: StartServer) -> None:
    """ai_sdk_chat.mjs: the Vercel AI SDK's OpenAI provider, which speaks the Responses API by default, streams the
    greedy reply (temperature 0: it sends no seed) that the API gives the same conversation whole, with its usage."""
    server = await start_server(settings={"api_key": "sk-node"})
    base = f"http://{server.http_address}/v1"
    run = await node(
        "ai_sdk_chat.mjs",
        *("--base-url", base, "--model", "tiny/fool", "--message", "Good night, my lord."),
        *("--system", "A castle.", "--temperature", "0", "--max-tokens", "60"),
        env={"OPENAI_API_KEY": "sk-node"},
    )
    body = {
        "model": "tiny/fool",
        "input": [{"role": "system", "content": "A castle."}, {"role": "user", "content": "Good night, my lord."}],
        "temperature": 0,
        "max_output_tokens": 60,
    }
    async with httpx.AsyncClient(headers={"Authorization": "Bearer sk-node"}, timeout=timeout(30)) as client:
        whole = (await client.post(f"{base}/responses", json=body)).json()
    text, usage = whole["output"][0]["content"][0]["text"], whole["usage"]
    finish = "stop" if whole["status"] == "completed" else "length"
    assert (run.status, run.stdout) == (0, text), run.stderr
    assert run.stderr.splitlines() == [
        f"finish_reason={finish} input_tokens={usage['input_tokens']} output_tokens={usage['output_tokens']}"
    ]


async def test_openai_node_sdk_with_a_wrong_key_is_refused(start_server: StartServer) -> None:
    """With a key the server does not accept, the SDK's AuthenticationError ends the client with the 401."""
    server = await start_server(settings={"api_key": "sk-node"})
    run = await node(
        "openai_chat.mjs",
        *("--base-url", f"http://{server.http_address}/v1", "--message", "Hail."),
        env={"OPENAI_API_KEY": "sk-wrong"},
    )
    assert (run.status, run.stdout) == (1, "")
    assert run.stderr.splitlines()[-1].startswith("error: 401: ")
    assert "wrong API key" in run.stderr


# A grpc-js client (arguments: address, proto folder, keepalive time in ms, hold time in ms) that pings at its
# keepalive time, starts a long stream and stops reading it (flow control pauses it: the server sends nothing), then
# reads on after the hold time: it prints "alive" if the stream lived, else the stream's error.
PAUSED_STREAM = """
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
const [address, protoDir, keepaliveMs, holdMs] = process.argv.slice(1);
const definition = protoLoader.loadSync("antiphon/v1/generation.proto", { includeDirs: [protoDir], keepCase: true });
const Generation = grpc.loadPackageDefinition(definition).antiphon.v1.Generation;
const client = new Generation(address, grpc.credentials.createInsecure(), {
  "grpc.keepalive_time_ms": Number(keepaliveMs),
  "grpc.keepalive_permit_without_calls": 1,
});
const call = client.GenerateText({ prompt: "Lear.\\n", sampling: { seed: 1, max_tokens: 100000 } });
let failed = null;
let held = false;
call.on("error", (error) => {
  if (failed === null && error.code !== grpc.status.CANCELLED) failed = `${grpc.status[error.code]}: ${error.details}`;
});
call.on("data", () => {
  if (held) return;
  held = true;
  call.pause();
  setTimeout(() => {
    call.resume();
    setTimeout(() => {
      console.log(failed === null ? "alive" : `error: ${failed}`);
      call.cancel();
      client.close();
    }, 200);
  }, Number(holdMs));
});
"""


async def test_grpc_js_keepalive_pings_keep_a_paused_stream(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grpc-js client pinging as often as the server allows keeps a stream that flow control has paused (no data
    from the server forgives a ping), rather than losing its connection to GOAWAY too_many_pings."""
    monkeypatch.setattr(grpc_options, "MIN_PING_INTERVAL_MS", 200)  # the test's time scale; the policy is the same
    server = await start_server(settings={"max_tokens": 100_000}, max_tokens=100_000, stream_buffer=4)
    engine = server.engines[0]
    run = await node("--input-type=module", "-e", PAUSED_STREAM, server.grpc_address, str(PROTO_DIR), "250", "4000")
    assert (run.status, run.stdout) == (0, "alive\n"), run.stderr
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))


# Many streams at once on one grpc-js client (one channel, one HTTP/2 connection): each seed's text, as JSON.
MANY_STREAMS = """
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
const [address, protoDir, count] = process.argv.slice(1);
const definition = protoLoader.loadSync("antiphon/v1/generation.proto", { includeDirs: [protoDir], keepCase: true });
const Generation = grpc.loadPackageDefinition(definition).antiphon.v1.Generation;
const client = new Generation(address, grpc.credentials.createInsecure());
const texts = await Promise.all(
  Array.from({ length: Number(count) }, (_, seed) => new Promise((resolve, reject) => {
    let text = "";
    const call = client.GenerateText({ prompt: "Kent.\\n", sampling: { seed, max_tokens: 40, stop: ["\\n\\n"] } });
    call.on("data", (chunk) => { text += chunk.text ?? ""; });
    call.on("error", reject);
    call.on("end", () => resolve(text));
  })),
);
console.log(JSON.stringify(texts));
client.close();
"""


async def test_grpc_js_runs_a_hundred_streams_on_one_channel(start_server: StartServer, tiny_text_model: Any) -> None:
    """A hundred GenerateText streams at once on one grpc-js channel (past --max-streams: some wait their turn)
    each get their own seed's text, as the reference loop writes it."""
    server = await start_server(max_streams=64, max_waiting=64)
    run = await node("--input-type=module", "-e", MANY_STREAMS, server.grpc_address, str(PROTO_DIR), "100")
    assert run.status == 0, run.stderr
    texts = json.loads(run.stdout)
    expected = [
        reference_text(tiny_text_model, "Kent.\n", seed=seed, max_tokens=40, stop=STOP)[0] for seed in range(100)
    ]
    assert texts == expected
