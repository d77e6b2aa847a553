"""Attention kernels that return the log-sum-exp, so partial attentions can be merged exactly.

Every kernel has one signature:
    kernel(q, k, v, causal, scale) -> (out, lse)
    q: [B, H, Lq, D]; k, v: [B, H, Lk, D] (same head count; GQA is folded by the caller)
    causal: only with Lq == Lk (the square, so top-left and bottom-right alignment agree)
    out: [B, H, Lq, D] in q's dtype; lse: [B, H, Lq] float32 (float64 for float64 inputs)
A new kernel (a fused one, another library) slots in by adding a function and a name here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch

from chunkqa.errors import UsageError

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool, float], tuple[torch.Tensor, torch.Tensor]]

MATH_BLOCK = 1024  # query rows per block in the math kernel: bounds its scores to [B, H, 1024, Lk]


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float):
    """Plain torch, any device and dtype; scores are formed one block of queries at a time."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    outs, lses = [], []
    kt = k.to(acc).transpose(-1, -2)  # [B, H, D, Lk]
    va = v.to(acc)
    for lo in range(0, q.shape[-2], MATH_BLOCK):
        hi = min(lo + MATH_BLOCK, q.shape[-2])
        scores = (q[..., lo:hi, :].to(acc) @ kt) * scale  # [B, H, hi-lo, Lk]
        if causal:
            rows = torch.arange(lo, hi, device=q.device)[:, None]
            cols = torch.arange(k.shape[-2], device=q.device)[None, :]
            scores = scores.masked_fill(cols > rows, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)  # [B, H, hi-lo]
        outs.append((torch.exp(scores - lse[..., None]) @ va).to(q.dtype))
        lses.append(lse)
    return torch.cat(outs, dim=-2), torch.cat(lses, dim=-1)


def cpu_flash_attention(q, k, v, causal: bool, scale: float):
    """torch's CPU flash-attention op (float64/32, bf16, fp16)."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
    return out, _as_lse(lse, q)


def cuda_flash_attention(q, k, v, causal: bool, scale: float):
    """FlashAttention-2 inside torch (CUDA, bf16/fp16)."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)[
        :2
    ]
    return out, _as_lse(lse, q)


def cudnn_attention(q, k, v, causal: bool, scale: float):
    """cuDNN fused attention inside torch (CUDA, bf16/fp16); the fastest on Hopper."""
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
        q, k, v, None, True, 0.0, causal, False, scale=scale
    )[:2]
    return out, _as_lse(lse, q)


def efficient_attention(q, k, v, causal: bool, scale: float):
    """Memory-efficient attention inside torch (CUDA, float32 too)."""
    out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, None, True, 0.0, causal, scale=scale
    )[:2]
    return out, _as_lse(lse, q)


def flash_attn_package(q, k, v, causal: bool, scale: float):
    """The flash-attn package (CUDA, bf16/fp16), when installed."""
    from flash_attn import flash_attn_func

    out, lse, _ = flash_attn_func(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        softmax_scale=scale,
        causal=causal,
        return_attn_probs=True,
    )
    return out.transpose(1, 2), _as_lse(lse, q)


def _as_lse(lse: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Kernels pad or shape their LSE differently: bring it to [B, H, Lq]."""
    if lse.dim() == 4:  # [B, H, Lq, 1]
        lse = lse[..., 0]
    lse = lse[..., : q.shape[-2]]
    return lse if lse.dtype == torch.float64 else lse.float()


KERNELS: dict[str, Kernel] = {
    "math": math_attention,
    "sdpa-cpu": cpu_flash_attention,
    "sdpa-flash": cuda_flash_attention,
    "sdpa-cudnn": cudnn_attention,
    "sdpa-efficient": efficient_attention,
    "flash-attn": flash_attn_package,
}
HALF = (torch.bfloat16, torch.float16)


def available_kernels(device: torch.device, dtype: torch.dtype) -> list[str]:
    """Kernel names that can run on this device and dtype, fastest first."""
    if device.type == "cpu":
        return ["sdpa-cpu", "math"]
    if device.type != "cuda":
        return ["math"]
    if dtype in HALF:
        names = ["sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "math"]
        if importlib.util.find_spec("flash_attn") is not None:
            names.insert(0, "flash-attn")
        return names
    if dtype == torch.float32:
        return ["sdpa-efficient", "math"]
    return ["math"]


def select_kernel(name: str, device: torch.device, dtype: torch.dtype, head_dim: int) -> tuple[str, Kernel]:
    """The kernel called `name` ("auto": the fastest one that works here, checked on a tiny input)."""
    if name != "auto":
        if name not in KERNELS:
            raise UsageError(f"unknown attention kernel {name!r}; choose from auto, {', '.join(KERNELS)}")
        here = available_kernels(device, dtype)
        if name not in here:
            dtype_name = str(dtype).removeprefix("torch.")
            raise UsageError(
                f"attention kernel {name!r} cannot run on {device.type} with {dtype_name}",
                hint=f"choose auto or one that runs here: {', '.join(here)}",
            )
        return name, KERNELS[name]
    for candidate in available_kernels(device, dtype):
        if _works(KERNELS[candidate], device, dtype, head_dim):
            return candidate, KERNELS[candidate]
    return "math", math_attention


def _works(kernel: Kernel, device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """Run a kernel once on a tiny random input and compare it with the math kernel."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, head_dim, generator=gen).to(device, dtype) for _ in range(3))
    try:
        out, lse = kernel(q, k, v, True, head_dim**-0.5)
    except (RuntimeError, NotImplementedError, ImportError):
        return False
    ref_out, ref_lse = math_attention(q, k, v, True, head_dim**-0.5)
    tol = 1e-2 if dtype in HALF else 1e-4
    return bool(
        torch.allclose(out.float(), ref_out.float(), atol=tol, rtol=tol)
        and torch.allclose(lse.float(), ref_lse.float(), atol=tol, rtol=tol)
    )


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
