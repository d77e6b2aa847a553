"""chunkqa.methods.dca.attention against the independent float64 reference (tests/dca_reference.py)."""

from __future__ import annotations

import pytest
import torch
from dca_reference import plain_rope, reference_dca

from chunkqa.methods.dca.attention import dca_attention
from chunkqa.methods.kernels import KERNELS, merge
from chunkqa.methods.rope import rotate

CHUNK, WINDOW = 24, 4
S = CHUNK - WINDOW  # 20 tokens per chunk
LENGTHS = [7, 19, 20, 21, 39, 40, 41, 59, 60, 61, 87]  # below s, multiples of s, and multiples +- 1


def inv_freq(dim: int) -> torch.Tensor:
    return 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))


def tables(dim: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    angles = torch.arange(CHUNK + 1, dtype=torch.float64)[:, None] * inv_freq(dim)  # [c + 1, D/2]
    emb = torch.cat((angles, angles), dim=-1)  # [c + 1, D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def random_qkv(length: int, heads: int, kv_heads: int, dim: int, seed: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, heads, length, dim, generator=gen, dtype=torch.float64)
    k = torch.randn(2, kv_heads, length, dim, generator=gen, dtype=torch.float64)
    v = torch.randn(2, kv_heads, length, dim, generator=gen, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def run_dca(
    q, k, v, kernel: str, pieces: list[int] | None = None, batch_chunks: bool = False
) -> torch.Tensor:
    """DCA through the implementation, feeding queries in pieces of the given sizes."""
    length, dim = q.shape[2], q.shape[3]
    cos, sin = tables(dim, q.dtype)
    key_pos = torch.arange(length) % S
    k_rot = rotate(k, cos[key_pos], sin[key_pos])
    pieces = pieces or [length]
    outs, start = [], 0
    for size in pieces:
        end = start + size
        outs.append(
            dca_attention(
                q[:, :, start:end],
                k_rot[:, :, :end],
                v[:, :, :end],
                start,
                cos,
                sin,
                S,
                CHUNK,
                dim**-0.5,
                KERNELS[kernel],
                batch_chunks=batch_chunks,
            )
        )
        start = end
    return torch.cat(outs, dim=2)


def reference(q, k, v) -> torch.Tensor:
    return reference_dca(q, k, v, CHUNK, WINDOW, q.shape[-1] ** -0.5, plain_rope(inv_freq(q.shape[-1])))


@pytest.mark.parametrize("batch_chunks", [False, True])
@pytest.mark.parametrize("kernel", ["math", "sdpa-cpu"])
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # GQA ratios 1, 2, 4
@pytest.mark.parametrize("length", LENGTHS)
def test_prefill_matches_reference(length, kv_heads, dim, kernel, batch_chunks):
    q, k, v = random_qkv(length, 4, kv_heads, dim, seed=length * 7 + kv_heads)
    out = run_dca(q, k, v, kernel, batch_chunks=batch_chunks)
    torch.testing.assert_close(out, reference(q, k, v), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("pieces", [[1] * 45, [7, 13, 1, 24], [20, 20, 5], [3, 41, 1], [25, 62], [20, 60, 7]])
@pytest.mark.parametrize("kv_heads", [4, 1])
@pytest.mark.parametrize("batch_chunks", [False, True])
def test_pieces_and_decode_match_reference(pieces, kv_heads, batch_chunks):
    length = sum(pieces)
    q, k, v = random_qkv(length, 4, kv_heads, 64, seed=len(pieces))
    out = run_dca(q, k, v, "sdpa-cpu", pieces, batch_chunks)
    torch.testing.assert_close(out, reference(q, k, v), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_low_precision_close_to_reference(dtype, tol):
    q, k, v = random_qkv(87, 4, 2, 64, seed=3)
    out = run_dca(q.to(dtype), k.to(dtype), v.to(dtype), "sdpa-cpu").double()
    ref = reference(q, k, v)
    assert (out - ref).norm() / ref.norm() < tol


def test_below_one_chunk_is_plain_causal_attention():
    q, k, v = random_qkv(S - 1, 4, 2, 64, seed=11)
    cos, sin = tables(64)
    pos = torch.arange(S - 1)
    qr, kr = rotate(q, cos[pos], sin[pos]), rotate(k, cos[pos], sin[pos])
    plain = torch.nn.functional.scaled_dot_product_attention(qr, kr, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(run_dca(q, k, v, "sdpa-cpu"), plain, rtol=1e-10, atol=1e-10)


def test_far_keys_see_the_chunk_size_position():
    """A query several chunks on treats every older key as if it sat c positions away (minus key pos)."""
    q, k, v = random_qkv(3 * S + 1, 1, 1, 64, seed=5)
    out = run_dca(q, k, v, "math")
    # moving an old key by a whole number of chunks changes nothing for the last query
    k2, v2 = k.clone(), v.clone()
    k2[:, :, [0, S]] = k[:, :, [S, 0]]
    v2[:, :, [0, S]] = v[:, :, [S, 0]]
    out2 = run_dca(q, k2, v2, "math")
    torch.testing.assert_close(out[:, :, -1], out2[:, :, -1], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(out[:, :, S + 1], out2[:, :, S + 1])  # but chunk 1 sees chunk 0 exactly


def test_merge_equals_one_softmax():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 5, 16, generator=gen, dtype=torch.float64)
    k = torch.randn(1, 2, 30, 16, generator=gen, dtype=torch.float64)
    v = torch.randn(1, 2, 30, 16, generator=gen, dtype=torch.float64)
    parts = [
        KERNELS["math"](q, k[:, :, a:b], v[:, :, a:b], False, 0.25) for a, b in [(0, 4), (4, 21), (21, 30)]
    ]
    whole, _ = KERNELS["math"](q, k, v, False, 0.25)
    torch.testing.assert_close(merge(parts), whole, rtol=1e-12, atol=1e-12)


def test_wrong_cache_length_is_refused():
    q, k, v = random_qkv(10, 2, 2, 64, seed=1)
    cos, sin = tables(64)
    with pytest.raises(ValueError, match="every key"):
        dca_attention(q, k[:, :, :5], v[:, :, :5], 0, cos, sin, S, CHUNK, 0.125, KERNELS["math"])


def test_whole_chunks_share_their_kernel_calls():
    """batch_chunks: 87 tokens = 4 whole chunks and 7 more: the whole chunks' own squares take one call, their
    previous-chunk blocks one, and chunks 2 and 3 one each for the older keys; the partial chunk 4
    takes its three. Seven calls instead of twelve, and the same output."""
    calls = []

    def counting(q, k, v, causal, scale):
        calls.append((q.shape[0], q.shape[-2], k.shape[-2], causal))
        return KERNELS["math"](q, k, v, causal, scale)

    q, k, v = random_qkv(87, 4, 2, 64, seed=11)
    cos, sin = tables(64)
    k_rot = rotate(k, cos[torch.arange(87) % S], sin[torch.arange(87) % S])
    out = dca_attention(q, k_rot, v, 0, cos, sin, S, CHUNK, 64**-0.5, counting, batch_chunks=True)
    torch.testing.assert_close(out, reference(q, k, v), rtol=1e-10, atol=1e-10)
    batch = q.shape[0]
    assert calls[:2] == [(batch * 4, S, S, True), (batch * 3, 2 * S, S, False)]  # folded: GQA rows stacked
    assert len(calls) == 7
    calls.clear()
    alone = dca_attention(q, k_rot, v, 0, cos, sin, S, CHUNK, 64**-0.5, counting)
    torch.testing.assert_close(alone, out, rtol=1e-12, atol=1e-12)
    assert len(calls) == 12  # 1 + 2 + 3 + 3 + 3: a call per range per chunk
