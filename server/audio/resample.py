"""Whole-signal rate conversion, torch-free: a file, an espeak-ng rendering or a client's audio brought to the rate
a model reads (a streaming converter for replies lives with the wire format, in ``server/transport/wire.py``)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from server.audio.constants import SAMPLE_RATE

# The largest term of a conversion ratio used as is (44.1 kHz to 16 kHz is 160 / 441). Beyond it the ratio is
# rounded: 16 kHz from 47,999 Hz exactly is 16,000 / 47,999, a filter of half a million taps (70 ms of a core per
# second of audio, a client's to ask for), while 1 / 3 is 0.002% off in pace and takes 1 ms.
MAX_TERMS = 1024


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """``x`` sampled at ``rate`` Hz as float32 at ``target`` Hz (a polyphase low-pass; ``x`` itself, as float32,
    when the rates agree)."""
    if rate == target:
        return np.asarray(x, dtype=np.float32)
    from scipy.signal import resample_poly  # scipy: loaded by the first conversion, not by every import

    ratio = Fraction(int(target), int(rate)).limit_denominator(MAX_TERMS)
    return resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)
