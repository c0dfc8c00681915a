"""Image models over gRPC, WebSocket and HTTP, from a real server on port 0 with tiny real image models: frames as
they are made, PNG and RAW8, the same bytes alone or batched, bad fields, cancellation, the listing, and OpenAI's
images API through the official SDK."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from server.app import Server
from server.engine.image import ImageEngine, ImageLimits
from tests.conftest import timeout
from tests.server.transport.clients import Failure, GrpcClient, sdk
from tests.server.transport.conftest import TRANSPORTS

StartServer = Callable[..., Any]
Connect = Callable[..., Any]
OpenClient = Callable[..., Awaitable[Any]]


@pytest.fixture
def start_image_server(
    tiny_image_models: dict[str, Path], serve_engines: Callable[..., Awaitable[Server]]
) -> StartServer:
    """``await start_image_server(*families, **limits)``: a server on free ports serving those tiny image models
    (each under its family's name, the first the default) and no text model; stopped after the test."""

    async def start(*families: str, **limits: Any) -> Server:
        engines = [ImageEngine.from_checkpoint(tiny_image_models[f], f, ImageLimits(**limits)) for f in families]
        return await serve_engines(images=engines)

    return start


@pytest.fixture
def image_client(start_image_server: StartServer, connect: Connect) -> OpenClient:
    """``await image_client(transport, *families, **limits)``: a client over ``transport`` of a server that
    ``start_image_server(*families, **limits)`` started."""

    async def open_client(transport: str, *families: str, **limits: Any) -> Any:
        return await connect(await start_image_server(*families, **limits), transport)

    return open_client


def png(width: int = 30, height: int = 20) -> bytes:
    out = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((height, width)) * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.mode == "L"
    return np.asarray(image)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_frames_stream_as_the_chain_runs(transport: str, image_client: OpenClient) -> None:
    """An RBM chain of 5 steps, every 2nd frame: steps 0, 2, 4 as 8x8 grey PNGs, the last final; usage counts."""
    client = await image_client(transport, "rbm")
    result = await asyncio.wait_for(client.generate_image("rbm", seed=4, steps=5, frame_every=2).finish(), timeout(30))
    assert [(f["step"], f["final"]) for f in result.images] == [(0, False), (2, False), (4, True)]
    assert {(f["width"], f["height"], f["channels"], f["encoding"]) for f in result.images} == {(8, 8, 1, "png")}
    assert all(pixels(f["data"]).shape == (8, 8) for f in result.images)
    assert result.finish_reason == "stop" and result.usage == {"steps": 5, "frames": 3}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_raw8_carries_the_png_pixels(transport: str, image_client: OpenClient) -> None:
    """RAW8 frames are the PNG frames' pixels, row by row."""
    client = await image_client(transport, "dcgan")
    as_png = await asyncio.wait_for(client.generate_image(seed=3, label="7").finish(), timeout(30))
    raw = await asyncio.wait_for(client.generate_image(seed=3, label="7", encoding="raw8").finish(), timeout(30))
    assert raw.images[0]["encoding"] == "raw8" and len(raw.images[0]["data"]) == 64
    raw_pixels = np.frombuffer(raw.images[0]["data"], np.uint8).reshape(8, 8)
    assert np.array_equal(raw_pixels, pixels(as_png.images[0]["data"]))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_same_seed_same_png_bytes_alone_or_batched(
    transport: str, start_image_server: StartServer, connect: Connect
) -> None:
    """An RBM chain sent alone and batched with two others (on both transports) gives byte-identical PNG frames."""
    server = await start_image_server("rbm")
    here = await connect(server, transport)
    other = await connect(server, "ws" if transport == "grpc" else "grpc")
    alone = await asyncio.wait_for(here.generate_image(seed=21, steps=12).finish(), timeout(30))
    batched = await asyncio.wait_for(
        asyncio.gather(
            other.generate_image(seed=5, steps=12).finish(),
            here.generate_image(seed=21, steps=12).finish(),
            other.generate_image(seed=21, steps=12).finish(),
        ),
        timeout(30),
    )
    frames = [f["data"] for f in alone.images]
    assert len(frames) == 12
    assert [f["data"] for f in batched[1].images] == frames == [f["data"] for f in batched[2].images]
    assert [f["data"] for f in batched[0].images] != frames


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_deep_dream_on_a_png(transport: str, image_client: OpenClient) -> None:
    """Deep Dream reads base_image and its dream settings; its frames are the dream's side."""
    client = await image_client(transport, "evaluator", dream_size=32)
    stream = client.generate_image(seed=1, steps=2, base_image=png(), dream={"target": "Sneaker", "octaves": 1})
    result = await asyncio.wait_for(stream.finish(), timeout(30))
    assert [f["step"] for f in result.images] == [0, 1]
    assert pixels(result.images[-1]["data"]).shape == (32, 32)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("family", "fields", "code", "field"),
    [
        ("dcgan", {"label": "eleven"}, "NOT_FOUND", "label"),
        ("dcgan", {"steps": 4}, "INVALID_ARGUMENT", "steps"),
        ("rbm", {"walk_to_seed": 2}, "INVALID_ARGUMENT", "walk_to_seed"),
        ("evaluator", {"base_image": b"\x89PNG broken"}, "INVALID_ARGUMENT", "base_image"),
        ("evaluator", {"base_image": png(), "dream": {"layer": "fc9"}}, "INVALID_ARGUMENT", "dream.layer"),
        ("rbm", {"model": "nope"}, "NOT_FOUND", "model"),
    ],
)
async def test_bad_image_requests_name_the_field(
    transport: str,
    family: str,
    fields: dict[str, Any],
    code: str,
    field: str,
    image_client: OpenClient,
) -> None:
    """Every transport answers a bad field with the engine's status and message."""
    client = await image_client(transport, family)
    with pytest.raises(Failure) as caught:
        await asyncio.wait_for(client.generate_image(**fields).finish(), timeout(30))
    assert caught.value.code == code and caught.value.message.startswith(f"{field}: ")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_no_image_model_is_unimplemented(transport: str, image_client: OpenClient) -> None:
    """A server without image models answers UNIMPLEMENTED, naming the option that serves them."""
    client = await image_client(transport)
    with pytest.raises(Failure) as caught:
        await asyncio.wait_for(client.generate_image(seed=1).finish(), timeout(30))
    assert caught.value.code == "UNIMPLEMENTED" and "--image-checkpoints" in caught.value.message


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cancel_frees_the_slot(transport: str, start_image_server: StartServer, connect: Connect) -> None:
    """A cancelled chain (WebSocket cancel, gRPC call cancelled) leaves the engine; the slot serves the next one."""
    server = await start_image_server("rbm", max_streams=1, max_waiting=0, stream_buffer=1)
    engine = server.models.images["rbm"]
    assert isinstance(engine, ImageEngine)
    client = await connect(server, transport)
    stream = client.generate_image(seed=1, steps=1000)
    pieces = aiter(stream)
    await asyncio.wait_for(anext(pieces), timeout(30))
    await stream.cancel()
    if transport == "ws":
        await asyncio.wait_for(stream.finish(), timeout(30))
        assert stream.result.finish_reason == "cancelled"
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(30))
    result = await asyncio.wait_for(client.generate_image(seed=2, steps=3).finish(), timeout(30))
    assert result.finish_reason == "stop" and len(result.images) == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_image_models_are_listed(transport: str, image_client: OpenClient) -> None:
    """ListModels and list_models describe each image model: family, side, classes, limits, the default."""
    client = await image_client(transport, "dcgan", "evaluator")
    listed = await client.list_image_models()
    assert [(m["id"], m["is_default"], m["family"], m["image_size"]) for m in listed] == [
        ("dcgan", True, "dcgan", 8),
        ("evaluator", False, "dream", 112),
    ]
    assert listed[0]["labels"] == [str(d) for d in range(10)] and listed[0]["max_walk_frames"] == 256
    assert "Sneaker" in listed[1]["labels"] and listed[1]["layers"] == ["block1", "block2", "hidden", "logits"]


