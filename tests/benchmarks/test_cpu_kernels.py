"""benchmarks/cpu_kernels.py times the computation it names: the segmented flash call is exact."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from cpu_kernels import _segmented


def test_segmented_flash_equals_one_softmax():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 3, 3, 64, generator=gen, dtype=torch.float64)
    kv = torch.randn(2, 1, 3, 96, 64, generator=gen, dtype=torch.float64)
    scores = q @ kv[0].transpose(-1, -2) / 8  # the kernel's default scale, 1/sqrt(64)
    expected = torch.softmax(scores, -1) @ kv[1]
    torch.testing.assert_close(_segmented(q, kv, 8), expected[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="equal segments"):
        _segmented(q, kv[:, :, :, :90], 8)
