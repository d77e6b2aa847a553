"""How fast does an answer stream, and how soon does a follow-up start, at a long context?

Per generated token (median of a run of greedy steps) and for an 11-token follow-up question over
a cached document, four ways, all measured in this run on the same random model and cache:
  baseline      the model without DCA: transformers' SDPA attention over a DynamicCache
  kernel path   DCA as before: DynamicCache, one attention kernel per key range
  fused         DCA with chunkqa's GrowingCache (writes in place) and the fused masked pass (on the
                CPU the kernel path stays: its flash kernel is faster there)
  graph         the fused step captured once in a CUDA graph and replayed per token (CUDA only)
  graph, room   the same with the cache reserved --room tokens past the answer (as a large
                --max-new-tokens does): a step attends to the filled length, so it should cost the same
Random weights: the work is measured, not answers.

    python benchmarks/decode.py                  # CPU: Llama 4 x 512, P 2048, 8k tokens
    python benchmarks/decode.py --device cuda    # GPU: Llama-3-8B shape, bf16, P 8192, 32k tokens
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, print_table, sync, write_results
from ttft_cache import build_model, fill_preset

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
        if device.type == "cuda":
            graph = DecodeGraph(model, cache, handle)
            row = measure(model, cache, len(document), args.steps, device, graph.step)
            rows.append({"case": "DCA, fused + CUDA graph", **row, "note": graph.failure})
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
    rows = cases(loaded, document, args, device)
    base = rows[0]
    for row in rows:
        row["vs_baseline"] = row["ms_per_token"] / base["ms_per_token"]
    env = {**environment(device), "dtype": str(dtype)[6:], **{k: getattr(args, k) for k in names}}
    path = write_results("decode", [{**env, **row} for row in rows], args.out)
    print(
        f"# Decoding at {args.tokens:,} tokens ({env['device']}, torch {env['torch']}, {env['dtype']}, "
        f"Llama {args.layers} x {args.hidden}, P={args.pretraining_length}; results appended to {path})"
    )
    print_table(rows, ["case", "follow_up_ms", "first_step_ms", "ms_per_token", "vs_baseline"])


if __name__ == "__main__":
    main()