# -- HTTP: OpenAI's images API -----------------------------------------------------------------------------------
async def test_http_generates_n_images_of_the_class_prompted(start_image_server: StartServer) -> None:
    """images.generate with n 3 and a class for prompt answers three 8x8 PNGs, seeds seed..seed+2 (gRPC's)."""
    server = await start_image_server("dcgan")
    async with sdk(server) as client:
        answer = await client.images.generate(
            model="dcgan", prompt="7", n=3, size="8x8", quality="standard", extra_body={"seed": 40}
        )  # DALL-E's quality, as front ends still send it: the images are what they are
    assert answer.data is not None and len(answer.data) == 3 and answer.size == "8x8"
    images = [base64.b64decode(d.b64_json or "") for d in answer.data]
    grpc_client = GrpcClient(server.grpc_address)
    try:
        second = await grpc_client.generate_image(seed=41, label="7").finish()
    finally:
        await grpc_client.close()
    assert pixels(images[1]).shape == (8, 8) and images[1] == second.images[0]["data"]


async def test_http_streams_partial_images_then_the_completed_one(start_image_server: StartServer) -> None:
    """stream with partial_images 2: two of the RBM chain's frames as partial images, then the last as completed."""
    server = await start_image_server("rbm")
    async with sdk(server) as client:
        stream = await client.images.generate(
            model="rbm", prompt="", stream=True, partial_images=2, extra_body={"seed": 2, "steps": 9}
        )
        events = [event async for event in stream]
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [getattr(e, "partial_image_index", None) for e in events] == [0, 1, None]
    assert all(pixels(base64.b64decode(e.b64_json)).shape == (8, 8) for e in events)


@pytest.mark.parametrize(
    ("fields", "status", "param"),
    [
        ({"model": "dcgan", "prompt": "7", "size": "1024x1024"}, 400, "size"),
        ({"model": "dcgan", "prompt": "7", "response_format": "url"}, 400, "response_format"),
        ({"model": "dcgan", "prompt": "a cat"}, 404, "prompt"),
        ({"model": "vae", "prompt": "a cat"}, 400, "prompt"),
        ({"model": "dcgan", "prompt": "7", "n": 2, "stream": True}, 400, "n"),
        ({"model": "evaluator", "prompt": ""}, 400, "model"),
    ],
)
async def test_http_refuses_what_it_cannot_honour_by_name(
    fields: dict[str, Any], status: int, param: str | None, start_image_server: StartServer
) -> None:
    """OpenAI's fields this server cannot honour, and the engine's refusals, are OpenAI errors naming the field."""
    server = await start_image_server("dcgan", "vae", "evaluator")
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}") as http:
        response = await http.post("/v1/images/generations", json=fields)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and (param is None or error["message"].startswith(f"{param}: "))


async def test_image_requests_are_counted_in_the_metrics(start_image_server: StartServer, connect: Connect) -> None:
    """An ended image stream is counted by kind image, and its frames sent, in GET /metrics."""
    server = await start_image_server("rbm")
    client = await connect(server, "grpc")
    await asyncio.wait_for(client.generate_image(seed=1, steps=4).finish(), timeout(30))
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}") as http:
        text = (await http.get("/metrics")).text
    assert 'antiphon_requests_total{finish_reason="stop",kind="image",model="rbm",transport="grpc"} 1.0' in text
    assert 'antiphon_generated_image_frames_total{model="rbm",transport="grpc"} 4.0' in text
