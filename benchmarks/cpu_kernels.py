"""What can torch's CPU kernels do for a decode step of SmolLM2's shape, against the memory's speed?

The pieces of one decode step of SmolLM2-135M (30 layers, hidden 576, MLP 1536, 9 query / 3 KV
heads of 64, vocabulary 49,152), each over 30 layers' worth of distinct tensors so that nothing
stays in the CPU's caches, timed with the baseline of the same run: reading the same bytes (a sum).
  weights   the 7 projections x 30 layers and the LM head, one token (GEMV): float32, bfloat16,
            and int8 weight-only (torch's _weight_int8pack_mm, the op gpt-fast uses)
  prefill   the same projections for 512 tokens (GEMM): float32 and bfloat16 (GFLOP/s)
  attention one query against L cached keys, 30 layers: torch's CPU flash kernel (the op chunkqa
            calls, GQA folded), and the same with the keys cut into 8 segments run as batch entries
            and merged by log-sum-exp (more work items for the threads)

    python benchmarks/cpu_kernels.py                 # 2 threads
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, print_table, write_results

LAYERS, HIDDEN, MLP, VOCAB, HEADS, KV_HEADS, DIM = 30, 576, 1536, 49152, 9, 3, 64
SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]


def timed(fn, repeats: int = 5) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def weights(dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    mats = [torch.randn(o, i, generator=gen) for _ in range(LAYERS) for o, i in SHAPES]
    return [m.to(dtype) for m in [*mats, torch.randn(VOCAB, HIDDEN, generator=gen)]]


def gemv_rows(rows: list[dict]) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        mats = weights(dtype)
        inputs = {i: torch.randn(1, i).to(dtype) for i in (HIDDEN, MLP)}
        seconds = timed(lambda mats=mats, inputs=inputs: [F.linear(inputs[m.shape[1]], m) for m in mats])
        rows.append(_bandwidth_row("weights, 1 token", str(dtype)[6:], mats, seconds))
    mats = weights(torch.float32)
    packed = [(m / s[:, None]).round().to(torch.int8) for m, s in ((m, m.abs().amax(1) / 127) for m in mats)]
    scales = [m.abs().amax(1) / 127 for m in mats]
    inputs = {i: torch.randn(1, i) for i in (HIDDEN, MLP)}
    seconds = timed(
        lambda: [
            torch.ops.aten._weight_int8pack_mm(inputs[w.shape[1]], w, s)
            for w, s in zip(packed, scales, strict=True)
        ]
    )
    rows.append(_bandwidth_row("weights, 1 token", "int8 (weight-only)", packed, seconds))


def gemm_rows(rows: list[dict], tokens: int = 512) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        mats = weights(dtype)[: len(SHAPES)]  # one layer: compute-bound, the caches do not matter
        inputs = {i: torch.randn(tokens, i).to(dtype) for i in (HIDDEN, MLP)}
        seconds = timed(lambda mats=mats, inputs=inputs: [F.linear(inputs[m.shape[1]], m) for m in mats])
        flops = sum(2 * tokens * m.numel() for m in mats)
        rows.append({"piece": f"prefill GEMM, {tokens} tokens", "variant": str(dtype)[6:],
                     "ms": seconds * 1000, "gflop_s": flops / seconds / 1e9})  # fmt: skip


def attention_rows(rows: list[dict], lengths: list[int]) -> None:
    for length in lengths:
        keys = [torch.randn(2, 1, KV_HEADS, length, DIM) for _ in range(LAYERS)]  # k and v per layer
        q = torch.randn(1, KV_HEADS, HEADS // KV_HEADS, DIM)  # one query, GQA folded as chunkqa does
        for segments in (1, 8):
            seconds = timed(lambda keys=keys, q=q, s=segments: [_segmented(q, kv, s) for kv in keys])
            rows.append(_bandwidth_row(f"attention, 1 query x {length}", f"flash, {segments} segment(s)",
                                       keys, seconds))  # fmt: skip


def _segmented(q: torch.Tensor, kv: torch.Tensor, segments: int) -> torch.Tensor:
    """torch's CPU flash kernel over the keys cut into `segments` (batch entries), merged by LSE."""
    k, v = kv[0], kv[1]  # [1, Hkv, L, D]
    if k.shape[2] % segments:
        raise ValueError(f"{k.shape[2]} keys do not split into {segments} equal segments")
    size = k.shape[2] // segments
    ks = k[:, :, : size * segments].unflatten(2, (segments, size)).permute(2, 0, 1, 3, 4).flatten(0, 1)
    vs = v[:, :, : size * segments].unflatten(2, (segments, size)).permute(2, 0, 1, 3, 4).flatten(0, 1)
    qs = q.expand(segments, *q.shape[1:])
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qs, ks, vs, 0.0, False)[:2]
    weights = torch.softmax(lse, dim=0)[..., None]
    return (weights * out).sum(0)


def _bandwidth_row(piece: str, variant: str, tensors: list[torch.Tensor], seconds: float) -> dict:
    size = sum(t.numel() * t.element_size() for t in tensors)
    return {"piece": piece, "variant": variant, "mib": size / 2**20, "ms": seconds * 1000,
            "gb_s": size / seconds / 1e9}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", default="2000,7504,13000", help="cached keys for the attention rows")
    parser.add_argument("--out", type=Path, default=None, help="directory for the JSON lines")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    block = torch.randn(512 * 2**20 // 4)  # 512 MiB: the baseline, reading memory at the CPU's speed
    rows = [_bandwidth_row("baseline: read 512 MiB (sum)", "float32", [block], timed(block.sum))]
    del block
    gemv_rows(rows)
    gemm_rows(rows)
    attention_rows(rows, [int(x) for x in args.lengths.split(",")])
    env = environment(torch.device("cpu"))
    for row in rows:
        row.update(env, threads=args.threads)
    print_table(rows, ["piece", "variant", "mib", "ms", "gb_s", "gflop_s"])
    print(f"results: {write_results('cpu_kernels', rows, args.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
