"""Keyword-spotting data: espeak-ng renderings of the number words and of other words, and noise for "silence".

A modest number of base clips is rendered once (cached by ``server.data.speech``) and trimmed; a share of the
number words is spoken from :data:`PRONUNCIATIONS` (how other English accents and learners say them, as espeak-ng
phonemes) rather than from the spelling, so that the model hears more vowels than the training accents' own and
leans on the consonants. Training draws
fresh one-second clips from them through heavy augmentation (:mod:`server.kws.augment`) every batch, a label
chosen uniformly among the twelve. The held-out set is fixed by its seed: held-out voices (neither accent nor
variant seen in training) saying the number words and other words, and noise clips; each word is placed at a
seeded offset in the second, either clean or through the same augmentation ("noisy").
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from server.data.speech import (
    NUMBER_WORDS,
    Rendering,
    other_word_count,
    other_words,
    random_rendering,
    render_many,
    trim_silence,
)
from server.errors import InvalidArgument
from server.kws.augment import CLIP, AugmentConfig, augment, place, silence_clip
from server.options import at_least, comma_list, option, within

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
SILENCE = "silence"
LABELS = (*NUMBER_WORDS, UNKNOWN, SILENCE)

# Accent and learner pronunciations of the number words, in espeak-ng's English phoneme mnemonics (spoken with
# ``[[...]]``): rhotic and non-rhotic "four", th-stopping and th-fronting "three" (tree, free), monophthong and
# shifted diphthongs ("eight" as [e:t] or [aIt], "nine" as [na:n] or [nOIn], "five" as [fa:v]), final devoicing
# ("five" as [faIf]), reduced and syllabic "seven". Each speaks the number word, so it keeps its label. "three"
# stopped is dental [t[ri:] (as Irish and Caribbean speakers say it), not "tree" [tri:], which is a hard negative.
PRONUNCIATIONS: dict[str, tuple[str, ...]] = {
    "zero": ("z'i:roU", "z'e:ro", "s'i:roU", "z'i@ro"),
    "one": ("w'0n", "w'Vn", "w'Un", "w'an"),
    "two": ("t'u:", "t'U", "t'Uu"),
    "three": ("Tr'i:", "t[r'i:", "fr'i:", "Tr'I"),
    "four": ("f'O@", "f'O:", "f'o@r", "f'O:r", "f'oU@"),
    "five": ("f'aIv", "f'a:v", "f'OIv", "f'aIf", "f'VIv"),
    "six": ("s'Iks", "s'Eks", "s'@ks", "s'i:ks"),
    "seven": ("s'Ev@n", "s'Evn", "s'Ebm", "s'Ef@n", "s'e:v@n"),
    "eight": ("'eIt", "'aIt", "'e:t", "'EIt", "'eI?"),
    "nine": ("n'aIn", "n'OIn", "n'a:n", "n'VIn"),
}
# Hard negatives: other words that share a number word's onset, rhyme or a syllable, hold one inside a longer word,
# or are short common words (the commands of keyword-spotting sets). They are "unknown", rendered several times
# each (``KWSDataConfig.hard_renderings``). Words that some accent's number word is (HOMOPHONES, "free" for
# th-fronted three, "sex" for six as New Zealanders say it, "fife" for devoiced five, "hate" as West Midlands
# speakers say it) are left out: the same sound cannot have two labels.
HARD_NEGATIVES: tuple[str, ...] = (
    # zero
    "zeal", "zebra", "zed", "zee", "zenith", "zest", "zone", "zoo", "hero", "heroes", "nero", "arrow", "sierra",
    "zealous", "dearer", "clearer", "sero", "serum", "xerox", "giro", "pharaoh", "narrow", "marrow",
    # one
    "once", "wonder", "wonderful", "fun", "sun", "done", "run", "gun", "none", "nun", "ton", "want", "wand", "win",
    "when", "young", "someone", "anyone", "everyone", "alone", "lonely", "wander", "worry", "what", "was", "won't",
    "wonky", "onion", "oneself", "month", "money",
    # two
    "tooth", "tool", "tomb", "tune", "true", "through", "shoe", "who", "do", "new", "blue", "moon", "soon", "noon",
    "stew", "tube", "twin", "twelve", "twenty", "twice", "tuesday", "toot", "tutor", "tulip", "toon", "duty", "tour",
    # three
    "tree", "thee", "thief", "threat", "thread", "throat", "throne", "threw", "thrill", "street", "agree", "degree",
    "sea", "tea", "key", "knee", "thirteen", "thirty", "third", "trees", "trio", "treat", "thirst", "spree",
    # four
    "floor", "door", "more", "pour", "poor", "sure", "forty", "fourteen", "fourth", "forward", "fork", "form",
    "fort", "force", "forest", "foreign", "before", "forget", "far", "fur", "fair", "fear", "foe", "fall", "fought",
    "fourfold", "foreword", "forum", "fortune", "horse", "war",
    # five
    "fine", "file", "fight", "hive", "live", "dive", "drive", "alive", "wife", "knife", "life", "fifty", "fifteen",
    "fifth", "vibe", "fly", "vine", "thrive", "arrive", "fire", "fiver", "hi", "why", "high", "ivy",
    # six
    "sick", "sticks", "kicks", "mix", "fix", "sixty", "sixteen", "sixth", "sits", "socks", "picks", "tricks",
    "sphinx", "since", "sink", "sin", "sip", "sicken", "ticks", "wicks", "success", "siege",
    # seven
    "eleven", "sever", "several", "severn", "second", "seventy", "seventeen", "seventh", "level", "devon", "given",
    "even", "oven", "raven", "haven", "sudden", "seldom", "session", "selfish", "kevin",
    # eight
    "eighty", "eighteen", "eighth", "late", "gate", "wait", "weight", "great", "bait", "date", "fate",
    "eat", "aid", "age", "ache", "ace", "hey", "way", "they", "day", "play", "trait", "straight", "mate", "rate",
    "ape", "acre", "able", "email", "asian",
    # nine
    "nineteen", "ninety", "ninth", "line", "mine", "wine", "dine", "pine", "sign", "spine", "shine", "night",
    "nice", "nigh", "nylon", "neon", "canine", "benign", "divine", "twine", "ninja", "knight", "nile",
    # commands and other short words
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed", "bird", "cat", "dog", "happy",
    "house", "marvin", "sheila", "wow", "backward", "follow", "learn", "visual", "hello", "okay", "please", "thanks",
    "start", "next", "back", "open", "close", "call", "pause", "louder", "quiet",
    # near-rhymes heard in spoken sentences (appended: the renderings above keep their draws). "heaven" stays out
    # of the plays' other words (HOMOPHONES in server.data.speech, so their seeded order does not move) but is no
    # number word in any accent: [h'Ev@n], or ['Ev@n] where the h is dropped
    "heaven", "heavens", "leaven", "eleventh", "seventies", "weighed", "freight", "slate", "lion", "iron",
)  # fmt: skip
# The hard negatives that hold a number word whole and go on ("seventeen", "ninety", "sixth", "someone", "weight"):
# a spotter that pools over the second hears the number word in them and must learn the rest. Measured on espeak-ng
# (eight accents), the spotter of the twenty-fourth session took "sixteen", "seventeen", "nineteen", "sixty",
# "seventy", "ninety" and the ordinals for their number word in every accent. ``KWSDataConfig.holder_renderings``
# renders them more often than the other hard negatives.
HOLDERS: tuple[str, ...] = (
    "someone", "anyone", "everyone", "oneself", "forty", "fourteen", "fourth", "fourfold", "fiver", "sixty",
    "sixteen", "sixth", "seventy", "seventeen", "seventh", "seventies", "eighty", "eighteen", "eighth", "weight",
    "freight", "nineteen", "ninety", "ninth", "canine",
)  # fmt: skip
# Other words of the plays that espeak-ng speaks as a number word or one of its PRONUNCIATIONS in some accent:
# Roman numerals ("vii" is "roman seven"), "free" (th-fronted three), "fife" (devoiced five), "sex" and "seeks"
# (six as [s'Eks], [s'i:ks]), and "hate", "height", "hight" (eight in the West Midlands voice). They are not trained
# on as "unknown": one sound, one label. (All 24,978 words through the eight accents' phonemes; the word order, and
# with it the held-out words, stays as it was.)
SPOKEN_AS_NUMBERS = frozenset(
    {"ii", "iii", "iv", "vi", "vii", "viii", "ix", "free", "fife", "sex", "seeks", "hate", "height", "hight"}
)
# The plays' seeded word order ends with the development words (benchmarks/kws_devset.py): no training run, held-out
# set or test set reads them.
DEVELOPMENT_WORDS = 400
TEST_PER_LABEL = 200  # the test set's clips of each label in the cards and the export (see unseen_clips)
MINE_POOLS = ("unknown", "hard")  # ClipSampler's mining: every unknown clip, or the hard negatives only
UNKNOWN_INDEX = LABELS.index(UNKNOWN)
SILENCE_INDEX = LABELS.index(SILENCE)


@dataclass(frozen=True)
class KWSDataConfig:
    """What the clips are; its fields with flags are ``antiphon train kws``'s data options."""

    per_number: int = option(250, "training renderings of each number word", parse=int)
    unknown_words: int = option(1500, "training renderings of other words", parse=int)  # one each, distinct words
    heldout_per_label: int = option(40, "held-out clips of each label", parse=int)
    seed: int = 0
    accent_share: float = option(  # renderings spoken from PRONUNCIATIONS
        0.25,
        "share of the number-word renderings spoken as other accents and learners pronounce them (0 to 1)",
        parse=float,
    )
    hard_renderings: int = option(
        0,
        "training renderings of each hard negative (server.kws.data.HARD_NEGATIVES: other words that sound in part "
        "like a number word, and short common words), as unknown; 0: none",
        parse=int,
    )
    holder_renderings: int = option(
        0,
        "more training renderings of each hard negative that holds a number word whole (server.kws.data.HOLDERS: "
        "sixteen, ninety, sixth, someone...), beyond --hard-renderings; they join the hard negatives' draws; 0: none",
        parse=int,
    )

    # Speech beyond espeak-ng (server.kws.sources), added after the renderings above (whose draws do not move).
    voice_renderings: int = option(
        0,
        "renderings of each number word by each training voice built from a recorded speaker (flite kal, awb, slt; "
        "festival kal, slt; rms and ked are kept for the development set), each with its own duration and pitch; "
        "0: none",
        parse=int,
    )
    voice_words: int = option(
        0,
        "other words of the training plays said by each training voice (with --hard-renderings, each hard negative "
        "too, once), as unknown",
        parse=int,
    )
    recorded_unknown: bool = option(
        False,
        "the recorded people's other words as unknown (asterisk, ktuberling and klettres in the languages the "
        "development set leaves: none of its speakers)",
        switch=True,
    )
    stamp_unknown: bool = option(
        False,
        "Tux Paint's stamp names read in twelve languages other than English (6,341 clips of real readers) as unknown",
        switch=True,
    )
    perturbed_copies: int = option(
        0,
        "perturbed copies (server.kws.perturb: vocal tract length, tempo, pitch, G.711 and GSM codecs, band "
        "limits, tight trims, clipping) of every number-word clip and of the voices' and recordings' words",
        parse=int,
    )
    train_speakers: tuple[str, ...] = option(
        (),
        "recorded development speakers to train on, comma-separated (asterisk-allison,asterisk-allison-running): "
        "all their words train, number words included, and they leave the run's development figures",
        parse=comma_list,
        shown="none",
    )
    train_speaker_copies: int = option(
        1,
        "times each clip of --train-speakers is added (each later perturbed copy is drawn anew): their weight "
        "among the clips of a label",
        parse=int,
    )

    def validate(self) -> None:
        at_least(self, 1, "per_number", "unknown_words", "heldout_per_label", "train_speaker_copies")
        at_least(self, 0, "hard_renderings", "holder_renderings", "voice_renderings", "voice_words", "perturbed_copies")
        within(self, "accent_share", 0, 1)
        from server.kws.recordings import DEVELOPMENT_SPEAKERS  # the speakers' module reads this one's labels

        for speaker in self.train_speakers:
            if speaker not in DEVELOPMENT_SPEAKERS:
                known = ", ".join(DEVELOPMENT_SPEAKERS)
                raise InvalidArgument("train_speakers", f"must name development speakers ({known}), got {speaker!r}")

    @property
    def beyond_espeak(self) -> bool:
        """Whether the training clips hold speech other than espeak-ng's."""
        recorded = self.recorded_unknown or self.stamp_unknown or self.train_speakers
        return bool(self.voice_renderings or self.voice_words or recorded)

    def to_dict(self) -> dict[str, int | float | bool]:
        return asdict(self)

    @classmethod
    def from_meta(cls, data: dict[str, Any]) -> KWSDataConfig:
        """The data a checkpoint recorded (``meta["data"]``; older ones lack the accent share and hard negatives)."""
        given = {**RECORDED_BEFORE, **{f.name: data[f.name] for f in fields(cls) if f.name in data}}
        return cls(**{**given, "train_speakers": tuple(given["train_speakers"])})


