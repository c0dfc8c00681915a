"""The keyword spotter on faster, higher and slower, deeper voices: the test set's words resampled by fixed factors.

The test set (``antiphon eval kws --test-per-label 200``: the held-out voices, fresh renderings) with every word
resampled by one factor before it is placed in the second (> 1: faster and higher), scored clean. Prints the share
of the number words recognized and of the other words heard as unknown, per factor and checkpoint.

    python benchmarks/kws_speed.py                                        # the committed spotter
    python benchmarks/kws_speed.py runs/kws/a.safetensors runs/kws/b.safetensors --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.kws.augment import place, resample  # noqa: E402
from server.kws.checkpoint import load_kws_model  # noqa: E402
from server.kws.data import UNKNOWN_INDEX, KWSDataConfig, at_half_scale, unseen_clips  # noqa: E402
from server.kws.evaluate import predict_logits  # noqa: E402

FACTORS = (0.7, 0.8, 0.9, 1.0, 1.15, 1.3, 1.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="*", type=Path, default=[ROOT / "models/kws/kws_dscnn.safetensors"])
    parser.add_argument("--per-label", type=int, default=200, help="test clips of each label")
    parser.add_argument("--seed", type=int, default=5, help="placement in the second")
    parser.add_argument("--json", action="store_true", help="one JSON object per checkpoint")
    args = parser.parse_args()

    models = [load_kws_model(path) for path in args.checkpoints]
    # Every checkpoint here has to leave the same words untrained: the data sizes of the first one.
    config = KWSDataConfig.from_meta(models[0][1]["data"])
    base = unseen_clips(config, args.per_label)
    speech = [i for i, c in enumerate(base.clips) if c.rendering is not None]
    labels = np.asarray([base.clips[i].label for i in speech])
    numbers = labels < UNKNOWN_INDEX
    sets = {}
    for factor in FACTORS:
        rng = np.random.default_rng(args.seed)
        words = [base.audio[i] if factor == 1.0 else resample(base.audio[i], factor) for i in speech]
        sets[factor] = np.stack([at_half_scale(place(rng, w)) for w in words])
    for path, (model, _) in zip(args.checkpoints, models, strict=True):
        result: dict = {"checkpoint": str(path), "factors": {}}
        for factor, waves in sets.items():
            predicted = predict_logits(model, waves).argmax(axis=1)
            result["factors"][str(factor)] = {
                "numbers": round(float((predicted[numbers] == labels[numbers]).mean()), 4),
                "unknown": round(float((predicted[~numbers] == UNKNOWN_INDEX).mean()), 4),
            }
        if args.json:
            print(json.dumps(result))
            continue
        print(path)
        for factor, r in result["factors"].items():
            print(f"  x{factor:5s} number words {r['numbers']:.2%}  other words heard as unknown {r['unknown']:.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
