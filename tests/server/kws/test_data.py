"""Keyword-spotter data: accent pronunciations that espeak-ng speaks as written, hard negatives that no number word
sounds like, a held-out word list that does not move with the training sizes, and the batches' label shares."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from server.data.speech import ACCENTS, HOMOPHONES, NUMBER_WORDS, other_word_count, other_words, random_rendering
from server.errors import InvalidArgument
from server.kws.augment import AugmentConfig
from server.kws.data import (
    DEVELOPMENT_WORDS,
    HARD_NEGATIVES,
    HOLDERS,
    PRONUNCIATIONS,
    SILENCE_INDEX,
    SPOKEN_AS_NUMBERS,
    UNKNOWN_INDEX,
    BaseClips,
    Clip,
    ClipSampler,
    KWSDataConfig,
    _number_texts,
    _unknown_clips,
    _word_split,
    hard_negatives,
    holders,
    training_clips,
    unseen_clips,
    unseen_set,
    untrained_words,
)


def _phonemes(texts: list[str], voice: str) -> list[str]:
    """espeak-ng's phonemes of each text (one paragraph each), without stress marks."""
    exe = shutil.which("espeak-ng")
    assert exe is not None
    out = subprocess.run(
        [exe, "-q", "-x", "-v", voice], input="\n\n".join(texts), capture_output=True, text=True, check=True
    ).stdout
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    assert len(lines) == len(texts)
    return [line.translate(str.maketrans("", "", "',#")) for line in lines]


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


def test_holder_renderings_add_the_holders_as_hard_negatives() -> None:
    """--holder-renderings N: N more renderings of each hard negative that holds a number word, as hard unknown
    clips after all the others, whose draws do not move."""
    assert set(HOLDERS) <= set(HARD_NEGATIVES) and len(set(HOLDERS)) == len(HOLDERS)
    config = KWSDataConfig(per_number=1, unknown_words=2, hard_renderings=1)
    before = training_clips(config, workers=2)
    after = training_clips(KWSDataConfig(per_number=1, unknown_words=2, hard_renderings=1, holder_renderings=2), 2)
    assert after.clips[: len(before.clips)] == before.clips
    added = after.clips[len(before.clips) :]
    assert [c.text for c in added] == [w for w in holders(config) for _ in range(2)]
    assert all(c.label == UNKNOWN_INDEX and c.hard for c in added)
    assert all(len(a) > 1600 for a in after.audio[len(before.clips) :])  # speech, not silence
    assert added[0].rendering != added[1].rendering  # each rendering drawn anew


def test_no_hard_negative_sounds_like_a_number_word() -> None:
    """No hard negative is a number word or a homophone, or spoken (by any accent) as a number word or one of its
    pronunciations: one sound, one label."""
    assert len(set(HARD_NEGATIVES)) == len(HARD_NEGATIVES)
    # "heaven" is kept out of the plays' other words with the homophones (their order stays fixed) but is a hard
    # negative: the phoneme check below is what says it is no number word
    assert not set(HARD_NEGATIVES) & (set(NUMBER_WORDS) | (HOMOPHONES - {"heaven"}))
    assert "heaven" in HARD_NEGATIVES
    numbers = {p.translate(str.maketrans("", "", "',#")) for options in PRONUNCIATIONS.values() for p in options}
    for accent in ACCENTS:
        numbers |= set(_phonemes(list(NUMBER_WORDS), accent))
    for accent in ACCENTS:
        clashes = [
            w for w, p in zip(HARD_NEGATIVES, _phonemes(list(HARD_NEGATIVES), accent), strict=True) if p in numbers
        ]
        assert clashes == [], accent


def test_hard_negatives_leave_out_the_heldout_words() -> None:
    """A hard negative that is also a held-out word is not trained on."""
    config = KWSDataConfig(heldout_per_label=40)
    _, held = _word_split(config)
    common = set(HARD_NEGATIVES) & set(held)
    assert common  # "they" with the default seed; the test needs one
    assert not common & set(hard_negatives(config))
    assert len(hard_negatives(config)) == len(HARD_NEGATIVES) - len(common)


def _sampler_base() -> BaseClips:
    noise = np.random.default_rng(0).standard_normal(1600).astype(np.float32) * 0.1
    clips = [Clip(k, f"w{k}", None) for k in range(SILENCE_INDEX)]
    clips += [Clip(UNKNOWN_INDEX, "hard", None, hard=True)] * 3
    return BaseClips(clips, [noise] * len(clips))