# What a checkpoint that does not record a data field was trained with: none of what came later (the options'
# defaults may differ: --accent-share is 0.25).
RECORDED_BEFORE: dict[str, Any] = {
    "accent_share": 0.0, "hard_renderings": 0, "holder_renderings": 0, "voice_renderings": 0, "voice_words": 0,
    "recorded_unknown": False, "stamp_unknown": False, "perturbed_copies": 0, "train_speakers": (),
    "train_speaker_copies": 1,
}  # fmt: skip


@dataclass(frozen=True)
class Clip:
    label: int
    text: str
    rendering: Rendering | None  # None for silence
    hard: bool = False  # one of HARD_NEGATIVES


@dataclass
class BaseClips:
    clips: list[Clip]
    audio: list[np.ndarray]  # trimmed speech (any length), or empty for silence

    def of_label(self, label: int, hard: bool = False) -> list[int]:
        return [i for i, c in enumerate(self.clips) if c.label == label and c.hard == hard]


def _render(items: list[Clip], workers: int, progress: bool) -> list[np.ndarray]:
    rendered = render_many(
        [(c.text, c.rendering) for c in items if c.rendering is not None], workers=workers, progress=progress
    )
    out, it = [], iter(rendered)
    for c in items:
        if c.rendering is None:
            out.append(np.zeros(0, dtype=np.float32))
            continue
        audio = trim_silence(next(it))
        out.append(audio if len(audio) else np.zeros(160, dtype=np.float32))
    return out


