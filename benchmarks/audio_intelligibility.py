"""Is the WaveNet's speech intelligible? The keyword classifier listens to the ten number words generated in every
held-out voice (voices neither model trained on) and we count how many it recognizes; espeak-ng's own renderings
of the same words are the baseline (what the classifier gets right on clean speech).

The spotter trained on the espeak-ng renderings the WaveNet imitates, so PocketSphinx 5 judges from outside as well
(its en-us model; a dev dependency of the benchmarks only, ``pip install pocketsphinx``; ``--no-pocketsphinx``
leaves it out):

- with a grammar of the ten number words (``benchmarks/kws_real.py``), on the same generated words and on
  espeak-ng's renderings of them: hits of both and their ratio, WaveNet / espeak-ng;
- with its own language model and dictionary (no grammar), on short everyday sentences written for this benchmark
  (the WaveNet trained on lines of the plays only), each generated in a held-out voice from espeak-ng's rendering:
  the word error rate of both and their ratio.

    python benchmarks/audio_intelligibility.py                   # the committed WaveNet and KWS checkpoints
    python benchmarks/audio_intelligibility.py --voices 8 --json
    python benchmarks/audio_intelligibility.py --seeds 3         # seeds 0, 1, 2: one seed of 220 clips moves ~2 points

The figures go to benchmarks/RESULTS.md (issue targets: at least 90% recognized by the spotter; PocketSphinx's
grammar hits at least 0.95 of espeak-ng's over three seeds, its sentence WER within 1.1 times espeak-ng's).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.kws_real import pocketsphinx_hypotheses, pocketsphinx_predictions  # noqa: E402
from server.audio.checkpoint import load_audio_model  # noqa: E402
from server.audio.constants import SAMPLE_RATE  # noqa: E402
from server.audio.model import WaveNet  # noqa: E402
from server.audio.quality import number_words, speak  # noqa: E402
from server.data.speech import NUMBER_WORDS, Rendering, render, trim_silence, voices  # noqa: E402
from server.engine.classify import loudest_second  # noqa: E402
from server.kws.checkpoint import load_kws_model  # noqa: E402

# Everyday sentences, none of them a line of the plays the WaveNet trained on; common words that PocketSphinx's
# dictionary holds.
SENTENCES = (
    "the weather is nice today",
    "please open the door",
    "where is the train station",
    "i would like a cup of coffee",
    "she reads a book every night",
    "we will meet after lunch",
    "turn off the lights",
    "my brother plays the guitar",
    "the children are playing outside",
    "call me when you get home",
)
RATIO_TARGET = 0.95  # PocketSphinx's grammar hits on the WaveNet's words over espeak-ng's, at least
WER_RATIO_TARGET = 1.1  # the WaveNet's sentence WER over espeak-ng's, at most
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


@torch.no_grad()
def recognize(kws: torch.nn.Module, labels: list[str], waves: list[np.ndarray]) -> list[str]:
    batch = torch.from_numpy(np.stack([loudest_second(w.astype(np.float32)) for w in waves]))
    return [labels[i] for i in kws(batch).argmax(dim=1).tolist()]


def words(text: str) -> list[str]:
    """The words of ``text``: lowercase, punctuation stripped (apostrophes inside a word kept)."""
    return _WORD.findall(text.lower())


def word_edits(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Fewest substitutions, deletions and insertions that turn ``reference`` into ``hypothesis`` (word lists)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Word edits over reference words, summed over all pairs of texts (normalized by :func:`words`)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    ref_words = [words(r) for r in references]
    total = sum(len(r) for r in ref_words)
    if total == 0:
        raise ValueError("the references hold no words")
    return sum(word_edits(r, words(h)) for r, h in zip(ref_words, hypotheses, strict=True)) / total


def centred(waves: Sequence[np.ndarray]) -> np.ndarray:
    """(N, L) float32: each clip centred in silence as long as the longest, the layout PocketSphinx's grammar
    decoder in ``benchmarks/kws_real.py`` takes."""
    length = max(len(w) for w in waves)
    out = np.zeros((len(waves), length), dtype=np.float32)
    for row, wave in zip(out, waves, strict=True):
        start = (length - len(wave)) // 2
        row[start : start + len(wave)] = wave
    return out


def grammar_hits(said: Sequence[str], waves: Sequence[np.ndarray]) -> int:
    """How many clips PocketSphinx, with the ten-word grammar, hears as the word said."""
    heard = pocketsphinx_predictions(centred(waves))
    return sum(int(h) >= 0 and NUMBER_WORDS[int(h)] == w for h, w in zip(heard, said, strict=True))


def pocketsphinx_transcripts(waves: Sequence[np.ndarray]) -> list[str]:
    """What PocketSphinx hears in each clip (float32 at 16 kHz) with its own en-us language model and dictionary."""
    return pocketsphinx_hypotheses(waves)


def sentence_items(chosen: Sequence[str], seed: int) -> list[tuple[str, str]]:
    """Every sentence once, in the chosen voices in turn; each seed goes on where the one before stopped, so that
    three seeds of ten sentences reach every one of the 22 held-out voices."""
    return [(text, chosen[(seed * len(SENTENCES) + i) % len(chosen)]) for i, text in enumerate(SENTENCES)]


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def judge_sentences(model: WaveNet, chosen: Sequence[str], seed: int, temperature: float, threads: int) -> dict:
    """The sentences generated by the WaveNet and rendered by espeak-ng, transcribed by PocketSphinx's own model."""
    spoken = speak(model, sentence_items(chosen, seed), None, seed, temperature, threads)
    texts = [s.text for s in spoken]
    generated = pocketsphinx_transcripts([s.generated for s in spoken])
    reference = pocketsphinx_transcripts([s.reference for s in spoken])
    wer, base = word_error_rate(texts, generated), word_error_rate(texts, reference)
    return {
        "wavenet_wer": wer,
        "espeak_wer": base,
        "ratio": ratio(wer, base),
        "audio_seconds": sum(len(s.generated) for s in spoken) / SAMPLE_RATE,
        "transcripts": [
            {"text": t, "voice": s.voice, "wavenet": g, "espeak": r}
            for t, s, g, r in zip(texts, spoken, generated, reference, strict=True)
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wavenet", type=Path, default=ROOT / "models/audio/wavenet.safetensors")
    parser.add_argument("--kws", type=Path, default=ROOT / "models/kws/kws_dscnn.safetensors")
    parser.add_argument("--voices", type=int, default=0, help="held-out voices to use (default 0: all of them)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of the first round (default: 0)")
    parser.add_argument(
        "--seeds", type=int, default=1, help="rounds, with seeds --seed, --seed + 1, ...; the figure is over all clips"
    )
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-pocketsphinx", action="store_true", help="leave the outside recognizer out")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    outside = not args.no_pocketsphinx
    if outside and importlib.util.find_spec("pocketsphinx") is None:
        parser.error(
            "PocketSphinx is not installed: it is a dev dependency of the benchmarks only (pip install pocketsphinx); "
            "or pass --no-pocketsphinx for the keyword spotter's figures alone"
        )

    torch.set_num_threads(args.threads)
    model, _, _ = load_audio_model(args.wavenet, "cpu")
    kws, meta = load_kws_model(args.kws)
    labels = list(meta["labels"])
    chosen = voices("heldout")[: args.voices or None]

    seconds = audio_seconds = 0.0
    words_said: list[str] = []
    generated: list[str] = []
    per_seed: dict[int, float] = {}
    spotter_hits: dict[int, int] = {}
    ps_hits: dict[int, int] = {}
    sentences: dict[int, dict] = {}
    said: list[str] = []
    ps: dict = {}
    for seed in range(args.seed, args.seed + args.seeds):
        started = time.perf_counter()
        spoken = number_words(model, chosen, seed, args.temperature, args.threads)
        seconds += time.perf_counter() - started
        audio_seconds += sum(len(w) for _, _, w in spoken) / SAMPLE_RATE
        heard = recognize(kws, labels, [wave for _, _, wave in spoken])
        said = [word for word, _, _ in spoken]
        spotter_hits[seed] = sum(h == w for h, w in zip(heard, said, strict=True))
        per_seed[seed] = spotter_hits[seed] / len(said)
        words_said += said
        generated += heard
        if outside:
            ps_hits[seed] = grammar_hits(said, [wave for _, _, wave in spoken])
            started = time.perf_counter()
            sentences[seed] = judge_sentences(model, chosen, seed, args.temperature, args.threads)
            seconds += time.perf_counter() - started
            audio_seconds += sentences[seed]["audio_seconds"]
    references = [trim_silence(render(word, Rendering(voice=voice)), pad=160) for word, voice, _ in spoken]
    baseline = recognize(kws, labels, references)  # espeak-ng's renderings do not depend on the seed

    hits = sum(g == w for g, w in zip(generated, words_said, strict=True))
    base_hits = sum(b == w for b, w in zip(baseline, said, strict=True))
    misses = Counter(f"{w}->{g}" for g, w in zip(generated, words_said, strict=True) if g != w)
    result: dict[str, object] = {
        "clips": len(words_said),
        "voices": len(chosen),
        "seeds": list(per_seed),
        "generated_accuracy": hits / len(words_said),
        "generated_accuracy_by_seed": {str(k): v for k, v in per_seed.items()},
        "generated_hits_by_seed": {str(k): v for k, v in spotter_hits.items()},
        "espeak_accuracy": base_hits / len(said),
        "generation_seconds": seconds,
        "audio_seconds": audio_seconds,
        "temperature": args.temperature,
        "misses": dict(misses.most_common()),
    }
    if outside:
        ps_base = grammar_hits(said, references)
        ps_total = sum(ps_hits.values())
        sentence_refs = sum(len(words(t)) for t in SENTENCES)  # every seed speaks every sentence once
        wer = sum(s["wavenet_wer"] for s in sentences.values()) / len(sentences)
        base_wer = sum(s["espeak_wer"] for s in sentences.values()) / len(sentences)
        ps = {
            "grammar_wavenet_hits": ps_total,
            "grammar_espeak_hits": ps_base * args.seeds,
            "grammar_ratio": ratio(ps_total, ps_base * args.seeds),
            "grammar_by_seed": {
                str(k): {"wavenet_hits": v, "espeak_hits": ps_base, "ratio": ratio(v, ps_base)}
                for k, v in ps_hits.items()
            },
            "sentence_words_per_seed": sentence_refs,
            "sentence_wavenet_wer": wer,
            "sentence_espeak_wer": base_wer,
            "sentence_wer_ratio": ratio(wer, base_wer),
            "sentences_by_seed": {str(k): v for k, v in sentences.items()},
        }
        result["pocketsphinx"] = ps
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{len(chosen)} held-out voices x 10 number words x {args.seeds} seed(s) = {len(words_said)} clips")
    print(
        f"recognized by the keyword classifier: generated {hits}/{len(words_said)} "
        f"({100 * hits / len(words_said):.1f}%), espeak-ng reference {base_hits}/{len(said)} "
        f"({100 * base_hits / len(said):.1f}%)"
    )
    if args.seeds > 1:
        shares = (f"{k}: {100 * v:.1f}% ({spotter_hits[k]}/{len(said)})" for k, v in per_seed.items())
        print("by seed:", ", ".join(shares))
    print(f"generation: {audio_seconds:.1f} s of audio in {seconds:.1f} s")
    if misses:
        print("misses (word->heard):", ", ".join(f"{k} x{v}" for k, v in misses.most_common(12)))
    if outside:
        _print_pocketsphinx(ps, len(said))
    return 0


def _print_pocketsphinx(ps: dict, clips: int) -> None:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    print(f"PocketSphinx 5 en-us, ten-word grammar ({clips} clips a seed) and own language model ({len(SENTENCES)} "
          f"sentences a seed, {ps['sentence_words_per_seed']} words):")  # fmt: skip
    print("  seed  grammar hits WaveNet  espeak-ng  ratio   sentence WER WaveNet  espeak-ng  ratio")
    for seed, g in ps["grammar_by_seed"].items():
        s = ps["sentences_by_seed"][seed]
        print(f"  {seed:>4}  {g['wavenet_hits']:>20}  {g['espeak_hits']:>9}  {fmt(g['ratio']):>5}   "
              f"{s['wavenet_wer']:>20.3f}  {s['espeak_wer']:>9.3f}  {fmt(s['ratio']):>5}")  # fmt: skip
    print(f"   all  {ps['grammar_wavenet_hits']:>20}  {ps['grammar_espeak_hits']:>9}  {fmt(ps['grammar_ratio']):>5}   "
          f"{ps['sentence_wavenet_wer']:>20.3f}  {ps['sentence_espeak_wer']:>9.3f}  "
          f"{fmt(ps['sentence_wer_ratio']):>5}")  # fmt: skip
    grammar_ok = ps["grammar_ratio"] is not None and ps["grammar_ratio"] >= RATIO_TARGET
    wer_ok = ps["sentence_wer_ratio"] is not None and ps["sentence_wer_ratio"] <= WER_RATIO_TARGET
    print(f"  targets: grammar ratio >= {RATIO_TARGET} {'met' if grammar_ok else 'NOT met'}; "
          f"WER ratio <= {WER_RATIO_TARGET} {'met' if wer_ok else 'NOT met'}")  # fmt: skip
    for seed, s in ps["sentences_by_seed"].items():
        for t in s["transcripts"]:
            print(f"  seed {seed} {t['voice']:24s} {t['text']!r}: WaveNet {t['wavenet']!r}, espeak-ng {t['espeak']!r}")


if __name__ == "__main__":
    raise SystemExit(main())
