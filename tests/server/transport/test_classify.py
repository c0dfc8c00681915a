"""Classify over both transports with the tiny real classifiers: the answers equal the models' own outputs, inputs
are brought to each model's form (audio resampled and cut to its loudest second, text windowed), bad input is
named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly
from sklearn.datasets import load_digits

from server.data.speech import Rendering, synthesize
from server.engine.classify import loudest_second, pcm16_to_16k, text_windows
from server.kws.checkpoint import load_kws_model
from server.textdisc.checkpoint import load_textdisc_model
from server.textdisc.data import encode_window
from server.vision.checkpoint import load_digits_model
from tests.server.transport.clients import Failure
from tests.server.transport.conftest import TRANSPORTS

StartServer = Callable[..., Any]
Connect = Callable[..., Any]
pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)
ALL = ("kws", "textdisc", "digits")


def probabilities(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=-1).mean(dim=0).numpy()


def as_dict(ranked: list[tuple[str, float]]) -> dict[str, float]:
    return dict(ranked)


async def test_digits(
    transport: str, start_server: StartServer, connect: Connect, tiny_digits_checkpoint: Path
) -> None:
    server = await start_server(classifiers=ALL)
    client = await connect(server, transport)
    data = load_digits()
    model, meta = load_digits_model(tiny_digits_checkpoint)
    for index in (0, 5, 17):
        image = data.images[index].astype(np.float32)
        ranked = await client.classify("digits", tensor=([8, 8], image.ravel().tolist()))
        with torch.no_grad():
            expected = probabilities(model(torch.from_numpy(image)[None]))
        assert [label for label, _ in ranked] == [meta["labels"][i] for i in np.argsort(-expected, kind="stable")]
        np.testing.assert_allclose([as_dict(ranked)[label] for label in meta["labels"]], expected, atol=1e-5)
        assert abs(sum(p for _, p in ranked) - 1) < 1e-4


async def test_kws_resamples_and_takes_the_loudest_second(
    transport: str, start_server: StartServer, connect: Connect, tiny_kws_checkpoint: Path
) -> None:
    server = await start_server(classifiers=ALL)
    client = await connect(server, transport)
    word = synthesize("seven", Rendering(voice="en-gb+m2"), sample_rate=16_000)
    clip = np.concatenate([np.zeros(12_000, np.float32), word, np.zeros(9_000, np.float32)])  # 2 s or so
    at_8k = resample_poly(clip, 1, 2).astype(np.float32)
    pcm = (np.clip(at_8k, -1, 1) * 32767).astype("<i2").tobytes()
    ranked = await client.classify("kws", audio=pcm, audio_sample_rate=8000, top_k=3)
    assert len(ranked) == 3
    model, meta = load_kws_model(tiny_kws_checkpoint)
    window = loudest_second(pcm16_to_16k(pcm, 8000))
    with torch.no_grad():
        expected = probabilities(model(torch.from_numpy(window)[None]))
    top = np.argsort(-expected, kind="stable")[:3]
    assert [label for label, _ in ranked] == [meta["labels"][i] for i in top]
    np.testing.assert_allclose([p for _, p in ranked], expected[top], atol=1e-5)


async def test_textdisc_averages_its_windows(
    transport: str, start_server: StartServer, connect: Connect, tiny_textdisc_checkpoint: Path
) -> None:
    server = await start_server(classifiers=ALL)
    client = await connect(server, transport)
    text = "Kent.\nI thought the King had more affected the Duke of Albany than Cornwall.\n\n" * 8
    ranked = await client.classify("textdisc", text=text)
    model, vocab, meta = load_textdisc_model(tiny_textdisc_checkpoint)
    windows = text_windows(vocab.encode(text), int(meta.get("window", 256)), vocab.encode("\n")[0])
    assert len(windows) > 1
    with torch.no_grad():
        expected = probabilities(model(torch.from_numpy(windows)))
    np.testing.assert_allclose([as_dict(ranked)[label] for label in meta["labels"]], expected, atol=1e-5)


async def test_a_short_text_is_read_as_the_edge_reads_it(
    transport: str, start_server: StartServer, connect: Connect, tiny_textdisc_checkpoint: Path
) -> None:
    """A text shorter than a window is one full window, left-padded with newlines (encode_window, the edge's
    encoding), so the server and the edge client give it the same probabilities."""
    server = await start_server(classifiers=ALL)
    client = await connect(server, transport)
    text = "Kent.\nI thought the King had more affected the Duke of Albany.\n"
    ranked = await client.classify("textdisc", text=text)
    model, vocab, meta = load_textdisc_model(tiny_textdisc_checkpoint)
    window = encode_window(vocab, text).astype(np.int64)
    assert window.shape == (int(meta.get("window", 256)),) and len(text) < len(window)
    with torch.no_grad():
        expected = probabilities(model(torch.from_numpy(window)[None]))
    np.testing.assert_allclose([as_dict(ranked)[label] for label in meta["labels"]], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("model", "fields", "code", "field"),
    [
        ("kws", {"text": "seven"}, "INVALID_ARGUMENT", "input"),
        ("kws", {"audio": b"\0\0" * 100, "audio_sample_rate": 4000}, "INVALID_ARGUMENT", "audio_sample_rate"),
        ("kws", {"audio": b"\0" * 3}, "INVALID_ARGUMENT", "audio"),
        ("digits", {"tensor": ([4, 4], [0.0] * 16)}, "INVALID_ARGUMENT", "tensor.shape"),
        ("digits", {"tensor": ([8, 8], [17.0] * 64)}, "INVALID_ARGUMENT", "tensor.values"),
        ("digits", {"tensor": ([8, 8], [1.0] * 64), "top_k": -1}, "INVALID_ARGUMENT", "top_k"),
        ("textdisc", {"text": ""}, "INVALID_ARGUMENT", "text"),
        ("textdisc", {"text": "Hail.", "audio_sample_rate": 8000}, "INVALID_ARGUMENT", "audio_sample_rate"),
        ("nope", {"text": "x"}, "NOT_FOUND", "model"),
    ],
)
async def test_bad_input_is_named(
    transport: str,
    start_server: StartServer,
    connect: Connect,
    model: str,
    fields: dict[str, Any],
    code: str,
    field: str,
) -> None:
    server = await start_server(classifiers=ALL)
    client = await connect(server, transport)
    with pytest.raises(Failure) as info:
        await client.classify(model, **dict(fields))
    assert info.value.code == code
    assert info.value.message.startswith(f"{field}:"), info.value.message
    assert len(await client.classify("digits", tensor=([8, 8], [3.0] * 64))) == 10  # still serving


async def test_classifiers_are_listed(transport: str, start_server: StartServer, connect: Connect) -> None:
    server = await start_server(classifiers=ALL)
    client = await connect(server, transport)
    listed = {m["id"]: m for m in await client.list_classifiers()}
    assert set(listed) == set(ALL)
    assert listed["digits"]["input"] == "tensor" and listed["digits"]["input_shape"] == [8, 8]
    assert listed["kws"]["input"] == "audio" and "seven" in listed["kws"]["labels"]
    assert listed["textdisc"]["input"] == "text" and len(listed["textdisc"]["labels"]) == 2