def _word_split(config: KWSDataConfig) -> tuple[list[str], list[str]]:
    """Distinct other words for training and for the held-out set (no word in both). The held-out words come
    first, so they do not change with the number of training words."""
    most = other_word_count() - DEVELOPMENT_WORDS - config.heldout_per_label
    if config.unknown_words > most:
        raise InvalidArgument(
            "unknown_words",
            f"at most {most:,} (the plays' other words less the held-out and the {DEVELOPMENT_WORDS} development "
            f"words), got {config.unknown_words:,}",
        )
    words = other_words(config.unknown_words + config.heldout_per_label, config.seed)
    return words[config.heldout_per_label :], words[: config.heldout_per_label]


def _number_texts(config: KWSDataConfig) -> list[str]:
    """What each number-word rendering speaks: the word, or for ``accent_share`` of them (spread evenly, with
    seeded choices) one of its :data:`PRONUNCIATIONS` as phonemes."""
    rng = np.random.default_rng([config.seed, 5])
    texts = []
    for word in NUMBER_WORDS:
        for i in range(config.per_number):
            accented = int((i + 1) * config.accent_share) > int(i * config.accent_share)
            options = PRONUNCIATIONS[word]
            texts.append(f"[[{options[int(rng.integers(len(options)))]}]]" if accented else word)
    return texts


