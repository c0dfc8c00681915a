"""Shared fixtures: a tiny real corpus and a tiny real model trained in seconds."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.certs import Certificates, make_certificates

# Tiny models gain nothing from threads, and the tests start servers and commands side by side: one thread per
# process (inherited by every subprocess) keeps OpenMP threads from spinning against each other on a small machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# One unit for every timeout in the tests; raise it on a slow machine.
TIMEOUT_UNIT = float(os.environ.get("ANTIPHON_TEST_TIMEOUT_UNIT", "1"))


def timeout(seconds: float) -> float:
    return seconds * TIMEOUT_UNIT


SPEAKERS = ("Kent", "Lear", "Fool", "Edgar")
WORDS = tuple("the king is come and we shall see what love may do for thee my lord good night sir come hither".split())


def make_dialogue(n_turns: int, seed: int = 0) -> str:
    """Text in the corpus's dialogue form: "Speaker.\\nline\\n\\n" turns."""
    rng = random.Random(seed)
    turns = []
    for _ in range(n_turns):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
        turns.append(f"{rng.choice(SPEAKERS)}.\n{' '.join(words).capitalize()}.\n")
    return "\n".join(turns)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "dialogue.txt"
    path.write_text(make_dialogue(600), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_text_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    """A real 2-layer LSTM, its trainer's tiny preset (60 steps of 8 x 32 characters: seconds) on the tiny corpus."""
    from server.text.options import TextTrainOptions
    from server.text.train import TextTrainer

    out = tmp_path_factory.mktemp("text_model") / "tiny.safetensors"
    TextTrainer(TextTrainOptions.dry_run(corpus=tiny_corpus, out=out)).train()
    return out


def train_tiny_textdisc(out: Path, text_checkpoint: Path, corpus: Path, **options: Any) -> Path:
    """The project's text discriminator, its trainer's tiny preset (150 steps: seconds) on the tiny corpus against
    the tiny LSTM's samples (cached in ``<out's folder>/cache``: :func:`textdisc_cache`); ``options`` are more
    TextDiscTrainOptions."""
    from server.textdisc.options import TextDiscTrainOptions
    from server.textdisc.train import train_textdisc

    with textdisc_cache(out):
        train_textdisc(TextDiscTrainOptions.dry_run(text_checkpoint=text_checkpoint, out=out, corpus=corpus, **options))
    return out


@contextmanager
def textdisc_cache(checkpoint: Path) -> Iterator[None]:
    """ANTIPHON_CACHE set to the tiny discriminator's own cache (its samples), beside ``checkpoint``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANTIPHON_CACHE", str(checkpoint.parent / "cache"))
        yield


@pytest.fixture(scope="session")
def tiny_textdisc_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_text_checkpoint: Path, tiny_corpus: Path
) -> Path:
    """A real text discriminator of the tiny corpus against the tiny LSTM's samples, 150 steps (seconds)."""
    out = tmp_path_factory.mktemp("textdisc") / "tiny_disc.safetensors"
    return train_tiny_textdisc(out, tiny_text_checkpoint, tiny_corpus)


@pytest.fixture(scope="session")
def tiny_kws_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real keyword spotter, its trainer's tiny preset: 40 steps on 3 renderings of each number word (about 15 s
    with espeak-ng)."""
    from server.kws.options import KWSTrainOptions
    from server.kws.train import train_kws

    out = tmp_path_factory.mktemp("kws") / "tiny_kws.safetensors"
    train_kws(KWSTrainOptions.dry_run(out=out))
    return out


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A private certificate authority and a server certificate it signed for 127.0.0.1 and localhost (``openssl``;
    tests/certs.py)."""
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item (``item.rep_call``), so a fixture can tell that its test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
