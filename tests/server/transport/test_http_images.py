"""OpenAI's images API with antiphon's own fields, from a real server on port 0 over the committed image models:
generations with a walk or frame_every (streamed and whole), Deep Dream as ``/v1/images/edits`` (multipart, PNG
or JPEG) through the official SDK and raw httpx, each refusal naming its field and limit, and fuzzed bodies and
forms answered with a documented status."""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from server.app import Server
from server.engine.image import ImageEngine, ImageLimits
from server.settings import ServeSettings
from server.transport.http_images import MAX_UPLOAD_BYTES
from tests.conftest import timeout
from tests.server.transport.clients import GrpcClient, sdk

IMAGE_MODELS = Path(__file__).resolve().parents[3] / "models" / "image"
DREAM_SIDE = 32  # Deep Dream's frames here: small, so a dream takes milliseconds
StartServer = Callable[[], Any]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """A server on free ports serving the committed dcgan, rbm and evaluator (Deep Dream) models."""
    settings = ServeSettings(host="127.0.0.1", grpc_port=0, ws_port=0, http_port=0, grace_s=1.0).validated()
    limits = ImageLimits(dream_size=DREAM_SIDE)
    engines = [
        ImageEngine.from_checkpoint(IMAGE_MODELS / f"{family}.safetensors", family, limits)
        for family in ("dcgan", "rbm", "evaluator")
    ]
    started = Server(settings, [], image_engines=engines)
    await started.start()
    yield started
    await started.stop()


def http(server: Server) -> httpx.AsyncClient:
    """A plain-HTTP client (no TLS: verify off spares loading the CA bundle for each test)."""
    return httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(30), verify=False)


def photo(fmt: str = "PNG", width: int = 40, height: int = 30) -> bytes:
    """A small RGB photo-like image (a gradient and noise) in ``fmt``."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    pixels = np.clip(ramp + rng.normal(0, 30, (height, width, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def pixels(b64: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG" and image.mode == "L"
    return np.asarray(image).astype(np.int16)


async def grpc_frames(server: Server, **fields: Any) -> list[bytes]:
    """The PNG frames GenerateImage sends for ``fields``."""
    client = GrpcClient(server.grpc_address)
    try:
        result = await asyncio.wait_for(client.generate_image(**fields).finish(), timeout(30))
    finally:
        await client.close()
    return [frame["data"] for frame in result.images]


# -- generations: antiphon's own fields ----------------------------------------------------------------------------
async def test_a_walk_streams_its_points(server: Server) -> None:
    """stream with walk_to_seed: every point of the walk as a partial image, from seed's image to walk_to_seed's."""
    async with sdk(server) as client:
        stream = await client.images.generate(
            model="dcgan",
            prompt="Sneaker",
            stream=True,
            extra_body={"seed": 3, "walk_to_seed": 8, "walk_frames": 5},
        )
        events = [event async for event in stream]
    assert [e.type for e in events] == ["image_generation.partial_image"] * 4 + ["image_generation.completed"]
    assert [getattr(e, "partial_image_index", None) for e in events] == [0, 1, 2, 3, None]
    async with sdk(server) as client:
        ends = [
            await client.images.generate(model="dcgan", prompt="Sneaker", extra_body={"seed": seed}) for seed in (3, 8)
        ]
    first, last = (pixels((answer.data or [])[0].b64_json or "") for answer in ends)
    assert np.abs(pixels(events[0].b64_json) - first).max() <= 1  # batched arithmetic may round one level apart
    assert np.abs(pixels(events[-1].b64_json) - last).max() <= 1
    assert pixels(events[2].b64_json).shape == (28, 28)


async def test_frame_every_streams_every_nth_frame(server: Server) -> None:
    """stream with frame_every 3 on a 7-step chain: steps 0 and 3 as partial images, step 6 completed; the same
    PNG bytes GenerateImage sends for the same fields."""
    async with sdk(server) as client:
        stream = await client.images.generate(
            model="rbm", prompt="", stream=True, extra_body={"seed": 5, "steps": 7, "frame_every": 3}
        )
        events = [event async for event in stream]
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    sent = [base64.b64decode(e.b64_json) for e in events]
    assert sent == await grpc_frames(server, model="rbm", seed=5, steps=7, frame_every=3)


async def test_frame_every_passes_the_three_partial_images(server: Server) -> None:
    """frame_every 1 on a 9-step chain streams all 8 frames before the last, beyond OpenAI's 3 partial images."""
    async with http(server) as client:
        body = {"model": "rbm", "prompt": "", "stream": True, "seed": 1, "steps": 9, "frame_every": 1}
        async with client.stream("POST", "/v1/images/generations", json=body) as response:
            text = "".join([chunk async for chunk in response.aiter_text()])
    assert response.status_code == 200
    assert text.count('"type":"image_generation.partial_image"') == 8
    assert text.count('"type":"image_generation.completed"') == 1