def training_clips(config: KWSDataConfig, workers: int = 2, progress: bool = False) -> BaseClips:
    """Training voices: each number word ``per_number`` times (``accent_share`` of them from
    :data:`PRONUNCIATIONS`) and ``unknown_words`` other words (less :data:`SPOKEN_AS_NUMBERS`)."""
    config.validate()
    rng = np.random.default_rng([config.seed, 1])
    labels = [k for k in range(len(NUMBER_WORDS)) for _ in range(config.per_number)]
    texts = _number_texts(config)
    clips = [Clip(k, text, random_rendering(rng, "train")) for k, text in zip(labels, texts, strict=True)]
    clips += _unknown_clips(config, rng)
    hard_rng = np.random.default_rng([config.seed, 6])  # its own draws: the clips above do not move
    clips += [
        Clip(UNKNOWN_INDEX, w, random_rendering(hard_rng, "train"), hard=True)
        for w in hard_negatives(config)
        for _ in range(config.hard_renderings)
    ]
    holder_rng = np.random.default_rng([config.seed, 7])  # after the others: no earlier draw moves
    clips += [
        Clip(UNKNOWN_INDEX, w, random_rendering(holder_rng, "train"), hard=True)
        for w in holders(config)
        for _ in range(config.holder_renderings)
    ]
    return BaseClips(clips, _render(clips, workers, progress))


