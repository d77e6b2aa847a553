"""SelfExtend over a key cache rotated at both key positions: the kernel path, for long prefills.

Queries go in blocks of rows [a, b). For query i, keys j <= i - W are grouped and the W keys up to i
are neighbors; over one block the keys split into
  grouped      [0, a - W + 1)        every row: grouped query x grouped key    (kernel, non-causal)
  band         [a - W + 1, b - W)    rows differ: both variants, per pair      (fused masked pass)
  neighbor     [b - W, a)            every row: neighbor query x neighbor key  (kernel, non-causal)
  diagonal     [a, b)                neighbor, causal square                   (kernel, causal)
(a block taller than W makes the band [a - W + 1, b) instead, diagonal included). Each range gives
(out, log-sum-exp); they merge into one exact softmax over all keys. Scores are never formed for
more than a block of rows against the band, so memory stays linear in the length.
"""

from __future__ import annotations

import torch

from chunkqa.methods.kernels import Kernel, attend, merge
from chunkqa.methods.selfextend.masked import masked_selfextend_attention

QUERY_BLOCK = 512  # query rows per block on the CPU: bounds the band's scores to [B, H, 512, < 1024]
QUERY_BLOCK_GPU = 2048  # on a GPU: a kernel call over 512 rows of a 9-head model fills a quarter of an H200


def selfextend_attention(
    q2: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_start: int,
    window: int,
    scale: float,
    kernel: Kernel,
    *,
    query_block: int | None = None,
) -> torch.Tensor:
    """Attention of new queries over all keys so far, in blocks of `query_block` rows (default: the
    device's; the masked pass bounds its own scores by key blocks, so any block is memory-safe).

    q2: [B, H, n, 2, D], queries at absolute positions q_start .. q_start + n - 1, rotated at their
        neighbor and grouped positions
    k: [B, Hkv, q_start + n, 2D], keys rotated at [neighbor | grouped]; v: [B, Hkv, q_start + n, D]
    returns [B, H, n, D] in q2's dtype
    """
    n, dim = q2.shape[2], q2.shape[-1]
    if k.shape[2] != q_start + n:
        raise ValueError(f"SelfExtend needs every key so far: got {k.shape[2]} keys for {q_start + n} tokens")
    near, far = k[..., :dim], k[..., dim:]  # [B, Hkv, L, D] each, strided views
    if k.is_cuda:  # GPU kernels want dense keys; one copy per forward, amortised over many queries
        near, far = near.contiguous(), far.contiguous()
    block = query_block or (QUERY_BLOCK_GPU if k.is_cuda else QUERY_BLOCK)
    outs = []
    for a in range(q_start, q_start + n, block):
        b = min(a + block, q_start + n)
        rows = q2[:, :, a - q_start : b - q_start]  # [B, H, b-a, 2, D]
        outs.append(_block(rows, k, near, far, v, a, b, window, scale, kernel))
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)).to(q2.dtype)


def _block(rows, k, near, far, v, a: int, b: int, window: int, scale: float, kernel: Kernel):
    """Queries a .. b-1 (rows [B, H, b-a, 2, D]) over keys 0 .. b-1 -> [B, H, b-a, D]."""
    qn = rows[:, :, :, 0].contiguous()  # [B, H, b-a, D] at i
    qg = rows[:, :, :, 1].contiguous()  # [B, H, b-a, D] at i // G + W - W // G
    grouped_end = max(0, a - window + 1)  # keys before it are grouped for every row
    parts = []
    if grouped_end > 0:
        parts.append(attend(kernel, qg, far[:, :, :grouped_end], v[:, :, :grouped_end], False, scale))
    band_end = max(grouped_end, b - window) if b - a <= window else b
    if band_end > grouped_end:
        q_pos = torch.arange(a, b, device=rows.device)
        band = (grouped_end, band_end)
        parts.append(masked_selfextend_attention(rows, k, v, q_pos, window, scale, keys=band, with_lse=True))
    if band_end <= a and b - a == 1:  # one query (a decode step): neighbors and itself in one call
        parts.append(attend(kernel, qn, near[:, :, band_end:b], v[:, :, band_end:b], False, scale))
    elif band_end <= a:
        if band_end < a:
            parts.append(attend(kernel, qn, near[:, :, band_end:a], v[:, :, band_end:a], False, scale))
        parts.append(attend(kernel, qn, near[:, :, a:b], v[:, :, a:b], True, scale))
    return merge(parts)
