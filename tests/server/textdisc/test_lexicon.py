"""The lexicon inside the text discriminator: which words the graph finds, what the table counts, and what
training takes off it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.errors import InvalidArgument
from server.text.vocab import Vocabulary
from server.textdisc.data import WindowSampler
from server.textdisc.lexicon import BUCKETS, MAX_WORD, WordHasher, document_lexicon, own_words
from server.textdisc.model import TextDiscConfig, TextDiscriminator
from server.textdisc.samples import Row, Sample

VOCAB = Vocabulary.from_text("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n',.;:-!?")


def words_of(text: str) -> list[tuple[str, int, bool]]:
    """(the word, its hash, capitalised) for every whole word the hasher reports in ``text``, in order."""
    hasher = WordHasher(len(VOCAB))
    hasher.set_vocabulary(VOCAB.chars)
    words = hasher(torch.tensor([VOCAB.encode(text)], dtype=torch.int32))
    hashes, upper = words.hashes, words.upper
    found = []
    for end in words.ends[0].nonzero().flatten().tolist():
        start = end
        while start > 0 and (text[start - 1].isalpha() or (text[start - 1] == "'" and text[start - 2].isalpha())):
            start -= 1
        found.append((text[start : end + 1], int(hashes[0, end]), bool(upper[0, end])))
    return found


def test_whole_words_are_found_where_they_end() -> None:
    text = "urs, O'er 'tis the King's to-night; a " + "x" * MAX_WORD + " fine\nwor"
    found = words_of(text)
    # "urs" and "wor" touch the window's edges and may be parts of longer words; a word of MAX_WORD letters is
    # too long to hash; apostrophes count only between letters; a hyphen splits.
    assert [w for w, _, _ in found] == ["O'er", "tis", "the", "King's", "to", "night", "a", "fine"]
    assert [u for _, _, u in found] == [True, False, False, True, False, False, False, False]
    assert all(0 <= h < BUCKETS for _, h, _ in found)


def test_a_word_hashes_alike_in_any_case_and_apart_from_others() -> None:
    hashes = {w: h for w, h, _ in words_of(" king King KING kin kingdom gnik ")}
    assert hashes["king"] == hashes["King"] == hashes["KING"]
    assert len({hashes["king"], hashes["kin"], hashes["kingdom"], hashes["gnik"]}) == 4


def test_the_table_counts_documents_and_each_keeps_its_own_words() -> None:
    table, own = document_lexicon(VOCAB, ["the king is dead", "long live the king", "the end"])
    hashes = {w: h for w, h, _ in words_of(" the king dead end queen ")}
    assert [int(table[hashes[w]]) for w in ("the", "king", "dead", "end", "queen")] == [3, 2, 1, 1, 0]
    assert table.dtype == np.int8 and table.shape == (BUCKETS,)
    assert hashes["dead"] in own[0] and hashes["dead"] not in own[1] and list(own[2]) == sorted(own[2])


def test_own_words_marks_a_rows_document_words_only() -> None:
    _table, own = document_lexicon(VOCAB, ["the king is dead", "long live the king"])
    text = " the king is dead long "
    hasher = WordHasher(len(VOCAB))
    hasher.set_vocabulary(VOCAB.chars)
    ids = torch.tensor([VOCAB.encode(text)] * 3, dtype=torch.int32)
    words = hasher(ids)
    hashes, ends = words.hashes, words.ends
    marks = own_words(hashes.numpy(), ends.numpy(), np.array([0, 1, -1]), own)
    marked = [[text[: i + 1].split()[-1] for i in np.flatnonzero(row)] for row in marks]
    assert marked == [["the", "king", "is", "dead"], ["the", "king", "long"], []]


def lexicon_model() -> TextDiscriminator:
    torch.manual_seed(0)
    model = TextDiscriminator(TextDiscConfig(vocab_size=len(VOCAB), dilations=(1,), lexicon_documents=2)).eval()
    table, _ = document_lexicon(VOCAB, ["the king is dead", "long live the king"])
    model.set_lexicon(VOCAB.chars, table)
    return model


def test_the_model_sees_unknown_words_and_how_common_known_ones_are() -> None:
    model = lexicon_model()
    text = " the Kinge is dead, kingly Horatio "
    view = model.word_view(torch.tensor([VOCAB.encode(text)]))[0]  # (T, 3)
    at = {w: text.index(w) + len(w) - 1 for w in ("the", "Kinge", "is", "dead", "kingly", "Horatio")}
    assert view[at["kingly"]].tolist() == [1, 0, 0]  # unknown, lower-case
    assert view[at["Kinge"]].tolist() == [0, 1, 0] and view[at["Horatio"]].tolist() == [0, 1, 0]
    assert view[at["the"], 2] == 1.0  # in both documents: log(3) / log(3)
    assert view[at["dead"], 2] == pytest.approx(np.log(2) / np.log(3))
    # three unknown words, "the" and two words of one document: nothing elsewhere
    assert float(view.abs().sum()) == pytest.approx(3 + 1 + 2 * np.log(2) / np.log(3))


def test_training_takes_a_windows_own_document_off_the_counts() -> None:
    """A word only its own document uses reads as unknown; forward is classify without exclusions."""
    model = lexicon_model()
    ids = torch.tensor([VOCAB.encode(" the king is dead ")])
    _, own = document_lexicon(VOCAB, ["the king is dead", "long live the king"])
    words = model.words(ids)
    hashes, ends = words.hashes, words.ends
    exclude = torch.from_numpy(own_words(hashes.numpy(), ends.numpy(), np.array([0]), own))
    view = model.word_view(ids, exclude)[0]
    dead = " the king is dead ".index("dead") + 3
    assert view[dead].tolist() == [1, 0, 0] and view[dead - 5].tolist() == [1, 0, 0]  # "dead", "is"
    # "the" and "king" are still known, from the other document alone
    assert view[3, 2] == view[8, 2] == pytest.approx(np.log(2) / np.log(3))
    assert torch.equal(model(ids), model.classify(ids, None))
    assert not torch.equal(model.classify(ids, None, exclude), model(ids))


def test_a_lexicon_survives_the_checkpoint(tmp_path: object) -> None:
    from pathlib import Path

    from server.textdisc.checkpoint import load_textdisc_model, save_textdisc_model

    model = lexicon_model()
    path = Path(str(tmp_path)) / "lex.safetensors"
    save_textdisc_model(path, model, VOCAB, ["real", "generated"], {})
    loaded, _, _ = load_textdisc_model(path)
    ids = torch.tensor([VOCAB.encode(" the kingly dead Horatio long ")])
    assert torch.equal(loaded(ids), model(ids))
    assert torch.equal(loaded.lexicon, model.lexicon)


def test_bad_lexicons_are_named() -> None:
    with pytest.raises(InvalidArgument, match="lexicon: counts 0 to 127 documents, got 300"):
        TextDiscConfig(vocab_size=10, lexicon_documents=300)
    with pytest.raises(InvalidArgument, match="lexicon: this model was built without a lexicon"):
        TextDiscriminator(TextDiscConfig(vocab_size=len(VOCAB))).set_lexicon(VOCAB.chars, np.zeros(BUCKETS, np.int8))
    with pytest.raises(InvalidArgument, match="lexicon: needs a"):
        lexicon_model().set_lexicon(VOCAB.chars, np.zeros(10, np.int8))


def test_the_sampler_names_each_real_windows_document() -> None:
    documents = ["a" * 300, "b" * 300, "c" * 300]
    text = "\n\n".join(documents)
    spans = ((0, 300), (302, 602), (604, 904))
    fake = [Sample(Row(temperature=1.0, top_k=0, top_p=1.0, seed=0), "x" * 600)]
    ids, labels, docs = WindowSampler(VOCAB, text, fake, seed=0, spans=spans).batch(64)
    assert (docs[labels == 1] == -1).all()
    first = [VOCAB.chars[i] for i in ids[labels == 0, 0]]  # a window's first character names where it starts
    expected = [{"a": 0, "b": 1, "c": 2, "\n": -9}[c] for c in first]
    assert [d for d, e in zip(docs[labels == 0], expected, strict=True) if e >= 0] == [e for e in expected if e >= 0]
    assert set(docs[labels == 0]) <= {0, 1, 2}
    _, _, none = WindowSampler(VOCAB, text, fake, seed=0).batch(8)
    assert (none == -1).all()


def test_pooled_statistics_count_the_lexicons_view_per_word() -> None:
    """The stacked head's lexicon statistics: the shares of unknown and unknown capitalised words among the
    window's whole words, their mean frequency and how many there are; then the scorer's view (here: the surprise
    of each character is its position, the difference 1) averaged over each word's characters, unknown and known
    words apart, for words from character SCORER_SKIP on."""
    from server.textdisc.model import LEXICON_STATISTICS, SCORER_SKIP, ScorerStatistics

    model = lexicon_model()
    text = " " * SCORER_SKIP + " the Kinge is dead, kingly Horatio "
    view, words = model.lexicon_view(torch.tensor([VOCAB.encode(text)]))
    features = torch.zeros(1, len(text), 3)
    features[0, :, 0] = torch.arange(len(text), dtype=torch.float32)
    features[0, :, 2] = 1.0
    stats = ScorerStatistics(features=3, lexicon=True)
    raw = stats.raw(features, words, view)[0, -len(LEXICON_STATISTICS) :]
    frequency = (1 + 2 * np.log(2) / np.log(3)) / 6  # "the" in both documents, "is" and "dead" in one

    def mean_position(word: str) -> float:
        start = text.index(f" {word}") + 1
        return start + (len(word) - 1) / 2

    unknown = np.mean([mean_position(w) for w in ("Kinge", "kingly", "Horatio")])
    known = np.mean([mean_position(w) for w in ("the", "is", "dead")])
    assert raw[:4].tolist() == pytest.approx([1 / 6, 2 / 6, frequency, 6 / 64])
    assert raw[4:].tolist() == pytest.approx([unknown, 1.0, known, 1.0])


def test_position_statistics_split_the_scorer_view_by_where_a_character_stands() -> None:
    """The scorer's surprise, surprise - entropy and log rank averaged over words' first letters, their other
    letters (an apostrophe between letters included) and the other characters, from character SCORER_SKIP on."""
    from server.textdisc.model import POSITION_STATISTICS, SCORER_SKIP, ScorerStatistics

    model = lexicon_model()
    text = "abc " * (SCORER_SKIP // 4) + "ab o'er,\n x"
    ids = torch.tensor([VOCAB.encode(text)])
    view, words = model.lexicon_view(ids)
    features = torch.zeros(1, len(text), 4)
    features[0, :, 0] = torch.arange(len(text), dtype=torch.float32)  # surprise: the position
    features[0, :, 2] = 1.0
    features[0, :, 3] = 2.0
    stats = ScorerStatistics(features=4, lexicon=True, positions=True)
    raw = stats.raw(features, words, view)[0, -len(POSITION_STATISTICS) :].reshape(3, 3)
    at = {c: [i for i in range(SCORER_SKIP, len(text)) if kind(text, i) == c] for c in ("first", "other", "not")}
    assert at["first"] == [SCORER_SKIP, SCORER_SKIP + 3, len(text) - 1]  # "ab", "o'er" and "x" (cut by the edge)
    for row, where in enumerate(("first", "other", "not")):
        assert raw[row].tolist() == pytest.approx([np.mean(at[where]), 1.0, 2.0])


def test_window_statistics_start_at_the_configured_character() -> None:
    """The pooled statistics count the scorer's view from character ``skip`` on: the first models from 32, new ones
    from WARM_UP, and a config without the field (an older checkpoint's) keeps 32."""
    from server.textdisc.model import SCORER_SKIP, WARM_UP, ScorerStatistics

    features = torch.arange(64, dtype=torch.float32).reshape(1, 64, 1).repeat(1, 1, 2)  # feature = position
    for skip in (SCORER_SKIP, WARM_UP, 1):
        mean, spread = ScorerStatistics(features=2, lexicon=False, skip=skip).raw(features)[0, :4].reshape(2, 2)
        positions = np.arange(skip, 64)
        assert mean.tolist() == pytest.approx([positions.mean()] * 2)
        assert spread.tolist() == pytest.approx([positions.std()] * 2)
    assert TextDiscConfig(vocab_size=4).scorer_skip == SCORER_SKIP
    with pytest.raises(InvalidArgument, match="scorer_skip"):
        TextDiscConfig(vocab_size=4, scorer_skip=0)


def kind(text: str, i: int) -> str:
    """Where character i stands: a word's first letter, its other letters, or not in a word."""

    def inside(j: int) -> bool:
        c = text[j]
        return c.isalpha() or (c == "'" and 0 < j < len(text) - 1 and text[j - 1].isalpha() and text[j + 1].isalpha())

    if not inside(i):
        return "not"
    return "other" if i > 0 and inside(i - 1) else "first"


def test_soft_band_edges_sum_to_one_and_move_little_across_an_edge() -> None:
    """Hard entropy bands jump by a whole character's weight when rounding moves an entropy across an edge; soft
    ones agree with them away from the edges and move by the rounding's size at an edge."""
    from server.textdisc.model import ENTROPY_BANDS, ScorerStatistics

    edge = ENTROPY_BANDS[0]
    entropy = torch.tensor([0.05, edge - 1e-6, edge + 1e-6, 0.85, 3.0]).reshape(1, -1, 1)
    hard = torch.cat(ScorerStatistics(features=2, lexicon=False).bands(entropy), dim=2)[0]
    soft = torch.cat(ScorerStatistics(features=2, lexicon=False, band_width=0.05).bands(entropy), dim=2)[0]
    assert torch.allclose(soft.sum(dim=1), torch.ones(5))
    assert (hard[2] - hard[1]).abs().max() == 1.0
    assert (soft[2] - soft[1]).abs().max() < 1e-4
    assert torch.allclose(soft[[0, 4]], hard[[0, 4]], atol=1e-3)
    assert torch.allclose(soft[3], hard[3], atol=0.01)
