"""How fast does an answer stream, and how soon does a follow-up start, at a long context?

Per generated token (median of a run of greedy steps) and for an 11-token follow-up question over
a cached document, four ways, all measured in this run on the same random model and cache:
  baseline      the model without DCA: transformers' SDPA attention over a DynamicCache
  kernel path   DCA as before: DynamicCache, one attention kernel per key range
  fused         DCA with chunkqa's GrowingCache (writes in place) and the fused masked pass (on the
                CPU the kernel path stays: its flash kernel is faster there)
  graph         the fused step captured once in a CUDA graph and replayed per token (CUDA only):
                with the Triton flash-decoding kernel where triton is installed (chunkqa's default),
                and with the fused masked pass as before, in the same run
  graph, room   the same with the cache reserved --room tokens past the answer (as a large
                --max-new-tokens does): a step attends to the filled length, so it should cost the same
Random weights: the work is measured, not answers. Each row also gives the GB/s a step achieves if
it reads the weights and the filled KV cache once, and the floor: those bytes at the read bandwidth
measured in the same run (a large reduction over a 4 GiB buffer). `--profile` prints the GPU kernels
of one uncaptured step per attention path, by time.

    python benchmarks/decode.py                  # CPU: Llama 4 x 512, P 2048, 8k tokens
    python benchmarks/decode.py --device cuda    # GPU: Llama-3-8B shape, bf16, P 8192, 32k tokens
    python benchmarks/decode.py --device cuda --profile
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, kernel_profile, print_table, sync, time_call, write_results
from ttft_cache import build_model, fill_preset

from chunkqa.budget import kv_bytes_per_token
from chunkqa.engine.cuda_graphs import DecodeGraph
from chunkqa.engine.forward import cache_kwargs
from chunkqa.engine.generate import prefill
from chunkqa.engine.kvcache import new_cache
from chunkqa.methods.dca import patch

QUESTION = list(range(100, 111))


def forward(model, ids: list[int], cache) -> torch.Tensor:
    x = torch.tensor([ids], device=model.device)
    return model(input_ids=x, **cache_kwargs(model, cache), use_cache=True, logits_to_keep=1).logits[0, -1]


@torch.inference_mode()
def measure(model, cache, tokens: int, steps: int, device, stepper=None) -> dict:
    """Follow-up forward time and ms per decode step, the cache rolled back to `tokens` after each."""
    follow = []
    for _ in range(4):
        sync(device)
        start = time.perf_counter()
        forward(model, QUESTION, cache)
        sync(device)
        follow.append(time.perf_counter() - start)
        trim(cache, tokens)
    token, times = 5, []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        logits = stepper(token) if stepper else None
        logits = forward(model, [token], cache) if logits is None else logits
        token = int(torch.argmax(logits)) % 1000 + 3
        times.append(time.perf_counter() - start)
    trim(cache, tokens)
    warm = times[2:]  # the first steps capture graphs and plan kernels
    return {
        "follow_up_ms": statistics.median(follow[1:]) * 1e3,
        "first_step_ms": times[0] * 1e3,
        "ms_per_token": statistics.median(warm) * 1e3,
    }


@torch.inference_mode()
def profile_paths(model, cache, tokens: int, device) -> None:
    """Print the kernels of one uncaptured decode step, per attention path available here."""
    paths = [("default", patch.TRITON_DECODE)]
    if device.type == "cuda" and patch._triton_decode() is not None:
        paths = [("Triton decode", True), ("fused masked pass", False)]
    saved = patch.TRITON_DECODE
    for label, flag in paths:
        patch.TRITON_DECODE = flag

        def step():
            forward(model, [5], cache)
            trim(cache, tokens)

        print(f"# profile of one decode step at {tokens:,} tokens: DCA, {label} (GrowingCache, not captured)")
        print_table(kernel_profile(step, device, calls=3, top=10), ["op", "per_call", "ms", "share"])
    patch.TRITON_DECODE = saved


def read_bandwidth(device) -> float:
    """Bytes per second of a large reduction (4 GiB on a GPU, 256 MiB on a CPU): the memory's pace."""
    size = 4 * 2**30 if device.type == "cuda" else 256 * 2**20
    buffer = torch.ones(size // 4, dtype=torch.float32, device=device)
    seconds = time_call(buffer.sum, device, repeats=5)
    return size / seconds


def trim(cache, length: int) -> None:
    for layer in cache.layers:
        extra = layer.get_seq_length() - length
        if extra > 0:
            layer.crop(-extra)


def cases(loaded, document: list[int], args, device) -> list[dict]:
    from transformers import DynamicCache

    model, handle = loaded.model, loaded.handle
    rows = []
    with handle.prompt_length(len(document)):
        saved = patch.MASKED_QUERIES
        patch.MASKED_QUERIES = 0  # the kernel path only, as before the fused pass
        cache = DynamicCache(config=model.config)
        prefill(model, document, cache, 4096)
        rows.append(
            {
                "case": "DCA, kernel path (DynamicCache)",
                **measure(model, cache, len(document), args.steps, device),
            }
        )
        patch.MASKED_QUERIES = saved
        del cache
        cache = new_cache(model.config)
        cache.reserve(len(document) + len(QUESTION) + args.steps + 1)
        prefill(model, document, cache, 4096)
        label = (
            "DCA, fused (GrowingCache)" if device.type == "cuda" else "DCA, GrowingCache (CPU: kernel path)"
        )
        rows.append({"case": label, **measure(model, cache, len(document), args.steps, device)})
        if args.profile:
            profile_paths(model, cache, len(document), device)
        if device.type == "cuda":
            triton = patch._triton_decode() is not None and patch.TRITON_DECODE
            graph = DecodeGraph(model, cache, handle)
            row = measure(model, cache, len(document), args.steps, device, graph.step)
            label = "DCA, Triton decode + CUDA graph" if triton else "DCA, fused + CUDA graph"
            rows.append({"case": label, **row, "note": graph.failure})
            if triton:
                patch.TRITON_DECODE = False
                graph = DecodeGraph(model, cache, handle)
                row = measure(model, cache, len(document), args.steps, device, graph.step)
                rows.append({"case": "DCA, fused masked pass + CUDA graph", **row, "note": graph.failure})
                patch.TRITON_DECODE = True
            del cache, graph
            cache = new_cache(model.config)
            cache.reserve(len(document) + len(QUESTION) + args.steps + 1 + args.room)
            prefill(model, document, cache, 4096)
            graph = DecodeGraph(model, cache, handle)
            row = measure(model, cache, len(document), args.steps, device, graph.step)
            label = f"DCA, fused + CUDA graph, {args.room:,} more reserved"
            rows.append({"case": label, **row, "note": graph.failure})
        del cache
    handle.remove()
    cache = DynamicCache(config=model.config)
    prefill(model, document, cache, 4096)
    rows.insert(
        0,
        {
            "case": "baseline: no DCA, SDPA (DynamicCache)",
            **measure(model, cache, len(document), args.steps, device),
        },
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=None, help="document length (default: the preset's)")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--profile", action="store_true", help="print the kernels of one step per path")
    parser.add_argument("--room", type=int, default=16384, help="positions reserved past the answer (CUDA)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON lines (default results/)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = fill_preset(args, device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    loaded = build_model(args, device, dtype)
    document = torch.randint(
        3, args.vocab, (args.tokens,), generator=torch.Generator().manual_seed(0)
    ).tolist()
    bandwidth = read_bandwidth(device)
    rows = cases(loaded, document, args, device)
    base = rows[0]
    model = loaded.model
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    step_bytes = weights + kv_bytes_per_token(model.config, dtype.itemsize) * len(document)
    for row in rows:
        row["vs_baseline"] = row["ms_per_token"] / base["ms_per_token"]
        row["gb_s"] = step_bytes / row["ms_per_token"] / 1e6
        row["floor_ms"] = step_bytes / bandwidth * 1e3
        row["read_gb_s"] = bandwidth / 1e9
    env = {**environment(device), "dtype": str(dtype)[6:], **{k: getattr(args, k) for k in names}}
    path = write_results("decode", [{**env, **row} for row in rows], args.out)
    print(
        f"# Decoding at {args.tokens:,} tokens ({env['device']}, torch {env['torch']}, {env['dtype']}, "
        f"Llama {args.layers} x {args.hidden}, P={args.pretraining_length}; results appended to {path})"
    )
    print_table(
        rows, ["case", "follow_up_ms", "first_step_ms", "ms_per_token", "vs_baseline", "gb_s", "floor_ms"]
    )
    print(
        f"# floor: weights + KV at {len(document):,} tokens ({step_bytes / 1e9:.2f} GB) read once at "
        f"{bandwidth / 1e9:.0f} GB/s (a large reduction in this run)"
    )


if __name__ == "__main__":
    main()
