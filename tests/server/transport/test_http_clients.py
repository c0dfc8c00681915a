"""The HTTP API as clients written by others use it, against a real server (port 0, the tiny text model): LangChain's
``ChatOpenAI`` and ``OpenAI`` (its batches) and LiteLLM with what they send by default, the official SDK's retries,
and a page on another origin (CORS) reading answers and refusals.

LangChain and LiteLLM belong with the other test clients, installed after the rest (the Makefile's ``TEST_CLIENTS``):
they need a newer typing-extensions than the export tools declare, so the dev extras' one resolution cannot hold
them. They are imported in the tests that use them (LiteLLM warns on import), and a missing one fails its tests.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import timeout
from tests.server.transport.clients import sdk

# The clients speak to one transport over one engine: the default backend keeps this file short.
pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)

StartServer = Callable[..., Any]
ORIGIN = "https://chat.example"
HISTORY = [
    {"role": "system", "content": "A heath. Storm still."},
    {"role": "user", "content": "Good night, my lord."},
    {"role": "assistant", "content": "Come hither."},
    {"role": "user", "content": "What love may do."},
]
# LiteLLM's import and calls warn about its own use of pydantic (deprecated Field arguments, ReadOnly items)
LITELLM_WARNINGS = ("ignore::DeprecationWarning", "ignore::UserWarning")


async def sdk_reply(server: Any, seed: int) -> str:
    """The official SDK's whole reply to HISTORY as the Fool with ``seed``."""
    async with sdk(server) as client:
        answer = await client.chat.completions.create(
            model="tiny/fool",
            messages=HISTORY,  # type: ignore[arg-type]
            seed=seed,
            max_tokens=40,
        )
    reply = answer.choices[0].message.content or ""
    assert reply, f"seed {seed} gives an empty reply: nothing to compare"
    return reply


@pytest.fixture
async def http_client() -> AsyncIterator[Any]:
    """The SDK's own HTTP client, handed to the clients built on it and closed after the test."""
    client = openai.DefaultAsyncHttpxClient()
    yield client
    await client.aclose()


def chat_openai(server: Any, http_client: Any, **options: Any) -> Any:
    """LangChain's ``ChatOpenAI`` on ``server`` as the Fool, with LangChain's defaults but for ``options``."""
    langchain_openai = importlib.import_module("langchain_openai")
    return langchain_openai.ChatOpenAI(
        model="tiny/fool",
        base_url=f"http://{server.http_address}/v1",
        api_key="unused",
        max_retries=0,
        http_async_client=http_client,
        **options,
    )


def langchain_history() -> list[Any]:
    messages = importlib.import_module("langchain_core.messages")
    kinds = {"system": messages.SystemMessage, "user": messages.HumanMessage, "assistant": messages.AIMessage}
    return [kinds[m["role"]](m["content"]) for m in HISTORY]


async def test_langchain_whole_and_streamed_replies_are_the_sdks(start_server: StartServer, http_client: Any) -> None:
    """ChatOpenAI's ``ainvoke`` and ``astream`` (with its usage) over a system message and a history answer the
    reply the official SDK gets for the same seed."""
    server = await start_server()
    expected = await sdk_reply(server, seed=5)
    llm = chat_openai(server, http_client, seed=5, max_tokens=40, stream_usage=True)
    whole = await llm.ainvoke(langchain_history())
    chunks = [chunk async for chunk in llm.astream(langchain_history())]
    streamed = chunks[0]
    for chunk in chunks[1:]:
        streamed += chunk
    assert whole.content == streamed.content == expected
    assert streamed.usage_metadata["output_tokens"] == whole.usage_metadata["output_tokens"] > 0
    assert whole.response_metadata["finish_reason"] in ("stop", "length")