@pytest.mark.parametrize(("unknown_share", "hard_share"), [(None, 0.0), (0.25, 0.0), (0.4, 0.5)])
def test_sampler_draws_the_shares(unknown_share: float | None, hard_share: float) -> None:
    """Labels are uniform by default, else "unknown" at its share and the rest alike; an unknown clip is a hard
    negative at the hard share."""
    sampler = ClipSampler(_sampler_base(), seed=0, unknown_share=unknown_share, hard_share=hard_share)
    labels = sampler.labels(24_000)
    counts = np.bincount(labels, minlength=12) / len(labels)
    unknown = 1 / 12 if unknown_share is None else unknown_share
    assert abs(counts[UNKNOWN_INDEX] - unknown) < 0.01
    assert np.allclose(np.delete(counts, UNKNOWN_INDEX), (1 - unknown) / 11, atol=0.01)
    picks = [sampler.pick(UNKNOWN_INDEX) for _ in range(4000)]
    hard = np.mean([sampler.base.clips[i].hard for i in picks if i is not None])
    assert abs(hard - hard_share) < 0.03
    assert sampler.pick(SILENCE_INDEX) is None
    waves, batch_labels = sampler.batch(8)
    assert waves.shape == (8, 16_000) and batch_labels.shape == (8,)


def test_words_spoken_as_numbers_are_left_out_of_the_unknown_words() -> None:
    """Each of SPOKEN_AS_NUMBERS is a number word (or one of its pronunciations) in some accent's phonemes, and the
    other words' training clips leave them out without moving any other word's rendering."""
    numbers = {p.translate(str.maketrans("", "", "',#")) for options in PRONUNCIATIONS.values() for p in options}
    for accent in ACCENTS:
        numbers |= set(_phonemes(list(NUMBER_WORDS), accent))
    words = sorted(SPOKEN_AS_NUMBERS)
    heard = {w: False for w in words}
    for accent in ACCENTS:
        for w, p in zip(words, _phonemes(words, accent), strict=True):
            heard[w] |= any(part in numbers for part in p.replace("_", " ").split())
    assert all(heard.values()), heard
    order = other_words(2000, 0)
    first = min(order.index(w) for w in words if w in order)  # "height" with the default seed
    config = KWSDataConfig(unknown_words=first + 5, heldout_per_label=40)
    kept = _unknown_clips(config, np.random.default_rng(1))
    train_words, _ = _word_split(config)
    rng = np.random.default_rng(1)
    drawn = {w: random_rendering(rng, "train") for w in train_words}  # one rendering drawn for every word
    assert [c.text for c in kept] == [w for w in train_words if w not in SPOKEN_AS_NUMBERS]
    assert len(kept) < len(train_words)
    assert all(c.rendering == drawn[c.text] for c in kept)


def test_sampler_mines_the_unknown_clips_the_model_gets_wrong() -> None:
    """With the errors given, ``mine_share`` of the unknown draws follow them; before, none is mined."""
    base = _sampler_base()
    sampler = ClipSampler(base, seed=0, unknown_share=0.5, mine_share=0.5)
    assert sampler.unknown_clips == [UNKNOWN_INDEX, *range(SILENCE_INDEX, SILENCE_INDEX + 3)]
    before = [sampler.pick(UNKNOWN_INDEX) for _ in range(400)]
    assert set(before) == {UNKNOWN_INDEX}  # no hard share: the ordinary unknown clip only
    errors = np.zeros(len(sampler.unknown_clips))
    errors[2] = 0.9  # the second hard clip
    sampler.set_unknown_errors(errors)
    picks = [sampler.pick(UNKNOWN_INDEX) for _ in range(4000)]
    assert abs(picks.count(SILENCE_INDEX + 1) / len(picks) - 0.5) < 0.03
    assert set(picks) == {UNKNOWN_INDEX, SILENCE_INDEX + 1}
    with pytest.raises(InvalidArgument, match="errors: must have 4 values"):
        sampler.set_unknown_errors(np.zeros(3))
    hard_only = ClipSampler(base, seed=0, unknown_share=0.5, mine_share=1.0, mine_pool="hard")
    assert hard_only.unknown_clips == [SILENCE_INDEX, SILENCE_INDEX + 1, SILENCE_INDEX + 2]
    hard_only.set_unknown_errors(np.asarray([0.0, 0.0, 0.7]))
    assert {hard_only.pick(UNKNOWN_INDEX) for _ in range(200)} == {SILENCE_INDEX + 2}


