"""Choose dynamic evaluation's settings on the development plays (``antiphon eval text --dynamic``).

    OMP_NUM_THREADS=1 python benchmarks/dynamic_eval.py --checkpoint runs/text-recipes/e3/model.safetensors \
        [--chars 20000] [--grid 0.03:0:20,0.01:0:50] [--json PATH]

The checkpoint must not have trained on the development plays (a run of ``antiphon train text --dev-plays``; the
third recipe row of ``docs/text-model.md`` chose the served settings). Each development play's first ``--chars``
characters are scored statically and then once per setting of the grid (``STEP:PULL:SEGMENT``); the table gives
bits per character over all of them. The held-out plays are never read here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from server.data.shakespeare import DEV_PLAYS, load_shakespeare
from server.errors import InvalidArgument
from server.text.checkpoint import load_text_model
from server.text.evaluate import dynamic_total_bits, total_bits
from server.text.options import DynamicEval

GRID = (
    "0.001:0:50,0.003:0:50,0.01:0:50,0.03:0:50,0.1:0:50,0.3:0:50,0.01:0.001:50,0.01:0.01:50,0.03:0.001:50,"
    "0.003:0:20,0.003:0:100,0.03:0:20,0.1:0:20"
)


def parse_grid(text: str) -> list[DynamicEval]:
    settings = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 3:
            raise InvalidArgument("grid", f"each setting is STEP:PULL:SEGMENT, got {item!r}")
        try:
            settings.append(DynamicEval(float(parts[0]), float(parts[1]), int(parts[2])))
        except ValueError as exc:
            raise InvalidArgument("grid", f"{item!r}: {exc}") from exc
    return settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="a text model trained with --dev-plays")
    p.add_argument("--chars", type=int, default=20_000, help="characters of each development play (default 20000)")
    p.add_argument("--grid", default=GRID, help="settings STEP:PULL:SEGMENT, comma-separated (default: the docs' grid)")
    p.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = p.parse_args(argv)
    try:
        grid = parse_grid(args.grid)
    except InvalidArgument as exc:
        p.error(str(exc))
    model, vocab, meta = load_text_model(args.checkpoint)
    if "dev_bits_per_char" not in meta.get("metrics", {}):  # a run without --dev-plays trained on them
        print(f"warning: {args.checkpoint} may have trained on the development plays", file=sys.stderr)
    texts = [text[: args.chars] for text in load_shakespeare(dev_plays=DEV_PLAYS).dev.values()]
    chars = sum(map(len, texts))
    static = sum(total_bits(model, vocab, text) for text in texts) / chars
    print(f"static: {static:.4f} bits/char over {chars:,} development characters", flush=True)
    print("| step | pull back | segment | development bits/char | seconds |\n|---|---|---|---|---|", flush=True)
    rows = []
    for settings in grid:
        started = time.monotonic()
        bits = sum(dynamic_total_bits(model, vocab, text, settings) for text in texts) / chars
        seconds = time.monotonic() - started
        rows.append({**vars(settings), "bits_per_char": round(bits, 4), "seconds": round(seconds, 1)})
        print(f"| {settings.lr} | {settings.decay} | {settings.segment} | {bits:.4f} | {seconds:.0f} |", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"static": round(static, 4), "chars": chars, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