async def test_langchain_neutral_options_are_accepted(start_server: StartServer, http_client: Any) -> None:
    """What ChatOpenAI sends for its options at their neutral values (n, penalties, logprobs, max_completion_tokens,
    an empty tool list with tool_choice none, a text response format) is answered as without them."""
    server = await start_server()
    expected = await sdk_reply(server, seed=5)
    neutral = chat_openai(
        server,
        http_client,
        seed=5,
        max_completion_tokens=40,
        n=1,
        presence_penalty=0,
        frequency_penalty=0,
        logprobs=False,
    ).bind(tools=[], tool_choice="none", response_format={"type": "text"}, parallel_tool_calls=False, user="u-1")
    assert (await neutral.ainvoke(langchain_history())).content == expected


async def test_langchain_tool_history_and_tools_are_refused_by_name(
    start_server: StartServer, http_client: Any
) -> None:
    """A tool bound to ChatOpenAI, and a history whose assistant called a tool, are the SDK's BadRequestError naming
    what was refused: ``tools``, and the call itself (``messages[2].tool_calls``), not the assistant's role."""
    messages = importlib.import_module("langchain_core.messages")
    server = await start_server()
    llm = chat_openai(server, http_client, max_tokens=5)
    weather = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    called = messages.AIMessage("", tool_calls=[{"id": "call_1", "name": "weather", "args": {}}])
    history = [*langchain_history()[:2], called, messages.ToolMessage("Rain.", tool_call_id="call_1")]
    with pytest.raises(openai.BadRequestError) as tools:
        await llm.bind_tools([weather]).ainvoke(langchain_history())
    with pytest.raises(openai.BadRequestError) as calls:
        await llm.ainvoke([*history, messages.HumanMessage("And now?")])
    assert isinstance(tools.value.body, dict) and tools.value.body["param"] == "tools"
    assert isinstance(calls.value.body, dict) and calls.value.body["param"] == "messages[2].tool_calls"


async def test_langchain_completions_batch_is_one_request_answered_per_prompt(
    start_server: StartServer, http_client: Any
) -> None:
    """LangChain's completions model (``OpenAI``) sends a batch of prompts as one request: each generation is the
    text its prompt gets alone."""
    langchain_openai = importlib.import_module("langchain_openai")
    server = await start_server()
    llm = langchain_openai.OpenAI(
        model="tiny",
        base_url=f"http://{server.http_address}/v1",
        api_key="unused",
        max_retries=0,
        http_async_client=http_client,
        max_tokens=30,
        seed=4,
    )
    prompts = ["Lear.\n", "Kent.\nGood night.\n\nFool.\n"]
    batch = await llm.agenerate(prompts)
    alone = [await llm.ainvoke(prompt) for prompt in prompts]
    assert [generations[0].text for generations in batch.generations] == alone


