"""Incremental WaveNet generation compiled with numba: O(layers) work per sample, many samples per call.

The fast-WaveNet scheme: each layer keeps a ring buffer of its last ``dilation`` inputs, so the dilated
convolution at sample ``t`` reads ``x[t - d]`` from the buffer instead of recomputing the receptive field. One
call of :func:`_generate` runs ``n`` samples for a range of streams in compiled code (Python is entered once per
chunk, and the GIL is released, so two threads run two halves of a batch on two cores):

- weights are preprocessed once into contiguous float32 arrays: the two taps of each dilated convolution form one
  (2R, 2G) matrix, the residual and skip 1x1 convolutions one (G, R + S) matrix, and every layer's conditioning
  projection one (C, L * 2G) matrix applied once per frame per stream (the per-sample step only interpolates
  between two cached frame projections);
- ``tanh`` is a rational approximation (|error| < 1e-6, ``server/compiled.py``) that vectorizes;
  ``sigmoid(x) = (1 + tanh(x / 2)) / 2``;
- sampling (temperature, inverse CDF) happens in the loop with the stream's counter-based random source
  (``server/sampling.py``: draw ``n`` is ``splitmix64(seed + n * GAMMA)``), so a seeded stream produces the same
  samples alone or batched, in one thread or two.

Every stream's arithmetic is the same whatever else is in its batch: rows never mix.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

import numba
import numpy as np
import torch
from torch import nn

from server.audio.model import CLASSES, SILENCE, WaveNet
from server.compiled import matvec as _matvec
from server.compiled import tanh, uniform

_NEGLIGIBLE = -30.0


@numba.njit(cache=True, fastmath=True, inline="always")
def _matvec2(wt, x0, x1, init0, init1, out0, out1):
    """``_matvec`` for two streams at once: each weight row is loaded once for both (same sums as ``_matvec``)."""
    rows = wt.shape[0]
    k = x0.shape[0]
    j = 0
    while j + 4 <= rows:
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        c0 = np.float32(0.0)
        c1 = np.float32(0.0)
        c2 = np.float32(0.0)
        c3 = np.float32(0.0)
        r0 = wt[j]
        r1 = wt[j + 1]
        r2 = wt[j + 2]
        r3 = wt[j + 3]
        for i in range(k):
            v = x0[i]
            u = x1[i]
            a0 += v * r0[i]
            a1 += v * r1[i]
            a2 += v * r2[i]
            a3 += v * r3[i]
            c0 += u * r0[i]
            c1 += u * r1[i]
            c2 += u * r2[i]
            c3 += u * r3[i]
        out0[j] = init0[j] + a0
        out0[j + 1] = init0[j + 1] + a1
        out0[j + 2] = init0[j + 2] + a2
        out0[j + 3] = init0[j + 3] + a3
        out1[j] = init1[j] + c0
        out1[j + 1] = init1[j + 1] + c1
        out1[j + 2] = init1[j + 2] + c2
        out1[j + 3] = init1[j + 3] + c3
        j += 4
    while j < rows:
        acc = np.float32(0.0)
        acc1 = np.float32(0.0)
        for i in range(k):
            acc += x0[i] * wt[j, i]
            acc1 += x1[i] * wt[j, i]
        out0[j] = init0[j] + acc
        out1[j] = init1[j] + acc1
        j += 1


@numba.njit(cache=True, fastmath=True, inline="always", error_model="numpy")
def _matvec_group(wt, x, init0, init1, out, group):
    """``_matvec`` of a group's one or two streams, rows 0 (and 1) of ``x`` and ``out``; two in one pass."""
    if group == 2:
        _matvec2(wt, x[0], x[1], init0, init1, out[0], out[1])
    else:
        _matvec(wt, x[0], init0, out[0])


@numba.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
def _project_frame(feats, frame, w_cond, b_cond, out):
    """out (L * 2G,) = b_cond + w_cond @ feats[frame]."""
    _matvec(w_cond, feats[frame], b_cond, out)


