"""What do DCA and SelfExtend cost end to end when a model reads a long document?

Prefill time, throughput and peak memory of a whole model reading L tokens in 4096-token pieces
(chunkqa's prefill: KV cache, only the last position's logits), with DCA (and SelfExtend, with
--methods) against the same model without it (transformers' own SDPA attention), measured in the same
run. Random weights. `selfextend:N` runs SelfExtend with N query rows per block of its kernel path;
`METHOD@N` reads in pieces of N tokens instead of --piece, and `@all` in one pass (the whole
document in one forward, as plain transformers would). The first method is the baseline of the
ratios. `floor_gib` is what any method must hold: the weights plus the KV cache of L tokens.

    python benchmarks/prefill.py                    # CPU: Llama 4 x 512, P 2048, 4k-16k tokens
    python benchmarks/prefill.py --device cuda      # GPU: Llama-3-8B shape, bf16, P 8192, 8k-64k tokens
    python benchmarks/prefill.py --device cuda --preset smollm2 --piece 32768 \
        --methods plain,dca,selfextend:512,selfextend:2048   # SmolLM2-135M's shape, as chunkqa eval runs it
    python benchmarks/prefill.py --device cuda --lengths 131072,262144 --repeats 1 \
        --methods plain@all,dca,dca@16384       # against plain transformers in one pass (#13's baseline)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, print_table, sync, write_results

from chunkqa.budget import kv_bytes_per_token
from chunkqa.engine.generate import prefill
from chunkqa.methods.dca import apply_dca
from chunkqa.methods.selfextend import apply_selfextend
from chunkqa.methods.selfextend import attention as selfextend_attention

PRESETS = {  # layers, hidden, heads, kv heads, MLP, vocab, P
    "cpu": (4, 512, 8, 4, 1536, 32000, 2048),
    "cuda": (32, 4096, 32, 8, 14336, 128256, 8192),
    "smollm2": (30, 576, 9, 3, 1536, 49152, 8192),
}


def build(args, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig

    layers, hidden, heads, kv_heads, inner, vocab, length = PRESETS[args.preset or device.type]
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inner,
        num_hidden_layers=args.layers or layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=length,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def one_prefill(model, ids: list[int], device: torch.device, piece: int) -> tuple[float, int | None]:
    from transformers import DynamicCache

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    prefill(model, ids, DynamicCache(config=model.config), piece)
    sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lengths", default=None)
    parser.add_argument("--layers", type=int, default=None, help="override the preset's layer count")
    parser.add_argument("--piece", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: the device's")
    parser.add_argument(
        "--methods", default="plain,dca", help="plain, dca, selfextend[:query rows per block]"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    lengths = [
        int(x)
        for x in (args.lengths or ("8192,32768,65536" if device.type == "cuda" else "4096,8192,16384")).split(
            ","
        )
    ]
    model = build(args, device, dtype)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    env = {
        **environment(device),
        "dtype": str(dtype).removeprefix("torch."),
        "model": f"llama {model.config.num_hidden_layers}x{model.config.hidden_size}",
        "P": model.config.max_position_embeddings,
    }
    rows = []
    for length in lengths:
        ids = torch.randint(
            3, model.config.vocab_size, (length,), generator=torch.Generator().manual_seed(length)
        )
        ids = ids.tolist()
        methods = args.methods.split(",")
        results = {mode: timed(model, ids, device, args, mode) for mode in methods}
        plain_s = results[methods[0]][0]
        row = {**env, "length": length, "plain_s": plain_s, "baseline": methods[0]}
        row["floor_gib"] = (weights + kv_bytes_per_token(model.config, dtype.itemsize) * length) / 2**30
        for mode, (seconds, peak) in results.items():
            name = column_name(mode)
            row[f"{name}_s"] = seconds
            row[f"{name}_peak_gib"] = peak / 2**30 if peak else None
            if mode != methods[0]:
                row[f"{name}_ratio"] = seconds / plain_s
                row[f"{name}_tok_s"] = length / seconds
        if "dca" in results:  # the names earlier rows of results/prefill.jsonl use
            row.update(
                dca_s=results["dca"][0],
                ratio=results["dca"][0] / plain_s,
                dca_tok_s=length / results["dca"][0],
            )
        rows.append(row)
    path = write_results("prefill", rows, args.out)
    print(
        f"# Prefill with DCA vs plain SDPA ({env['device']}, torch {env['torch']}, {env['dtype']}, "
        f"{env['model']}, P={env['P']}, pieces of {args.piece}; best of {args.repeats}; {path})"
    )
    first, *modes = [column_name(m) for m in args.methods.split(",")]
    columns = ["length", *(f"{m}_{c}" for m in modes for c in ("s", "ratio")), f"{first}_peak_gib"]
    print(f"# baseline of the ratios: {first} ({first}_s)")
    print_table(
        rows, [*columns[:1], f"{first}_s", *columns[1:], *(f"{m}_peak_gib" for m in modes), "floor_gib"]
    )


def column_name(mode: str) -> str:
    """The JSON key prefix of a method: `selfextend:512` -> selfextend512, `dca@16384` -> dca_p16384."""
    return mode.replace(":", "").replace("@", "_p")


def timed(model, ids: list[int], device: torch.device, args, mode: str) -> tuple[float, int | None]:
    """Best prefill time of `mode` over args.repeats runs (after a warm-up), and the first run's peak."""
    mode, _, size = mode.partition("@")
    piece = len(ids) if size == "all" else int(size) if size else args.piece
    name, _, block = mode.partition(":")
    if name == "dca":
        handle = apply_dca(model)
    elif name == "selfextend":
        handle = apply_selfextend(model, target_length=len(ids))
    elif name == "plain":
        handle = None
    else:
        raise SystemExit(f"unknown method {mode!r}")
    saved = selfextend_attention.QUERY_BLOCK, selfextend_attention.QUERY_BLOCK_GPU
    if block:
        selfextend_attention.QUERY_BLOCK = selfextend_attention.QUERY_BLOCK_GPU = int(block)
    try:
        one_prefill(model, ids[: min(piece, 8192)], device, piece)  # warm-up
        runs = [one_prefill(model, ids, device, piece) for _ in range(args.repeats)]
    finally:
        selfextend_attention.QUERY_BLOCK, selfextend_attention.QUERY_BLOCK_GPU = saved
        if handle is not None:
            handle.remove()
    return min(r[0] for r in runs), runs[0][1]


if __name__ == "__main__":
    main()