async def test_a_whole_answer_with_frame_every_holds_every_frame_sent(server: Server) -> None:
    """Without stream, a walk of 4 points every 2nd answers its points 0 and 2 and the last, in order."""
    async with sdk(server) as client:
        answer = await client.images.generate(
            model="dcgan", prompt="Bag", extra_body={"seed": 2, "walk_to_seed": 9, "walk_frames": 4, "frame_every": 2}
        )
    assert answer.data is not None and len(answer.data) == 3
    async with sdk(server) as client:
        end = await client.images.generate(model="dcgan", prompt="Bag", extra_body={"seed": 9})
    assert np.abs(pixels(answer.data[-1].b64_json or "") - pixels((end.data or [])[0].b64_json or "")).max() <= 1


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"model": "rbm", "frame_every": 10_001}, "frame_every", "1..10000, got 10001"),
        ({"model": "rbm", "frame_every": "2"}, "frame_every", 'must be an integer, got "2"'),
        ({"model": "rbm", "steps": 5000}, "steps", "1..1000, got 5000"),
        ({"model": "dcgan", "walk_to_seed": 2, "walk_frames": 300}, "walk_frames", "2..256, got 300"),
        ({"model": "dcgan", "walk_frames": 4}, "walk_frames", "is only read with walk_to_seed"),
        ({"model": "dcgan", "walk_to_seed": -1}, "walk_to_seed", "must be in 0..2**63-1, got -1"),
        ({"model": "rbm", "walk_to_seed": 2}, "walk_to_seed", "needs a latent space"),
        ({"model": "dcgan", "seed": 2**63}, "seed", "must be in 0..2**63-1"),
        ({"model": "dcgan", "walk_to_seed": 2, "n": 2}, "n", "give n 1"),
        ({"model": "rbm", "frame_every": 2, "stream": True, "partial_images": 2}, "partial_images", "give 0"),
        ({"model": "dcgan", "walk_to_seed": 2, "stream": True, "partial_images": 1}, "partial_images", "give 0"),
    ],
)
async def test_generation_fields_are_refused_by_name(
    fields: dict[str, Any], param: str, says: str, server: Server
) -> None:
    """antiphon's own generation fields out of range: 400, OpenAI's error object naming the field and its limit."""
    async with http(server) as client:
        response = await client.post("/v1/images/generations", json={"prompt": "", **fields})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{param}: ") and says in error["message"]


