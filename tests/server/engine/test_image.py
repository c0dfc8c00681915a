"""The image engine over tiny real image models: frames as they are made, the same frames alone or batched,
requests that name their bad field, limits, cancellation and the metrics."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from server.engine.image import ImageEngine, ImageLimits
from server.engine.requests import DreamOptions, ImageRequest
from server.engine.streams import ImageStream, Picture
from server.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from server.metrics import Metrics
from tests.conftest import timeout
from tests.server.helpers import started_engines

MakeEngine = Callable[..., ImageEngine]


def png(width: int = 30, height: int = 20, seed: int = 0) -> bytes:
    pixels = (np.random.default_rng(seed).random((height, width)) * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


DREAM: dict[str, Any] = {"base_image": png(), "steps": 2, "dream": DreamOptions(octaves=2)}
REQUESTS: dict[str, dict[str, Any]] = {"rbm": {"steps": 6}, "dcgan": {"label": "3"}, "vae": {}, "evaluator": DREAM}


@pytest.fixture
async def make_engine(tiny_image_models: dict[str, Path]) -> AsyncIterator[MakeEngine]:
    """``make_engine(family, **limits)``: a started engine over the family's tiny model, closed after the test."""

    def build(family: str, **limits: Any) -> ImageEngine:
        return ImageEngine.from_checkpoint(tiny_image_models[family], family, ImageLimits(**limits))

    async with started_engines(build) as make:
        yield make


async def frames(stream: ImageStream) -> list[Picture]:
    return await asyncio.wait_for(_all(stream), timeout(30))


async def _all(stream: ImageStream) -> list[Picture]:
    return [picture async for picture in stream]


async def test_rbm_streams_one_frame_per_gibbs_step(make_engine: MakeEngine, caplog: pytest.LogCaptureFixture) -> None:
    """A chain of 6 steps sends steps 0..5 as 8x8 8-bit frames, the last one final; the stream ends with stop;
    its end is one INFO line."""
    caplog.set_level(logging.INFO, logger="server.engine")
    engine = make_engine("rbm")
    stream = engine.generate(ImageRequest(seed=1, steps=6, request_id="http-3"))
    got = await frames(stream)
    assert [p.step for p in got] == [0, 1, 2, 3, 4, 5]
    assert [p.final for p in got] == [False] * 5 + [True]
    assert {p.pixels.shape for p in got} == {(8, 8)} and got[0].pixels.dtype == np.uint8
    assert stream.finish_reason == "stop" and stream.steps == 6 and stream.frames == 6
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request http-3 ")]
    assert re.fullmatch(
        r"request http-3 model=rbm kind=image mode=\w+ seed=1 steps=6 frames=6 first_frame_ms=\d+\.\d "
        r"duration_ms=\d+\.\d finish=stop",
        line,
    )


async def test_frame_every_sends_every_nth_frame_and_the_last(make_engine: MakeEngine) -> None:
    """frame_every 3 over 8 steps sends steps 0, 3, 6 and the last, 7; usage counts the steps made."""
    engine = make_engine("rbm")
    stream = engine.generate(ImageRequest(seed=1, steps=8, frame_every=3))
    assert [p.step for p in await frames(stream)] == [0, 3, 6, 7]
    assert (stream.steps, stream.frames) == (8, 4)


async def test_rbm_frames_alone_and_batched_are_identical(make_engine: MakeEngine) -> None:
    """A seeded chain gives the same pixels, frame by frame, alone and in one batch with three other seeds."""
    engine = make_engine("rbm")
    alone = await frames(engine.generate(ImageRequest(seed=7, steps=20)))
    streams = [engine.generate(ImageRequest(seed=s, steps=20)) for s in (1, 7, 2, 3)]
    batched = await asyncio.gather(*(frames(s) for s in streams))
    assert engine.steps == 20 + 20  # the four ran as one group
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(alone, batched[1], strict=True))
    assert not np.array_equal(batched[0][-1].pixels, batched[1][-1].pixels)  # other seeds, other chains


