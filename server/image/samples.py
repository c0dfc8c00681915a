"""The PNG grid of a checkpoint's samples (``antiphon sample image``), made through the sampling API the server
streams from, so a grid shows exactly the frames a client would get."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from server.errors import InvalidArgument
from server.image.data import load_photo, resize
from server.image.grid import tile, write_png
from server.image.sampling import DeepDream, DreamSettings, Frame, GibbsSampler, LatentSampler, open_sampler


def _shown(frames: list[Frame], columns: int) -> np.ndarray:
    """``columns`` frames spread over the stream (its last included), as (rows, columns, H, W): geometrically
    (early frames change most), or evenly when the stream is too short for that many distinct geometric picks."""
    picks = np.unique(np.round(np.geomspace(1, len(frames), columns)).astype(int) - 1)
    if len(picks) < min(columns, len(frames)):
        picks = np.unique(np.round(np.linspace(0, len(frames) - 1, columns)).astype(int))
    return np.stack([frames[i].images for i in picks], axis=1)


def sample_grid(args: argparse.Namespace | Any) -> np.ndarray:
    """Write the grid ``args`` ask for (see :func:`server.image.cli.add_sample`) and return its picture."""
    if args.rows < 1 or args.columns < 1:
        raise InvalidArgument("rows", "rows and columns must be at least 1")
    sampler = open_sampler(args.checkpoint)
    seeds = list(range(args.seed, args.seed + args.rows))
    if isinstance(sampler, LatentSampler):
        classes = len(sampler.labels)
        if args.walk:
            pairs = [(s, s + 1000) for s in seeds]
            labels = [s % classes for s in seeds] if classes else None
            frames = list(sampler.walk(pairs, args.columns, labels))
            images = np.stack([f.images for f in frames], axis=1)  # (rows, columns, H, W)
        else:
            grid_seeds = list(range(args.seed, args.seed + args.rows * args.columns))
            # a conditional model: each row one class (row r: class r mod classes)
            labels = [(i // args.columns) % classes for i in range(len(grid_seeds))] if classes else None
            parts = []
            for start in range(0, len(grid_seeds), 64):
                chunk = grid_seeds[start : start + 64]
                part_labels = labels[start : start + 64] if labels is not None else None
                parts.append(next(iter(sampler.sample(chunk, part_labels))).images)
            images = np.concatenate(parts).reshape(args.rows, args.columns, *parts[0].shape[1:])
    elif isinstance(sampler, GibbsSampler):
        frames = list(sampler.chains(seeds, args.steps))
        images = _shown(frames, args.columns)
    elif isinstance(sampler, DeepDream):
        settings = DreamSettings(layer=args.layer, target=args.target, channel=args.channel)
        photo = resize(load_photo(args.photo), settings.size)
        frames = list(sampler.dream(np.repeat(photo[None], len(seeds), axis=0), seeds, settings))
        images = np.concatenate([photo[None, None].repeat(len(seeds), 0), _shown(frames, args.columns - 1)], axis=1)
    else:  # pragma: no cover - open_sampler gives one of the three
        raise InvalidArgument("checkpoint", f"{args.checkpoint} has no sampler")
    rows, columns = images.shape[:2]
    picture = tile(images.reshape(rows * columns, *images.shape[2:]), columns, scale=args.scale)
    write_png(args.out, picture)
    return picture
