import numpy as np

from server.audio.mulaw import decode, encode


def test_silence_is_code_128() -> None:
    """0.0 encodes to 128 and the extremes to 0 and 255."""
    assert encode([0.0, -1.0, 1.0, -5.0, 5.0]).tolist() == [128, 0, 255, 0, 255]


def test_round_trip_within_half_a_bin() -> None:
    """Every code decodes to a value that encodes back to the same code."""
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(encode(decode(codes)), codes)