@pytest.mark.parametrize("family", ["dcgan", "vae", "evaluator"])
async def test_continuous_models_batched_within_one_level(family: str, make_engine: MakeEngine) -> None:
    """The DCGAN, the VAE and Deep Dream give a seed's frames alone and batched within one level of 255 a pixel."""
    engine = make_engine(family)
    request = REQUESTS[family]
    alone = await frames(engine.generate(ImageRequest(seed=5, **request)))
    streams = [engine.generate(ImageRequest(seed=s, **request)) for s in (9, 5, 11)]
    batched = await asyncio.gather(*(frames(s) for s in streams))
    assert len(alone) == len(batched[1]) >= 1
    for a, b in zip(alone, batched[1], strict=True):
        assert a.step == b.step
        assert np.abs(a.pixels.astype(int) - b.pixels.astype(int)).max() <= 1


async def test_latent_walk_sends_its_points(make_engine: MakeEngine) -> None:
    """A walk of 5 frames from one seed to another starts at the first seed's sample and ends at the second's."""
    engine = make_engine("dcgan")
    walk = await frames(engine.generate(ImageRequest(label="4", seed=1, walk_to_seed=2, walk_frames=5)))
    start = await frames(engine.generate(ImageRequest(label="4", seed=1)))
    end = await frames(engine.generate(ImageRequest(label="4", seed=2)))
    assert [p.step for p in walk] == [0, 1, 2, 3, 4] and walk[-1].final
    assert np.abs(walk[0].pixels.astype(int) - start[0].pixels.astype(int)).max() <= 1
    assert np.abs(walk[-1].pixels.astype(int) - end[0].pixels.astype(int)).max() <= 1


async def test_deep_dream_frames_are_its_gradient_steps(make_engine: MakeEngine) -> None:
    """Deep Dream on a PNG sends steps x octaves frames of the model's dream side."""
    engine = make_engine("evaluator", dream_size=40)
    got = await frames(engine.generate(ImageRequest(seed=0, **{**DREAM, "dream": DreamOptions("logits", "bag", 2)})))
    assert [p.step for p in got] == [0, 1, 2, 3]
    assert got[-1].pixels.shape == (40, 40) and engine.info.image_size == 40


@pytest.mark.parametrize(
    ("family", "fields", "error", "field"),
    [
        ("dcgan", {"label": "eleven"}, NotFound, "label"),
        ("dcgan", {"steps": 3}, InvalidArgument, "steps"),
        ("dcgan", {"walk_to_seed": 2, "walk_frames": 1}, InvalidArgument, "walk_frames"),
        ("dcgan", {"walk_frames": 4}, InvalidArgument, "walk_frames"),
        ("dcgan", {"seed": 2**63}, InvalidArgument, "seed"),
        ("vae", {"label": "3"}, InvalidArgument, "label"),
        ("vae", {"base_image": png()}, InvalidArgument, "base_image"),
        ("vae", {"dream": DreamOptions(octaves=2)}, InvalidArgument, "dream"),
        ("rbm", {"steps": 1001}, InvalidArgument, "steps"),
        ("rbm", {"walk_to_seed": 3}, InvalidArgument, "walk_to_seed"),
        ("rbm", {"frame_every": -1}, InvalidArgument, "frame_every"),
        ("evaluator", {}, InvalidArgument, "base_image"),
        ("evaluator", {"base_image": b"GIF89a not a png"}, InvalidArgument, "base_image"),
        ("evaluator", {"base_image": png(2000, 10)}, InvalidArgument, "base_image"),
        ("evaluator", {"base_image": png(), "dream": DreamOptions(target="unicorn")}, NotFound, "dream.target"),
        ("evaluator", {"base_image": png(), "dream": DreamOptions(layer="fc9")}, InvalidArgument, "dream.layer"),
        ("evaluator", {"base_image": png(), "dream": DreamOptions(layer="logits")}, InvalidArgument, "dream.target"),
        ("evaluator", {"base_image": png(), "dream": DreamOptions(octaves=9)}, InvalidArgument, "dream.octaves"),
        ("evaluator", {"base_image": png(), "steps": 400}, InvalidArgument, "steps"),  # 400 x 3 octaves > 1000
        ("evaluator", {"base_image": png(), "label": "Bag"}, InvalidArgument, "label"),
    ],
)
async def test_bad_requests_name_the_field(
    family: str, fields: dict[str, Any], error: type[Exception], field: str, make_engine: MakeEngine
) -> None:
    """A bad field is refused at once, naming it, and takes no slot."""
    engine = make_engine(family)
    with pytest.raises(error) as caught:
        engine.generate(ImageRequest(**fields))
    assert str(caught.value).startswith(f"{field}: ")
    assert engine.live_streams == 0


