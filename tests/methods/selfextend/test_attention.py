"""chunkqa.methods.selfextend.attention against the independent float64 reference.

The reference is tests/selfextend_reference.py; the test rotates queries and keys itself.
"""

from __future__ import annotations

import pytest
import torch
from selfextend_reference import plain_rope, reference_selfextend

from chunkqa.methods.kernels import KERNELS
from chunkqa.methods.rope import rotate
from chunkqa.methods.selfextend import attention
from chunkqa.methods.selfextend.attention import selfextend_attention

# (G, W): G dividing W, G not dividing W, G = 1 (plain attention), W = 1 (only the token itself)
SETTINGS = [(4, 8), (3, 8), (5, 7), (1, 6), (2, 1)]
# below W, at W - 1, W, W + 1 (the first pair at distance W - 1, W, W + 1 appears), 2W, and longer
LENGTHS = [7, 8, 9, 10, 17, 70]


def inv_freq(dim: int) -> torch.Tensor:
    return 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))


def tables(length: int, dim: int, dtype: torch.dtype = torch.float64):
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq(dim)  # [T, D/2]
    emb = torch.cat((angles, angles), dim=-1)  # [T, D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def random_qkv(length: int, heads: int, kv_heads: int, dim: int, seed: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, heads, length, dim, generator=gen, dtype=torch.float64)
    k = torch.randn(2, kv_heads, length, dim, generator=gen, dtype=torch.float64)
    v = torch.randn(2, kv_heads, length, dim, generator=gen, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def rotated(q, k, group: int, window: int):
    """The test's own rotation: q2 [B, H, L, 2, D] at (i, i//G + W - W//G), k2 [B, Hkv, L, 2D] at j | j//G."""
    length, dim = q.shape[2], q.shape[3]
    cos, sin = tables(length + window + 1, dim, q.dtype)
    pos = torch.arange(length)
    qpos = [pos, pos // group + window - window // group]
    kpos = [pos, pos // group]
    q2 = torch.stack([rotate(q, cos[p], sin[p]) for p in qpos], dim=3)
    k2 = torch.cat([rotate(k, cos[p], sin[p]) for p in kpos], dim=-1)
    return q2, k2


def run(q, k, v, group: int, window: int, kernel: str, pieces: list[int] | None = None) -> torch.Tensor:
    """SelfExtend through the implementation, feeding queries in pieces of the given sizes."""
    q2, k2 = rotated(q, k, group, window)
    outs, start = [], 0
    for size in pieces or [q.shape[2]]:
        end = start + size
        outs.append(
            selfextend_attention(
                q2[:, :, start:end],
                k2[:, :, :end],
                v[:, :, :end],
                start,
                window,
                q.shape[-1] ** -0.5,
                KERNELS[kernel],
            )
        )
        start = end
    return torch.cat(outs, dim=2)


def reference(q, k, v, group: int, window: int) -> torch.Tensor:
    dim = q.shape[-1]
    return reference_selfextend(q, k, v, group, window, dim**-0.5, plain_rope(inv_freq(dim)))


@pytest.mark.parametrize("kernel", ["math", "sdpa-cpu"])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # GQA ratios 1, 2, 4
@pytest.mark.parametrize(("group", "window"), SETTINGS)
@pytest.mark.parametrize("length", LENGTHS)
def test_prefill_matches_reference(length, group, window, kv_heads, kernel):
    q, k, v = random_qkv(length, 4, kv_heads, 16, seed=length * 7 + kv_heads + group)
    out = run(q, k, v, group, window, kernel)
    torch.testing.assert_close(out, reference(q, k, v, group, window), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("block", [1, 3, 8, 13, 64])  # shorter than W, W, and taller than W
@pytest.mark.parametrize(("group", "window"), [(4, 8), (3, 8)])
def test_query_blocks_of_any_height(monkeypatch, block, group, window):
    """Blocks no taller than W take the kernel for the diagonal; taller ones fold it into the band."""
    monkeypatch.setattr(attention, "QUERY_BLOCK", block)
    q, k, v = random_qkv(45, 4, 2, 16, seed=block)
    torch.testing.assert_close(
        run(q, k, v, group, window, "sdpa-cpu"), reference(q, k, v, group, window), rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize("pieces", [[1] * 30, [7, 13, 1, 24], [8, 8, 9], [3, 41, 1], [9, 1, 1, 20]])
@pytest.mark.parametrize("kv_heads", [4, 1])
def test_pieces_and_decode_match_reference(pieces, kv_heads):
    length = sum(pieces)
    q, k, v = random_qkv(length, 4, kv_heads, 16, seed=len(pieces))
    out = run(q, k, v, 3, 8, "sdpa-cpu", pieces)
    torch.testing.assert_close(out, reference(q, k, v, 3, 8), rtol=1e-10, atol=1e-10)


def test_each_pair_uses_the_variant_of_its_distance():
    """Editing one key's grouped half changes a query's output only if the key is W or more back;
    editing its neighbor half only if it is fewer than W back (W - 1 is neighbor, W is grouped)."""
    group, window, length = 3, 8, 30
    q, k, v = random_qkv(length, 2, 1, 16, seed=3)
    q2, k2 = rotated(q, k, group, window)
    last = length - 1

    def out_last(keys):
        return selfextend_attention(q2, keys, v, 0, window, 0.25, KERNELS["math"])[:, :, last]

    base = out_last(k2)
    for distance in (window - 2, window - 1, window, window + 1):
        j = last - distance
        for half, dims in (("neighbor", slice(0, 16)), ("grouped", slice(16, 32))):
            edited = k2.clone()
            edited[:, :, j, dims] += 1.0
            changed = not torch.allclose(out_last(edited), base, rtol=0, atol=1e-12)
            assert changed == ((half == "grouped") == (distance >= window)), (distance, half)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_low_precision_close_to_reference(dtype, tol):
    q, k, v = random_qkv(70, 4, 2, 64, seed=3)
    out = run(q.to(dtype), k.to(dtype), v.to(dtype), 3, 8, "sdpa-cpu").double()
    ref = reference(q, k, v, 3, 8)
    assert out.dtype == torch.float64 and (out - ref).norm() / ref.norm() < tol


def test_within_the_window_is_plain_causal_attention():
    q, k, v = random_qkv(8, 4, 2, 16, seed=11)
    cos, sin = tables(8, 16)
    qr, kr = rotate(q, cos, sin), rotate(k, cos, sin)
    plain = torch.nn.functional.scaled_dot_product_attention(qr, kr, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(run(q, k, v, 4, 8, "sdpa-cpu"), plain, rtol=1e-12, atol=1e-12)


def test_wrong_cache_length_is_refused():
    q, k, v = random_qkv(10, 2, 2, 16, seed=1)
    q2, k2 = rotated(q, k, 4, 8)
    with pytest.raises(ValueError, match="every key"):
        selfextend_attention(q2, k2[:, :, :5], v[:, :, :5], 0, 8, 0.25, KERNELS["math"])


@pytest.mark.parametrize("window", [4, 8, 30])
def test_scores_stay_within_a_block(monkeypatch, window):
    """No L x L matrix: every kernel call takes at most a block of queries, and the fused band at most
    a block of queries against fewer than two blocks (or W) of keys."""
    block, length = 8, 100
    monkeypatch.setattr(attention, "QUERY_BLOCK", block)
    calls = []

    def kernel(q, k, v, causal, scale):
        calls.append(("kernel", q.shape[-2], k.shape[-2]))
        return KERNELS["math"](q, k, v, causal, scale)

    band = attention.masked_selfextend_attention

    def recording_band(q2, k, v, q_pos, window, scale, keys=None, **kwargs):
        calls.append(("band", q2.shape[2], keys[1] - keys[0]))
        return band(q2, k, v, q_pos, window, scale, keys=keys, **kwargs)

    monkeypatch.setattr(attention, "masked_selfextend_attention", recording_band)
    q, k, v = random_qkv(length, 2, 2, 16, seed=window)
    q2, k2 = rotated(q, k, 3, window)
    out = selfextend_attention(q2, k2, v, 0, window, 16**-0.5, kernel)
    torch.testing.assert_close(out, reference(q, k, v, 3, window), rtol=1e-10, atol=1e-10)
    assert all(rows <= block for _, rows, _ in calls)
    assert all(keys < min(window, block) + block for kind, _, keys in calls if kind == "band")
    grouped = [keys for kind, rows, keys in calls if kind == "kernel" and keys > 2 * block]
    assert grouped and all(keys <= length - window + 1 for keys in grouped)  # the long calls: kernels


@pytest.mark.parametrize("block", [2, 11, 40])
def test_query_block_given_by_keyword(block):
    """A caller's query_block (the GPU's default is taller than the CPU's) bounds every kernel call's
    queries and gives the reference's output."""
    heights = []

    def kernel(q, k, v, causal, scale):
        heights.append(q.shape[-2])
        return KERNELS["math"](q, k, v, causal, scale)

    q, k, v = random_qkv(45, 4, 2, 16, seed=block)
    q2, k2 = rotated(q, k, 4, 8)
    out = selfextend_attention(q2, k2, v, 0, 8, 16**-0.5, kernel, query_block=block)
    torch.testing.assert_close(out, reference(q, k, v, 4, 8), rtol=1e-10, atol=1e-10)
    groups = 4 // 2  # query heads per KV head: the kernel sees them folded into its rows
    assert heights and max(heights) <= block * groups
