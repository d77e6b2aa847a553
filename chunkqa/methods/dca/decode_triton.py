"""DCA for one new token over a long cache: a Triton flash-decoding kernel (needs the triton package).

A decode step is bound by memory: it should read each cached key and value once, with the whole GPU
at work. The fused masked pass (chunkqa.methods.dca.masked) forms three float32 scores per key in
global memory and weighs the values in a GEMM with one long reduction; this kernel keeps all of that
in registers. One program takes one KV head and one stretch of keys (a split). It scores that KV
head's query heads at their three DCA rotations, as rows (head, variant) with variant 0 own chunk,
1 previous chunk, 2 older, and keeps for each key only the row its chunk asks for:
variant = clamp(chunk(query) - chunk(key), 0, 2). Keys after the query are not read. A running
softmax per row gives (out, log-sum-exp); torch then merges the splits and the three variant rows of
each head, which see disjoint keys, into one softmax.

The query position is read from a tensor and the shapes depend only on the span of keys, so a step
that uses this kernel can be captured in a CUDA graph. With TRITON_INTERPRET=1 set before triton is
first imported, the same kernel runs on CPU tensors in Triton's interpreter (slow: for tests).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

BLOCK_N = 64  # keys per inner step
PROGRAMS_PER_SM = 2  # splits are sized so that about this many programs run per multiprocessor


@triton.jit
def _split_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    pos_ptr,
    out_ptr,
    lse_ptr,
    stride_qb,
    stride_qh,
    stride_qr,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_ob,
    stride_oh,
    stride_os,
    stride_or,
    stride_lb,
    stride_lh,
    stride_ls,
    kv_heads,
    rows,
    span,
    chunk_len,
    scale_log2,
    SPLIT_LEN: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DIM: tl.constexpr,
    IEEE: tl.constexpr,
):
    """Rows (head, variant) of one KV head over the keys [split * SPLIT_LEN, +SPLIT_LEN) that are
    also in [0, min(span, pos + 1))."""
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = bh // kv_heads
    h = bh % kv_heads
    r = tl.arange(0, BLOCK_R)
    d = tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    rmask = r < rows
    dmask = d < DIM
    q = tl.load(
        q_ptr + b * stride_qb + h * stride_qh + r[:, None] * stride_qr + d[None, :],
        mask=rmask[:, None] & dmask[None, :],
        other=0.0,
    )
    pos = tl.load(pos_ptr)
    q_chunk = pos // chunk_len
    variant = r % 3
    m = tl.full([BLOCK_R], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_R], tl.float32)
    acc = tl.zeros([BLOCK_R, BLOCK_D], tl.float32)
    lo = split * SPLIT_LEN
    hi = tl.minimum(tl.minimum(lo + SPLIT_LEN, span), pos + 1)
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh
    for offset in range(0, SPLIT_LEN, BLOCK_N):  # past `hi` the loads are masked off
        keys = lo + offset + n
        kmask = keys < hi
        tile = kmask[:, None] & dmask[None, :]
        k = tl.load(k_base + keys[:, None] * stride_kn + d[None, :], mask=tile, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee" if IEEE else None) * scale_log2
        wanted = tl.minimum(tl.maximum(q_chunk - keys // chunk_len, 0), 2)
        s = tl.where((variant[:, None] == wanted[None, :]) & kmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m - m_safe)
        total = total * alpha + tl.sum(p, 1)
        v = tl.load(v_base + keys[:, None] * stride_vn + d[None, :], mask=tile, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee" if IEEE else None)
        m = m_new
    seen = total > 0
    out = tl.where(seen[:, None], acc / tl.where(seen, total, 1.0)[:, None], 0.0)
    lse = tl.where(seen, (m + tl.log2(tl.where(seen, total, 1.0))) * 0.6931471805599453, float("-inf"))
    o_base = out_ptr + b * stride_ob + h * stride_oh + split * stride_os
    tl.store(o_base + r[:, None] * stride_or + d[None, :], out, mask=rmask[:, None] & dmask[None, :])
    tl.store(lse_ptr + b * stride_lb + h * stride_lh + split * stride_ls + r, lse, mask=rmask)


@functools.cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def split_length(span: int, programs: int, device: torch.device) -> int:
    """Keys per split: BLOCK_N times a power of two, the largest that still makes enough splits for
    `programs` (batch x KV heads) x splits to fill the GPU. A power of two, because the kernel is
    compiled once per split length: a decode that crosses many spans compiles it a few times only."""
    want = PROGRAMS_PER_SM * _multiprocessors(device.index or 0) if device.type == "cuda" else 4
    splits = max(1, want // max(programs, 1))
    per = BLOCK_N
    while per * 2 * splits <= span:
        per *= 2
    return per


def triton_dca_decode(
    qv: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    chunk_len: int,
    scale: float,
    *,
    split_len: int | None = None,
) -> torch.Tensor:
    """DCA of one new query per head, its three rotations given.

    qv: [B, H, 3, D], the query rotated at (own chunk, previous chunk, older) positions;
    k, v: [B, Hkv, L, D], keys rotated at (position mod chunk_len), last dim contiguous;
    q_pos: [1] int64 tensor, the query's absolute position (keys after it are ignored).
    Returns [B, H, 1, D] in qv's dtype. `split_len` overrides the keys per split (tests).
    """
    batch, heads, _, dim = qv.shape
    kv_heads, span = k.shape[1], k.shape[2]
    groups = heads // kv_heads
    rows = groups * 3
    q = qv.reshape(batch, kv_heads, rows, dim).contiguous()  # rows (head, variant) of each KV head
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        k, v = k.contiguous(), v.contiguous()
    split_len = split_len or split_length(span, batch * kv_heads, k.device)
    splits = -(-span // split_len)
    out = torch.empty((batch, kv_heads, splits, rows, dim), device=q.device, dtype=torch.float32)
    lse = torch.empty((batch, kv_heads, splits, rows), device=q.device, dtype=torch.float32)
    _split_kernel[(batch * kv_heads, splits)](
        q, k, v, q_pos, out, lse,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:4], *lse.stride()[:3],
        kv_heads, rows, span, chunk_len, scale * 1.4426950408889634,
        SPLIT_LEN=split_len,
        BLOCK_R=max(16, triton.next_power_of_2(rows)),
        BLOCK_N=BLOCK_N,
        BLOCK_D=max(16, triton.next_power_of_2(dim)),
        DIM=dim,
        IEEE=q.dtype == torch.float32,
    )  # fmt: skip
    return merge_splits(out, lse, groups).reshape(batch, heads, 1, dim).to(qv.dtype)


def merge_splits(out: torch.Tensor, lse: torch.Tensor, groups: int) -> torch.Tensor:
    """out [B, Hkv, S, G*3, D], lse [B, Hkv, S, G*3] -> [B, Hkv, G, D]: one softmax over the splits
    and the variants (all disjoint key sets)."""
    batch, kv_heads, splits, _, dim = out.shape
    lse = lse.view(batch, kv_heads, splits, groups, 3).transpose(2, 3)
    lse = lse.reshape(batch, kv_heads, groups, -1)
    out = out.view(batch, kv_heads, splits, groups, 3, dim).transpose(2, 3)
    out = out.reshape(batch, kv_heads, groups, -1, dim)
    weights = torch.softmax(lse, dim=-1)  # every head sees its own key, so some lse is finite
    return (weights[..., None] * out).sum(-2)
