"""chunkqa.methods.kernels: every kernel returns the same output and log-sum-exp as a direct softmax."""

from __future__ import annotations

import pytest
import torch

from chunkqa.errors import UsageError
from chunkqa.methods import kernels
from chunkqa.methods.kernels import KERNELS, available_kernels, select_kernel


def direct(q, k, v, causal, scale):
    scores = (q.double() @ k.double().transpose(-1, -2)) * scale
    if causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, -1) @ v.double(), torch.logsumexp(scores, -1)


@pytest.mark.parametrize("name", available_kernels(torch.device("cpu"), torch.float32))
@pytest.mark.parametrize(
    ("lq", "lk", "causal"), [(9, 9, True), (3, 17, False), (1, 5, False), (33, 33, False)]
)
def test_cpu_kernels_match_direct_softmax(name, lq, lk, causal):
    gen = torch.Generator().manual_seed(lq * lk)
    q = torch.randn(2, 3, lq, 64, generator=gen)
    k = torch.randn(2, 3, lk, 64, generator=gen)
    v = torch.randn(2, 3, lk, 64, generator=gen)
    out, lse = KERNELS[name](q, k, v, causal, 0.125)
    ref_out, ref_lse = direct(q, k, v, causal, 0.125)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == q.shape[:-1] and lse.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse.double(), ref_lse, rtol=1e-5, atol=1e-5)


def test_math_kernel_blocks_queries(monkeypatch):
    monkeypatch.setattr(kernels, "MATH_BLOCK", 4)
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 11, 16, generator=gen, dtype=torch.float64) for _ in range(3))
    out, lse = kernels.math_attention(q, k, v, True, 0.25)
    ref_out, ref_lse = direct(q, k, v, True, 0.25)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(lse, ref_lse)


def test_select_kernel_on_cpu():
    assert select_kernel("auto", torch.device("cpu"), torch.float32, 64)[0] == "sdpa-cpu"
    assert select_kernel("math", torch.device("cpu"), torch.bfloat16, 64)[0] == "math"
    with pytest.raises(UsageError, match="unknown attention kernel"):
        select_kernel("fastest", torch.device("cpu"), torch.float32, 64)
    with pytest.raises(UsageError, match="cannot run on cpu with float32") as refused:
        select_kernel("sdpa-cudnn", torch.device("cpu"), torch.float32, 64)
    assert refused.value.hint == "choose auto or one that runs here: sdpa-cpu, math"


def test_cuda_kernel_lists():
    cuda = torch.device("cuda")
    assert available_kernels(cuda, torch.bfloat16)[-1] == "math"
    assert "sdpa-cudnn" in available_kernels(cuda, torch.bfloat16)
    assert available_kernels(cuda, torch.float32) == ["sdpa-efficient", "math"]
    assert available_kernels(cuda, torch.float64) == ["math"]
