"""Dual Chunk Attention over a key cache rotated at DCA key positions. Plain tensor code, torch only.

Reference: An et al. 2024, "Training-Free Long-Context Scaling of Large Language Models" (DCA).
For each group of queries inside one chunk b, the keys split into up to four ranges:
  older chunks  [0, (b-1)s)      query rotated at c               (non-causal)
  previous      [(b-1)s, bs)     query rotated at min(i mod s + s, c)  (non-causal)
  own, cached   [bs, start)      query rotated at i mod s         (non-causal)
  own, new      [start, end)     query rotated at i mod s         (causal square)
Each range is one kernel call returning (out, log-sum-exp); the parts merge into one exact softmax.
"""

from __future__ import annotations

import torch

from chunkqa.dca.kernels import Kernel
from chunkqa.dca.positions import QueryGroup, intra_positions, query_groups, successive_positions


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] on the last dim (the half-split RoPE layout transformers uses)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE: x [B, H, n, D]; cos, sin [n, D] or [D] for one shared position."""
    return x * cos + rotate_half(x) * sin


def attend(kernel: Kernel, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float):
    """One kernel call with grouped-query heads: q [B, H, n, D], k/v [B, Hkv, m, D] -> out, lse [B, H, n]."""
    batch, heads, n, dim = q.shape
    kv_heads, m = k.shape[1], k.shape[2]
    groups = heads // kv_heads
    if groups == 1:
        return kernel(q, k, v, causal, scale)
    if not causal:
        # the `groups` query heads of one KV head share its keys: stack them along the query axis
        folded = q.reshape(batch, kv_heads, groups * n, dim)  # [B, Hkv, G*n, D]
        out, lse = kernel(folded, k, v, False, scale)
        return out.reshape(batch, heads, n, dim), lse.reshape(batch, heads, n)
    k = k[:, :, None].expand(batch, kv_heads, groups, m, dim).reshape(batch, heads, m, dim)  # [B, H, m, D]
    v = v[:, :, None].expand(batch, kv_heads, groups, m, dim).reshape(batch, heads, m, dim)  # [B, H, m, D]
    return kernel(q, k, v, True, scale)


def merge(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Combine partial attentions over disjoint key sets into the softmax over their union."""
    if len(parts) == 1:
        return parts[0][0]
    lses = torch.stack([lse for _, lse in parts])  # [P, B, H, n]
    weights = torch.exp(lses - torch.logsumexp(lses, dim=0))  # [P, B, H, n]
    out = sum(w[..., None] * o.to(w.dtype) for w, (o, _) in zip(weights, parts, strict=True))
    return out.to(parts[0][0].dtype)  # [B, H, n, D]


def dca_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_start: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    chunk_len: int,
    chunk_size: int,
    scale: float,
    kernel: Kernel,
) -> torch.Tensor:
    """Attention of new queries over all keys so far.

    q: [B, H, n, D], not rotated, at absolute positions q_start .. q_start + n - 1
    k, v: [B, Hkv, q_start + n, D], keys already rotated at (position mod chunk_len)
    cos, sin: [chunk_size + 1, D] RoPE tables for positions 0..chunk_size
    returns [B, H, n, D]
    """
    if k.shape[2] != q_start + q.shape[2]:
        raise ValueError(
            f"DCA needs every key so far: got {k.shape[2]} keys for {q_start + q.shape[2]} tokens"
        )
    outs = [
        _attend_group(
            q[:, :, g.start - q_start : g.end - q_start],
            k,
            v,
            g,
            cos,
            sin,
            chunk_len,
            chunk_size,
            scale,
            kernel,
        )
        for g in query_groups(q_start, q.shape[2], chunk_len)
    ]
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


def _attend_group(
    q, k, v, group: QueryGroup, cos, sin, chunk_len: int, chunk_size: int, scale: float, kernel: Kernel
) -> torch.Tensor:
    """DCA for queries q [B, H, m, D] that all sit in chunk `group.chunk`."""
    begin = group.chunk * chunk_len  # first position of the query's chunk
    pos = intra_positions(group, chunk_len, q.device)
    q_intra = rotate(q, cos[pos], sin[pos])
    parts = [
        attend(
            kernel, q_intra, k[:, :, group.start : group.end], v[:, :, group.start : group.end], True, scale
        )
    ]
    if begin < group.start:
        parts.append(
            attend(kernel, q_intra, k[:, :, begin : group.start], v[:, :, begin : group.start], False, scale)
        )
    if group.chunk >= 1:
        pos = successive_positions(group, chunk_len, chunk_size, q.device)
        prev = slice(begin - chunk_len, begin)
        parts.append(
            attend(kernel, rotate(q, cos[pos], sin[pos]), k[:, :, prev], v[:, :, prev], False, scale)
        )
    if group.chunk >= 2:
        older = slice(0, begin - chunk_len)
        q_inter = rotate(q, cos[chunk_size], sin[chunk_size])
        parts.append(attend(kernel, q_inter, k[:, :, older], v[:, :, older], False, scale))
    return merge(parts)
