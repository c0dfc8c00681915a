"""Offline generation with the exported step: torch's greedy text, and chat turns closed as the corpus closes them."""

from __future__ import annotations

import pytest

from edge_client.manifest import Manifest
from edge_client.runtime import available_backends
from edge_client.text import TURN_END, Generator
from tests.edge.conftest import EdgeFiles


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("name", ["text_step", "text_small_step"])
def test_greedy_generation_is_torchs(edge_files: EdgeFiles, backend: str, name: str) -> None:
    """After the export's prompt, 200 greedy tokens of the float file are the text torch wrote in the manifest."""
    manifest = Manifest(edge_files.export)
    generator = Generator(manifest.open(name, backend, "float32"))
    fmt = "onnx" if backend == "onnxruntime" else "tflite"
    parity = manifest.entry(name)["files"][fmt]["float32"]["parity"]
    generator.read(parity["greedy_prompt"][len(generator.start_text) :])
    text = "".join(generator.generate(parity["greedy_tokens"], temperature=0))
    assert text == parity["greedy_text"]


@pytest.mark.parametrize("seed", range(4))
def test_a_reply_cut_by_max_tokens_is_closed_before_the_next_turn(edge_files: EdgeFiles, seed: int) -> None:
    """Whatever the reply, the model reads exactly one blank line between it and the next turn."""
    generator = Generator(Manifest(edge_files.export).open("text_small_step"), seed=seed)
    stream: list[str] = []
    step = generator._step
    generator._step = lambda token: stream.append(generator.vocab[token]) or step(token)  # type: ignore[method-assign]
    reply = "".join(generator.chat_turn("Good night.", "Lear", "Kent", max_tokens=3, temperature=1.5))
    list(generator.chat_turn("Come hither.", "Lear", "Kent", max_tokens=3))
    text = "".join(stream)
    assert text.startswith("Kent.\nGood night.\n\nLear.\n" + reply)
    before = text[: text.index("Kent.\nCome hither.")]
    assert before.endswith(TURN_END) and not before.endswith("\n" + TURN_END)
