"""DCA on a CUDA GPU in float32 and bf16 (marked `gpu`: run on the device machine, never in CI).

Tolerances (relative Frobenius error, ||out - ref|| / ||ref||, against float64 references):
  attention, float32 kernels: 1e-5        attention, bf16 kernels: 2e-2
  tiny models, float32 logits: 1e-4       tiny models, bf16 logits: 5e-2 (MoE families: 1e-1,
  since a bf16 rounding can flip a router's top-k choice; seen: qwen3_moe decode 6.7e-2 on an H200)
Each test prints its measured error so the run log doubles as the report.
"""

from __future__ import annotations

import os

import pytest
import torch
from dca_reference import attention_modules, plain_rope, reference_dca, reference_logits
from tiny_models import DCA_FAMILIES as FAMILIES
from tiny_models import load_tiny, tokens
from transformers import DynamicCache

from chunkqa import apply_dca
from chunkqa.engine.forward import cache_kwargs
from chunkqa.methods.dca.attention import dca_attention
from chunkqa.methods.kernels import KERNELS, available_kernels
from chunkqa.methods.rope import rotate

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


def cuda_kernels(dtype: torch.dtype) -> list[str]:
    return available_kernels(CUDA, dtype)


def setup(length, heads, kv_heads, dim, chunk, window, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(1, h, length, dim, generator=gen, dtype=torch.float64)
        for h in (heads, kv_heads, kv_heads)
    )
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    angles = torch.arange(chunk + 1, dtype=torch.float64)[:, None] * inv
    emb = torch.cat((angles, angles), -1)
    return q, k, v, inv, emb.cos(), emb.sin()


def run_on_gpu(q, k, v, cos, sin, chunk, window, dtype, kernel, pieces=None):
    s = chunk - window
    q, k, v, cos, sin = (t.to(CUDA, dtype) for t in (q, k, v, cos, sin))
    pos = torch.arange(k.shape[2], device=CUDA) % s
    k = rotate(k, cos[pos], sin[pos])
    outs, start = [], 0
    for size in pieces or [q.shape[2]]:
        end = start + size
        outs.append(
            dca_attention(
                q[:, :, start:end],
                k[:, :, :end],
                v[:, :, :end],
                start,
                cos,
                sin,
                s,
                chunk,
                q.shape[-1] ** -0.5,
                KERNELS[kernel],
            )
        )
        start = end
    return torch.cat(outs, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("length", [19, 20, 21, 61, 87])
@pytest.mark.parametrize(("kv_heads", "dim"), [(8, 64), (4, 128), (2, 128)])
def test_attention_matches_reference(dtype, length, kv_heads, dim):
    q, k, v, inv, cos, sin = setup(length, 8, kv_heads, dim, 24, 4, dtype, seed=length)
    ref = reference_dca(q, k, v, 24, 4, dim**-0.5, plain_rope(inv))
    for kernel in cuda_kernels(dtype):
        err = rel_err(run_on_gpu(q, k, v, cos, sin, 24, 4, dtype, kernel), ref)
        print(f"attention {kernel:15s} {dtype!s:15s} L={length:3d} Hkv={kv_heads} D={dim}: rel err {err:.2e}")
        assert err < ATTN_TOL[dtype], kernel


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_long_attention_matches_float64_math(dtype):
    """8k tokens, c = 1536, w = 256, Llama-3-like heads: every kernel vs the math kernel in float64."""
    q, k, v, _, cos, sin = setup(8193, 32, 8, 128, 1536, 256, dtype, seed=1)
    ref = run_on_gpu(q, k, v, cos, sin, 1536, 256, torch.float64, "math")
    for kernel in cuda_kernels(dtype):
        err = rel_err(run_on_gpu(q, k, v, cos, sin, 1536, 256, dtype, kernel), ref)
        pieces = rel_err(run_on_gpu(q, k, v, cos, sin, 1536, 256, dtype, kernel, [4096, 4096, 1]), ref)
        print(f"attention 8k {kernel:15s} {dtype}: rel err {err:.2e}; in pieces {pieces:.2e}")
        assert err < ATTN_TOL[dtype] and pieces < ATTN_TOL[dtype], kernel


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", FAMILIES)
def test_models_match_reference(tiny_paths, family, dtype):
    model = load_tiny(tiny_paths[family], dtype).to(CUDA)
    ids = tokens(150, seed=3)
    handle = apply_dca(model)
    with torch.no_grad():
        logits = model(ids.to(CUDA)).logits
        cache = DynamicCache(config=model.config)
        steps = [model(ids[:, :140].to(CUDA), **cache_kwargs(model, cache)).logits[:, -1]]
        steps += [
            model(ids[:, t : t + 1].to(CUDA), **cache_kwargs(model, cache)).logits[:, -1]
            for t in range(140, 149)
        ]
    kernel = handle.kernel_name(CUDA, dtype, attention_modules(model)[0].head_dim)
    handle.remove()
    cpu = load_tiny(tiny_paths[family])
    ref = reference_logits(cpu, ids, 48, 8, handle.logit_factor(150))
    decode_ref = reference_logits(cpu, ids[:, :149], 48, 8, handle.logit_factor(140))[:, 139:149]
    err = rel_err(logits, ref)
    derr = rel_err(torch.stack(steps, 1), decode_ref)
    print(f"model {family:14s} {dtype!s:15s} kernel {kernel}: prefill rel err {err:.2e}, decode {derr:.2e}")
    moe = "moe" in family or family == "mixtral"
    tol = MODEL_TOL[dtype] * (2 if moe and dtype == torch.bfloat16 else 1)
    assert err < tol and derr < tol
