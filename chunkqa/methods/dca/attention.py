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

from chunkqa.methods.dca.positions import QueryGroup, intra_positions, query_groups, successive_positions
from chunkqa.methods.kernels import Kernel, attend, merge
from chunkqa.methods.rope import rotate


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
    if group.end - group.start == 1:  # one query (a decode step) sees its whole chunk: one call
        whole = slice(begin, group.end)
        parts = [attend(kernel, q_intra, k[:, :, whole], v[:, :, whole], False, scale)]
    else:
        own = slice(group.start, group.end)
        parts = [attend(kernel, q_intra, k[:, :, own], v[:, :, own], True, scale)]
        if begin < group.start:
            cached = slice(begin, group.start)
            parts.append(attend(kernel, q_intra, k[:, :, cached], v[:, :, cached], False, scale))
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
