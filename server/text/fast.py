"""The character LSTM compiled with numba for serving on the CPU: many tokens per call, sampling included.

Token-by-token generation of a 2 x 512 LSTM is a few matrix-vector products per token, so the cost that matters is
per call, not per multiply. One call of :func:`_advance` runs up to ``steps`` tokens for a range of streams in
compiled code with the GIL released (two threads take two halves of a batch): each stream samples its next token
from its logits (temperature, top-k, top-p, the inverse CDF with its counter-based random source, as
``server/sampling.py``), checks its stop sequences and its token budget, and every stream that drew a token is
stepped through the network together.

- Weights are derived once from the checkpoint's :class:`CharLSTM` (it stays the source of truth): the embedding
  and layer 0's input projection fold into one table (V, 4H), a later layer's input and hidden weights stack into
  one (4H, 2H) matrix, matrices stored output-major (row ``j`` holds output ``j``'s weights).
- Matrix products run in tiles of four weight rows by four streams, with a block of 64 weight rows (256 KB of the
  largest matrix) kept in cache while every stream of the batch passes, so the weights stream from memory once
  per step. At one stream this is a matrix-vector product at memory speed; at 64 it runs faster than MKL here.
- Every stream's arithmetic is the same whatever else is in its batch: a stream's products always go through the
  same tile code (batches are padded to a multiple of four), rows never mix, so a seeded stream's text is identical
  alone, batched or split across threads.
- ``tanh`` is a rational approximation (|error| < 1e-6) that vectorizes; logits match eager PyTorch to about 1e-5.
- Prompts are read layer by layer: layer 0's inputs are table lookups, a later layer's input projections for a
  whole chunk of the prompt are one matrix product, and only the recurrent product runs per character.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numba
import numpy as np
import torch

from server.compiled import matvec, tanh, uniform
from server.sampling import MAX_STOP_LENGTH, RowRules
from server.text.model import CharLSTM

BLOCK = 64  # weight rows per cache block (a multiple of 4)
PREFILL_CHUNK = 256  # prompt characters whose input projections are computed together
RECENT = MAX_STOP_LENGTH  # the last tokens a stream remembers to match stop sequences


@numba.njit(cache=True, fastmath=True, inline="always", error_model="numpy")
def _tile44(w, x, out, j, s, k):
    """out[s + a, j + b] = dot(w[j + b], x[s + a]) for a, b in 0..3."""
    a00 = a01 = a02 = a03 = np.float32(0.0)
    a10 = a11 = a12 = a13 = np.float32(0.0)
    a20 = a21 = a22 = a23 = np.float32(0.0)
    a30 = a31 = a32 = a33 = np.float32(0.0)
    r0 = w[j]
    r1 = w[j + 1]
    r2 = w[j + 2]
    r3 = w[j + 3]
    x0 = x[s]
    x1 = x[s + 1]
    x2 = x[s + 2]
    x3 = x[s + 3]
    for i in range(k):
        w0 = r0[i]
        w1 = r1[i]
        w2 = r2[i]
        w3 = r3[i]
        v = x0[i]
        a00 += v * w0
        a01 += v * w1
        a02 += v * w2
        a03 += v * w3
        v = x1[i]
        a10 += v * w0
        a11 += v * w1
        a12 += v * w2
        a13 += v * w3
        v = x2[i]
        a20 += v * w0
        a21 += v * w1
        a22 += v * w2
        a23 += v * w3
        v = x3[i]
        a30 += v * w0
        a31 += v * w1
        a32 += v * w2
        a33 += v * w3
    out[s, j] = a00
    out[s, j + 1] = a01
    out[s, j + 2] = a02
    out[s, j + 3] = a03
    out[s + 1, j] = a10
    out[s + 1, j + 1] = a11
    out[s + 1, j + 2] = a12
    out[s + 1, j + 3] = a13
    out[s + 2, j] = a20
    out[s + 2, j + 1] = a21
    out[s + 2, j + 2] = a22
    out[s + 2, j + 3] = a23
    out[s + 3, j] = a30
    out[s + 3, j + 1] = a31
    out[s + 3, j + 2] = a32
    out[s + 3, j + 3] = a33


@numba.njit(cache=True, fastmath=True, inline="always", error_model="numpy")
def _tile41(w, x, out, j, s, k):
    """out[s + a, j] = dot(w[j], x[s + a]) for a in 0..3 (the last rows of a matrix whose height is not a
    multiple of four)."""
    a0 = a1 = a2 = a3 = np.float32(0.0)
    r = w[j]
    x0 = x[s]
    x1 = x[s + 1]
    x2 = x[s + 2]
    x3 = x[s + 3]
    for i in range(k):
        v = r[i]
        a0 += v * x0[i]
        a1 += v * x1[i]
        a2 += v * x2[i]
        a3 += v * x3[i]
    out[s, j] = a0
    out[s + 1, j] = a1
    out[s + 2, j] = a2
    out[s + 3, j] = a3


@numba.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
def _matmul(w, x, out, n):
    """out[:n] = x[:n] @ w.T for ``n`` a multiple of 4; a block of weight rows stays in cache across all streams."""
    rows, k = w.shape
    for jb in range(0, rows, BLOCK):
        je = min(jb + BLOCK, rows)
        for s in range(0, n, 4):
            j = jb
            while j + 4 <= je:
                _tile44(w, x, out, j, s, k)
                j += 4
            while j < je:
                _tile41(w, x, out, j, s, k)
                j += 1


@numba.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
def _cell(g, c, h):
    """The LSTM cell on pre-activations ``g`` (4H,) in PyTorch's gate order i, f, g, o; updates ``c`` and ``h``."""
    n = c.shape[0]
    half = np.float32(0.5)
    for i in range(n):
        gate_i = half + half * tanh(half * g[i])
        gate_f = half + half * tanh(half * g[n + i])
        gate_g = tanh(g[2 * n + i])
        gate_o = half + half * tanh(half * g[3 * n + i])
        cell = gate_f * c[i] + gate_i * gate_g
        c[i] = cell
        h[i] = gate_o * tanh(cell)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sample(row, temperature, top_k, top_p, seed, count, x, probs, cdf):
    """One token from logits ``row`` (V,) as ``server.sampling.sample_tokens`` draws it; returns (token, count).

    Not fastmath: scores hold -inf. ``x``, ``probs``, ``cdf`` are (V,) float64 scratch.
    """
    size = row.shape[0]
    for j in range(size):
        x[j] = row[j]
    x[0] = -np.inf  # never emit the unknown symbol
    best = 0
    for j in range(1, size):
        if x[j] > x[best]:
            best = j
    if temperature == 0.0:
        return best, count
    for j in range(size):
        x[j] = x[j] / temperature
    if 0 < top_k < size:
        kth = np.sort(x)[size - top_k]  # the k-th largest score
        for j in range(size):
            if x[j] < kth:
                x[j] = -np.inf
    top = x[best]
    total = 0.0
    for j in range(size):
        probs[j] = np.exp(x[j] - top)
        total += probs[j]
    for j in range(size):
        probs[j] /= total
    if top_p < 1.0:
        order = np.argsort(-probs, kind="mergesort")  # likeliest first, ties in vocabulary order
        running = 0.0
        for r in range(size):
            running += probs[order[r]]
            cdf[r] = running - probs[order[r]]  # the mass ranked above this token
        for r in range(size):
            if cdf[r] >= top_p:
                probs[order[r]] = 0.0
    running = 0.0
    for j in range(size):
        running += probs[j]
        cdf[j] = running
    count += np.uint64(1)
    target = uniform(seed, count) * cdf[size - 1]
    drawn = 0
    for j in range(size):
        if cdf[j] <= target:
            drawn += 1
    return min(drawn, size - 1), count


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _stopped(recent, total, stop_ids, stop_lens):
    """Whether the last ``total`` tokens (a ring of RECENT) end with one of the stop sequences."""
    ring = recent.shape[0]
    for s in range(stop_lens.shape[0]):
        length = stop_lens[s]
        if length == 0 or length > total:
            continue
        match = True
        for q in range(length):
            if recent[(total - 1 - q) % ring] != stop_ids[s, length - 1 - q]:
                match = False
                break
        if match:
            return True
    return False