def test_sampler_keeps_a_pause_after_number_words() -> None:
    """With ``keyword_gap``, number words get a later next word in running speech; other words keep theirs."""
    sampler = ClipSampler(_sampler_base(), seed=0, augment_config=AugmentConfig(p_context=0.5), keyword_gap=0.15)
    assert sampler.keyword_config.context_gap_after == (0.15, 0.25)
    assert sampler.config.context_gap_after is None
    assert ClipSampler(_sampler_base(), seed=0).keyword_config == AugmentConfig()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unknown_share": 1.0}, "unknown_share: must be in (0, 1), got 1.0"),
        ({"hard_share": -0.5}, "hard_share: must be in [0, 1], got -0.5"),
        ({"mine_share": 1.5}, "mine_share: must be in [0, 1], got 1.5"),
        ({"keyword_gap": 0.8}, "keyword_gap: must be in [0, 0.5] seconds, got 0.8"),
        ({"mine_pool": "all"}, "mine_pool: must be one of unknown, hard, got 'all'"),
    ],
)
def test_sampler_refuses_bad_shares(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        ClipSampler(_sampler_base(), seed=0, **kwargs)
    assert str(info.value) == message


def test_heldout_words_do_not_depend_on_the_training_words() -> None:
    """More training words leave the held-out words as they were, and no word is in both."""
    train_small, held_small = _word_split(KWSDataConfig(unknown_words=10, heldout_per_label=5))
    train_large, held_large = _word_split(KWSDataConfig(unknown_words=50, heldout_per_label=5))
    assert held_small == held_large and len(held_small) == 5
    assert len(train_small) == 10 and len(train_large) == 50
    assert not set(held_large) & set(train_large)


def test_the_test_set_holds_no_trained_held_out_or_development_word() -> None:
    """The test set's other words come after the training and held-out words and before the development words;
    every label has its share of clips, placed apart from the held-out set's draws."""
    config = KWSDataConfig(per_number=2, unknown_words=30, heldout_per_label=4)
    train, held = _word_split(config)
    words = untrained_words(config)
    order = other_words(other_word_count(), config.seed)
    assert words[0] == next(w for w in order[34:] if w not in SPOKEN_AS_NUMBERS and w not in HARD_NEGATIVES)
    assert not set(words) & (set(train) | set(held) | set(order[-DEVELOPMENT_WORDS:]) | set(HARD_NEGATIVES))
    base = unseen_clips(config, per_label=2, workers=1)
    assert [sum(c.label == k for c in base.clips) for k in range(12)] == [2] * 12
    assert [c.text for c in base.clips if c.label == UNKNOWN_INDEX] == words[:2]
    waves, labels = unseen_set(base, noisy=False, config=config)
    assert waves.shape == (24, 16_000) and labels.tolist() == [c.label for c in base.clips]


def test_the_test_set_and_the_training_words_have_their_limits() -> None:
    """Asking for more test words than training leaves, or for the development words, names the field."""
    most = other_word_count() - DEVELOPMENT_WORDS - 40
    config = KWSDataConfig(unknown_words=most - 100)
    with pytest.raises(InvalidArgument) as info:
        unseen_clips(config, per_label=200)
    assert info.value.field == "test_per_label" and f"between 1 and {len(untrained_words(config))}" in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        training_clips(KWSDataConfig(unknown_words=most + 1))
    assert info.value.field == "unknown_words" and f"at most {most:,}" in str(info.value)


def test_older_checkpoints_read_without_an_accent_share() -> None:
    """A checkpoint's recorded data without the fields means no accent renderings and no hard negatives."""
    recorded = {"per_number": 250, "unknown_words": 1500, "heldout_per_label": 40, "seed": 0}
    assert KWSDataConfig.from_meta(recorded) == KWSDataConfig(250, 1500, 40, 0, 0.0, 0)
    assert not KWSDataConfig.from_meta(recorded).beyond_espeak  # nor speech beyond espeak-ng
    assert KWSDataConfig.from_meta({**recorded, "hard_renderings": 4}).hard_renderings == 4
    assert KWSDataConfig.from_meta({**recorded, "hard_renderings": 4}).holder_renderings == 0
    assert KWSDataConfig.from_meta({**recorded, "accent_share": 0.5}).accent_share == 0.5
