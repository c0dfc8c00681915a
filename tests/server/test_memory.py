"""The server's memory upkeep: free memory inside glibc's heaps goes back to the system, on a timer while serving;
oneDNN keeps a bounded number of compiled kernels."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from server import memory

pytestmark = pytest.mark.skipif(memory._glibc() is None, reason="glibc's allocator only")


def rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def test_trim_returns_the_free_memory_between_live_blocks() -> None:
    """Memory freed between blocks still in use stays resident until a trim hands its pages back."""
    blocks = [bytearray(64 * 1024) for _ in range(2000)]  # 125 MiB on the heap, each page touched
    for i in range(len(blocks)):
        if i % 10:
            blocks[i] = bytearray(0)  # freed, but fenced in by the live tenth: free() cannot shrink the heap
    before = rss_kib()
    assert memory.trim()
    after = rss_kib()
    assert before - after > 50 * 1024, (before, after)
    assert len(blocks) == 2000


async def test_the_trimmer_runs_until_stopped() -> None:
    trimmer = memory.Trimmer(every_s=0.01)
    trimmer.start()
    await asyncio.sleep(0.3)
    await trimmer.stop()
    trims = trimmer.trims
    assert trims >= 2
    await asyncio.sleep(0.05)
    assert trimmer.trims == trims


@pytest.mark.parametrize(("env", "capped"), [({}, "True"), ({"MALLOC_ARENA_MAX": "4"}, "False")])
def test_arenas_are_capped_unless_the_operator_chose(env: dict[str, str], capped: str) -> None:
    """The cap applies at start; an operator's own MALLOC_ARENA_MAX wins."""
    code = "from server import memory; print(memory.limit_arenas())"
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    result = subprocess.run([sys.executable, "-c", code], env=base | env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == capped


def test_a_bounded_kernel_cache_keeps_compiled_code_from_growing_with_new_shapes() -> None:
    """Convolutions over inputs of ever new lengths (as the WaveNet's conditioning network reads utterances)
    compile a kernel per length; with the cache bounded as the server bounds it, the compiled code stays small."""
    code = """
import re, torch
from server import memory
memory.bound_kernel_cache(8)
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv1d(40, 128, 3), torch.nn.Tanh(), torch.nn.Conv1d(128, 128, 3))
with torch.no_grad():
    for length in range(20, 220):
        net(torch.randn(1, 40, length))
perm, kib = "", 0
for line in open("/proc/self/smaps"):
    m = re.match(r"^[0-9a-f]+-[0-9a-f]+ (\\S+) ", line)
    if m:
        perm = m.group(1)
    elif line.startswith("Rss:") and perm == "rwxp":
        kib += int(line.split()[1])
print(kib)
"""
    base = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    bounded = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, check=True)
    unbounded = subprocess.run(
        [sys.executable, "-c", code.replace("memory.bound_kernel_cache(8)", "")],
        env=base,
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(bounded.stdout) < 512 < int(unbounded.stdout), (bounded.stdout, unbounded.stdout)


def executable_kib() -> int:
    """Resident anonymous executable memory of this process (where oneDNN puts the kernels it compiles)."""
    perm, kib = "", 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        mapping = re.match(r"^[0-9a-f]+-[0-9a-f]+ (\S+) ", line)
        if mapping:
            perm = mapping.group(1)
        elif line.startswith("Rss:") and perm == "rwxp":
            kib += int(line.split()[1])
    return kib


def test_texts_of_any_length_reuse_the_discriminators_compiled_kernels(tiny_textdisc_checkpoint: Path) -> None:
    """The text discriminator reads any text in a few shapes: once each has been seen (127 windows are batches of
    64, 32, ..., 1), texts of other lengths compile nothing more."""
    from server.engine.classify import load_textdisc
    from server.engine.requests import ClassifyInput

    classifier = load_textdisc(tiny_textdisc_checkpoint)
    line = "Kent. I thought the King had more affected the Duke of Albany than Cornwall.\n"
    text = line * 500
    classifier._run(ClassifyInput(text=text[: 127 * 256]))
    classifier._run(ClassifyInput(text=text[:10]))
    before = executable_kib()
    for length in np.random.default_rng(0).integers(1, 40 * 256, 40):
        classifier._run(ClassifyInput(text=text[:length]))
    assert executable_kib() - before < 64, (before, executable_kib())
    classifier.close()


def test_utterances_of_any_length_compile_no_kernels(tiny_audio_checkpoint: Path) -> None:
    """The WaveNet's frame features (log-mel frames, then the conditioning stack) of utterances of every length
    compile no kernel per length."""
    import torch

    from server.audio.checkpoint import load_audio_model
    from server.audio.features import MelFrames, utterance_features

    model = load_audio_model(tiny_audio_checkpoint)[0].eval()
    frames = MelFrames(model.config.n_mels, model.config.hop)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        utterance_features(model, frames(rng.uniform(-0.5, 0.5, 8_000).astype(np.float32)), 0)
        before = executable_kib()
        for samples in rng.integers(2_000, 48_000, 40):
            utterance_features(model, frames(rng.uniform(-0.5, 0.5, samples).astype(np.float32)), 0)
    assert executable_kib() - before < 64, (before, executable_kib())