@numba.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
def _step_rows(tokens, rows, m, h, c, logits, table0, w_hh0, w_cat, b_cat, head_w, head_b, x0, x1, g, out):
    """Read ``tokens[i]`` into state row ``rows[i]`` for i < m: the state moves on and ``logits`` hold the next
    token's scores. x0 (cap, H), x1 (cap, 2H), g (cap, 4H), out (cap, V) are scratch; cap >= m rounded up to 4."""
    layers, _, hidden = h.shape
    padded = (m + 3) // 4 * 4
    for i in range(m):
        x0[i, :] = h[0, rows[i]]
    _matmul(w_hh0, x0, g, padded)
    for i in range(m):
        r = rows[i]
        gi = g[i]
        gi += table0[tokens[i]]
        _cell(gi, c[0, r], h[0, r])
    for layer in range(1, layers):
        for i in range(m):
            r = rows[i]
            x1[i, :hidden] = h[layer - 1, r]
            x1[i, hidden:] = h[layer, r]
        _matmul(w_cat[layer - 1], x1, g, padded)
        for i in range(m):
            r = rows[i]
            gi = g[i]
            gi += b_cat[layer - 1]
            _cell(gi, c[layer, r], h[layer, r])
    for i in range(m):
        x0[i, :] = h[layers - 1, rows[i]]
    _matmul(head_w, x0, out, padded)
    for i in range(m):
        logits[rows[i]] = out[i] + head_b


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _advance(
    rows,  # (A,) int64: the state rows to advance; this call takes rows[p0:p1]
    p0,
    p1,
    steps,
    h,  # (L, B, H) float32
    c,  # (L, B, H) float32
    logits,  # (B, V) float32: each row's next-token scores
    temperature,  # (A,) float64, 0 = greedy
    top_k,  # (A,) int64, 0 = off
    top_p,  # (A,) float64, 1 = off
    seeds,  # (A,) uint64
    counts,  # (A,) uint64: draws taken (updated)
    budget,  # (A,) int64: tokens each may still produce
    stop_ids,  # (A, S, RECENT) int64
    stop_lens,  # (A, S) int64, 0 = unused
    recent,  # (A, RECENT) int64: a ring of the last tokens (updated)
    recent_n,  # (A,) int64: tokens produced so far (updated)
    out_tokens,  # (A, steps) int64
    produced,  # (A,) int64: tokens produced by this call
    table0,
    w_hh0,
    w_cat,
    b_cat,
    head_w,
    head_b,
):
    n = p1 - p0
    hidden = h.shape[2]
    vocab = logits.shape[1]
    cap = (n + 3) // 4 * 4
    x0 = np.zeros((cap, hidden), np.float32)
    x1 = np.zeros((cap, 2 * hidden), np.float32)
    g = np.zeros((cap, 4 * hidden), np.float32)
    out = np.zeros((cap, max(vocab, 1)), np.float32)
    x = np.empty(vocab, np.float64)
    probs = np.empty(vocab, np.float64)
    cdf = np.empty(vocab, np.float64)
    done = np.zeros(n, np.bool_)
    step_rows = np.empty(n, np.int64)
    step_tokens = np.empty(n, np.int64)
    for q in range(n):
        produced[p0 + q] = 0
    for t in range(steps):
        m = 0
        for q in range(n):
            p = p0 + q
            if done[q] or produced[p] >= budget[p]:
                continue
            r = rows[p]
            token, counts[p] = _sample(
                logits[r], temperature[p], top_k[p], top_p[p], seeds[p], counts[p], x, probs, cdf
            )
            out_tokens[p, t] = token
            produced[p] += 1
            recent[p, recent_n[p] % RECENT] = token
            recent_n[p] += 1
            if _stopped(recent[p], recent_n[p], stop_ids[p], stop_lens[p]):
                done[q] = True  # still read below, so a chat session's state holds its last token
            step_rows[m] = r
            step_tokens[m] = token
            m += 1
        if m == 0:
            break
        _step_rows(step_tokens, step_rows, m, h, c, logits, table0, w_hh0, w_cat, b_cat, head_w, head_b, x0, x1, g, out)


