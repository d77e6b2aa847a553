"""SelfExtend for a few queries in one fused pass: both variants scored, each pair picks one by i - j.

Each query comes rotated at its two positions (neighbor and grouped, chunkqa.methods.selfextend.
positions); each key is cached as [neighbor | grouped]. Per block of keys the pass forms both score
matrices (neighbor query x neighbor key, grouped query x grouped key), keeps the neighbor score
where i - j < W and the grouped one elsewhere, masks keys after the query, and takes one softmax:
float32 scores (float64 for float64 inputs), and on a GPU half-precision weights times the values,
as flash kernels do. Blocks merge by log-sum-exp.

Shapes are fixed by the key buffer, not by Python offsets, so a decode step written this way can be
captured in a CUDA graph: `q_pos` is a tensor, and keys past the queries are simply masked. The
kernel path (chunkqa.methods.selfextend.attention) uses the same pass, with its log-sum-exp, for the
band of keys next to the diagonal where both variants mix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from chunkqa.methods.dca.masked import query_key_scores, weighted_values
from chunkqa.methods.kernels import merge

SCORE_BYTES = 64 * 2**20  # float32 scores formed at a time: the keys go in blocks below this
HALF = (torch.bfloat16, torch.float16)


def key_block(batch: int, heads: int, queries: int, keys: int) -> int:
    """Keys per block so that one block's scores (two variants: [B, H, n, 2, block]) fit SCORE_BYTES."""
    per_key = batch * heads * queries * 2 * 4
    return max(256, min(keys, SCORE_BYTES // per_key))


@dataclass(frozen=True)
class MaskPlan:
    """What every layer of one forward shares: each key block's masks.

    blocks: (lo, hi, neighbor, hidden) with neighbor [n, m] (i - j < W: the neighbor variant) and
    hidden [n, m] (keys after the query), for keys lo .. hi-1.
    """

    blocks: tuple[tuple[int, int, torch.Tensor, torch.Tensor], ...]


def plan_masks(q_pos: torch.Tensor, lo: int, hi: int, window: int, heads: int) -> MaskPlan:
    """The masks for queries at q_pos [n] (int64) over keys lo .. hi-1, for `heads` query heads (batch 1)."""
    block = key_block(1, heads, q_pos.shape[0], hi - lo)
    blocks = []
    for start in range(lo, hi, block):
        keys = torch.arange(start, min(start + block, hi), device=q_pos.device)  # [m]
        distance = q_pos[:, None] - keys[None, :]  # [n, m]
        blocks.append((start, start + keys.shape[0], distance < window, distance < 0))
    return MaskPlan(tuple(blocks))


def masked_selfextend_attention(
    q2: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    window: int,
    scale: float,
    plan: MaskPlan | None = None,
    keys: tuple[int, int] | None = None,
    with_lse: bool = False,
):
    """SelfExtend of queries q2 [B, H, n, 2, D] (rotated at their neighbor, grouped positions) at q_pos [n].

    k: [B, Hkv, L, 2D] (each key rotated at [neighbor | grouped]); v: [B, Hkv, L, D]. Keys at
    positions past a query (including any unfilled tail of a buffer) are masked, but must be finite:
    a masked weight of 0 times a NaN value is NaN (chunkqa.engine.kvcache zeroes its buffers).
    `keys`: only keys lo .. hi-1 (default all L); `plan`: plan_masks' result when shared by layers.
    returns out [B, H, n, D] in q2's dtype; with `with_lse`, (out, lse [B, H, n] float32/float64).
    """
    batch, heads, n, _, dim = q2.shape
    kv_heads = k.shape[1]
    groups = heads // kv_heads
    lo, hi = keys if keys is not None else (0, k.shape[2])
    if plan is None or batch != 1:
        plan = plan_masks(q_pos, lo, hi, window, heads * batch)
    # the query heads of one KV head stacked: [B, H, n, D] -> [B, Hkv, G*n, D], per variant
    qn = q2[:, :, :, 0].reshape(batch, kv_heads, groups * n, dim)
    qg = q2[:, :, :, 1].reshape(batch, kv_heads, groups * n, dim)
    alone = len(plan.blocks) == 1 and lo == 0 and not with_lse  # every query sees key 0
    parts = [_block(qn, qg, k, v, block, scale, groups, n, alone) for block in plan.blocks]
    out = parts[0][0] if len(parts) == 1 else merge(parts)  # [B, Hkv, G*n, D]
    out = out.reshape(batch, heads, n, dim).to(q2.dtype)
    if not with_lse:
        return out
    lses = torch.stack([lse for _, lse in parts])  # [blocks, B, Hkv, G*n]
    return out, torch.logsumexp(lses, dim=0).reshape(batch, heads, n)


def _block(qn, qg, k, v, block, scale: float, groups: int, n: int, alone: bool):
    """(out [B, Hkv, G*n, D] float32, lse [B, Hkv, G*n] or None when `alone`) over one key block."""
    lo, hi, neighbor, hidden = block
    batch, kv_heads = k.shape[:2]
    dim = qn.shape[-1]
    near = query_key_scores(qn, k[:, :, lo:hi, :dim])  # [B, Hkv, G*n, m] float32 (or float64)
    far = query_key_scores(qg, k[:, :, lo:hi, dim:])  # [B, Hkv, G*n, m]
    shape = (batch, kv_heads, groups, n, hi - lo)
    scores = torch.where(neighbor, near.view(shape), far.view(shape)) * scale  # [B, Hkv, G, n, m]
    scores = scores.masked_fill(hidden, float("-inf")).reshape(batch, kv_heads, groups * n, hi - lo)
    if alone:  # a plain softmax, no log-sum-exp to merge
        probs, lse = torch.softmax(scores, dim=-1), None
    else:
        lse = torch.logsumexp(scores, dim=-1)  # [B, Hkv, G*n]; -inf where a query sees no key here
        finite = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        probs = torch.exp(scores - finite[..., None])
    if probs.is_cuda and v.dtype in HALF:  # as flash kernels do: half-precision weights, one GEMM
        return (probs.to(v.dtype) @ v[:, :, lo:hi]).to(probs.dtype), lse
    return weighted_values(probs, v[:, :, lo:hi]), lse
