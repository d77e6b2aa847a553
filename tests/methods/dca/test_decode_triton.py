"""chunkqa.methods.dca.decode_triton: the flash-decoding kernel against the float64 DCA reference.

Without CUDA the kernel runs in Triton's interpreter (float32 on the CPU); with CUDA it is compiled,
and the same float32 cases run on the GPU, plus bfloat16 ones (marked gpu). Skipped where triton is
not installed (CI's CPU torch does not bring it; the GPU machine has it).
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # before triton is first imported: its interpreter, on the CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")
from dca_reference import plain_rope, reference_dca, reference_dca_last

pytest.importorskip("triton")
from chunkqa.methods.dca.decode_triton import merge_splits, split_length, triton_dca_decode
from chunkqa.methods.rope import rotate

CHUNK, WINDOW = 24, 4  # c and w: s = 20 positions per chunk
S = CHUNK - WINDOW


def inv_freq(dim: int) -> torch.Tensor:
    return 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))


def tables(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    angles = torch.arange(CHUNK + 1, dtype=torch.float64)[:, None] * inv_freq(dim)[None, :]
    emb = torch.cat([angles, angles], dim=-1)  # [c + 1, D], the half-split layout
    return emb.cos(), emb.sin()


def case(length: int, heads: int, kv_heads: int, dim: int, tail: int, seed: int):
    """Unrotated q, k, v [.., length, D] for the reference; the kernel's inputs with a garbage tail."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, length, dim, generator=gen, dtype=torch.float64)
    k = torch.randn(1, kv_heads, length, dim, generator=gen, dtype=torch.float64)
    v = torch.randn(1, kv_heads, length, dim, generator=gen, dtype=torch.float64)
    cos, sin = tables(dim)
    i = length - 1
    own = i % S
    where = torch.tensor([own, min(own + S, CHUNK), CHUNK])  # own chunk, previous chunk, older
    qv = rotate(q[:, :, i:, None, :], cos[where], sin[where])[:, :, 0]  # [1, H, 3, D]
    kpos = torch.arange(length) % S
    krot = rotate(k, cos[kpos], sin[kpos])
    junk = torch.full((1, kv_heads, tail, dim), 7.0, dtype=torch.float64)  # keys past the query
    return q, k, v, qv, torch.cat([krot, junk], 2), torch.cat([v, junk], 2)


@pytest.mark.parametrize(
    "length,heads,kv_heads,split",
    [
        (1, 2, 2, 64),
        (19, 4, 2, 64),
        (21, 4, 2, 64),
        (45, 4, 1, 64),
        (150, 6, 2, 64),
        (150, 6, 2, 128),
        (300, 9, 3, None),
    ],
)
def test_matches_the_float64_reference(length, heads, kv_heads, split):
    """Own, previous and older chunks, GQA, several splits and keys past the query in the buffer."""
    dim = 16
    q, k, v, qv, kbuf, vbuf = case(length, heads, kv_heads, dim, tail=70, seed=length)
    expected = reference_dca(q, k, v, CHUNK, WINDOW, 0.4, plain_rope(inv_freq(dim)))[:, :, -1:]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    qv, kbuf, vbuf = (t.to(device, torch.float32) for t in (qv, kbuf, vbuf))
    pos = torch.tensor([length - 1], device=device)
    got = triton_dca_decode(qv, kbuf, vbuf, pos, S, 0.4, split_len=split)
    assert got.shape == (1, heads, 1, dim) and got.dtype == torch.float32
    torch.testing.assert_close(got.double().cpu(), expected, rtol=2e-5, atol=2e-5)


def test_merging_splits_equals_one_softmax():
    """Partials over disjoint keys (splits x variants), merged by log-sum-exp, give one softmax."""
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(1, 2, 4, 2 * 3, 5, generator=gen, dtype=torch.float64)  # [B, Hkv, S, G*3, keys]
    values = torch.randn(1, 2, 4, 2 * 3, 5, 8, generator=gen, dtype=torch.float64)
    scores[:, :, 1, 0] = float("-inf")  # a split where one row saw no key
    lse = torch.logsumexp(scores, -1)
    finite = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    out = (torch.exp(scores - finite[..., None])[..., None] * values).sum(-2)
    got = merge_splits(out, lse, 2)  # [1, 2, G, 8]
    flat_scores = scores.view(1, 2, 4, 2, 3, 5).transpose(2, 3).reshape(1, 2, 2, -1)
    flat_values = values.view(1, 2, 4, 2, 3, 5, 8).transpose(2, 3).reshape(1, 2, 2, -1, 8)
    expected = (torch.softmax(flat_scores, -1)[..., None] * flat_values).sum(-2)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_the_last_row_reference_equals_the_full_reference():
    """reference_dca_last (used on the GPU, where L is large) is reference_dca's last row."""
    q, k, v, *_ = case(87, 4, 2, 8, tail=0, seed=1)
    full = reference_dca(q, k, v, CHUNK, WINDOW, 0.4, plain_rope(inv_freq(8)))[:, :, -1:]
    last = reference_dca_last(q[:, :, -1:], k, v, CHUNK, WINDOW, 0.4, plain_rope(inv_freq(8)))
    torch.testing.assert_close(last, full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("span", [1, 63, 64, 1000, 32768])
@pytest.mark.parametrize("programs", [1, 3, 8])
def test_splits_are_whole_blocks_that_cover_the_span(span, programs):
    per = split_length(span, programs, torch.device("cpu"))  # the CPU aims at 4 programs
    want = max(1, 4 // programs)
    assert per >= 64 and per & (per - 1) == 0  # BLOCK_N times a power of two
    assert per == 64 or -(-span // per) >= want  # enough splits, unless they are already one block
    assert -(-span // per) <= 2 * want or per == 64  # and the longest such splits


@pytest.mark.gpu
@pytest.mark.parametrize("length", [4999, 20000])
def test_bfloat16_on_gpu_matches_float64(length):
    """The compiled kernel (bf16 inputs, float32 accumulation) against the float64 reference."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    heads, kv_heads, dim = 32, 8, 128
    q, k, v, qv, kbuf, vbuf = case(length, heads, kv_heads, dim, tail=1024, seed=5)
    expected = reference_dca_last(q[:, :, -1:], k, v, CHUNK, WINDOW, dim**-0.5, plain_rope(inv_freq(dim)))
    got = triton_dca_decode(
        *(t.to("cuda", torch.bfloat16) for t in (qv, kbuf, vbuf)),
        torch.tensor([length - 1], device="cuda"),
        S,
        dim**-0.5,
    )
    err = (got.double().cpu() - expected).norm() / expected.norm()
    assert err < 2e-2, err
