"""Recordings of real people that Debian packages ship, read at run time for the keyword spotter: each speaker's
words as :class:`Utterance` lists (16 kHz float32, trimmed of silence).

- ``asterisk-allison`` (``asterisk-core-sounds-en-wav``): one recorded speaker at 8 kHz, the ten digits and 569
  prompts (transcripts in ``core-sounds-en.txt.gz``); prompts whose transcript holds no number word, homophone or
  digit are "unknown" ("thirteen", "seventy", "sixth" and the rest of ``digits/``: hard negatives; "niner" is
  neither);
- ``asterisk-allison-running``: the same speaker's number words cut from her prompts (:data:`ASTERISK_RUNNING_CUTS`);
- ``tidigits-dhd`` (``pocketsphinx-testdata``): one TIDIGITS speaker's "two nine three four zero", cut at the
  word boundaries PocketSphinx finds (:data:`TIDIGITS_CUTS`: connected digits, so each cut holds a little of its
  neighbours);
- ``pocketsphinx-cards`` (``pocketsphinx-testdata``): a speaker naming playing cards ("eight of spades four of
  clubs seven of hearts"), cut at PocketSphinx's word boundaries (:data:`CARDS_CUTS`): seven number words and
  fourteen other words;
- ``pocketsphinx-numbers`` (``pocketsphinx-testdata``): a speaker saying "thirty three forty six ninety two",
  cut at PocketSphinx's word boundaries (:data:`POCKETSPHINX_CUTS`): three number words of connected speech, each
  after a tens word, and the three tens words as hard negatives;
- ``pocketsphinx-goforward`` (``pocketsphinx-testdata``): "go forward ten meters" and "go somewhere and do
  something", perhaps the same speaker as the numbers: nine other words;
- ``librivox-austen`` (``pocketsphinx-testdata``): a LibriVox reader's five sentences of *Sense and Sensibility*,
  cut at PocketSphinx's alignment to the transcription (:data:`LIBRIVOX_CUTS`): every word of at least 150 ms
  that is neither a number word nor a homophone of one (no "to", "for"), about fifty other words of running speech;
- ``ktuberling-LANG`` (``ktuberling-data``): object names ("ball", "nose", "umbrella") read by one speaker per
  language, 12 languages; "unknown";
- ``klettres-LANG`` (``klettres-data``): letter names and short syllables ("car", "dog", "fix") by one speaker
  per language, 20 languages; "unknown" (less the letter O, which is "oh");
- ``saytime-dawson`` (``saytime``): a talking clock's words by one speaker (David C. Dawson), 8 kHz mu-law: the
  ten digits, the teens and tens (hard negatives) and the clock's other words ("exactly", "minutes", "o'clock");
- ``csmash-umpire`` (``csmash-data``): a table-tennis umpire's calls, 16 kHz: zero to nine, ten to twenty and
  thirty (hard negatives), "love all";
- ``scid-announcer`` (``scid-data``): a chess program's spoken moves, 11 kHz: one to eight, the files' letters a to
  h and the pieces' names ("bishop", "queen", "check");
- ``tuxpaint-en`` and ``tuxpaint-en_GB`` (``tuxpaint-stamps-default``): the names of a drawing program's stamps,
  read in American and British English (perhaps by more than one person each): zero to nine each, the American
  reader's animal and object names ("frog", "penguin"), the British reader's letter names (each file once: the
  package holds each letter's recording up to four times);
- ``tuxpaint-LANG`` (the same package): the stamps' names read in twelve other languages (Catalan, French,
  Russian...), 6,341 clips; "unknown" (the math stamps, which are numbers, left out). Training reads them only
  when asked (``--stamp-unknown``), not with the other recordings' words (``--recorded-unknown``).

The development speakers (:data:`DEVELOPMENT_SPEAKERS`) are not trained on unless a run names them
(``--train-speakers``).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from server.audio.constants import SAMPLE_RATE
from server.data.cache import cache_dir
from server.data.speech import HOMOPHONES, NUMBER_WORDS, trim_silence
from server.errors import CorpusError
from server.kws.audio_files import read_wav
from server.kws.data import HARD_NEGATIVES, UNKNOWN_INDEX

ASTERISK = Path("/usr/share/asterisk/sounds/en")  # the alternatives link of asterisk-core-sounds-en
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
TIDIGITS = Path("/usr/share/pocketsphinx/test/data/tidigits/dhd.2934z.raw")  # 16 kHz, 16-bit little-endian
KTUBERLING = Path("/usr/share/ktuberling/sounds")
KLETTRES = Path("/usr/share/klettres")
# (word, first, last) in 10 ms frames: PocketSphinx 5's en-us alignment of the TIDIGITS clip, padded by 3 frames.
TIDIGITS_CUTS = (("two", 19, 42), ("nine", 37, 67), ("three", 62, 90), ("four", 85, 115), ("zero", 110, 164))
SAYTIME = Path("/usr/share/saytime")  # headerless 8 kHz mu-law, one word or phrase a file
CSMASH = Path("/usr/share/games/csmash/wav")
SCID = Path("/usr/share/scid/sounds")
TUXPAINT = Path("/usr/share/tuxpaint/stamps")
# Their files that hold no speech, or no word a listener can name: left out.
ANNOUNCER_EFFECTS = frozenset({"all", "click", "racket", "table", "alert", "move", "back"})
CARDS = Path("/usr/share/pocketsphinx/test/data/cards")  # five 16 kHz WAV files of one speaker naming cards
# (file, word, first, last) in 10 ms frames: PocketSphinx 5's en-us alignment of each file to its transcription
# ("four queen of clubs", ...); each cut is trimmed of silence (a first word's span starts with the file's).
CARDS_CUTS = (
    ("001", "ten", 0, 33), ("001", "of", 34, 44), ("001", "clubs", 45, 108),
    ("002", "four", 0, 76), ("002", "queen", 77, 103), ("002", "of", 104, 118), ("002", "clubs", 119, 171),
    ("003", "seven", 6, 56), ("003", "of", 57, 69), ("003", "clubs", 70, 153),
    ("004", "five", 0, 82), ("004", "five", 83, 123),
    ("005", "eight", 19, 41), ("005", "of", 42, 52), ("005", "spades", 53, 124), ("005", "four", 125, 153),
    ("005", "of", 154, 163), ("005", "clubs", 164, 221), ("005", "seven", 222, 262), ("005", "of", 263, 273),
    ("005", "hearts", 274, 325),
)  # fmt: skip
# Allison's number words inside her prompts ("press one to ..."): "word:first-last" in 10 ms frames, PocketSphinx 5's
# en-us alignment of each transcript (digits read as words, its out-of-vocabulary words left out), padded by
# :data:`RUNNING_PAD` frames at each end; cuts shorter than 150 ms were dropped. 132 words of running speech.
ASTERISK_RUNNING_CUTS = {
    "basic-pbx-ivr-main": "one:1306-1373 two:1586-1636 three:1930-1983 four:2190-2254 zero:2449-2505",
    "conf-adminmenu": "one:106-131 two:356-386 three:640-675 four:884-917 "
        "six:945-991 seven:1353-1400 nine:1418-1466 eight:1771-1809",
    "conf-adminmenu-162": "one:81-107 two:326-353 three:610-649 four:861-895 "
        "six:922-966 five:1315-1345 seven:1535-1567 nine:1591-1641 eight:1943-1980",
    "conf-adminmenu-18": "one:102-129 two:335-367 three:625-661 four:868-904 "
        "six:933-979 five:1320-1350 seven:1545-1585 nine:1612-1660 eight:1981-2028",
    "conf-adminmenu-menu8": "one:51-92 two:366-400 three:691-729 four:1121-1149 eight:1341-1383",
    "conf-onlyone": "one:98-122",
    "conf-usermenu": "one:105-141 four:361-397 six:425-469 seven:819-858 nine:885-928 eight:1240-1276",
    "conf-usermenu-162": "one:75-102 four:338-377 six:406-452 "
        "five:795-834 seven:1029-1070 nine:1105-1153 eight:1478-1520",
    "confbridge-binaural-off": "three:0-40",
    "confbridge-binaural-on": "three:0-36",
    "confbridge-only-one": "one:95-128",
    "demo-enterkeywords": "one:98-132",
    "dictate/play_help": "one:52-88 two:308-344 seven:593-633 eight:823-860",
    "dictate/record_help": "one:45-87 eight:323-365",
    "dir-instr": "one:286-321",
    "dir-intro": "three:302-328 seven:843-888 nine:1034-1074",
    "dir-intro-fn": "three:308-336 seven:844-883 nine:1040-1080",
    "dir-multi9": "nine:43-84",
    "dir-usingkeypad": "seven:264-303 nine:449-487",
    "followme/options": "one:34-67 two:221-252",
    "one-moment-please": "one:0-39",
    "priv-callee-options": "one:62-107 two:598-642 three:1128-1188 four:1587-1628",
    "screen-callee-options": "one:239-280 two:645-693 three:1013-1070 four:1391-1444",
    "vm-Cust1": "five:49-115",
    "vm-Cust3": "seven:47-125",
    "vm-Cust4": "eight:59-105",
    "vm-Cust5": "nine:43-116",
    "vm-advopts": "three:44-88",
    "vm-calldiffnum": "two:43-79",
    "vm-delete": "seven:36-74",
    "vm-forward": "one:47-85 two:287-336",
    "vm-forward-multiple": "one:47-74 two:237-280",
    "vm-forwardoptions": "one:40-80 two:291-328",
    "vm-instructions": "one:199-235",
    "vm-leavemsg": "five:32-80",
    "vm-msginstruct": "six:220-249 five:463-515 four:750-801",
    "vm-next": "six:55-90",
    "vm-onefor": "one:50-85",
    "vm-onefor-full": "one:45-79",
    "vm-options": "one:43-73 two:359-394 three:648-687 four:876-917 five:1156-1204",
    "vm-opts": "two:53-97 three:281-319",
    "vm-opts-full": "two:61-93 three:464-505",
    "vm-prev": "four:59-103",
    "vm-repeat": "five:49-85",
    "vm-review": "one:56-96 two:327-362 three:527-571",
    "vm-review-nonurgent": "four:63-99",
    "vm-review-urgent": "four:39-90",
    "vm-savemessage": "nine:34-93",
    "vm-saveoper": "one:56-89",
    "vm-tempgreeting": "one:46-87",
    "vm-tempgreeting2": "one:52-85 two:371-406",
    "vm-tocallback": "two:51-97",
    "vm-tocallnum": "one:50-102",
    "vm-toenternumber": "one:60-93",
    "vm-toforward": "eight:45-77",
    "vm-tohearenv": "three:55-95",
    "vm-tomakecall": "four:60-93",
    "vm-toreply": "one:46-83",
    "vm-torerecord": "three:47-98",
    "vm-undelete": "seven:47-85",
}  # fmt: skip
RUNNING_PAD = 3
POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
# "word:first-last" in 10 ms frames, PocketSphinx 5's en-us alignment of each 16 kHz file to its words, padded by
# RUNNING_PAD frames at each end as ASTERISK_RUNNING_CUTS are.
POCKETSPHINX_CUTS = {
    "pocketsphinx-numbers": {
        "numbers.raw": "thirty:39-73 three:74-118 forty:119-198 six:199-237 ninety:238-267 two:268-325",
    },
    "pocketsphinx-goforward": {
        "goforward.raw": "go:46-63 forward:64-116 ten:117-152 meters:153-211",
        "something.raw": "go:43-62 somewhere:63-117 and:118-134 do:135-152 something:153-211",
    },
}
# The same for the LibriVox files: every word of the transcription that the alignment gave at least 15 frames.
LIBRIVOX_CUTS = {
    "sense_and_sensibility_01_austen_64kb-0870": "and:20-36 mister:37-62 john:63-97 dashwood:98-157 had:158-183 "
        "then:184-224 leisure:225-270 to:271-288 consider:289-343 how:344-399 much:400-432 there:433-451 "
        "might:452-478 be:479-493 prudently:494-545 his:556-574 power:575-603 do:614-634 for:635-660 "
        "them:661-678",
    "sense_and_sensibility_01_austen_64kb-0880": "was:33-55 not:56-112 an:113-129 ill:130-147 disposed:148-210 "
        "young:211-232 man:233-273",
    "sense_and_sensibility_01_austen_64kb-0890": "unless:27-58 be:70-85 rather:86-121 cold:122-173 "
        "hearted:174-221 and:222-238 rather:239-277 selfish:278-362 is:363-387 be:398-415 ill:416-436 "
        "disposed:437-529",
    "sense_and_sensibility_01_austen_64kb-0920": "had:22-43 married:54-97 more:103-140 amiable:146-200 "
        "woman:201-248 he:249-270 might:271-299 have:300-318 been:319-335 made:336-368 still:369-406 "
        "more:407-424 respectable:425-499 was:521-582",
    "sense_and_sensibility_01_austen_64kb-0930": "he:21-37 might:38-63 even:64-91 have:92-106 been:107-132 "
        "made:133-169 amiable:170-226 himself:227-301",
}  # fmt: skip
DEVELOPMENT_SPEAKERS = (
    "asterisk-allison", "asterisk-allison-running", "tidigits-dhd", "pocketsphinx-cards", "pocketsphinx-numbers",
    "pocketsphinx-goforward", "librivox-austen", "ktuberling-en", "klettres-en", "klettres-en_GB", "saytime-dawson",
    "csmash-umpire", "scid-announcer", "tuxpaint-en", "tuxpaint-en_GB",
)  # fmt: skip
ANNOUNCERS = {"saytime-dawson": (SAYTIME, "saytime"), "csmash-umpire": (CSMASH, "csmash-data"),
              "scid-announcer": (SCID, "scid-data")}  # fmt: skip
_NOT_UNKNOWN = set(NUMBER_WORDS) | HOMOPHONES | {"o", "oh", "niner", "nought", "naught"}
_TOKEN = re.compile(r"[a-z0-9']+")
_CACHE_VERSION = 1


class SourceError(CorpusError):
    """A speech source's program or files are missing or failed."""


