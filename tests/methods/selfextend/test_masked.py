"""chunkqa.methods.selfextend.masked: the fused masked pass equals the kernel path, in float64."""

from __future__ import annotations

import pytest
import torch

from chunkqa.methods.kernels import math_attention
from chunkqa.methods.rope import rotate
from chunkqa.methods.selfextend import masked
from chunkqa.methods.selfextend.attention import selfextend_attention
from chunkqa.methods.selfextend.masked import key_block, masked_selfextend_attention

GROUP, WINDOW = 3, 8  # G does not divide W


def tables(length: int, dim: int):
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    emb = torch.cat([angles, angles], dim=-1)  # [T, D]
    return emb.cos(), emb.sin()


def inputs(start: int, n: int, heads: int, kv_heads: int, dim: int = 8, seed: int = 0):
    """q2 [1, H, n, 2, D] for positions start .. start+n-1, k2 [1, Hkv, start+n, 2D], v, positions."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, n, dim, generator=gen, dtype=torch.float64)
    k = torch.randn(1, kv_heads, start + n, dim, generator=gen, dtype=torch.float64)
    v = torch.randn(1, kv_heads, start + n, dim, generator=gen, dtype=torch.float64)
    cos, sin = tables(start + n + WINDOW + 1, dim)
    qpos = torch.arange(start, start + n)
    kpos = torch.arange(start + n)
    q2 = torch.stack(
        [rotate(q, cos[p], sin[p]) for p in (qpos, qpos // GROUP + WINDOW - WINDOW // GROUP)], dim=3
    )
    k2 = torch.cat([rotate(k, cos[p], sin[p]) for p in (kpos, kpos // GROUP)], dim=-1)
    return q2, k2, v, qpos


@pytest.mark.parametrize(
    ("start", "n"), [(0, 1), (0, 30), (6, 1), (7, 1), (8, 1), (9, 1), (40, 1), (40, 7), (17, 20), (100, 3)]
)
@pytest.mark.parametrize(("heads", "kv_heads"), [(2, 2), (4, 2), (4, 1)])
def test_matches_kernel_path(start, n, heads, kv_heads):
    q2, k, v, pos = inputs(start, n, heads, kv_heads, seed=start + n)
    expected = selfextend_attention(q2, k, v, start, WINDOW, 0.3, math_attention)
    got = masked_selfextend_attention(q2, k, v, pos, WINDOW, 0.3)
    assert got.shape == expected.shape and got.dtype == q2.dtype
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_keys_past_the_queries_are_masked():
    """A buffer longer than the positions so far (garbage in its tail) gives the same answer."""
    q2, k, v, pos = inputs(30, 2, 4, 2)
    expected = masked_selfextend_attention(q2, k, v, pos, WINDOW, 0.3)
    tail_k = torch.full((1, 2, 50, 16), 1e3, dtype=torch.float64)
    tail_v = torch.full((1, 2, 50, 8), 1e3, dtype=torch.float64)
    got = masked_selfextend_attention(
        q2, torch.cat([k, tail_k], 2), torch.cat([v, tail_v], 2), pos, WINDOW, 0.3
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_a_nan_in_the_unfilled_tail_poisons_the_answer():
    """Why chunkqa.engine.kvcache zeroes its buffers: masking gives 0 weights, and 0 x NaN is NaN."""
    q2, k, v, pos = inputs(30, 1, 4, 2)
    tail_k = torch.full((1, 2, 5, 16), float("nan"), dtype=torch.float64)
    tail_v = torch.full((1, 2, 5, 8), float("nan"), dtype=torch.float64)
    got = masked_selfextend_attention(
        q2, torch.cat([k, tail_k], 2), torch.cat([v, tail_v], 2), pos, WINDOW, 0.3
    )
    assert torch.isnan(got).all()


def test_keys_in_blocks_merge_exactly(monkeypatch):
    """Scores formed block by block (some blocks seeing no key for early queries) merge exactly."""
    q2, k, v, pos = inputs(0, 700, 2, 1, seed=3)
    whole = masked_selfextend_attention(q2, k, v, pos, WINDOW, 0.3)
    monkeypatch.setattr(masked, "SCORE_BYTES", 2 * 700 * 2 * 4 * 256)  # 256-key blocks, 3 of them
    assert key_block(1, 2, 700, 700) == 256
    blocked = masked_selfextend_attention(q2, k, v, pos, WINDOW, 0.3)
    assert torch.isfinite(blocked).all()
    torch.testing.assert_close(blocked, whole, rtol=1e-10, atol=1e-10)
    expected = selfextend_attention(q2, k, v, 0, WINDOW, 0.3, math_attention)
    torch.testing.assert_close(blocked, expected, rtol=1e-10, atol=1e-10)


def test_log_sum_exp_of_a_key_range():
    """With `keys` and `with_lse`, the pass is a partial attention that merges like a kernel's."""
    q2, k, v, pos = inputs(20, 5, 4, 2, seed=4)
    out, lse = masked_selfextend_attention(q2, k, v, pos, WINDOW, 0.3, keys=(3, 14), with_lse=True)
    neighbor = pos[:, None] - torch.arange(3, 14)[None, :] < WINDOW  # [n, m]: all keys precede all queries
    qn = q2[:, :, :, 0].double()
    qg = q2[:, :, :, 1].double()
    kk = k[:, :, 3:14].repeat_interleave(2, dim=1)  # [1, H, m, 2D]
    scores = (
        torch.where(neighbor, qn @ kk[..., :8].transpose(-1, -2), qg @ kk[..., 8:].transpose(-1, -2)) * 0.3
    )
    torch.testing.assert_close(lse, torch.logsumexp(scores, -1), rtol=1e-12, atol=1e-12)
    expected = torch.softmax(scores, -1) @ v[:, :, 3:14].repeat_interleave(2, dim=1)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_half_precision_inputs_come_back_in_their_dtype():
    q2, k, v, pos = inputs(25, 1, 4, 2)
    expected = masked_selfextend_attention(q2, k, v, pos, WINDOW, 0.3)
    got = masked_selfextend_attention(*(t.to(torch.bfloat16) for t in (q2, k, v)), pos, WINDOW, 0.3)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), expected, rtol=3e-2, atol=3e-2)


@pytest.mark.gpu
@pytest.mark.parametrize(("start", "n"), [(4999, 1), (4990, 11)])
def test_half_precision_on_gpu_matches_float64(start, n):
    """The GPU's half-precision GEMMs (float32 scores, bf16 weights) against float64 on the CPU."""
    q2, k, v, pos = inputs(start, n, 32, 8, dim=128, seed=9)
    k = torch.cat([k, torch.zeros(1, 8, 1024, 256, dtype=torch.float64)], 2)  # a buffer tail
    v = torch.cat([v, torch.zeros(1, 8, 1024, 128, dtype=torch.float64)], 2)
    expected = masked_selfextend_attention(q2, k, v, pos, WINDOW, 128**-0.5)
    half = [t.to("cuda", torch.bfloat16) for t in (q2, k, v)]
    got = masked_selfextend_attention(*half, pos.cuda(), WINDOW, 128**-0.5)
    err = (got.double().cpu() - expected).norm() / expected.norm()
    assert err < 2e-2, err
