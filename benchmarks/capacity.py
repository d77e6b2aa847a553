"""How long a document fits on one GPU, and what it costs there: 128k to 1M tokens.

Per model shape (random weights, DCA as the model's config implies it) and length: the whole-model
prefill as chunkqa runs it (pieces into a preallocated GrowingCache), decode ms per token (the
captured step where CUDA graphs work), the measured peak memory, and chunkqa's own estimate
(`chunkqa.budget.estimate_memory`: what the budget and `chunkqa inspect` print) against that peak.
The baseline, from the same run: the floor any method needs, the weights plus the KV cache.

    python benchmarks/capacity.py --device cuda --shape qwen2.5-7b-1m \\
        --lengths 131072,262144,524288,1048576          # Qwen2.5-7B-Instruct-1M's shape and DCA config
    python benchmarks/capacity.py --device cuda --shape llama3-8b --lengths 131072,262144,524288
    python benchmarks/capacity.py                        # CPU: a tiny shape, 2k-8k tokens (a smoke run)
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

from chunkqa.budget import estimate_memory, kv_bytes_per_token
from chunkqa.engine.cuda_graphs import DecodeGraph
from chunkqa.engine.generate import prefill
from chunkqa.engine.kvcache import new_cache
from chunkqa.methods.dca import apply_dca

SHAPES = {  # family, layers, hidden, heads, kv heads, MLP, vocab, P, rope theta, DCA (chunk, local) or None
    "llama3-8b": ("llama", 32, 4096, 32, 8, 14336, 128256, 8192, 500000.0, None),
    # Qwen2.5-7B-Instruct-1M: trained at 256k, DCA chunks of 256k with a local window of 8k
    "qwen2.5-7b-1m": ("qwen2", 28, 3584, 28, 4, 18944, 152064, 262144, 10000000.0, (262144, 8192)),
    "tiny": ("llama", 2, 256, 4, 2, 512, 1024, 1024, 10000.0, None),
}
GIB = 2**30


def build(shape: str, device: torch.device, dtype: torch.dtype):
    """A random model of the named shape, made on the device in its dtype."""
    from transformers import AutoConfig, AutoModelForCausalLM

    family, layers, hidden, heads, kv_heads, inner, vocab, length, theta, dual = SHAPES[shape]
    extra = {}
    if dual is not None:
        extra["dual_chunk_attention_config"] = {
            "chunk_size": dual[0],
            "local_size": dual[1],
            "original_max_position_embeddings": length,
        }
    config = AutoConfig.for_model(
        family,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inner,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=length if dual is None else 1010000,  # the 1M model's config says so
        rope_parameters={"rope_type": "default", "rope_theta": theta},
        tie_word_embeddings=False,
        **extra,
    )
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


@torch.inference_mode()
def one_length(model, handle, length: int, args, device: torch.device) -> dict:
    """Prefill `length` random tokens, decode args.steps tokens; times, peak and estimate."""
    ids = torch.randint(
        3, model.config.vocab_size, (length,), generator=torch.Generator().manual_seed(length)
    )
    cache = new_cache(model.config)
    cache.reserve(length + args.steps + 2)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with handle.prompt_length(length):
        sync(device)
        start = time.perf_counter()
        logits = prefill(model, ids.tolist(), cache, args.piece)
        sync(device)
        prefill_s = time.perf_counter() - start
        decoder = DecodeGraph(model, cache, handle, capture=device.type == "cuda")
        times, token = [], int(torch.argmax(logits))
        for _ in range(args.steps + 2):  # the first two: capture and warm-up
            start = time.perf_counter()
            logits = decoder.step(token)
            sync(device)
            times.append(time.perf_counter() - start)
            token = int(torch.argmax(logits))
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    dtype_bytes = next(model.parameters()).element_size()
    estimate = estimate_memory(model.config, length + args.steps + 2, dtype_bytes, None)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    floor = weights + kv_bytes_per_token(model.config, dtype_bytes) * (length + args.steps + 2)
    graph = decoder.failure or ("captured" if device.type == "cuda" else "eager")
    del cache, decoder
    return {
        "length": length,
        "prefill_s": prefill_s,
        "prefill_tok_s": length / prefill_s,
        "decode_ms": 1000 * statistics.median(times[2:]),
        "graph": graph,
        "floor_gib": floor / GIB,
        "peak_gib": peak / GIB if peak is not None else None,
        "estimate_gib": estimate.total / GIB,
        "estimate_vs_peak": estimate.total / peak if peak else None,
        "peak_over_floor_gib": (peak - floor) / GIB if peak else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None, help="default: tiny on the CPU")
    parser.add_argument("--lengths", default=None, help="comma-separated token counts")
    parser.add_argument("--piece", type=int, default=4096, help="tokens per prefill call")
    parser.add_argument("--steps", type=int, default=16, help="decode steps timed")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = args.shape or ("llama3-8b" if device.type == "cuda" else "tiny")
    default_lengths = "131072,262144,524288" if device.type == "cuda" else "2048,4096,8192"
    lengths = [int(x) for x in (args.lengths or default_lengths).split(",")]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build(shape, device, dtype)
    handle = apply_dca(model)
    env = {
        **environment(device),
        "dtype": str(dtype).removeprefix("torch."),
        "shape": shape,
        **handle.config.describe(),
    }
    rows = []
    for length in lengths:  # each row is written when measured: a long run cut short keeps its rows
        rows.append({**env, **one_length(model, handle, length, args, device)})
        path = write_results("capacity", rows[-1:], args.out)
        print(f"# {length:,} tokens: {rows[-1]['prefill_s']:.1f} s prefill, peak {rows[-1]['peak_gib']} GiB")
    print(
        f"# Capacity of one {env['device']} ({shape}, {env['dtype']}, torch {env['torch']}, "
        f"DCA P={env['pretraining_length']} c={env['chunk_size']} w={env['local_window']}, "
        f"prefill pieces of {args.piece}; {path})"
    )
    columns = ["length", "prefill_s", "prefill_tok_s", "decode_ms", "floor_gib", "peak_gib", "estimate_gib"]
    print_table(rows, [*columns, "estimate_vs_peak", "peak_over_floor_gib"])


if __name__ == "__main__":
    main()
