"""OpenAI's Responses API on the wire (``POST /v1/responses``): a request body decoded into the engine's
conversation, the response object, and the typed events of a streamed response, as the official SDKs read them.
Newer clients speak it by default (the Vercel AI SDK's ``openai(model)``, OpenAI's Agents SDK).

A persona's reply is one output message of one ``output_text`` part. ``previous_response_id`` continues a stored
response (:class:`ResponseStore`: the most recent ones in this process's memory, or any replica's in Redis with
``--session-store``); tools, images and reasoning are refused by name, as on Chat Completions.
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from server.engine.requests import Message, SamplingOptions
from server.engine.streams import FINISH_CANCELLED, FINISH_LENGTH, TextStream
from server.errors import AntiphonError, FailedPrecondition, InvalidArgument, NotFound
from server.transport.openai import IGNORED, check_fields, check_neutral, created, renamed, sampling, text_content

# Fields accepted only at these neutral values (None, absent, is always accepted).
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "tools": ([],),
    "tool_choice": ("none", "auto"),
    "parallel_tool_calls": (True, False),
    "max_tool_calls": (),
    "text": ({"format": {"type": "text"}}, {"format": {"type": "text"}, "verbosity": "medium"}),
    "truncation": ("disabled", "auto"),
    "include": ([],),
    "background": (False,),
    "top_logprobs": (0,),
    "reasoning": ({},),
    "prompt": (),
    "conversation": (),
    "context_management": (),
}
READ = ("model", "input", "instructions", "previous_response_id", "store", "stream", "max_output_tokens")
SAMPLING = ("temperature", "top_p", "top_k", "seed")  # top_k and seed: antiphon's own, as on Chat Completions
FIELDS = {*READ, *SAMPLING, *NEUTRAL, *IGNORED, "stream_options", "prompt_cache_retention"}
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = ("input_text", "output_text", "text")
MAX_STORED = 512  # responses kept for previous_response_id and GET: the most recent


@dataclass(frozen=True)
class ResponsesRequest:
    model: str
    input: tuple[Message, ...]
    instructions: str | None  # a system message before the rest, for this response only
    sampling: SamplingOptions
    stream: bool
    store: bool
    previous_response_id: str | None
    echo: dict[str, Any]  # fields the response object repeats as the request gave them


def responses_request(body: Any) -> ResponsesRequest:
    """Decode a /v1/responses body (``previous_response_id`` is only read here: :meth:`ResponseStore.earlier`
    finds its messages)."""
    body = check_fields(body, FIELDS, neutral_fields=False)
    check_neutral(body, NEUTRAL)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidArgument("model", "must name a model (GET /v1/models lists them)")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidArgument("instructions", "must be a string")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise InvalidArgument("previous_response_id", "must be the id of an earlier response")
    store = body.get("store", True)
    if not isinstance(store, bool | None):
        raise InvalidArgument("store", "must be true or false")
    chat_sampling = {key: body[key] for key in SAMPLING if key in body}
    options = sampling({**chat_sampling, "max_tokens": body.get("max_output_tokens")})
    messages = input_messages(body.get("input"))
    echo = {key: body.get(key) for key in ("max_output_tokens", "temperature", "top_p", "user")}
    echo["metadata"] = body.get("metadata") or {}
    return ResponsesRequest(
        model,
        tuple(messages),
        instructions or None,
        options,
        bool(body.get("stream")),
        store is not False,
        previous,
        echo,
    )


def input_messages(value: Any) -> list[Message]:
    """``input``: a string (the user's message), or a list of messages whose content is a string or text parts."""
    if isinstance(value, str):
        return [Message("user", value)]
    if not isinstance(value, list) or not value:
        raise InvalidArgument("input", "must be a string or a non-empty list of messages")
    messages = []
    for i, item in enumerate(value):
        field = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidArgument(field, "must be a message object")
        kind = item.get("type", "message")
        if kind != "message":
            why = "only messages are supported (a character model: no tools, files or reasoning)"
            raise InvalidArgument(f"{field}.type", f"{why}, got {kind!r}" if isinstance(kind, str) else why)
        role = item.get("role")
        if role not in ROLES:
            raise InvalidArgument(f"{field}.role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        content = item.get("content")
        if content is None:
            raise InvalidArgument(f"{field}.content", "must be a string or a list of text parts")
        messages.append(Message(ROLES[role], text_content(content, f"{field}.content", TEXT_PARTS)))
    return messages


def check_retrieve_query(query: Mapping[str, str]) -> None:
    """``GET /v1/responses/{id}``'s query: a kept response is read back whole, as it was answered. A replay of its
    events (``stream=true``, which an SDK would read as no events at all) and more than was kept (``include``) are
    refused by name."""
    if query.get("stream", "false").strip().lower() not in ("", "false"):
        raise InvalidArgument("stream", "a kept response is read back whole, not replayed as events: give false")
    if query.get("include") or query.get("include[]"):
        raise InvalidArgument("include", "a kept response holds its output only (no log-probabilities or sources)")


def wire_names(request: ResponsesRequest, earlier: int) -> dict[str, str]:
    """The engine's names of the conversation's fields (``messages[i]``) as this request's wire names them: the
    instructions, then ``earlier`` messages of the previous response, then ``input``."""
    names = {"messages": "input", "max_tokens": "max_output_tokens", "sampling.max_tokens": "max_output_tokens"}
    first = 1 if request.instructions else 0
    for i in range(first + earlier + len(request.input)):
        if i < first:
            wire = whole = "instructions"
        elif i < first + earlier:
            wire = whole = "previous_response_id"
        else:
            wire, whole = f"input[{i - first - earlier}]", ""
        names[f"messages[{i}]"] = wire
        for suffix in (".content", ".role"):
            names[f"messages[{i}]{suffix}"] = whole or wire + suffix
    return names


def renamed_error(error: AntiphonError, request: ResponsesRequest, earlier: int) -> AntiphonError:
    return renamed(error, wire_names(request, earlier))


def new_id(prefix: str) -> str:
    """An id no one can guess (a stored response is read back by its id alone)."""
    return f"{prefix}_{secrets.token_hex(24)}"


@dataclass
class Reply:
    """One response as it is made: its ids, its text so far, and the stream that makes it."""

    id: str
    item_id: str
    model: str
    request: ResponsesRequest
    created_at: int
    text: str = ""

    @classmethod
    def start(cls, model: str, request: ResponsesRequest) -> Reply:
        return cls(new_id("resp"), new_id("msg"), model, request, created())

    def message(self, status: str) -> dict[str, Any]:
        content = [{"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}]
        return {"id": self.item_id, "type": "message", "status": status, "role": "assistant", "content": content}

    def body(
        self, status: str, stream: TextStream | None = None, error: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The response object: ``in_progress`` (no output yet), ``completed``, ``incomplete`` (at
        max_output_tokens) or ``failed``."""
        done = status in ("completed", "incomplete", "cancelled")
        echo = self.request.echo
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": self.request.instructions,
            "max_output_tokens": echo["max_output_tokens"],
            "metadata": echo["metadata"],
            "model": self.model,
            "output": [self.message(status)] if done else [],
            "parallel_tool_calls": True,
            "previous_response_id": self.request.previous_response_id,
            "reasoning": {"effort": None, "summary": None},
            "store": self.request.store,
            "temperature": echo["temperature"],
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": echo["top_p"],
            "truncation": "disabled",
            "usage": usage(stream) if done and stream is not None else None,
            "user": echo["user"],
        }


def status_of(stream: TextStream) -> str:
    """``incomplete`` at max_output_tokens, ``cancelled`` when the server stopped the reply (shutting down)."""
    if stream.finish_reason == FINISH_LENGTH:
        return "incomplete"
    return "cancelled" if stream.finish_reason == FINISH_CANCELLED else "completed"


def usage(stream: TextStream) -> dict[str, Any]:
    """Tokens are characters; ``cached_tokens``: input characters a kept conversation state spared reading."""
    return {
        "input_tokens": stream.prompt_tokens,
        "input_tokens_details": {"cached_tokens": stream.cached_tokens},
        "output_tokens": stream.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": stream.prompt_tokens + stream.completion_tokens,
    }


class Events:
    """A streamed response's typed events, numbered in order (``sequence_number``)."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.sequence = 0

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"type": kind, "sequence_number": self.sequence - 1, **fields}

    def opening(self) -> list[dict[str, Any]]:
        """From ``response.created`` to the empty text part the deltas fill."""
        reply = self.reply
        where = {"item_id": reply.item_id, "output_index": 0, "content_index": 0}
        return [
            self.event("response.created", response=reply.body("in_progress")),
            self.event("response.in_progress", response=reply.body("in_progress")),
            self.event("response.output_item.added", output_index=0, item=reply.message("in_progress")),
            self.event(
                "response.content_part.added",
                **where,
                part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            ),
        ]

    def delta(self, text: str) -> dict[str, Any]:
        self.reply.text += text
        return self.event(
            "response.output_text.delta",
            item_id=self.reply.item_id,
            output_index=0,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def closing(self, stream: TextStream) -> list[dict[str, Any]]:
        """From ``response.output_text.done`` to ``response.completed`` (or ``response.incomplete``)."""
        reply = self.reply
        status = status_of(stream)
        where = {"item_id": reply.item_id, "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}
        return [
            self.event("response.output_text.done", **where, text=reply.text, logprobs=[]),
            self.event("response.content_part.done", **where, part=part),
            self.event("response.output_item.done", output_index=0, item=reply.message(status)),
            self.event(f"response.{status}", response=reply.body(status, stream)),
        ]

    def failure(self, error: dict[str, Any]) -> list[dict[str, Any]]:
        """An engine error after the events began: OpenAI's ``error`` event, then ``response.failed``."""
        failed = {"code": error.get("code") or error.get("type"), "message": error.get("message")}
        return [
            self.event("error", code=failed["code"], message=error.get("message"), param=error.get("param")),
            self.event("response.failed", response=self.reply.body("failed", error=failed)),
        ]


@dataclass(frozen=True)
class Stored:
    messages: tuple[Message, ...]  # the conversation without instructions, the reply included
    body: dict[str, Any]  # the response object, as answered

    def encode(self) -> bytes:
        messages = [{"role": m.role, "content": m.content, "name": m.name} for m in self.messages]
        return json.dumps({"messages": messages, "body": self.body}, ensure_ascii=False).encode()

    @classmethod
    def decode(cls, data: bytes) -> Stored:
        """What :meth:`encode` wrote; ValueError for anything else (a key another program wrote, or broke)."""
        value = json.loads(data)  # ValueError for bytes that are not JSON, or not UTF-8
        if not (
            isinstance(value, dict) and isinstance(value.get("messages"), list) and isinstance(value.get("body"), dict)
        ):
            raise ValueError("not a kept response")
        messages = []
        for m in value["messages"]:
            if not (isinstance(m, dict) and {"role", "content"} <= m.keys() <= {"role", "content", "name"}):
                raise ValueError("a message without its role and content")
            if not all(isinstance(v, str) for v in m.values()):
                raise ValueError("a message whose fields are not text")
            messages.append(Message(**m))
        return cls(tuple(messages), value["body"])


class Keeper(Protocol):
    """Where kept responses live, as bytes by response id: :class:`MemoryKeeper`, or Redis
    (``server.engine.redis_responses``). ``field`` names the request's field in an ``Unavailable`` error."""

    kept: str  # how many or how long, for the message that says a response is not kept

    async def put(self, key: str, value: bytes) -> None: ...

    async def get(self, key: str, field: str) -> bytes | None: ...

    async def delete(self, key: str, field: str) -> bool: ...


class MemoryKeeper:
    """The ``size`` most recently written or read responses, in this process's memory (a restart, or another
    replica, does not have them)."""

    def __init__(self, size: int = MAX_STORED) -> None:
        self.kept = f"the {size} most recent"
        self.size = size
        self._kept: OrderedDict[str, bytes] = OrderedDict()

    async def put(self, key: str, value: bytes) -> None:
        self._kept[key] = value
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)

    async def get(self, key: str, field: str) -> bytes | None:
        value = self._kept.get(key)
        if value is not None:
            self._kept.move_to_end(key)
        return value

    async def delete(self, key: str, field: str) -> bool:
        return self._kept.pop(key, None) is not None


class ResponseStore:
    """Responses kept for ``previous_response_id`` and ``GET``/``DELETE /v1/responses/{id}``, those that asked to
    be stored, in ``keeper`` (default: this process's memory)."""

    def __init__(self, keeper: Keeper | None = None) -> None:
        self.keeper: Keeper = keeper if keeper is not None else MemoryKeeper()

    async def put(self, reply: Reply, earlier: tuple[Message, ...], body: dict[str, Any]) -> None:
        """Keep ``reply`` (its input read after ``earlier``, the previous response's messages) if it asked to be and
        it ended (not cancelled); its instructions apply to it alone and are not kept. Raises ``Unavailable`` when
        the keeper does not answer."""
        if not reply.request.store or body["status"] == "cancelled":
            return
        stored = Stored((*earlier, *reply.request.input, Message("assistant", reply.text)), body)
        await self.keeper.put(reply.id, stored.encode())

    async def get(self, response_id: str, field: str = "response_id") -> Stored:
        data = await self.keeper.get(response_id, field)
        if data is None:
            shown = response_id if len(response_id) <= 80 else response_id[:80] + "..."
            raise NotFound(f"{field}: {shown!r} is not a response this server keeps ({self.keeper.kept})")
        try:
            return Stored.decode(data)
        except ValueError:  # written by another program, or broken: that response only, never a 500
            shown = response_id if len(response_id) <= 80 else response_id[:80] + "..."
            raise FailedPrecondition(
                f"{field}: {shown!r} cannot be read from the response store; start a new conversation"
            ) from None

    async def delete(self, response_id: str) -> None:
        if not await self.keeper.delete(response_id, "response_id"):
            await self.get(response_id)  # raises NotFound, naming it

    async def earlier(self, request: ResponsesRequest) -> tuple[Message, ...]:
        """The messages of the response ``request`` continues (none without ``previous_response_id``)."""
        if request.previous_response_id is None:
            return ()
        return (await self.get(request.previous_response_id, "previous_response_id")).messages


def conversation(request: ResponsesRequest, earlier: tuple[Message, ...]) -> tuple[Message, ...]:
    """What the engine reads: the instructions, the previous response's messages, then this request's input."""
    system = (Message("system", request.instructions),) if request.instructions else ()
    return (*system, *earlier, *request.input)
