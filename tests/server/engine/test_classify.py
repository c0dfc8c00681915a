"""The classifiers' input shapes: few of them, whatever the request, so oneDNN's compiled kernels are reused."""

from __future__ import annotations

import torch

from server.engine.classify import shape_batches


def test_windows_are_read_in_few_batch_shapes() -> None:
    """Any number of windows is read in power-of-two batches of at most 64, in order."""
    shapes = set()
    for count in range(1, 400):
        parts = shape_batches(torch.arange(count), largest=64)
        assert torch.equal(torch.cat(parts), torch.arange(count))
        assert all(len(p) & (len(p) - 1) == 0 and len(p) <= 64 for p in parts)
        shapes |= {len(p) for p in parts}
    assert shapes == {1, 2, 4, 8, 16, 32, 64}
