"""DCA for a few queries in one fused pass: positions as tensors, the chunk structure as a mask.

The kernel path (chunkqa.methods.dca.attention) splits the keys into up to four ranges and calls an
attention kernel per range: right for long prefills, but for one query (decoding) or a short
question it is dozens of tiny launches per layer, and kernels that plan per shape (cuDNN) re-plan
at every new cache length. Here every query is rotated at its three DCA positions at once,
    own chunk   i mod s          previous chunk   min(i mod s + s, c)          older   c
scored against all keys in one matmul, and each (query, key) pair picks its variant by the key's
chunk; keys after the query are masked. The same softmax as the kernel path: scores and softmax in
float32 (float64 for float64 inputs), and on a GPU half-precision weights times the values, as
flash kernels do.

Shapes are fixed by the key buffer, not by Python offsets, so a decode step written this way can be
captured in a CUDA graph: `q_pos` is a tensor, and keys past the queries are simply masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from chunkqa.methods.kernels import merge
from chunkqa.methods.rope import rotate

SCORE_BYTES = 64 * 2**20  # float32 scores formed at a time: the keys go in blocks below this
SPLIT = 512  # keys per part when weighting the values (see weighted_values)
HALF = (torch.bfloat16, torch.float16)


def key_block(batch: int, heads: int, queries: int, keys: int) -> int:
    """Keys per block so that one block's scores [B, H, n, 3, block] stay under SCORE_BYTES."""
    per_key = batch * heads * queries * 3 * 4
    return max(256, min(keys, SCORE_BYTES // per_key))


@dataclass(frozen=True)
class MaskPlan:
    """What every layer of one forward shares: the queries' RoPE tables and each key block's mask.

    cos, sin: [n, 3, D] for the three query positions; blocks: (lo, hi, variant, hidden) with
    variant [n, m] (0 own chunk, 1 previous, 2 older) and hidden [n, m] (keys after the query).
    """

    cos: torch.Tensor
    sin: torch.Tensor
    blocks: tuple[tuple[int, int, torch.Tensor, torch.Tensor], ...]


def plan_masks(
    q_pos: torch.Tensor,
    length: int,
    heads: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    chunk_len: int,
    chunk_size: int,
) -> MaskPlan:
    """The mask plan for queries at q_pos [n] over `length` keys, for `heads` query heads (batch 1)."""
    chunk = q_pos // chunk_len  # [n]
    own = q_pos - chunk * chunk_len  # [n]
    where = torch.stack([own, (own + chunk_len).clamp(max=chunk_size), torch.full_like(own, chunk_size)], -1)
    block = key_block(1, heads, q_pos.shape[0], length)
    blocks = []
    for lo in range(0, length, block):
        keys = torch.arange(lo, min(lo + block, length), device=q_pos.device)  # [m]
        variant = (chunk[:, None] - keys[None, :] // chunk_len).clamp(0, 2)  # [n, m]
        blocks.append((lo, lo + keys.shape[0], variant, keys[None, :] > q_pos[:, None]))
    return MaskPlan(cos[where], sin[where], tuple(blocks))


def masked_dca_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    chunk_len: int,
    chunk_size: int,
    scale: float,
    plan: MaskPlan | None = None,
) -> torch.Tensor:
    """DCA of queries q [B, H, n, D] (not rotated) at absolute positions q_pos [n] (int64).

    k, v: [B, Hkv, L, D], keys rotated at (position mod chunk_len); keys at positions past a query
    (including any unfilled tail of a buffer) are masked, but must be finite: a masked weight of 0
    times a NaN value is NaN (chunkqa.engine.kvcache zeroes its buffers). cos, sin: [chunk_size + 1, D].
    `plan`: plan_masks' result for these positions, when the caller shares one across layers.
    returns [B, H, n, D] in q's dtype.
    """
    batch, heads, n, dim = q.shape
    kv_heads = k.shape[1]
    groups = heads // kv_heads
    if plan is None or batch != 1:
        plan = plan_masks(q_pos, k.shape[2], heads * batch, cos, sin, chunk_len, chunk_size)
    qv = rotate(q[:, :, :, None, :], plan.cos, plan.sin)  # [B, H, n, 3, D]
    qv = qv.reshape(batch, kv_heads, groups * n * 3, dim)  # the query heads of one KV head stacked
    alone = len(plan.blocks) == 1
    parts = [_block(qv, k, v, block, scale, groups, n, alone) for block in plan.blocks]
    out = parts[0][0] if alone else merge(parts)  # [B, Hkv, G*n, D]
    return out.reshape(batch, heads, n, dim).to(q.dtype)


def _block(qv, k, v, block, scale: float, groups: int, n: int, alone: bool):
    """(out [B, Hkv, G*n, D] float32, lse [B, Hkv, G*n] or None when `alone`) over one key block."""
    lo, hi, variant, hidden = block
    batch, kv_heads = k.shape[:2]
    scores = query_key_scores(qv, k[:, :, lo:hi]) * scale  # [B, Hkv, G*n*3, m] float32 (or float64)
    scores = scores.view(batch, kv_heads, groups, n, 3, hi - lo)
    index = variant[None, None, None, :, None, :].expand(batch, kv_heads, groups, n, 1, hi - lo)
    chosen = scores.gather(4, index)[:, :, :, :, 0]  # [B, Hkv, G, n, m]
    chosen = chosen.masked_fill(hidden, float("-inf")).reshape(batch, kv_heads, groups * n, hi - lo)
    if alone:  # every query sees at least key 0 here: a plain softmax, no log-sum-exp to merge
        probs, lse = torch.softmax(chosen, dim=-1), None
    else:
        lse = torch.logsumexp(chosen, dim=-1)  # [B, Hkv, G*n]; -inf where a query sees no key here
        finite = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        probs = torch.exp(chosen - finite[..., None])
    if probs.is_cuda and v.dtype in HALF:  # as flash kernels do: half-precision weights, one GEMM
        return (probs.to(v.dtype) @ v[:, :, lo:hi]).to(probs.dtype), lse
    return weighted_values(probs, v[:, :, lo:hi]), lse


def query_key_scores(qv: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """qv [B, Hkv, R, D] @ k [B, Hkv, m, D]^T with float32 results (float64 for float64 inputs).

    On a GPU, half-precision inputs go into one GEMM with a float32 output (no float32 copy of the
    keys); elsewhere both sides are upcast first.
    """
    if qv.is_cuda and qv.dtype in HALF and k.dtype == qv.dtype:
        batch, kv_heads, rows, dim = qv.shape
        keys = k.reshape(batch * kv_heads, k.shape[2], dim).transpose(1, 2)  # [B*Hkv, D, m]
        try:
            out = torch.bmm(qv.reshape(batch * kv_heads, rows, dim), keys, out_dtype=torch.float32)
            return out.view(batch, kv_heads, rows, k.shape[2])
        except (TypeError, RuntimeError, NotImplementedError):  # a torch without bmm's out_dtype
            pass
    acc = torch.promote_types(qv.dtype, torch.float32)
    return qv.to(acc) @ k.to(acc).transpose(-1, -2)


def weighted_values(probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """probs [B, Hkv, M, m] @ v [B, Hkv, m, D] in probs' dtype, the key axis cut into SPLIT-key parts.

    A few query rows against many keys is a matrix product with one long reduction: as one GEMM it
    keeps only a handful of GPU blocks busy. Cut into parts (zero-padded), it is a batch of small
    products summed afterwards.
    """
    batch, kv_heads, rows, m = probs.shape
    if SPLIT <= 0 or m <= SPLIT:
        return probs @ v.to(probs.dtype)
    parts = -(-m // SPLIT)
    padded = v.new_zeros((batch, kv_heads, parts * SPLIT, v.shape[-1]), dtype=probs.dtype)
    padded[:, :, :m] = v
    weights = torch.nn.functional.pad(probs, (0, parts * SPLIT - m))  # [B, Hkv, M, parts * SPLIT]
    weights = weights.view(batch, kv_heads, rows, parts, SPLIT).transpose(2, 3)  # [B, Hkv, parts, M, SPLIT]
    return (weights @ padded.view(batch, kv_heads, parts, SPLIT, -1)).sum(2)  # [B, Hkv, M, D]