@pytest.fixture
def litellm(monkeypatch: pytest.MonkeyPatch) -> Any:
    """LiteLLM, told to read its model price list from its own package (it would fetch one from the network)."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("litellm")


@pytest.mark.filterwarnings(*LITELLM_WARNINGS)
async def test_litellm_whole_and_streamed_replies_are_the_sdks(
    start_server: StartServer, litellm: Any, http_client: Any
) -> None:
    """LiteLLM's ``acompletion`` through its OpenAI provider, whole and streamed with usage, with the fields it
    passes on (seed, user, n 1, parallel_tool_calls, max_completion_tokens) answers the SDK's reply."""
    server = await start_server()
    expected = await sdk_reply(server, seed=3)
    async with openai.AsyncOpenAI(
        base_url=f"http://{server.http_address}/v1", api_key="unused", max_retries=0, http_client=http_client
    ) as client:
        fields = {
            "model": "openai/tiny/fool",
            "messages": HISTORY,
            "client": client,
            "seed": 3,
            "user": "u-1",
            "n": 1,
            "parallel_tool_calls": False,
            "max_completion_tokens": 40,
        }
        whole = await litellm.acompletion(**fields)
        stream = await litellm.acompletion(**fields, stream=True, stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    assert whole.choices[0].message.content == expected
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens > 0


@pytest.mark.filterwarnings(*LITELLM_WARNINGS)
async def test_litellm_refusal_names_the_parameter(start_server: StartServer, litellm: Any, http_client: Any) -> None:
    """An option the server cannot honour (n 2) is LiteLLM's BadRequestError carrying the server's message."""
    server = await start_server()
    async with openai.AsyncOpenAI(
        base_url=f"http://{server.http_address}/v1", api_key="unused", max_retries=0, http_client=http_client
    ) as client:
        with pytest.raises(litellm.BadRequestError) as info:
            await litellm.acompletion(model="openai/tiny", messages=HISTORY, client=client, n=2, max_tokens=5)
    assert info.value.status_code == 400
    assert "n: is not supported by this server except at null or 1, got 2" in str(info.value)


async def test_a_model_kind_not_served_is_not_retried(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Speech from a server without an audio model is 501 with ``x-should-retry: false``: the SDK, which retries
    every 5xx by default, asks once and raises at once rather than after two retries that cannot succeed."""
    caplog.set_level("INFO")
    server = await start_server()
    base = f"http://{server.http_address}/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=2, timeout=timeout(10)) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.audio.speech.create(model="tts-1", voice="alloy", input="Hail.")
    asked = [r for r in caplog.records if "failed: UNIMPLEMENTED" in r.getMessage()]
    assert (info.value.status_code, info.value.response.headers["x-should-retry"]) == (501, "false")
    assert len(asked) == 1


async def test_a_page_on_a_public_origin_may_call_a_server_on_a_private_network(start_server: StartServer) -> None:
    """Chrome asks a server on a private network whether a public page may call it (Private Network Access): an
    origin --cors-origins names gets yes; one it does not name (refused as any request of another site is, 403), and
    any origin of a server open to ``*`` (any site at all), get no."""
    named_only = await start_server(settings={"cors_origins": (ORIGIN,)})
    everyone = await start_server(settings={"cors_origins": ("*",)})
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
        "Access-Control-Request-Private-Network": "true",
    }
    async with httpx.AsyncClient(timeout=timeout(10)) as client:
        url = f"http://{named_only.http_address}/v1/chat/completions"
        named = await client.options(url, headers={**preflight, "Origin": ORIGIN})
        other = await client.options(url, headers={**preflight, "Origin": "https://other.example"})
        anyone = await client.options(
            f"http://{everyone.http_address}/v1/chat/completions", headers={**preflight, "Origin": ORIGIN}
        )
    assert named.status_code == 200, named.text
    assert named.headers["Access-Control-Allow-Private-Network"] == "true"
    assert named.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert other.status_code == 403 and "Access-Control-Allow-Origin" not in other.headers
    assert anyone.status_code == 400 and "Access-Control-Allow-Private-Network" not in anyone.headers


async def test_a_page_on_another_origin_reads_the_headers_it_needs(start_server: StartServer) -> None:
    """A page on an allowed origin may read the PCM's rate (``X-Sample-Rate``) and when to retry an overloaded
    server (``Retry-After``): CORS shows it only safelisted headers unless the answer exposes them."""
    server = await start_server(settings={"cors_origins": (ORIGIN,)}, audio={"max_text_chars": 200, "max_seconds": 5.0})
    speech = {"model": "tts-1", "voice": "alloy", "input": "Hail.", "response_format": "pcm"}
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(30)) as client:
        answer = await client.post("/v1/audio/speech", json=speech, headers={"Origin": ORIGIN})
    exposed = {name.strip().lower() for name in answer.headers["Access-Control-Expose-Headers"].split(",")}
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert {"x-sample-rate", "retry-after", "x-should-retry", "x-request-id"} <= exposed


async def test_our_own_fault_is_readable_by_a_page_on_another_origin(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500 (a bug of ours, made here by a registry that raises) carries the CORS headers too, so the page shows
    "internal server error" rather than a network failure; the traceback is in the server's log."""
    server = await start_server(settings={"cors_origins": (ORIGIN,)})

    def broken() -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(server.models, "text_infos", broken)
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        answer = await client.get("/v1/models", headers={"Origin": ORIGIN})
    assert answer.status_code == 500
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert answer.json()["error"]["type"] == "server_error"