# -- edits: Deep Dream -------------------------------------------------------------------------------------------
async def test_sdk_edit_dreams_on_an_uploaded_png(server: Server) -> None:
    """images.edit with a PNG and a class for prompt: one dream frame of the dream's side, the image GenerateImage
    makes of the same photo, target, steps and seed."""
    base = photo()
    async with sdk(server) as client:
        answer = await client.images.edit(
            model="evaluator",
            image=("base.png", base, "image/png"),
            prompt="Sneaker",
            extra_body={"steps": 2, "octaves": 1, "seed": 4},
        )
    assert answer.data is not None and len(answer.data) == 1 and answer.size == f"{DREAM_SIDE}x{DREAM_SIDE}"
    made = base64.b64decode(answer.data[0].b64_json or "")
    frames = await grpc_frames(
        server, model="evaluator", seed=4, steps=2, base_image=base, dream={"target": "Sneaker", "octaves": 1}
    )
    assert made == frames[-1]


async def test_sdk_edit_streams_every_nth_dream_step(server: Server) -> None:
    """images.edit with stream and frame_every 2 over 5 steps: image_edit.partial_image for steps 0 and 2, then
    image_edit.completed."""
    async with sdk(server) as client:
        stream = await client.images.edit(
            model="evaluator",
            image=("base.png", photo(), "image/png"),
            prompt="",
            stream=True,
            extra_body={"steps": 5, "octaves": 1, "frame_every": 2, "layer": "block1", "seed": 1},
        )
        events = [event async for event in stream]
    assert [e.type for e in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    assert [getattr(e, "partial_image_index", None) for e in events] == [0, 1, None]
    assert all(pixels(e.b64_json).shape == (DREAM_SIDE, DREAM_SIDE) for e in events)


async def test_raw_multipart_edit_reads_a_jpeg(server: Server) -> None:
    """A multipart form from httpx with a JPEG, octaves and target as antiphon's own fields: one dream image."""
    fields = {"model": "evaluator", "prompt": "", "target": "Bag", "octaves": "2", "steps": "1", "seed": "3"}
    async with http(server) as client:
        response = await client.post(
            "/v1/images/edits", data=fields, files={"image": ("base.jpg", photo("JPEG"), "image/jpeg")}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["size"] == f"{DREAM_SIDE}x{DREAM_SIDE}" and len(body["data"]) == 1
    assert pixels(body["data"][0]["b64_json"]).shape == (DREAM_SIDE, DREAM_SIDE)


async def test_a_whole_answer_of_several_images_whose_client_leaves_is_one_info_line(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that leaves before its two dreams are made (its timeout, a closed tab) cancels both; the server
    logs that at INFO, and nothing at ERROR (the cancelled images' gather, retrieved, not "never retrieved")."""
    caplog.set_level("INFO")
    engine = server.models.images["evaluator"]
    fields = {"model": "evaluator", "prompt": "", "n": "2", "octaves": "1", "steps": "1000", "seed": "3"}
    async with http(server) as client:
        leaving = asyncio.create_task(
            client.post("/v1/images/edits", data=fields, files={"image": ("base.png", photo(), "image/png")})
        )
        while engine.live_streams < 2:
            await asyncio.sleep(0.01)
        leaving.cancel()  # httpx drops the connection
        await asyncio.gather(leaving, return_exceptions=True)
        while not any("the client went away" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.01)
        while engine.live_streams:
            await asyncio.sleep(0.01)
    gc.collect()  # asyncio logs a future's unretrieved exception when the future is collected
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_upload_over_the_limit_is_413_naming_image(server: Server) -> None:
    """A form larger than MAX_UPLOAD_BYTES is refused 413, the error naming image, before the engine sees it."""
    big = b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES)
    async with http(server) as client:
        response = await client.post(
            "/v1/images/edits", data={"model": "evaluator"}, files={"image": ("big.png", big, "image/png")}
        )
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["param"] == "image" and error["message"].startswith("image: the upload (the whole form) is at most")


@pytest.mark.parametrize(
    ("fields", "files", "status", "param", "says"),
    [
        ({"model": "dcgan"}, None, 400, "model", "only Deep Dream models edit an image"),
        ({"model": "evaluator", "layer": "fc9"}, None, 400, "layer", "must be one of block1, block2, hidden, logits"),
        ({"model": "evaluator", "octaves": "9"}, None, 400, "octaves", "1..8, got 9"),
        ({"model": "evaluator", "octaves": "three"}, None, 400, "octaves", "must be an integer"),
        ({"model": "evaluator", "steps": "600", "octaves": "2"}, None, 400, "steps", "at most 1000, got 600 x 2"),
        ({"model": "evaluator", "frame_every": "0x"}, None, 400, "frame_every", "must be an integer"),
        ({"model": "evaluator", "stream": "maybe"}, None, 400, "stream", "must be true or false"),
        ({"model": "evaluator", "prompt": "Bag", "target": "Coat"}, None, 400, "target", "give the class once"),
        ({"model": "evaluator", "prompt": "a cat"}, None, 404, "prompt", "prompt: 'a cat' is not a class"),
        ({"model": "evaluator", "target": "a cat"}, None, 404, "target", "target: 'a cat' is not a class"),
        ({"model": "evaluator", "size": "1024x1024"}, None, 400, "size", "makes 32x32 images only"),
        ({"model": "evaluator", "response_format": "url"}, None, 400, "response_format", "b64_json"),
        ({"model": "evaluator"}, {"image": ("a.png", b"\x89PNG broken")}, 400, "image", "not a readable PNG or JPEG"),
        ({"model": "evaluator"}, {"picture": ("a.png", b"")}, 400, "picture", "unrecognized request argument"),
        ({"model": "evaluator"}, {"image": ("a.png", b""), "mask": ("m.png", b"")}, 400, "mask", "not supported"),
        ({"model": "evaluator", "image": "base.png"}, {}, 400, "image", "must be a file"),
        ({"model": "evaluator"}, {}, 400, "image", "upload exactly one image"),
    ],
)
async def test_edit_fields_are_refused_by_name(
    fields: dict[str, str],
    files: dict[str, Any] | None,
    status: int,
    param: str | None,
    says: str,
    server: Server,
) -> None:
    """A bad edit form: OpenAI's error object with the status, naming the form's field (not the engine's name)."""
    if files is None:
        files = {"image": ("base.png", photo(), "image/png")}
    parts = [(name, (None, value)) for name, value in fields.items()] + list(files.items())  # text parts, files
    async with http(server) as client:
        response = await client.post("/v1/images/edits", files=parts)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"]
    assert param is None or error["message"].startswith(f"{param}: ")


async def test_an_error_echoes_a_long_value_shortened(server: Server) -> None:
    """A 100,000-character prompt that names no class: the error (and its log line) keeps the value's start and
    the message's end, not the whole prompt."""
    async with http(server) as client:
        response = await client.post("/v1/images/generations", json={"model": "dcgan", "prompt": "x" * 100_000})
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert len(message) == 1000 and "...(100" in message and "characters, shortened)..." in message
    assert message.startswith("prompt: 'xxx") and message.endswith(")")  # the list of classes closes it


async def test_an_edit_needs_a_multipart_form(server: Server) -> None:
    """A JSON body to /v1/images/edits is a 400 naming body."""
    async with http(server) as client:
        response = await client.post("/v1/images/edits", json={"model": "evaluator", "prompt": ""})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "body"


async def test_the_sdk_raises_its_typed_error_for_an_edit_of_a_generator(server: Server) -> None:
    """images.edit on a generator raises the SDK's BadRequestError naming model."""
    async with sdk(server) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.images.edit(model="rbm", image=("base.png", photo(), "image/png"), prompt="")
    assert caught.value.status_code == 400 and caught.value.param == "model"


# -- fuzzing -------------------------------------------------------------------------------------------------------
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DOCUMENTED = {200, 400, 404, 413}
JSON = {"content-type": "application/json"}
small = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 20),
    st.sampled_from([0, 1, 1001, 10_001, 2**63, -(2**63)]),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["", "Bag", "rbm", "dcgan", "evaluator", "logits", "block1", "auto", "8x8", "true"]),
    st.lists(st.integers(0, 3), max_size=2),
)
generation_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["dcgan", "rbm", "evaluator", "nobody"]) | small,
        **{name: small for name in ("prompt", "n", "stream", "partial_images", "size", "seed", "steps")},
        **{name: small for name in ("frame_every", "walk_to_seed", "walk_frames", "bogus")},
    },
)
form_fields = st.dictionaries(
    st.sampled_from(["model", "prompt", "n", "stream", "seed", "steps", "frame_every", "layer", "target", "octaves"])
    | st.sampled_from(["size", "mask", "image", "partial_images", "bogus"]),
    st.sampled_from(["evaluator", "dcgan", "", "0", "1", "2", "9", "-1", "x", "true", "Bag", "logits", "block1"]),
    max_size=6,
)
uploads = st.sampled_from(["png", "jpeg", "junk", "none", "two"])