@dataclass(frozen=True)
class Utterance:
    speaker: str
    text: str
    label: int  # index in server.kws.data.LABELS
    audio: np.ndarray = field(repr=False, compare=False)  # 16 kHz float32, trimmed
    hard: bool = False  # an "unknown" word that holds or sounds like a number word


def _label(text: str) -> int | None:
    """The label of a transcript: a number word's index, unknown, or None (it holds a number word among others,
    a homophone or a digit, so neither label is right)."""
    tokens = _TOKEN.findall(text.lower())
    if len(tokens) == 1 and tokens[0] in NUMBER_WORDS:
        return NUMBER_WORDS.index(tokens[0])
    if any(t in _NOT_UNKNOWN or t.isdigit() for t in tokens):
        return None
    return UNKNOWN_INDEX


def _trimmed(audio: np.ndarray) -> np.ndarray:
    """Trimmed of silence at a threshold relative to the clip's peak (recordings differ in level)."""
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    out = trim_silence(audio, threshold=max(0.005, 0.03 * peak))
    return out if len(out) else audio


def _require(path: Path, package: str) -> None:
    if not path.exists():
        raise SourceError(f"{path} is missing; install the Debian package {package} (make setup does)")


@cache
def asterisk_transcripts() -> dict[str, str]:
    """``digits/7`` -> ``seven``: the transcripts of asterisk's English prompts."""
    _require(ASTERISK_TRANSCRIPTS, "asterisk-core-sounds-en")
    out = {}
    with gzip.open(ASTERISK_TRANSCRIPTS, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            name, sep, text = line.partition(":")
            if sep and not line.startswith(";") and text.strip():
                out[name.strip()] = re.sub(r"\[[^\]]*\]", "", text).strip()
    return out


def asterisk_utterances() -> list[Utterance]:
    """Allison's ten digits (``digits/0`` to ``digits/9``) and every prompt whose transcript holds no number word
    (the rest of ``digits/`` and the phonetic alphabet being hard negatives); tones and silences left out."""
    _require(ASTERISK, "asterisk-core-sounds-en-wav")
    out = []
    for name, text in sorted(asterisk_transcripts().items()):
        path = ASTERISK / f"{name}.wav"
        if not text or not path.is_file():
            continue
        if name.startswith("digits/") and name[7:].isdigit() and int(name[7:]) < 10:
            label: int | None = int(name[7:])
        else:
            label = _label(text)
        if label is None:
            continue
        hard = label == UNKNOWN_INDEX and (name.startswith("digits/") or name.startswith("phonetic/"))
        out.append(Utterance("asterisk-allison", text.lower().rstrip("."), label, _trimmed(read_wav(path)), hard))
    return out


def asterisk_running_utterances() -> list[Utterance]:
    """Allison's number words cut from her prompts at :data:`ASTERISK_RUNNING_CUTS` (each holds a little of its
    neighbours, as a word cut from running speech does)."""
    _require(ASTERISK, "asterisk-core-sounds-en-wav")
    cuts = {name: c for name, c in ASTERISK_RUNNING_CUTS.items() if (ASTERISK / f"{name}.wav").is_file()}
    return cut_words("asterisk-allison-running", {name: read_wav(ASTERISK / f"{name}.wav") for name in cuts}, cuts)


def tidigits_utterances() -> list[Utterance]:
    """The TIDIGITS speaker's five digits, cut from connected speech at :data:`TIDIGITS_CUTS`."""
    _require(TIDIGITS, "pocketsphinx-testdata")
    x = np.fromfile(TIDIGITS, dtype="<i2").astype(np.float32) / 32768.0
    hop = SAMPLE_RATE // 100
    return [
        Utterance("tidigits-dhd", w, NUMBER_WORDS.index(w), x[a * hop : (b + 1) * hop].copy())
        for w, a, b in TIDIGITS_CUTS
    ]


def cards_utterances() -> list[Utterance]:
    """The card-naming speaker's words cut at :data:`CARDS_CUTS`: seven number words of connected speech and
    fourteen other words ("ten" among them)."""
    _require(CARDS, "pocketsphinx-testdata")
    hop = SAMPLE_RATE // 100
    files = {name: read_wav(CARDS / f"{name}.wav") for name in dict.fromkeys(c[0] for c in CARDS_CUTS)}
    out = []
    for name, word, first, last in CARDS_CUTS:
        label = NUMBER_WORDS.index(word) if word in NUMBER_WORDS else UNKNOWN_INDEX
        audio = _trimmed(files[name][first * hop : (last + 1) * hop])
        out.append(Utterance("pocketsphinx-cards", word, label, audio.copy(), hard=word in HARD_NEGATIVES))
    return out


def cut_words(speaker: str, audio: dict[str, np.ndarray], cuts: dict[str, str]) -> list[Utterance]:
    """The words of ``cuts`` ({file: "word:first-last ..."}, 10 ms frames) cut from each file's 16 kHz ``audio``,
    padded by :data:`RUNNING_PAD` frames; a homophone of a number word ("to", "for") is left out."""
    hop = SAMPLE_RATE // 100
    out = []
    for name, spans in cuts.items():
        for cut in spans.split():
            word, _, span = cut.partition(":")
            label = _label(word)
            if label is None:
                continue
            first, last = (int(v) for v in span.split("-"))
            clip = audio[name][max(0, (first - RUNNING_PAD) * hop) : (last + 1 + RUNNING_PAD) * hop]
            out.append(Utterance(speaker, word, label, clip.copy(), hard=word in HARD_NEGATIVES))
    return out


def pocketsphinx_utterances(speaker: str) -> list[Utterance]:
    """``pocketsphinx-numbers``' or ``pocketsphinx-goforward``'s words, cut from raw 16 kHz files."""
    cuts = POCKETSPHINX_CUTS[speaker]
    for name in cuts:
        _require(POCKETSPHINX_DATA / name, "pocketsphinx-testdata")
    audio = {n: np.fromfile(POCKETSPHINX_DATA / n, dtype="<i2").astype(np.float32) / 32768.0 for n in cuts}
    return cut_words(speaker, audio, cuts)


def librivox_utterances() -> list[Utterance]:
    """The LibriVox reader's other words, cut from five sentences of running speech."""
    folder = POCKETSPHINX_DATA / "librivox"
    _require(folder, "pocketsphinx-testdata")
    return cut_words("librivox-austen", {n: read_wav(folder / f"{n}.wav") for n in LIBRIVOX_CUTS}, LIBRIVOX_CUTS)


def decode_audio(path: Path, input_format: Sequence[str] = ()) -> np.ndarray:
    """Any file sox reads (Ogg Vorbis here; a headerless one described by ``input_format``, sox's options before
    the file) -> mono float32 at 16 kHz."""
    if shutil.which("sox") is None:
        raise SourceError("sox is not installed; install the Debian packages sox and libsox-fmt-all")
    output = ("-t", "raw", "-r", str(SAMPLE_RATE), "-e", "signed", "-b", "16", "-c", "1", "-")
    proc = subprocess.run(
        ["sox", *input_format, str(path), *output],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SourceError(f"sox could not read {path}: {proc.stderr.decode('utf-8', 'replace').strip()}")
    return np.frombuffer(proc.stdout, dtype="<i2").astype(np.float32) / 32768.0


def ktuberling_languages() -> list[str]:
    _require(KTUBERLING, "ktuberling-data")
    # sr@latin and the other Serbian variants hold the same recordings as sr: one speaker
    return sorted(p.name for p in KTUBERLING.iterdir() if p.is_dir() and "@" not in p.name and any(p.glob("*.ogg")))


def ktuberling_utterances(language: str) -> list[Utterance]:
    """One speaker's object names in ``language`` ("unknown"; the theme prefix of a file name dropped)."""
    folder = KTUBERLING / language
    _require(folder, "ktuberling-data")
    return [
        Utterance(f"ktuberling-{language}", p.stem.split("_")[-1], UNKNOWN_INDEX, _trimmed(decode_audio(p)))
        for p in sorted(folder.glob("*.ogg"))
    ]


def klettres_languages() -> list[str]:
    _require(KLETTRES, "klettres-data")
    return sorted(p.name for p in KLETTRES.iterdir() if (p / "alpha").is_dir())


def klettres_utterances(language: str) -> list[Utterance]:
    """One speaker's letter names and syllables in ``language`` ("unknown"; the letter O, "oh", left out)."""
    folder = KLETTRES / language
    _require(folder, "klettres-data")
    files = sorted(folder.glob("alpha/*.ogg")) + sorted(folder.glob("syllab/*.ogg"))
    return [
        Utterance(f"klettres-{language}", p.stem.lower(), UNKNOWN_INDEX, _trimmed(decode_audio(p)))
        for p in files
        if p.stem.lower() != "o"
    ]


def _announced(text: str) -> tuple[int, bool] | None:
    """(label, hard) of an announcer's file name: a digit or number word, a teen or tens (hard), another word, or
    None for a sound effect."""
    if text in ANNOUNCER_EFFECTS or text == "oh":  # "oh" is zero as people read digits
        return None
    if text.isdigit():
        value = int(text)
        return (value, False) if value < 10 else (UNKNOWN_INDEX, True)
    if text in NUMBER_WORDS:
        return NUMBER_WORDS.index(text), False
    return UNKNOWN_INDEX, text in HARD_NEGATIVES


def announcer_utterances(speaker: str) -> list[Utterance]:
    """One of :data:`ANNOUNCERS`: every file of the folder a word or phrase, named by its file (sound effects left
    out)."""
    folder, package = ANNOUNCERS[speaker]
    _require(folder, package)
    raw = ("-t", "ul", "-r", "8000", "-c", "1") if folder == SAYTIME else ()
    out = []
    for path in sorted(folder.glob("*.au" if raw else "*.wav")):
        text = path.stem.lower().replace("_", " ")
        found = _announced(text)
        if found is not None:
            label, hard = found
            words = NUMBER_WORDS[label] if label < UNKNOWN_INDEX else text
            out.append(Utterance(speaker, words, label, _trimmed(decode_audio(path, raw)), hard))
    return out


@cache
def tuxpaint_languages() -> list[str]:
    """The languages other than English of Tux Paint's stamp names (``*_desc_LANG.ogg``)."""
    found = (re.search(r"_desc_([a-z]{2,3}(?:_[A-Z]{2})?)$", p.stem) for p in TUXPAINT.rglob("*_desc_*.ogg"))
    return sorted({m.group(1) for m in found if m} - {"en", "en_GB"})


def is_stamp_reader(speaker: str) -> bool:
    """A reader of Tux Paint's stamp names in a language other than English (``--stamp-unknown``)."""
    return speaker.startswith("tuxpaint-") and speaker not in ("tuxpaint-en", "tuxpaint-en_GB")


def tuxpaint_utterances(language: str) -> list[Utterance]:
    """``tuxpaint-en``: the math stamps' digits and every English stamp name (``*_desc.ogg``); ``tuxpaint-en_GB``:
    every ``*_en_GB.ogg`` (digits and letter names); another language: its stamp names but the math stamps'. Each
    recording once. Every word but an English digit is "unknown"; the letter O ("oh") is left out."""
    _require(TUXPAINT, "tuxpaint-stamps-default")
    digits = TUXPAINT / "symbols" / "math"
    if language not in ("en", "en_GB"):
        suffix = f"_desc_{language}"
        files = sorted(p for p in TUXPAINT.rglob(f"*{suffix}.ogg") if p.parent != digits)
    else:
        suffix = "" if language == "en" else f"_{language}"
        files = [digits / f"{d}{suffix}.ogg" for d in range(10)]
        files += sorted(TUXPAINT.rglob("*_desc.ogg" if language == "en" else f"*[!0-9]{suffix}.ogg"))
    out, seen = [], set()
    for path in files:
        content = path.read_bytes()
        if content in seen:
            continue
        seen.add(content)
        stem = path.stem.removesuffix(suffix).removesuffix("_desc")
        if path.parent == digits and stem.isdigit():
            label, text = int(stem), NUMBER_WORDS[int(stem)]
        else:  # a letter's stamp is "A_filled", "a_outline"; another's name is its stem
            letter = re.fullmatch(r"([A-Za-z])_(?:filled|outline)", stem)
            text = letter.group(1).lower() if letter else stem.replace("_", " ").replace("-", " ").lower()
            if text == "o":
                continue
            label = UNKNOWN_INDEX
        out.append(Utterance(f"tuxpaint-{language}", text, label, _trimmed(decode_audio(path)), text in HARD_NEGATIVES))
    return out


def _recorded(speaker: str) -> list[Utterance]:
    kind, _, language = speaker.partition("-")
    if speaker == "asterisk-allison":
        return asterisk_utterances()
    if speaker == "asterisk-allison-running":
        return asterisk_running_utterances()
    if speaker == "tidigits-dhd":
        return tidigits_utterances()
    if speaker == "pocketsphinx-cards":
        return cards_utterances()
    if speaker in POCKETSPHINX_CUTS:
        return pocketsphinx_utterances(speaker)
    if speaker == "librivox-austen":
        return librivox_utterances()
    if speaker in ANNOUNCERS:
        return announcer_utterances(speaker)
    if kind == "tuxpaint":
        return tuxpaint_utterances(language)
    return ktuberling_utterances(language) if kind == "ktuberling" else klettres_utterances(language)


def recorded_speaker(speaker: str) -> list[Utterance]:
    """One recorded speaker's utterances, decoded once and cached (sox is slow on hundreds of small files)."""
    path = cache_dir() / "recorded" / f"{speaker}.v{_CACHE_VERSION}.npz"
    try:
        with np.load(path) as f:
            bounds = f["bounds"]
            return [
                Utterance(speaker, str(t), int(k), f["audio"][a:b].copy(), bool(h))
                for t, k, h, a, b in zip(f["texts"], f["labels"], f["hard"], bounds[:-1], bounds[1:], strict=True)
            ]
    except (FileNotFoundError, ValueError, KeyError, OSError):
        pass
    found = _recorded(speaker)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(
        part,
        texts=np.asarray([u.text for u in found]),
        labels=np.asarray([u.label for u in found]),
        hard=np.asarray([u.hard for u in found]),
        bounds=np.cumsum([0] + [len(u.audio) for u in found]),
        audio=np.concatenate([u.audio for u in found]).astype(np.float32),
    )
    os.replace(part, path)
    return found


def recorded_speaker_names() -> list[str]:
    """The recorded speakers whose packages are installed (the English ones first)."""
    names = []
    if ASTERISK.exists() and ASTERISK_TRANSCRIPTS.exists():
        names += ["asterisk-allison", "asterisk-allison-running"]
    if TIDIGITS.exists():
        names.append("tidigits-dhd")
    if CARDS.exists():
        names.append("pocketsphinx-cards")
    if (POCKETSPHINX_DATA / "numbers.raw").exists():
        names += list(POCKETSPHINX_CUTS)
    if (POCKETSPHINX_DATA / "librivox").exists():
        names.append("librivox-austen")
    if shutil.which("sox"):
        names += [name for name, (folder, _) in ANNOUNCERS.items() if folder.is_dir()]
        if (TUXPAINT / "symbols" / "math").is_dir():
            names += ["tuxpaint-en", "tuxpaint-en_GB"] + [f"tuxpaint-{lang}" for lang in tuxpaint_languages()]
        names += [f"ktuberling-{lang}" for lang in (ktuberling_languages() if KTUBERLING.exists() else [])]
        names += [f"klettres-{lang}" for lang in (klettres_languages() if KLETTRES.exists() else [])]
    return names


def recorded_speakers(names: Sequence[str] | None = None) -> dict[str, list[Utterance]]:
    """The utterances of each recorded speaker (``names``, or every installed one), by speaker."""
    return {name: recorded_speaker(name) for name in (recorded_speaker_names() if names is None else names)}