@numba.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")  # fastmath: the inlined matvecs vectorize
def _prefill(ids, r, h, c, logits, table0, w_hh0, w_ih, w_hh, b_cat, head_w, head_b):
    """Read ``ids`` into state row ``r`` layer by layer; ``logits[r]`` gets the scores after the last one."""
    layers, _, hidden = h.shape
    length = ids.shape[0]
    seq = np.empty((length, hidden), np.float32)  # the current layer's outputs, one row per character
    g = np.empty(4 * hidden, np.float32)
    chunk = np.zeros((PREFILL_CHUNK, hidden), np.float32)
    pre = np.empty((PREFILL_CHUNK, 4 * hidden), np.float32)
    for t in range(length):
        matvec(w_hh0, h[0, r], table0[ids[t]], g)
        _cell(g, c[0, r], h[0, r])
        seq[t] = h[0, r]
    for layer in range(1, layers):
        for t0 in range(0, length, PREFILL_CHUNK):
            t1 = min(t0 + PREFILL_CHUNK, length)
            chunk[: t1 - t0] = seq[t0:t1]
            _matmul(w_ih[layer - 1], chunk, pre, (t1 - t0 + 3) // 4 * 4)
            for t in range(t0, t1):
                pre[t - t0] += b_cat[layer - 1]
                matvec(w_hh[layer - 1], h[layer, r], pre[t - t0], g)
                _cell(g, c[layer, r], h[layer, r])
                seq[t] = h[layer, r]
    matvec(head_w, h[layers - 1, r], head_b, logits[r])


@dataclass
class FastState:
    """Rows of recurrent state, one per stream, with each row's next-token scores."""

    h: np.ndarray  # (L, B, H) float32
    c: np.ndarray  # (L, B, H) float32
    logits: np.ndarray  # (B, V) float32

    def __len__(self) -> int:
        return self.h.shape[1]


class FastLSTM:
    """Serve a :class:`CharLSTM` on the CPU: prefill, advance and row bookkeeping over :class:`FastState`."""

    def __init__(self, model: CharLSTM, threads: int = 1) -> None:
        config = model.config
        self.layers, self.hidden, self.vocab_size = config.num_layers, config.hidden_size, config.vocab_size
        self.threads = max(1, threads)
        weight = model.lstm.get_parameter

        def arr(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().float().cpu().numpy())

        with torch.no_grad():
            bias0 = weight("bias_ih_l0") + weight("bias_hh_l0")
            self.table0 = arr(model.embed.weight @ weight("weight_ih_l0").T + bias0)  # (V, 4H)
            self.w_hh0 = arr(weight("weight_hh_l0"))  # (4H, H)
            later = range(1, self.layers)
            hidden4 = 4 * self.hidden
            self.w_ih = arr(
                torch.stack([weight(f"weight_ih_l{k}") for k in later])
                if later
                else torch.zeros(1, hidden4, self.hidden)
            )
            self.w_hh = arr(
                torch.stack([weight(f"weight_hh_l{k}") for k in later])
                if later
                else torch.zeros(1, hidden4, self.hidden)
            )
            self.w_cat = np.ascontiguousarray(np.concatenate([self.w_ih, self.w_hh], axis=2))  # (L-1, 4H, 2H)
            self.b_cat = arr(
                torch.stack([weight(f"bias_ih_l{k}") + weight(f"bias_hh_l{k}") for k in later])
                if later
                else torch.zeros(1, hidden4)
            )
            self.head_w = arr(model.head.weight)  # (V, H)
            self.head_b = arr(model.head.bias)  # (V,)
        self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="text-step") if self.threads > 1 else None

    # -- rows ----------------------------------------------------------------
    def zero_state(self, batch: int) -> FastState:
        shape = (self.layers, batch, self.hidden)
        return FastState(
            np.zeros(shape, np.float32), np.zeros(shape, np.float32), np.zeros((batch, self.vocab_size), np.float32)
        )

    def select(self, state: FastState, rows: Sequence[int]) -> FastState:
        index = np.asarray(rows, dtype=np.int64)
        return FastState(state.h[:, index], state.c[:, index], state.logits[index])

    def concat(self, states: Sequence[FastState]) -> FastState:
        if len(states) == 1:
            return states[0]
        return FastState(
            np.concatenate([s.h for s in states], axis=1),
            np.concatenate([s.c for s in states], axis=1),
            np.concatenate([s.logits for s in states], axis=0),
        )

    # -- compute -------------------------------------------------------------
    def prefill(self, sequences: Sequence[Sequence[int]], state: FastState) -> FastState:
        """Read each sequence (non-empty) from its row of ``state``; rows hold the logits after it. Modifies and
        returns ``state``."""
        ids = [np.asarray(seq, dtype=np.int64) for seq in sequences]
        groups: list[list[int]] = [[] for _ in range(min(self.threads, len(ids)))]
        loads = [0] * len(groups)
        for r in sorted(range(len(ids)), key=lambda r: -len(ids[r])):  # longest first, each to the least loaded
            least = loads.index(min(loads))
            groups[least].append(r)
            loads[least] += len(ids[r])
        self._parallel([partial(self._prefill_rows, [(ids[r], r) for r in group], state) for group in groups])
        return state

    def _prefill_rows(self, rows: list[tuple[np.ndarray, int]], state: FastState) -> None:
        for ids, r in rows:
            _prefill(
                ids, r, state.h, state.c, state.logits, self.table0, self.w_hh0, self.w_ih, self.w_hh, self.b_cat,
                self.head_w, self.head_b,
            )  # fmt: skip

    def advance(self, state: FastState, rows: Sequence[int], rules: Sequence[RowRules], steps: int) -> list[list[int]]:
        """Draw up to ``steps`` tokens for each of ``rows`` under its rules, reading each into the state; returns
        each row's tokens (fewer when its budget ran out or a stop sequence completed). Updates ``state`` and each
        rule's random source."""
        count = len(rows)
        if count == 0 or steps < 1:
            return [[] for _ in rows]
        slots = max((len(r.stops) for r in rules), default=0) or 1
        stop_ids = np.zeros((count, slots, RECENT), np.int64)
        stop_lens = np.zeros((count, slots), np.int64)
        recent = np.zeros((count, RECENT), np.int64)
        recent_n = np.zeros(count, np.int64)
        for p, rule in enumerate(rules):
            if rule.stops:
                for s, ids in enumerate(rule.stops):
                    stop_ids[p, s, : len(ids)] = ids
                    stop_lens[p, s] = len(ids)
                tail = rule.recent[-RECENT:]
                recent[p, : len(tail)] = tail
                recent_n[p] = len(tail)
        row_index = np.asarray(rows, dtype=np.int64)
        temperature = np.array([r.params.temperature for r in rules], np.float64)
        top_k = np.array([r.params.top_k for r in rules], np.int64)
        top_p = np.array([r.params.top_p for r in rules], np.float64)
        seeds = np.array([r.random.seed for r in rules], np.uint64)
        counts = np.array([r.random.count for r in rules], np.uint64)
        budget = np.array([r.budget for r in rules], np.int64)
        out = np.zeros((count, steps), np.int64)
        produced = np.zeros(count, np.int64)

        def run(p0: int, p1: int) -> None:
            _advance(
                row_index, p0, p1, steps, state.h, state.c, state.logits, temperature, top_k, top_p, seeds,
                counts, budget, stop_ids, stop_lens, recent, recent_n, out, produced, self.table0, self.w_hh0,
                self.w_cat, self.b_cat, self.head_w, self.head_b,
            )  # fmt: skip

        parts = self._split(count)
        self._parallel([partial(run, a, b) for a, b in parts])
        for rule, drawn in zip(rules, counts.tolist(), strict=True):
            rule.random.count = drawn
        return [out[p, : produced[p]].tolist() for p in range(count)]

    def _split(self, count: int) -> list[tuple[int, int]]:
        """Contiguous parts of ``count`` rows, one per thread, each at least 8 rows (a multiple of 4 but the last)."""
        parts = max(1, min(self.threads, count // 8))
        size = math.ceil(count / parts / 4) * 4
        return [(a, min(a + size, count)) for a in range(0, count, size)]

    def _parallel(self, calls: list[Callable[[], None]]) -> None:
        if self._pool is None or len(calls) == 1:
            for call in calls:
                call()
            return
        futures = [self._pool.submit(call) for call in calls[1:]]
        calls[0]()
        for future in futures:
            future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
