"""The audio constants every layer shares, torch-free so that the transports and the data code can import them."""

from __future__ import annotations

SAMPLE_RATE = 16_000  # Hz: espeak-ng renderings, the WaveNet's output, the keyword spotter's input
