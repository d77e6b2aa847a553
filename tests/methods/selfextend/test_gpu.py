"""SelfExtend on a CUDA GPU in float32 and bf16 (marked `gpu`: run on the device machine, never in CI).

Tolerances (relative Frobenius error, ||out - ref|| / ||ref||, against float64 references), as DCA's:
  attention, float32 kernels: 1e-5        attention, bf16 kernels: 2e-2
  tiny models, float32 logits: 1e-4       tiny models, bf16 logits: 5e-2 (MoE families: 1e-1)
Each test prints its measured error so the run log doubles as the report.
"""

from __future__ import annotations

import os

import pytest
import torch
from selfextend_reference import attention_modules, plain_rope, reference_logits, reference_selfextend
from tiny_models import load_tiny, tokens
from transformers import DynamicCache

from chunkqa import apply_selfextend
from chunkqa.engine.forward import cache_kwargs
from chunkqa.engine.kvcache import new_cache
from chunkqa.methods.kernels import KERNELS, available_kernels
from chunkqa.methods.rope import rotate
from chunkqa.methods.selfextend.attention import selfextend_attention

CUDA = torch.device(os.environ.get("CHUNKQA_TEST_DEVICE", "cuda"))  # "cpu" dry-runs this file
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
ATTN_TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
MODEL_TOL = {torch.float32: 1e-4, torch.bfloat16: 5e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().cpu(), ref.double().cpu()
    return float((out - ref).norm() / ref.norm())


def setup(length, heads, kv_heads, dim, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(1, h, length, dim, generator=gen, dtype=torch.float64)
        for h in (heads, kv_heads, kv_heads)
    )
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    return q, k, v, inv


def run_on_gpu(q, k, v, inv, group, window, dtype, kernel, pieces=None):
    """Rotate at both positions in float64, then SelfExtend on the GPU in `dtype`, in pieces."""
    length = q.shape[2]
    angles = torch.arange(length + window + 1, dtype=torch.float64)[:, None] * inv
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    pos = torch.arange(length)
    q2 = torch.stack(
        [rotate(q, cos[p], sin[p]) for p in (pos, pos // group + window - window // group)], dim=3
    )
    k2 = torch.cat([rotate(k, cos[p], sin[p]) for p in (pos, pos // group)], dim=-1)
    q2, k2, v = (t.to(CUDA, dtype) for t in (q2, k2, v))
    outs, start = [], 0
    for size in pieces or [length]:
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
    return torch.cat(outs, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("length", [15, 16, 17, 61, 130])
@pytest.mark.parametrize(("kv_heads", "dim"), [(8, 64), (4, 128), (2, 128)])
def test_attention_matches_reference(dtype, length, kv_heads, dim):
    q, k, v, inv = setup(length, 8, kv_heads, dim, seed=length)
    ref = reference_selfextend(q, k, v, 3, 16, dim**-0.5, plain_rope(inv))
    for kernel in available_kernels(CUDA, dtype):
        err = rel_err(run_on_gpu(q, k, v, inv, 3, 16, dtype, kernel), ref)
        print(f"attention {kernel:15s} {dtype!s:15s} L={length:3d} Hkv={kv_heads} D={dim}: rel err {err:.2e}")
        assert err < ATTN_TOL[dtype], kernel


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_long_attention_matches_float64_math(dtype):
    """8k tokens, G = 8, W = 1024, Llama-3-like heads: every kernel vs the math kernel in float64."""
    q, k, v, inv = setup(8193, 32, 8, 128, seed=1)
    ref = run_on_gpu(q, k, v, inv, 8, 1024, torch.float64, "math")
    for kernel in available_kernels(CUDA, dtype):
        err = rel_err(run_on_gpu(q, k, v, inv, 8, 1024, dtype, kernel), ref)
        pieces = rel_err(run_on_gpu(q, k, v, inv, 8, 1024, dtype, kernel, [4096, 4000, 96, 1]), ref)
        print(f"attention 8k {kernel:15s} {dtype}: rel err {err:.2e}; in pieces {pieces:.2e}")
        assert err < ATTN_TOL[dtype] and pieces < ATTN_TOL[dtype], kernel


@pytest.mark.parametrize("cache_kind", ["dynamic", "growing"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", ["llama", "llama-yarn", "qwen3", "mixtral"])
def test_models_match_reference(tiny_paths, family, dtype, cache_kind):
    model = load_tiny(tiny_paths[family], dtype).to(CUDA)
    ids = tokens(150, seed=3)
    handle = apply_selfextend(model)  # P = 64: G = 8, W = 16
    with torch.no_grad():
        logits = model(ids.to(CUDA)).logits
        cache = DynamicCache(config=model.config) if cache_kind == "dynamic" else new_cache(model.config)
        steps = [model(ids[:, :140].to(CUDA), **cache_kwargs(model, cache)).logits[:, -1]]
        steps += [
            model(ids[:, t : t + 1].to(CUDA), **cache_kwargs(model, cache)).logits[:, -1]
            for t in range(140, 149)
        ]
    kernel = handle.kernel_name(CUDA, dtype, attention_modules(model)[0].head_dim)
    handle.remove()
    ref = reference_logits(load_tiny(tiny_paths[family]), ids, 8, 16)
    err = rel_err(logits, ref)
    derr = rel_err(torch.stack(steps, 1), ref[:, 139:149])
    print(f"model {family:10s} {dtype!s:15s} {cache_kind:7s} {kernel}: prefill {err:.2e}, decode {derr:.2e}")
    moe = "moe" in family or family == "mixtral"
    tol = MODEL_TOL[dtype] * (2 if moe and dtype == torch.bfloat16 else 1)
    assert err < tol and derr < tol
