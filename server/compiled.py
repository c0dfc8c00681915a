"""Small numba building blocks shared by the compiled text and audio steps.

- :func:`tanh`: a rational approximation (|error| < 1e-6) that vectorizes, unlike a call into libm;
  ``sigmoid(x) = (1 + tanh(x / 2)) / 2``.
- :func:`matvec`: one stream's matrix-vector product plus an initial vector, four weight rows at a time (the
  WaveNet's step and the text model's prompt reading);
- :func:`uniform`: draw ``n`` of a stream's counter-based random source, ``splitmix64(seed + n * GAMMA)`` as in
  ``server/sampling.py``, so compiled and NumPy sampling draw the same numbers.
"""

from __future__ import annotations

import numba
import numpy as np

from server.sampling import GAMMA, MIX1, MIX2


@numba.njit(cache=True, fastmath=True, inline="always")
def tanh(x: float) -> float:
    # Eigen's float tanh: a 13/6 rational approximation on [-7.9, 7.9], saturating outside.
    x = min(max(x, -7.90531110763549805), 7.90531110763549805)
    x2 = x * x
    p = x2 * -2.76076847742355e-16 + 2.00018790482477e-13
    p = x2 * p + -8.60467152213735e-11
    p = x2 * p + 5.12229709037114e-08
    p = x2 * p + 1.48572235717979e-05
    p = x2 * p + 6.37261928875436e-04
    p = x2 * p + 4.89352455891786e-03
    p = x * p
    q = x2 * 1.19825839466702e-06 + 1.18534705686654e-04
    q = x2 * q + 2.26843463243900e-03
    q = x2 * q + 4.89352518554385e-03
    return p / q


@numba.njit(cache=True, inline="always")
def uniform(seed: np.uint64, count: np.uint64) -> float:
    """Draw number ``count`` (counted from 1) of the source seeded ``seed``: a float64 in [0, 1)."""
    z = seed + count * GAMMA
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * 2.0**-53


@numba.njit(cache=True, fastmath=True, inline="always", error_model="numpy")
def matvec(wt, x, init, out):
    """out[j] = init[j] + dot(wt[j], x), four rows at a time (each row's sum in a fixed order).

    Inlined, it takes the caller's flags: call it from a ``fastmath=True`` function, or its sums do not vectorize
    (four times slower)."""
    rows = wt.shape[0]
    k = x.shape[0]
    j = 0
    while j + 4 <= rows:
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        r0 = wt[j]
        r1 = wt[j + 1]
        r2 = wt[j + 2]
        r3 = wt[j + 3]
        for i in range(k):
            v = x[i]
            a0 += v * r0[i]
            a1 += v * r1[i]
            a2 += v * r2[i]
            a3 += v * r3[i]
        out[j] = init[j] + a0
        out[j + 1] = init[j + 1] + a1
        out[j + 2] = init[j + 2] + a2
        out[j + 3] = init[j + 3] + a3
        j += 4
    while j < rows:
        acc = np.float32(0.0)
        for i in range(k):
            acc += x[i] * wt[j, i]
        out[j] = init[j] + acc
        j += 1