def _unknown_clips(config: KWSDataConfig, rng: np.random.Generator) -> list[Clip]:
    """The other words' training clips, less :data:`SPOKEN_AS_NUMBERS`; a rendering is drawn for every word, left
    out or not, so that no other word's rendering moves."""
    train_words, _ = _word_split(config)
    renderings = [random_rendering(rng, "train") for _ in train_words]
    return [
        Clip(UNKNOWN_INDEX, w, r) for w, r in zip(train_words, renderings, strict=True) if w not in SPOKEN_AS_NUMBERS
    ]


def training_words(config: KWSDataConfig) -> list[str]:
    """The other words that training with ``config`` reads (the held-out words come before them in the order),
    less :data:`SPOKEN_AS_NUMBERS`."""
    train_words, _ = _word_split(config)
    return [w for w in train_words if w not in SPOKEN_AS_NUMBERS]


def hard_negatives(config: KWSDataConfig) -> list[str]:
    """:data:`HARD_NEGATIVES` less the held-out words (no word is both trained on and held out)."""
    return _not_held_out(HARD_NEGATIVES, config)


def holders(config: KWSDataConfig) -> list[str]:
    """:data:`HOLDERS` less the held-out words."""
    return _not_held_out(HOLDERS, config)


def _not_held_out(words: tuple[str, ...], config: KWSDataConfig) -> list[str]:
    held = set(_word_split(config)[1])
    return [w for w in words if w not in held]


def heldout_clips(config: KWSDataConfig, workers: int = 2, progress: bool = False) -> BaseClips:
    """Held-out voices: ``heldout_per_label`` clips of every label (silence clips hold no speech)."""
    config.validate()
    rng = np.random.default_rng([config.seed, 2])
    n = config.heldout_per_label
    clips = [Clip(k, w, random_rendering(rng, "heldout")) for k, w in enumerate(NUMBER_WORDS) for _ in range(n)]
    _, words = _word_split(config)
    clips += [Clip(UNKNOWN_INDEX, w, random_rendering(rng, "heldout")) for w in words]
    clips += [Clip(SILENCE_INDEX, "", None) for _ in range(n)]
    return BaseClips(clips, _render(clips, workers, progress))


def untrained_words(config: KWSDataConfig) -> list[str]:
    """Other words that neither training with ``config`` nor its held-out set reads: those after the training
    words in the seeded order, less the last :data:`DEVELOPMENT_WORDS`, :data:`SPOKEN_AS_NUMBERS` and
    :data:`HARD_NEGATIVES`."""
    first = config.unknown_words + config.heldout_per_label
    order = other_words(other_word_count(), config.seed)
    skip = SPOKEN_AS_NUMBERS | set(HARD_NEGATIVES)
    return [w for w in order[first : len(order) - DEVELOPMENT_WORDS] if w not in skip]


