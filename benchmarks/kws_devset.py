"""A development set for the keyword spotter, apart from the held-out clips: choose runs by it, not by the card.

Held-out voices (accents and variants no training voice has) saying

- 40 fresh renderings of each number word (their own seeded draws, not the held-out set's),
- the last 400 words of the plays' seeded word order (training reads the start of it; the held-out set's 40 words
  are its first 40),
- ``NUMBER_LIKE``: words that sound in part like a number word and are no hard negative, 3 renderings each;
  "unseen" counts those that are not among the first 24,040 words of the order either (no run read them),
- every hard negative twice (trained on, but by other voices),
- 40 silence clips,

scored clean (placed at a seeded offset), through the training augmentation (fixed seed), and clean through
8 kHz and back (a phone line). "card-weighted" weighs the labels as the held-out set does: the mean of the twelve
labels' accuracies, unknown being the 400 words.

    python benchmarks/kws_devset.py                                   # the committed spotter
    python benchmarks/kws_devset.py runs/kws/a.safetensors runs/kws/b.safetensors --json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.data.speech import NUMBER_WORDS, other_word_count, other_words, random_rendering  # noqa: E402
from server.kws.checkpoint import load_kws_model  # noqa: E402
from server.kws.data import (  # noqa: E402
    DEVELOPMENT_WORDS,
    HARD_NEGATIVES,
    LABELS,
    SILENCE_INDEX,
    SPOKEN_AS_NUMBERS,
    UNKNOWN_INDEX,
    BaseClips,
    Clip,
    _render,
    heldout_set,
)
from server.kws.evaluate import predict_logits  # noqa: E402

SEED = 0
PER_NUMBER = 40
RENDERINGS = 3
TRAINED_WORDS = 24_040  # the most other words any run has read (24,000 training + 40 held-out)
# Words that share a number word's onset, rhyme or a syllable, or hold one inside; none of HARD_NEGATIVES and none
# a number word in any accent of server.kws.data.PRONUNCIATIONS.
NUMBER_LIKE = (
    "zara", "zephyr", "cheerio", "bureau", "hera", "dearie", "theory", "weary",
    "bun", "spun", "stun", "shun", "wonted", "wonders", "hon", "punt",
    "stool", "tutu", "dew", "queue", "goo", "chew", "toucan", "tooting",
    "thrift", "thrice", "threaten", "preen", "green", "screen", "breeze", "teeth",
    "bore", "score", "forth", "roar", "core", "lore", "forge", "forage", "formal",
    "knives", "hives", "fibre", "fiery", "rifle", "bribe", "vital", "striving",
    "bricks", "nix", "sis", "licks", "slick", "sax", "sixpence",
    "evan", "heavenly", "severe", "sullen", "leavened", "devin", "eleventy", "severance",
    "crate", "freighter", "weighty", "hater", "skate", "plate", "grate", "crater", "eighties",
    "swine", "nightly", "lining", "nineties", "tine", "mining", "brine", "feline", "kine",
)  # fmt: skip


def dev_clips(workers: int = 2) -> tuple[BaseClips, dict[str, list[int]]]:
    """The development clips and the indices of each group (numbers, words, number_like, unseen, hard, silence)."""
    rng = np.random.default_rng([SEED, 7])  # the held-out set draws [seed, 2]
    clips: list[Clip] = []
    groups: dict[str, list[int]] = {}

    def add(group: str, new: list[Clip]) -> None:
        groups[group] = list(range(len(clips), len(clips) + len(new)))
        clips.extend(new)

    add(
        "numbers",
        [Clip(k, w, random_rendering(rng, "heldout")) for k, w in enumerate(NUMBER_WORDS) for _ in range(PER_NUMBER)],
    )
    order = other_words(other_word_count(), SEED)
    words = [w for w in order[-DEVELOPMENT_WORDS:] if w not in SPOKEN_AS_NUMBERS]  # espeak-ng says a number word
    add("words", [Clip(UNKNOWN_INDEX, w, random_rendering(rng, "heldout")) for w in words])
    add(
        "number_like",
        [Clip(UNKNOWN_INDEX, w, random_rendering(rng, "heldout")) for w in NUMBER_LIKE for _ in range(RENDERINGS)],
    )
    seen = set(order[:TRAINED_WORDS])
    groups["unseen"] = [i for i in groups["number_like"] if clips[i].text not in seen]
    add(
        "hard",
        [Clip(UNKNOWN_INDEX, w, random_rendering(rng, "heldout"), hard=True) for w in HARD_NEGATIVES for _ in range(2)],
    )
    add("silence", [Clip(SILENCE_INDEX, "", None) for _ in range(PER_NUMBER)])
    return BaseClips(clips, _render(clips, workers, progress=False)), groups


def phone_line(waves: np.ndarray) -> np.ndarray:
    """Clips (N, 16000) through 8 kHz and back."""
    return resample_poly(resample_poly(waves, 1, 2, axis=1), 2, 1, axis=1).astype(np.float32)


def score(predicted: np.ndarray, labels: np.ndarray, clips: list[Clip], groups: dict[str, list[int]]) -> dict:
    right = predicted == labels
    out: dict = {g: round(float(right[idx].mean()), 4) for g, idx in groups.items()}
    per_label = [right[groups["numbers"]][labels[groups["numbers"]] == k].mean() for k in range(len(NUMBER_WORDS))]
    per_label += [right[groups["words"]].mean(), right[groups["silence"]].mean()]
    out["card_weighted"] = round(float(np.mean(per_label)), 4)
    missed = [i for g in ("words", "number_like", "hard") for i in groups[g] if not right[i]]
    wrong = Counter(f"{clips[i].text}->{LABELS[predicted[i]]}" for i in missed)
    out["unknown_misses"] = dict(wrong.most_common(30))
    out["number_misses"] = dict(
        Counter(f"{clips[i].text}->{LABELS[predicted[i]]}" for i in groups["numbers"] if not right[i]).most_common()
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="*", type=Path, default=[ROOT / "models/kws/kws_dscnn.safetensors"])
    parser.add_argument("--json", action="store_true", help="one JSON object per checkpoint")
    args = parser.parse_args()

    base, groups = dev_clips()
    labels_of = np.asarray([c.label for c in base.clips])
    sets = {}
    for name, noisy in (("clean", False), ("augmented", True)):
        waves, labels = heldout_set(base, noisy=noisy, seed=SEED + 1)
        assert (labels == labels_of).all()
        sets[name] = waves
    sets["phone"] = phone_line(sets["clean"])
    for path in args.checkpoints:
        model, _ = load_kws_model(path)
        result = {"checkpoint": str(path)}
        for name, waves in sets.items():
            result[name] = score(predict_logits(model, waves).argmax(axis=1), labels_of, base.clips, groups)
        if args.json:
            print(json.dumps(result))
            continue
        print(path)
        for name in sets:
            r = result[name]
            print(
                f"  {name:9s} card-weighted {r['card_weighted']:.2%}  numbers {r['numbers']:.2%}  words "
                f"{r['words']:.2%}  number-like {r['number_like']:.2%} (unseen {r['unseen']:.2%})  hard "
                f"{r['hard']:.2%}  silence {r['silence']:.2%}"
            )
        print("  clean misses:", result["clean"]["number_misses"], result["clean"]["unknown_misses"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