def upload_parts(kind: str) -> list[tuple[str, Any]]:
    if kind == "none":
        return []
    if kind == "junk":
        return [("image", ("a.png", b"\x89PNG\r\n junk", "image/png"))]
    image = ("a", photo("JPEG" if kind == "jpeg" else "PNG", 12, 9))
    return [("image", image)] * (2 if kind == "two" else 1)


@FUZZ
@given(body=generation_bodies, form=form_fields, upload=uploads)
async def test_fuzzed_image_requests_get_documented_answers(
    server: Server, body: dict[str, Any], form: dict[str, str], upload: str
) -> None:
    """Any generations body and any edits form is answered 200 or with a documented status and OpenAI's error
    object, never a server error; the server serves on."""
    async with http(server) as client:
        form.setdefault("steps", "1")
        form.setdefault("octaves", "1")
        parts = [(name, (None, value)) for name, value in form.items()] + upload_parts(upload)
        answers = [
            await client.post("/v1/images/generations", content=json.dumps(body), headers=JSON),  # NaN too
            await client.post("/v1/images/edits", files=parts or [("model", (None, ""))]),
        ]
        for response in answers:
            assert response.status_code in DOCUMENTED, (body, form, upload, response.text[:300])
            if response.status_code != 200:
                error = response.json()["error"]
                assert error["message"] and error["type"] == "invalid_request_error", error
            elif response.headers["content-type"].startswith("text/event-stream"):
                assert '"server_error"' not in response.text
        again = await client.get("/v1/images/models")
    assert again.status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n\xff\xfe\r\n--b--\r\n', "image"),
        (b"--b\r\nnot a header line\r\n\r\nx\r\n--b--\r\n", "body"),
        (b"no boundary in sight", "body"),
    ],
)
async def test_an_unreadable_form_is_a_400_naming_body(server: Server, body: bytes, param: str) -> None:
    """A form that is not multipart under its header is a 400 naming body; one whose text is not UTF-8 is read
    (the bytes replaced) and refused for what it lacks, here the image."""
    async with http(server) as client:
        headers = {"content-type": "multipart/form-data; boundary=b"}
        response = await client.post("/v1/images/edits", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_more_images_than_the_server_ever_holds_is_400_naming_n(serve_engines: Any) -> None:
    """``n`` above what the engine holds at once (running and waiting) can never be served: a 400 naming ``n`` and
    the limit, not a 429 the SDKs would retry in vain. ``n`` within it is served, as the SDK asks."""
    limits = ImageLimits(max_streams=1, max_waiting=1)
    engine = ImageEngine.from_checkpoint(IMAGE_MODELS / "dcgan.safetensors", "dcgan", limits)
    server = await serve_engines(images=[engine])
    async with sdk(server) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.images.generate(model="dcgan", prompt="shirt", n=3)
        two = await client.images.generate(model="dcgan", prompt="shirt", n=2)
    assert refused.value.param == "n"
    assert "at most 2 images at once on this server, got 3" in refused.value.message
    assert len(two.data) == 2