async def test_unlabelled_request_to_a_conditional_model_draws_the_seeds_class(make_engine: MakeEngine) -> None:
    """An empty label is the model's choice: the seed's class (seed mod classes), the same image as asking it."""
    engine = make_engine("dcgan")
    chosen = await frames(engine.generate(ImageRequest(seed=13)))
    asked = await frames(engine.generate(ImageRequest(seed=13, label="3")))
    assert np.array_equal(chosen[0].pixels, asked[0].pixels)


async def test_overload_is_resource_exhausted_and_closing_unavailable(make_engine: MakeEngine) -> None:
    """Past max_streams + max_waiting a request is refused; after close, every request is."""
    engine = make_engine("rbm", max_streams=1, max_waiting=1, stream_buffer=1)
    held = [engine.generate(ImageRequest(seed=s, steps=1000)) for s in (1, 2)]
    with pytest.raises(ResourceExhausted, match="overloaded: 1 image streams are running and 1 waiting"):
        engine.generate(ImageRequest(seed=3, steps=5))
    await engine.close()
    assert all(s.finish_reason == "cancelled" for s in held)
    with pytest.raises(Unavailable):
        engine.generate(ImageRequest(seed=3, steps=5))


async def test_cancel_ends_the_stream_and_frees_its_slot(make_engine: MakeEngine) -> None:
    """A cancelled chain ends at once with cancelled; the next request takes its slot and runs to the end."""
    engine = make_engine("rbm", max_streams=1, max_waiting=0, stream_buffer=1)
    stream = engine.generate(ImageRequest(seed=1, steps=1000))
    first = await asyncio.wait_for(anext(aiter(stream)), timeout(10))
    assert first.step == 0
    stream.cancel()
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))
    assert stream.finish_reason == "cancelled" and stream.steps < 1000
    after = engine.generate(ImageRequest(seed=2, steps=3))
    assert [p.step for p in await frames(after)] == [0, 1, 2]


async def test_a_slow_reader_does_not_stall_its_group(make_engine: MakeEngine) -> None:
    """Two chains batched together: one is never read, the other still runs to its end."""
    engine = make_engine("rbm", stream_buffer=1)
    idle = engine.generate(ImageRequest(seed=1, steps=30))
    read = engine.generate(ImageRequest(seed=2, steps=30))
    assert len(await frames(read)) == 30
    assert idle.finish_reason == "stop" and idle.buffered() == 30


async def test_ended_requests_are_counted_in_the_metrics(make_engine: MakeEngine) -> None:
    """Each ended stream is one image request by finish reason, and its frames sent are added up."""
    engine = make_engine("rbm")
    metrics = Metrics(lambda: [engine.gauges()])
    engine.metrics = metrics
    await frames(engine.generate(ImageRequest(seed=1, steps=4, frame_every=2, transport="grpc")))
    labels = {"model": "rbm", "transport": "grpc", "kind": "image", "finish_reason": "stop"}
    assert metrics.registry.get_sample_value("antiphon_requests_total", labels) == 1
    frames_sent = {"model": "rbm", "transport": "grpc"}
    assert metrics.registry.get_sample_value("antiphon_generated_image_frames_total", frames_sent) == 3
