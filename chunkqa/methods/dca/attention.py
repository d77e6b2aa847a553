"""Dual Chunk Attention over a key cache rotated at DCA key positions. Plain tensor code, torch only.

Reference: An et al. 2024, "Training-Free Long-Context Scaling of Large Language Models" (DCA).
For each group of queries inside one chunk b, the keys split into up to four ranges:
  older chunks  [0, (b-1)s)      query rotated at c               (non-causal)
  previous      [(b-1)s, bs)     query rotated at min(i mod s + s, c)  (non-causal)
  own, cached   [bs, start)      query rotated at i mod s         (non-causal)
  own, new      [start, end)     query rotated at i mod s         (causal square)
Each range is one kernel call returning (out, log-sum-exp); the parts merge into one exact softmax.
With batch_chunks, queries that fill whole chunks (the middle of a long prefill) share their
rotations: the own-chunk squares of all those chunks go into one batched causal call and their
previous-chunk blocks into one, so a piece costs two calls plus one per older range instead of about
four per chunk.
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
    *,
    batch_chunks: bool = False,
) -> torch.Tensor:
    """Attention of new queries over all keys so far. `batch_chunks=True`: whole chunks share their
    kernel calls (the same result). Off by default: on the CPU it is slower (7.1 against 5.9 s for 8k
    tokens of 32 heads, its strided merges cost more than the calls it saves); on a GPU, where it
    would save launches, it is not measured yet (benchmarks/dca_attention.py times both).

    q: [B, H, n, D], not rotated, at absolute positions q_start .. q_start + n - 1
    k, v: [B, Hkv, q_start + n, D], keys already rotated at (position mod chunk_len)
    cos, sin: [chunk_size + 1, D] RoPE tables for positions 0..chunk_size
    returns [B, H, n, D]
    """
    if k.shape[2] != q_start + q.shape[2]:
        raise ValueError(
            f"DCA needs every key so far: got {k.shape[2]} keys for {q_start + q.shape[2]} tokens"
        )
    outs = []
    groups = query_groups(q_start, q.shape[2], chunk_len)
    for run in _runs(groups, chunk_len) if batch_chunks else [[g] for g in groups]:
        rows = q[:, :, run[0].start - q_start : run[-1].end - q_start]
        if len(run) > 1:  # whole chunks
            first, count = run[0].chunk, len(run)
            outs.append(
                _attend_chunks(rows, k, v, first, count, cos, sin, chunk_len, chunk_size, scale, kernel)
            )
        else:
            outs.append(_attend_group(rows, k, v, run[0], cos, sin, chunk_len, chunk_size, scale, kernel))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


def _runs(groups: list[QueryGroup], chunk_len: int) -> list[list[QueryGroup]]:
    """The groups in order, consecutive groups that fill whole chunks gathered into one run each."""
    runs: list[list[QueryGroup]] = []
    for g in groups:
        if runs and _is_whole(g, chunk_len) and _is_whole(runs[-1][-1], chunk_len):
            runs[-1].append(g)
        else:
            runs.append([g])
    return runs


def _is_whole(group: QueryGroup, chunk_len: int) -> bool:
    return group.end - group.start == chunk_len


def _attend_chunks(
    q, k, v, first: int, count: int, cos, sin, chunk_len: int, chunk_size: int, scale: float, kernel: Kernel
) -> torch.Tensor:
    """DCA for queries q [B, H, count * s, D] that fill chunks first .. first + count - 1 exactly."""
    batch, heads, _, dim = q.shape
    s = chunk_len
    rows = q.view(batch, heads, count, s, dim)
    own = torch.arange(s, device=q.device)
    intra = _batched(rotate(rows, cos[own], sin[own]), k, v, first * s, count, True, scale, kernel)
    parts = [[(intra[0][:, j], intra[1][:, j])] for j in range(count)]
    start = max(first, 1)  # chunk 0 has no previous chunk
    if start < first + count:
        pos = (own + s).clamp(max=chunk_size)
        later = rows[:, :, start - first :]
        q_prev = rotate(later, cos[pos], sin[pos])
        prev = _batched(q_prev, k, v, (start - 1) * s, later.shape[2], False, scale, kernel)
        for j in range(later.shape[2]):
            parts[start - first + j].append((prev[0][:, j], prev[1][:, j]))
    q_inter = rotate(rows, cos[chunk_size], sin[chunk_size])
    for j in range(max(0, 2 - first), count):  # chunks 2 and later also see the older chunks
        older = slice(0, (first + j - 1) * s)
        q_j = q_inter[:, :, j].contiguous()
        parts[j].append(attend(kernel, q_j, k[:, :, older], v[:, :, older], False, scale))
    return torch.cat([merge(chunk) for chunk in parts], dim=2)


def _batched(rows, k, v, key_start: int, count: int, causal: bool, scale: float, kernel: Kernel):
    """rows [B, H, count, s, D] against keys [key_start, key_start + count * s) chunk by chunk, in one
    kernel call with the chunks folded into the batch: (out [B, count, H, s, D], lse [B, count, H, s])."""
    batch, heads, _, s, dim = rows.shape
    kv_heads = k.shape[1]
    span = slice(key_start, key_start + count * s)
    keys, vals = (
        x[:, :, span]
        .reshape(batch, kv_heads, count, s, -1)
        .transpose(1, 2)
        .contiguous()
        .view(batch * count, kv_heads, s, x.shape[-1])
        for x in (k, v)
    )
    queries = rows.transpose(1, 2).contiguous().view(batch * count, heads, s, dim)
    out, lse = attend(kernel, queries, keys, vals, causal, scale)
    return out.view(batch, count, heads, s, -1), lse.view(batch, count, heads, s)


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