def unseen_clips(config: KWSDataConfig, per_label: int, workers: int = 2, progress: bool = False) -> BaseClips:
    """A test set larger than :func:`heldout_clips` and apart from it: the held-out voices saying each number word
    ``per_label`` times (their own seeded draws) and ``per_label`` of the :func:`untrained_words`, and ``per_label``
    silence clips. Forty "unknown" clips leave the held-out figure a standard error of about 0.6 points from the
    unknown words alone. This set is for the figures reported; choose between runs on the development set
    (benchmarks/kws_devset.py)."""
    config.validate()
    words = untrained_words(config)
    if not 1 <= per_label <= len(words):
        raise InvalidArgument(
            "test_per_label",
            f"must be between 1 and {len(words)} (the other words that {config.unknown_words:,} training words leave "
            f"untrained), got {per_label}",
        )
    rng = np.random.default_rng([config.seed, 8])
    clips = [Clip(k, w, random_rendering(rng, "heldout")) for k, w in enumerate(NUMBER_WORDS) for _ in range(per_label)]
    clips += [Clip(UNKNOWN_INDEX, w, random_rendering(rng, "heldout")) for w in words[:per_label]]
    clips += [Clip(SILENCE_INDEX, "", None) for _ in range(per_label)]
    return BaseClips(clips, _render(clips, workers, progress))


def unseen_set(base: BaseClips, noisy: bool, config: KWSDataConfig) -> tuple[np.ndarray, np.ndarray]:
    """:func:`heldout_set` of :func:`unseen_clips`, with placement draws apart from the held-out set's (``seed``) and
    the development set's (``seed + 1``)."""
    return heldout_set(base, noisy, seed=config.seed + 2)