@numba.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
def _generate(
    rows,  # (A,) int64: the state rows to advance
    p0,
    p1,  # this call advances rows[p0:p1]
    n,
    # weights
    embed,  # (256, R)
    w_dil,  # (L, 2G, 2R)  (matrices are stored output-major: row j holds output j's weights)
    w_rs,  # (L, R + S, G)
    b_rs,  # (L, R + S)
    w_cond,  # (L * 2G, C)
    b_cond,  # (L * 2G,)
    w_out1,  # (H, S)
    b_out1,  # (H,)
    w_out2,  # (256, H)
    b_out2,  # (256,)
    dilations,  # (L,) int64
    offsets,  # (L,) int64: where each layer's ring buffer starts in a stream's queue
    hop,
    # per-stream state (B rows)
    queues,  # (B, sum(dilations), R) float32
    last,  # (B,) int64: the code before the next sample
    pos,  # (B,) int64: the index of the next sample
    cond_a,  # (B, L * 2G): projection of frame cond_frame[b]
    cond_b,  # (B, L * 2G): projection of frame cond_frame[b] + 1 (clamped)
    cond_frame,  # (B,) int64: the frame cond_a holds (-1: none yet)
    feats,  # (total frames, C) every stream's frame features, stream b at feat_start[b]
    feat_start,  # (B,) int64
    feat_len,  # (B,) int64
    temperature,  # (B,) float64, 0 = greedy
    seeds,  # (B,) uint64
    counts,  # (B,) uint64: draws taken so far
    forced,  # (A, n) int64 codes to feed instead of sampling (teacher forcing) when use_forced
    use_forced,
    out_codes,  # (A, n) uint8: row p of the outputs belongs to state row rows[p]
    out_logits,  # (A, n, 256) float32 when keep_logits, else (1, 1, 256)
    keep_logits,
):
    layers = w_dil.shape[0]
    res = embed.shape[1]
    gates2 = w_dil.shape[1]
    gates = gates2 // 2
    skip_ch = w_rs.shape[1] - res
    hidden = w_out1.shape[0]
    # scratch for a group of up to two streams stepped together (row k of each is stream rows[p + k])
    inp = np.empty((2, 2 * res), np.float32)  # [x[t - d], x[t]]
    cond = np.empty((2, gates2), np.float32)
    z = np.empty((2, gates2), np.float32)
    g = np.empty((2, gates), np.float32)
    rs = np.empty((2, res + skip_ch), np.float32)
    skip = np.empty((2, skip_ch), np.float32)
    h = np.empty((2, hidden), np.float32)
    logits = np.empty((2, CLASSES), np.float32)
    probs = np.empty(CLASSES, np.float64)
    frac = np.empty(2, np.float32)
    for p in range(p0, p1, 2):
        group = min(2, p1 - p)
        for s in range(n):
            for k in range(group):
                b = rows[p + k]
                t = pos[b]
                # conditioning: interpolate between the projections of frames t // hop and t // hop + 1
                last_frame = feat_len[b] - 1
                feat_base = feats[feat_start[b] : feat_start[b] + feat_len[b]]
                f = min(t // hop, last_frame)
                if cond_frame[b] != f:
                    if cond_frame[b] >= 0 and cond_frame[b] == f - 1:
                        cond_a[b, :] = cond_b[b, :]
                    else:
                        _project_frame(feat_base, f, w_cond, b_cond, cond_a[b])
                    _project_frame(feat_base, min(f + 1, last_frame), w_cond, b_cond, cond_b[b])
                    cond_frame[b] = f
                frac[k] = np.float32((t % hop) / hop) if t // hop <= last_frame else np.float32(0.0)
                code = last[b]
                for i in range(res):
                    inp[k, res + i] = embed[code, i]
                for i in range(skip_ch):
                    skip[k, i] = 0.0
            # -- the layers
            for layer in range(layers):
                base = layer * gates2
                for k in range(group):
                    b = rows[p + k]
                    a = frac[k]
                    for j in range(gates2):
                        cond[k, j] = cond_a[b, base + j] + a * (cond_b[b, base + j] - cond_a[b, base + j])
                    slot = offsets[layer] + pos[b] % dilations[layer]
                    for i in range(res):
                        inp[k, i] = queues[b, slot, i]
                        queues[b, slot, i] = inp[k, res + i]
                _matvec_group(w_dil[layer], inp, cond[0], cond[1], z, group)
                for k in range(group):
                    for j in range(gates):
                        g[k, j] = tanh(z[k, j]) * (
                            np.float32(0.5) + np.float32(0.5) * tanh(np.float32(0.5) * z[k, gates + j])
                        )
                _matvec_group(w_rs[layer], g, b_rs[layer], b_rs[layer], rs, group)
                for k in range(group):
                    for i in range(res):
                        inp[k, res + i] += rs[k, i]
                    for i in range(skip_ch):
                        skip[k, i] += rs[k, res + i]
            # -- the output head
            for k in range(group):
                for i in range(skip_ch):
                    skip[k, i] = max(skip[k, i], np.float32(0.0))
            _matvec_group(w_out1, skip, b_out1, b_out1, h, group)
            for k in range(group):
                for i in range(hidden):
                    h[k, i] = max(h[k, i], np.float32(0.0))
            _matvec_group(w_out2, h, b_out2, b_out2, logits, group)
            # -- the next sample of each stream
            for k in range(group):
                b = rows[p + k]
                row = logits[k]
                if keep_logits:
                    out_logits[p + k, s, :] = row
                if use_forced:
                    code = forced[p + k, s]
                else:
                    best = 0
                    for j in range(1, CLASSES):
                        if row[j] > row[best]:
                            best = j
                    code = best
                    if temperature[b] > 0.0:
                        inv = 1.0 / temperature[b]
                        top = row[best]
                        total = 0.0
                        for j in range(CLASSES):
                            d = (row[j] - top) * inv
                            if d > _NEGLIGIBLE:  # a class e**30 times less likely than the best is never drawn
                                total += np.exp(d)
                            probs[j] = total
                        counts[b] += np.uint64(1)
                        u = uniform(seeds[b], counts[b]) * total
                        code = 0
                        while code < CLASSES - 1 and probs[code] <= u:
                            code += 1
                out_codes[p + k, s] = code
                last[b] = code
                pos[b] += 1


@dataclass
class StreamState:
    """Rows of incremental state, one per stream. Rows are selected and concatenated between calls (streams join
    and leave); the frame features of every row are kept concatenated for the compiled loop."""

    queues: np.ndarray  # (B, sum(dilations), R) float32: every layer's ring buffer of past inputs
    last: np.ndarray  # (B,) int64: the code before the next sample
    pos: np.ndarray  # (B,) int64: the index of the next sample
    cond_a: np.ndarray  # (B, L * 2G) float32: the conditioning of frame cond_frame
    cond_b: np.ndarray  # (B, L * 2G) float32: the conditioning of the frame after it
    cond_frame: np.ndarray  # (B,) int64
    seeds: np.ndarray  # (B,) uint64
    counts: np.ndarray  # (B,) uint64: random draws taken
    temperature: np.ndarray  # (B,) float64
    feats: list[np.ndarray]  # per stream (F, C) float32 frame features
    flat: np.ndarray = field(init=False, repr=False)  # (sum F, C)
    starts: np.ndarray = field(init=False, repr=False)  # (B,) int64: each row's first frame in ``flat``
    lengths: np.ndarray = field(init=False, repr=False)  # (B,) int64

    def __post_init__(self) -> None:
        self.lengths = np.array([len(f) for f in self.feats], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.flat = np.concatenate(self.feats) if len(self.feats) != 1 else self.feats[0]

    def __len__(self) -> int:
        return len(self.last)

    def select(self, rows: Sequence[int]) -> StreamState:
        idx = np.asarray(rows, dtype=np.int64)
        return StreamState(
            self.queues[idx],
            self.last[idx],
            self.pos[idx],
            self.cond_a[idx],
            self.cond_b[idx],
            self.cond_frame[idx],
            self.seeds[idx],
            self.counts[idx],
            self.temperature[idx],
            [self.feats[i] for i in rows],
        )

    @staticmethod
    def concat(states: Sequence[StreamState]) -> StreamState:
        return StreamState(
            np.concatenate([s.queues for s in states]),
            np.concatenate([s.last for s in states]),
            np.concatenate([s.pos for s in states]),
            np.concatenate([s.cond_a for s in states]),
            np.concatenate([s.cond_b for s in states]),
            np.concatenate([s.cond_frame for s in states]),
            np.concatenate([s.seeds for s in states]),
            np.concatenate([s.counts for s in states]),
            np.concatenate([s.temperature for s in states]),
            [f for s in states for f in s.feats],
        )


class FastWaveNet:
    """The checkpoint's :class:`WaveNet` as a compiled, batched, chunked sample generator (float32, CPU).

    ``start`` makes a stream's state from its frame features; ``generate`` advances streams by ``n`` samples and
    returns their codes. ``threads`` > 1 splits the rows into contiguous ranges run in parallel (numba releases
    the GIL), which changes no stream's samples.
    """

    def __init__(self, model: WaveNet, threads: int = 1) -> None:
        c = model.config
        self.config = c
        self.threads = max(1, threads)
        f32 = np.float32

        def arr(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy(), dtype=f32)

        dilated = [cast(nn.Linear, m) for m in model.dilated]
        res_skip = [cast(nn.Linear, m) for m in model.res_skip]
        with torch.no_grad():
            self.embed = arr(model.embed.weight)  # (256, R)
            self.w_dil = arr(torch.stack([m.weight for m in dilated]))  # (L, 2G, 2R)
            self.w_rs = arr(torch.stack([m.weight for m in res_skip]))  # (L, R + S, G)
            self.b_rs = arr(torch.stack([m.bias for m in res_skip]))  # (L, R + S)
            self.w_cond = arr(model.cond_proj.weight)  # (L * 2G, C)
            self.b_cond = arr(model.cond_proj.bias)  # (L * 2G,)
            self.w_out1 = arr(model.out1.weight)  # (H, S)
            self.b_out1 = arr(model.out1.bias)
            self.w_out2 = arr(model.out2.weight)  # (256, H)
            self.b_out2 = arr(model.out2.bias)
        self.dilations = np.asarray(c.dilations, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.dilations)[:-1]]).astype(np.int64)
        self.queue_len = int(self.dilations.sum())
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def start(self, feats: np.ndarray, seed: int, temperature: float) -> StreamState:
        """A new stream's state: ``feats`` (F, C) its frame features (``WaveNet.frame_features``)."""
        c = self.config
        width = c.layers * 2 * c.gate_channels
        return StreamState(
            queues=np.zeros((1, self.queue_len, c.residual_channels), np.float32),
            last=np.array([SILENCE], np.int64),
            pos=np.zeros(1, np.int64),
            cond_a=np.zeros((1, width), np.float32),
            cond_b=np.zeros((1, width), np.float32),
            cond_frame=np.full(1, -1, np.int64),
            seeds=np.array([seed], np.uint64),
            counts=np.zeros(1, np.uint64),
            temperature=np.array([temperature], np.float64),
            feats=[np.ascontiguousarray(feats, dtype=np.float32)],
        )

    def generate(
        self,
        state: StreamState,
        n: int,
        rows: Sequence[int] | None = None,
        forced: np.ndarray | None = None,
        keep_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Advance ``rows`` of ``state`` (default: all) by ``n`` samples, in place: their codes (A, n) uint8 and,
        with ``keep_logits``, the logits (A, n, 256) that produced them. ``forced`` (A, n) feeds those codes
        instead of sampling (teacher forcing)."""
        index = np.arange(len(state), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        count = len(index)
        codes = np.empty((count, n), np.uint8)
        logits = np.empty((count, n, CLASSES) if keep_logits else (1, 1, CLASSES), np.float32)
        use_forced = forced is not None
        forced_arr = np.ascontiguousarray(forced, dtype=np.int64) if forced is not None else np.zeros((1, 1), np.int64)

        def run(p0: int, p1: int) -> None:
            _generate(
                index, p0, p1, n,
                self.embed, self.w_dil, self.w_rs, self.b_rs, self.w_cond, self.b_cond,
                self.w_out1, self.b_out1, self.w_out2, self.b_out2,
                self.dilations, self.offsets, self.config.hop,
                state.queues, state.last, state.pos, state.cond_a, state.cond_b, state.cond_frame,
                state.flat, state.starts, state.lengths, state.temperature, state.seeds, state.counts,
                forced_arr, use_forced, codes, logits, keep_logits,
            )  # fmt: skip

        # Split into at most ``threads`` parts of whole pairs (a pair shares its weight loads).
        parts = min(self.threads, (count + 1) // 2)
        if parts <= 1:
            run(0, count)
        else:
            pairs = (count + 1) // 2
            bounds = [min(count, 2 * round(i * pairs / parts)) for i in range(parts + 1)]
            pool = self._executor()
            futures = [pool.submit(run, bounds[i], bounds[i + 1]) for i in range(1, parts)]
            run(bounds[0], bounds[1])
            for future in futures:
                future.result()
        return codes, (logits if keep_logits else None)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads - 1, thread_name_prefix="wavenet")
            return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
