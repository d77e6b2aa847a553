"""How much does DCA attention cost against plain causal attention at the same length?

Times one layer's attention prefill (Llama-3-8B heads: 32 query / 8 KV heads, head dim 128) with
chunkqa's DCA (P = 8192 by default: c = 6144, w = 1024) against causal SDPA measured in the same
run, and prints the ratio. The fastest kernel is also timed with whole chunks sharing their kernel
calls (`batch_chunks=True`, off by default until it is measured faster), in the same run.

    python benchmarks/dca_attention.py                      # CPU, 2k-8k, P = 1024
    python benchmarks/dca_attention.py --device cuda        # GPU, 8k-128k, P = 8192
    python benchmarks/dca_attention.py --device cuda --lengths 32768 --profile   # and where the time goes

`--profile` also prints, for the first length, the GPU kernels (CPU: operators) of one causal SDPA
call and of one DCA call with the first kernel, by time (torch.profiler).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, kernel_profile, peak_memory, print_table, time_call, write_results

from chunkqa.methods.dca.attention import dca_attention
from chunkqa.methods.dca.positions import key_positions
from chunkqa.methods.kernels import KERNELS, available_kernels
from chunkqa.methods.rope import rotate


def rope_tables(chunk: int, dim: int, device, dtype):
    inv = 1.0 / (500000 ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    angles = torch.arange(chunk + 1, device=device, dtype=torch.float32)[:, None] * inv
    emb = torch.cat((angles, angles), -1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def bench_length(length: int, args, device, dtype, kernels: list[str]) -> list[dict]:
    gen = torch.Generator(device="cpu").manual_seed(length)
    q = torch.randn(1, 32, length, 128, generator=gen).to(device, dtype)
    k = torch.randn(1, 8, length, 128, generator=gen).to(device, dtype)
    v = torch.randn(1, 8, length, 128, generator=gen).to(device, dtype)
    chunk = args.pretraining_length * 3 // 4
    chunk_len = chunk - args.pretraining_length // 8
    cos, sin = rope_tables(chunk, 128, device, dtype)
    pos = key_positions(0, length, chunk_len, device)
    k_rot = rotate(k, cos[pos], sin[pos])

    def plain():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    rows = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = time_call(plain, device, args.repeats)
    base_mem = peak_memory(device)
    runs = [(name, False) for name in kernels] + [(kernels[0], True)]
    for name, batched in runs:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = time_call(
            lambda name=name, batched=batched: dca_attention(
                q, k_rot, v, 0, cos, sin, chunk_len, chunk, 128**-0.5, KERNELS[name], batch_chunks=batched
            ),
            device,
            args.repeats,
        )
        mem = peak_memory(device)
        rows.append(
            {
                "length": length,
                "kernel": f"{name}, batched chunks" if batched else name,
                "sdpa_ms": base * 1e3,
                "dca_ms": seconds * 1e3,
                "ratio": seconds / base,
                "sdpa_peak_gib": base_mem / 2**30 if base_mem else None,
                "dca_peak_gib": mem / 2**30 if mem else None,
            }
        )
    if args.profile and length == args.first_length:

        def dca():
            return dca_attention(q, k_rot, v, 0, cos, sin, chunk_len, chunk, 128**-0.5, KERNELS[kernels[0]])

        for label, fn in (("causal SDPA", plain), (f"DCA, {kernels[0]}", dca)):
            print(f"# profile at {length:,} tokens: {label}")
            print_table(kernel_profile(fn, device), ["op", "per_call", "ms", "share"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--lengths", default=None, help="comma-separated token counts")
    parser.add_argument("--pretraining-length", type=int, default=None)
    parser.add_argument("--kernels", default=None, help="comma-separated DCA kernels (default: all that run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print where the time goes (first length)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON lines (default results/)")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if cuda else torch.float32)
    args.pretraining_length = args.pretraining_length or (8192 if cuda else 1024)
    default_lengths = "8192,16384,32768,65536,131072" if cuda else "2048,4096,8192"
    lengths = [int(x) for x in (args.lengths or default_lengths).split(",")]
    args.first_length = lengths[0]
    kernels = (
        args.kernels.split(",")
        if args.kernels
        else [k for k in available_kernels(device, dtype) if k != "math"]
    )
    env = {**environment(device), "dtype": str(dtype).removeprefix("torch."), "P": args.pretraining_length}
    rows = [{**env, **row} for n in lengths for row in bench_length(n, args, device, dtype, kernels)]
    path = write_results("dca_attention", rows, args.out)
    print(
        f"# DCA attention vs causal SDPA  ({env['device']}, torch {env['torch']}, {env['dtype']}, "
        f"P={args.pretraining_length}, 32q/8kv heads, d=128; results appended to {path})"
    )
    print_table(rows, ["length", "kernel", "sdpa_ms", "dca_ms", "ratio", "sdpa_peak_gib", "dca_peak_gib"])


if __name__ == "__main__":
    main()