def scored_set(
    config: KWSDataConfig, test_per_label: int = 0, noisy: bool = False, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The clips a trained spotter is scored on, (N, 16000) and labels (N,): the test set with ``test_per_label``
    clips of each label, or with 0 the held-out set of the checkpoint's card."""
    if test_per_label:
        return unseen_set(unseen_clips(config, test_per_label, progress=progress), noisy, config)
    return heldout_set(heldout_clips(config, progress=progress), noisy, seed=config.seed)


def at_half_scale(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to a peak of 0.5: the fixed level of clips heard clean."""
    return (x * (0.5 / (np.max(np.abs(x)) + 1e-9))).astype(np.float32)


def heldout_set(base: BaseClips, noisy: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One-second clips (N, 16000) float32 and labels (N,): each base clip placed at a seeded offset at a fixed
    level (clean), or through the training augmentation with a seeded generator (noisy)."""
    rng = np.random.default_rng([seed, 3 if noisy else 4])
    pool = [base.audio[i] for i in base.of_label(UNKNOWN_INDEX)]
    waves = []
    for clip, audio in zip(base.clips, base.audio, strict=True):
        if clip.label == SILENCE_INDEX:
            waves.append(silence_clip(rng))
        elif noisy:
            waves.append(augment(rng, audio, pool))
        else:
            waves.append(at_half_scale(place(rng, audio)))
    return np.stack(waves), np.asarray([c.label for c in base.clips], dtype=np.int64)


class ClipSampler:
    """Training batches: each clip freshly augmented; labels uniform over the twelve, or "unknown" with probability
    ``unknown_share`` and the others uniform; an "unknown" clip is a hard negative with probability ``hard_share``
    (when there are any).

    Mining: once :meth:`set_unknown_errors` has given the model's error on each clip of :attr:`unknown_clips` (with
    ``mine_pool`` "unknown" every unknown base clip, other words and hard negatives alike; with "hard" the hard
    negatives only), a share ``mine_share`` of the unknown clips is drawn in proportion to it, so the words the model
    takes for a number word come back until it stops. ``keyword_gap``
    (seconds) is the least pause before the next word when a number word is cut from running speech, so that
    "seven" and the start of the next word do not make "seventeen" or "seventy" with a number word's label."""

    def __init__(
        self,
        base: BaseClips,
        seed: int,
        augment_config: AugmentConfig | None = None,
        unknown_share: float | None = None,
        hard_share: float = 0.0,
        mine_share: float = 0.0,
        keyword_gap: float = 0.0,
        mine_pool: str = "unknown",
    ) -> None:
        self.base = base
        self.by_label = [base.of_label(k) for k in range(len(LABELS))]
        missing = [LABELS[k] for k in range(len(LABELS)) if k != SILENCE_INDEX and not self.by_label[k]]
        if missing:
            raise InvalidArgument("clips", f"no training clips of {', '.join(missing)}")
        self.hard = base.of_label(UNKNOWN_INDEX, hard=True)
        self.hard_share = hard_share if self.hard else 0.0
        self.uniform = unknown_share is None
        if unknown_share is None:
            self.label_p = np.full(len(LABELS), 1 / len(LABELS))
        else:
            if not 0 < unknown_share < 1:
                raise InvalidArgument("unknown_share", f"must be in (0, 1), got {unknown_share}")
            self.label_p = np.full(len(LABELS), (1 - unknown_share) / (len(LABELS) - 1))
            self.label_p[UNKNOWN_INDEX] = unknown_share
        if not 0 <= hard_share <= 1:
            raise InvalidArgument("hard_share", f"must be in [0, 1], got {hard_share}")
        if not 0 <= mine_share <= 1:
            raise InvalidArgument("mine_share", f"must be in [0, 1], got {mine_share}")
        if not 0 <= keyword_gap <= 0.5:
            raise InvalidArgument("keyword_gap", f"must be in [0, 0.5] seconds, got {keyword_gap}")
        self.pool = [base.audio[i] for i in self.by_label[UNKNOWN_INDEX]]
        self.config = augment_config or AugmentConfig()
        self.keyword_config = self.config
        if keyword_gap > 0:
            lo, hi = self.config.context_gap_after or self.config.context_gap
            self.keyword_config = replace(self.config, context_gap_after=(max(lo, keyword_gap), max(hi, keyword_gap)))
        self.mine_share = mine_share
        if mine_pool not in MINE_POOLS:
            raise InvalidArgument("mine_pool", f"must be one of {', '.join(MINE_POOLS)}, got {mine_pool!r}")
        self.unknown_clips = self.hard if mine_pool == "hard" else self.by_label[UNKNOWN_INDEX] + self.hard
        self.mine_cdf: np.ndarray | None = None
        self.rng = np.random.default_rng(seed)

    def set_unknown_errors(self, errors: np.ndarray) -> None:
        """The model's error (1 - p(unknown)) on each of :attr:`unknown_clips`: mined draws follow it."""
        errors = np.asarray(errors, dtype=np.float64)
        if errors.shape != (len(self.unknown_clips),):
            raise InvalidArgument("errors", f"must have {len(self.unknown_clips)} values, got shape {errors.shape}")
        cdf = np.cumsum(np.clip(errors, 0, None))
        self.mine_cdf = cdf if cdf[-1] > 0 else None

    def labels(self, size: int) -> np.ndarray:
        """The labels (size,) of a batch."""
        if self.uniform:  # the draws of the sampler before the shares existed
            return self.rng.integers(0, len(LABELS), size)
        return self.rng.choice(len(LABELS), size, p=self.label_p)

    def pick(self, label: int) -> int | None:
        """The base clip of one training clip of ``label`` (None for silence, which is made, not picked)."""
        if label == SILENCE_INDEX:
            return None
        members = self.by_label[label]
        mining = label == UNKNOWN_INDEX and self.mine_share > 0 and self.mine_cdf is not None
        if mining and self.rng.random() < self.mine_share:
            assert self.mine_cdf is not None
            at = int(np.searchsorted(self.mine_cdf, self.rng.random() * self.mine_cdf[-1], side="right"))
            return self.unknown_clips[min(at, len(self.unknown_clips) - 1)]
        if label == UNKNOWN_INDEX and self.hard_share > 0 and self.rng.random() < self.hard_share:
            members = self.hard
        return members[int(self.rng.integers(len(members)))]

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Waves (size, 16000) float32 and labels (size,) int64."""
        labels = self.labels(size)
        waves = np.zeros((size, CLIP), dtype=np.float32)
        for row, label in enumerate(labels):
            index = self.pick(int(label))
            if index is None:
                waves[row] = silence_clip(self.rng, self.config)
            else:
                config = self.config if label in (UNKNOWN_INDEX, SILENCE_INDEX) else self.keyword_config
                waves[row] = augment(self.rng, self.base.audio[index], self.pool, config)
        return waves, labels.astype(np.int64)
