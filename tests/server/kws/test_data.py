"""Keyword-spotter data: accent pronunciations that espeak-ng speaks as written, and a held-out word list that does
not move with the training sizes."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from server.data.speech import NUMBER_WORDS
from server.kws.data import PRONUNCIATIONS, KWSDataConfig, _number_texts, _word_split, training_clips


@pytest.mark.parametrize("word", NUMBER_WORDS)
def test_pronunciations_are_phonemes_espeak_ng_knows(word: str) -> None:
    """Every pronunciation comes back from espeak-ng's phoneme echo unchanged (no unknown mnemonic dropped or
    rewritten), and none is only the spelling's own."""
    exe = shutil.which("espeak-ng")
    assert exe is not None
    spelled = subprocess.run([exe, "-q", "-x", "-v", "en-us", word], capture_output=True, text=True).stdout.strip()
    assert len(PRONUNCIATIONS[word]) >= 3
    assert any(p != spelled for p in PRONUNCIATIONS[word])
    for phonemes in PRONUNCIATIONS[word]:
        out = subprocess.run([exe, "-q", "-x", "-v", "en-us", f"[[{phonemes}]]"], capture_output=True, text=True)
        assert out.stdout.strip() == phonemes


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5, 1.0])
def test_accent_share_of_each_number_word(share: float) -> None:
    """Exactly ``accent_share`` of each word's renderings are phonemes, each one of that word's pronunciations."""
    config = KWSDataConfig(per_number=20, unknown_words=5, accent_share=share)
    texts = _number_texts(config)
    assert len(texts) == 20 * len(NUMBER_WORDS)
    for k, word in enumerate(NUMBER_WORDS):
        mine = texts[20 * k : 20 * (k + 1)]
        accented = [t for t in mine if t.startswith("[[")]
        assert len(accented) == round(20 * share)
        assert all(t[2:-2] in PRONUNCIATIONS[word] for t in accented)
        assert all(t == word for t in mine if not t.startswith("[["))


def test_training_clips_render_the_pronunciations() -> None:
    """The phoneme renderings are speech (not empty) and keep their number word's label."""
    base = training_clips(KWSDataConfig(per_number=2, unknown_words=2, accent_share=0.5), workers=1)
    accented = [(c, a) for c, a in zip(base.clips, base.audio, strict=True) if c.text.startswith("[[")]
    assert len(accented) == len(NUMBER_WORDS)
    for clip, audio in accented:
        assert clip.text[2:-2] in PRONUNCIATIONS[NUMBER_WORDS[clip.label]]
        assert len(audio) > 1600  # more than a tenth of a second of speech


def test_heldout_words_do_not_depend_on_the_training_words() -> None:
    """More training words leave the held-out words as they were, and no word is in both."""
    train_small, held_small = _word_split(KWSDataConfig(unknown_words=10, heldout_per_label=5))
    train_large, held_large = _word_split(KWSDataConfig(unknown_words=50, heldout_per_label=5))
    assert held_small == held_large and len(held_small) == 5
    assert len(train_small) == 10 and len(train_large) == 50
    assert not set(held_large) & set(train_large)


def test_older_checkpoints_read_without_an_accent_share() -> None:
    """A checkpoint's recorded data without the field means no accent renderings."""
    recorded = {"per_number": 250, "unknown_words": 1500, "heldout_per_label": 40, "seed": 0}
    assert KWSDataConfig.from_meta(recorded) == KWSDataConfig(250, 1500, 40, 0, 0.0)
    assert KWSDataConfig.from_meta({**recorded, "accent_share": 0.5}).accent_share == 0.5
