"""chunkqa.methods.dca.masked: the fused masked DCA pass equals the kernel path, in float64."""

from __future__ import annotations

import pytest
import torch

from chunkqa.methods.dca import masked
from chunkqa.methods.dca.attention import dca_attention
from chunkqa.methods.dca.masked import key_block, masked_dca_attention
from chunkqa.methods.kernels import math_attention
from chunkqa.methods.rope import rotate

CHUNK, WINDOW = 12, 3  # c and w: s = 9 positions per chunk
S = CHUNK - WINDOW


def tables(dim: int):
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    angles = torch.arange(CHUNK + 1, dtype=torch.float64)[:, None] * inv[None, :]
    emb = torch.cat([angles, angles], dim=-1)  # [c + 1, D]
    return emb.cos(), emb.sin()


def inputs(start: int, n: int, heads: int, kv_heads: int, dim: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, n, dim, generator=gen, dtype=torch.float64)
    k = torch.randn(1, kv_heads, start + n, dim, generator=gen, dtype=torch.float64)
    v = torch.randn(1, kv_heads, start + n, dim, generator=gen, dtype=torch.float64)
    cos, sin = tables(dim)
    kpos = torch.arange(start + n) % S
    return q, rotate(k, cos[kpos], sin[kpos]), v, cos, sin


@pytest.mark.parametrize("start,n", [(0, 1), (0, 30), (8, 1), (9, 1), (40, 1), (40, 7), (17, 20), (100, 3)])
@pytest.mark.parametrize("heads,kv_heads", [(2, 2), (4, 2), (4, 1)])
def test_matches_kernel_path(start, n, heads, kv_heads):
    q, k, v, cos, sin = inputs(start, n, heads, kv_heads, seed=start + n)
    expected = dca_attention(q, k, v, start, cos, sin, S, CHUNK, 0.3, math_attention)
    got = masked_dca_attention(q, k, v, torch.arange(start, start + n), cos, sin, S, CHUNK, 0.3)
    assert got.shape == expected.shape and got.dtype == q.dtype
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_keys_past_the_queries_are_masked():
    """A buffer longer than the positions so far (garbage in its tail) gives the same answer."""
    q, k, v, cos, sin = inputs(30, 2, 4, 2)
    tail = torch.full((1, 2, 50, 8), 1e3, dtype=torch.float64)
    pos = torch.arange(30, 32)
    expected = masked_dca_attention(q, k, v, pos, cos, sin, S, CHUNK, 0.3)
    got = masked_dca_attention(
        q, torch.cat([k, tail], 2), torch.cat([v, tail], 2), pos, cos, sin, S, CHUNK, 0.3
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_a_nan_in_the_unfilled_tail_poisons_the_answer():
    """Why chunkqa.engine.kvcache zeroes its buffers: masking gives 0 weights, and 0 x NaN is NaN."""
    q, k, v, cos, sin = inputs(30, 1, 4, 2)
    tail = torch.full((1, 2, 5, 8), float("nan"), dtype=torch.float64)
    got = masked_dca_attention(
        q, torch.cat([k, tail], 2), torch.cat([v, tail], 2), torch.tensor([30]), cos, sin, S, CHUNK, 0.3
    )
    assert torch.isnan(got).all()


def test_keys_in_blocks_merge_exactly(monkeypatch):
    """Scores formed block by block (some blocks seeing no key for early queries) merge exactly."""
    q, k, v, cos, sin = inputs(0, 700, 2, 1, seed=3)
    pos = torch.arange(700)
    whole = masked_dca_attention(q, k, v, pos, cos, sin, S, CHUNK, 0.3)
    monkeypatch.setattr(masked, "SCORE_BYTES", 2 * 700 * 3 * 4 * 256)  # 256-key blocks, 3 of them
    assert key_block(1, 2, 700, 700) == 256
    blocked = masked_dca_attention(q, k, v, pos, cos, sin, S, CHUNK, 0.3)
    assert torch.isfinite(blocked).all()
    torch.testing.assert_close(blocked, whole, rtol=1e-10, atol=1e-10)
    expected = dca_attention(q, k, v, 0, cos, sin, S, CHUNK, 0.3, math_attention)
    torch.testing.assert_close(blocked, expected, rtol=1e-10, atol=1e-10)


def test_half_precision_inputs_come_back_in_their_dtype():
    q, k, v, cos, sin = inputs(25, 1, 4, 2)
    expected = masked_dca_attention(q, k, v, torch.tensor([25]), cos, sin, S, CHUNK, 0.3)
    half = [t.to(torch.bfloat16) for t in (q, k, v, cos, sin)]
    got = masked_dca_attention(*half[:3], torch.tensor([25]), *half[3:], S, CHUNK, 0.3)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), expected, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("split", [0, 7, 64, 1000])
def test_values_weighted_in_parts_equal_one_product(monkeypatch, split):
    gen = torch.Generator().manual_seed(5)
    probs = torch.rand(1, 2, 6, 300, generator=gen, dtype=torch.float64)
    v = torch.randn(1, 2, 300, 8, generator=gen, dtype=torch.float64)
    monkeypatch.setattr(masked, "SPLIT", split)
    torch.testing.assert_close(masked.weighted_values(probs, v), probs @ v, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("start,n", [(4999, 1), (4990, 11)])
def test_half_precision_on_gpu_matches_float64(start, n):
    """The GPU's half-precision GEMMs (float32 scores, bf16 weights) against float64 on the CPU."""
    q, k, v, cos, sin = inputs(start, n, 32, 8, dim=128, seed=9)
    cap = torch.zeros(1, 8, 1024, 128, dtype=torch.float64)  # a buffer tail past the queries
    k, v = torch.cat([k, cap], 2), torch.cat([v, cap], 2)
    pos = torch.arange(start, start + n)
    expected = masked_dca_attention(q, k, v, pos, cos, sin, S, CHUNK, 128**-0.5)
    half = [t.to("cuda", torch.bfloat16) for t in (q, k, v, cos, sin)]
    got = masked_dca_attention(*half[:3], pos.cuda(), *half[3:], S, CHUNK, 128**-0.5)
    err = (got.double().cpu() - expected).norm() / expected.norm()
    assert err < 2e-2, err
