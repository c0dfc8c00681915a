"""Is the WaveNet's speech intelligible? The keyword classifier listens to the ten number words generated in every
held-out voice (voices neither model trained on) and we count how many it recognizes; espeak-ng's own renderings
of the same words are the baseline (what the classifier gets right on clean speech).

    python benchmarks/audio_intelligibility.py                   # the committed WaveNet and KWS checkpoints
    python benchmarks/audio_intelligibility.py --voices 8 --json
    python benchmarks/audio_intelligibility.py --seeds 3         # seeds 0, 1, 2: one seed of 220 clips moves ~2 points

The figure goes to benchmarks/RESULTS.md (issue target: at least 90% recognized).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.audio.checkpoint import load_audio_model  # noqa: E402
from server.audio.constants import SAMPLE_RATE  # noqa: E402
from server.audio.quality import number_words  # noqa: E402
from server.data.speech import Rendering, render, trim_silence, voices  # noqa: E402
from server.engine.classify import loudest_second  # noqa: E402
from server.kws.checkpoint import load_kws_model  # noqa: E402


@torch.no_grad()
def recognize(kws: torch.nn.Module, labels: list[str], waves: list[np.ndarray]) -> list[str]:
    batch = torch.from_numpy(np.stack([loudest_second(w.astype(np.float32)) for w in waves]))
    return [labels[i] for i in kws(batch).argmax(dim=1).tolist()]


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
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")

    torch.set_num_threads(args.threads)
    model, _, _ = load_audio_model(args.wavenet, "cpu")
    kws, meta = load_kws_model(args.kws)
    labels = list(meta["labels"])
    chosen = voices("heldout")[: args.voices or None]

    seconds = audio_seconds = 0.0
    words: list[str] = []
    generated: list[str] = []
    per_seed: dict[int, float] = {}
    for seed in range(args.seed, args.seed + args.seeds):
        started = time.perf_counter()
        spoken = number_words(model, chosen, seed, args.temperature, args.threads)
        seconds += time.perf_counter() - started
        audio_seconds += sum(len(w) for _, _, w in spoken) / SAMPLE_RATE
        heard = recognize(kws, labels, [wave for _, _, wave in spoken])
        said = [word for word, _, _ in spoken]
        per_seed[seed] = sum(h == w for h, w in zip(heard, said, strict=True)) / len(said)
        words += said
        generated += heard
    references = [trim_silence(render(word, Rendering(voice=voice)), pad=160) for word, voice, _ in spoken]
    baseline = recognize(kws, labels, references)  # espeak-ng's renderings do not depend on the seed

    hits = sum(g == w for g, w in zip(generated, words, strict=True))
    base_hits = sum(b == w for b, w in zip(baseline, said, strict=True))
    misses = Counter(f"{w}->{g}" for g, w in zip(generated, words, strict=True) if g != w)
    result = {
        "clips": len(words),
        "voices": len(chosen),
        "seeds": list(per_seed),
        "generated_accuracy": hits / len(words),
        "generated_accuracy_by_seed": {str(k): v for k, v in per_seed.items()},
        "espeak_accuracy": base_hits / len(said),
        "generation_seconds": seconds,
        "audio_seconds": audio_seconds,
        "temperature": args.temperature,
        "misses": dict(misses.most_common()),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{len(chosen)} held-out voices x 10 number words x {args.seeds} seed(s) = {len(words)} clips")
        print(
            f"recognized by the keyword classifier: generated {hits}/{len(words)} ({100 * hits / len(words):.1f}%), "
            f"espeak-ng reference {base_hits}/{len(said)} ({100 * base_hits / len(said):.1f}%)"
        )
        if args.seeds > 1:
            print("by seed:", ", ".join(f"{k}: {100 * v:.1f}%" for k, v in per_seed.items()))
        print(f"generation: {audio_seconds:.1f} s of audio in {seconds:.1f} s")
        if misses:
            print("misses (word->heard):", ", ".join(f"{k} x{v}" for k, v in misses.most_common(12)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
