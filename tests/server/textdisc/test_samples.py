"""Sampled streams: reproducible by seed, independent of the batch, prompted with real text, cached by generator,
sample set and prompt text."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from server.errors import InvalidArgument
from server.text.checkpoint import load_text_model
from server.textdisc.samples import Row, SampleSet, cache_path, generate_streams, load_samples

PROMPT_TEXT = "Kent.\nHo there!\n\nLear.\nWho is it that can tell me who I am?\n\nFool.\nLear's shadow.\n"


def test_a_stream_is_the_same_alone_or_in_a_batch(tiny_text_checkpoint: Path) -> None:
    """A row gives the same text whatever other rows share its batch, with or without top-k and top-p."""
    model, vocab, _ = load_text_model(tiny_text_checkpoint)
    rows = [Row(0.6, 0, 1.0, 1), Row(0.9, 5, 1.0, 5), Row(1.2, 0, 0.9, 9)]
    alone = generate_streams(model, vocab, rows[1:2], 120)
    batch = generate_streams(model, vocab, rows, 120)
    assert batch[1] == alone[0]
    assert generate_streams(model, vocab, rows, 120, batch=2) == batch  # two batches, the same streams
    assert len(set(batch)) == 3
    assert all(len(t) == 120 and "\ufffd" not in t for t in batch)


def test_a_prompt_changes_the_stream_and_is_not_part_of_it(tiny_text_checkpoint: Path) -> None:
    """Prompted streams hold only sampled characters; the same seed after another prompt samples other text."""
    model, vocab, _ = load_text_model(tiny_text_checkpoint)
    rows = [Row(0.8, 0, 1.0, 3), Row(0.8, 0, 1.0, 3)]
    prompted = generate_streams(
        model, vocab, rows, 200, prompts=["Kent.\nHo there!\n\nLear.\n", "Fool.\nLear's shadow.\n\nK"]
    )
    assert all(len(t) == 200 for t in prompted)
    assert prompted[0] != prompted[1]
    assert generate_streams(model, vocab, rows[:1], 200, prompts=["Kent.\nHo there!\n\nLear.\n"]) == prompted[:1]
    with pytest.raises(InvalidArgument, match="prompts: give one prompt per row, all of the same length"):
        generate_streams(model, vocab, rows, 10, prompts=["Kent.\n", "Lear.\nO"])


def test_rows_cross_temperatures_and_variants_with_line_start_prompts() -> None:
    """Every (temperature, variant) setting gets its streams, distinct seeds and prompts that begin lines."""
    sample_set = SampleSet((0.7, 1.1), 3, 100, 4, variants=((0, 1.0), (20, 1.0), (0, 0.9)), prompt=12)
    rows = sample_set.rows(PROMPT_TEXT)
    assert len(rows) == 18 and len({r.seed for r in rows}) == 18
    assert {r.group for r in rows} == {f"T={t}{v}" for t in ("0.7", "1.1") for v in ("", " top-k 20", " top-p 0.9")}
    assert all(PROMPT_TEXT[r.prompt_at - 1] == "\n" and r.prompt_at + 12 <= len(PROMPT_TEXT) for r in rows)
    assert sample_set.rows(PROMPT_TEXT) == rows  # the seed fixes the prompts
    assert all(r.prompt_at == -1 for r in SampleSet((1.0,), 2, 100, 4).rows())


@pytest.mark.parametrize(
    ("sample_set", "message"),
    [
        (SampleSet((1.0,), 2, 100, 4, variants=((-1, 1.0),)), "variants: give (top_k >= 0, top_p in (0, 1]) pairs"),
        (SampleSet((1.0,), 2, 100, 4, variants=((0, 0.0),)), "variants: give (top_k >= 0, top_p in (0, 1]) pairs"),
        (SampleSet((1.0,), 0, 100, 4), "streams: give 1..1000000 streams in all, got 0 per setting"),
        (SampleSet((1.0,), 2, 100, 4, prompt=-1), "prompt: must be in 0..10000 characters, got -1"),
        (SampleSet((1.0,), 2, 100, 4, prompt=500), "prompt: the prompt text has no line start with 500 characters"),
    ],
)
def test_bad_sample_sets_are_named(
    tiny_text_checkpoint: Path, sample_set: SampleSet, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTIPHON_CACHE", str(tmp_path))
    with pytest.raises(InvalidArgument) as info:
        load_samples(tiny_text_checkpoint, sample_set, PROMPT_TEXT)
    assert str(info.value).startswith(message)


def test_samples_are_cached(tiny_text_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second load reads the cache file named by the generator's hash, the set and the prompt text."""
    monkeypatch.setenv("ANTIPHON_CACHE", str(tmp_path))
    sample_set = SampleSet((0.8, 1.0), 2, 50, 3, prompt=10)
    first = load_samples(tiny_text_checkpoint, sample_set, PROMPT_TEXT)
    path = cache_path(tiny_text_checkpoint, sample_set, PROMPT_TEXT)
    assert path.is_file() and path.is_relative_to(tmp_path)
    assert [s.row.temperature for s in first] == [0.8, 0.8, 1.0, 1.0]
    assert len({s.row.seed for s in first}) == 4
    assert load_samples(tiny_text_checkpoint, sample_set, PROMPT_TEXT) == first
    assert cache_path(tiny_text_checkpoint, SampleSet((0.8, 1.0), 2, 50, 4, prompt=10), PROMPT_TEXT) != path
    assert cache_path(tiny_text_checkpoint, sample_set, PROMPT_TEXT + "Kent.\nAy.\n") != path


def test_a_recorded_set_reads_back_from_json() -> None:
    """What a checkpoint records (asdict through JSON: lists) rebuilds the same set."""
    sample_set = SampleSet((0.7, 0.9), 48, 1088, 2, variants=((0, 1.0), (30, 1.0), (0, 0.95)), prompt=128)
    assert SampleSet.from_dict(json.loads(json.dumps(asdict(sample_set)))) == sample_set
