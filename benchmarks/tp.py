"""Tensor parallelism (`--tp N`, DeepSpeed AutoTP) on N GPUs: prefill time, decode ms per token and
peak memory per GPU, against the one-GPU figures (issue #14).

This module owns the measurement, not the parallelism: the model is sharded by chunkqa's own
`chunkqa.engine.parallel.shard`, DCA is patched on every shard (`apply_dca`, as `load_model` does
under `parallel`), the length is prefilled in pieces into a GrowingCache (`generate.prefill`) and
tokens are decoded with the model's ordinary forward, as `chunkqa ask --tp N` decodes them: eagerly,
since chunkqa uses no CUDA graphs under tensor parallelism (the `decode` column says so; one-GPU runs
on CUDA also time the captured step chunkqa uses there, `graph_ms`).

Per length, every rank measures its own prefill seconds, decode ms per token (median of --steps,
after two warm-up steps) and peak memory (`torch.cuda.max_memory_allocated`; none on the CPU); rank 0
gathers them and writes one row: the slowest rank's times, the largest peak and every rank's figures,
with the floor a rank cannot go below (its share of the weights plus its 1/N of the KV cache) and the
head counts each rank holds (the proof it was sharded). Only rank 0 prints and writes.

    # 2 and 4 GPUs: Llama-3-70B's shape (80 layers), 32k and 128k tokens
    python -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/tp.py --shape llama3-70b
    python -m torch.distributed.run --standalone --nproc-per-node 4 benchmarks/tp.py --shape llama3-70b
    # one GPU, same lengths: Llama-3-8B's shape (fits one GPU), and half the 70B's layers (65 GiB)
    python benchmarks/tp.py --shape llama3-8b
    python benchmarks/tp.py --shape llama3-70b --layers 40
    # the cost of sharding itself: the 8B shape on 2 GPUs
    python -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/tp.py --shape llama3-8b
    # CPU smoke run: the tiny shape on 2 processes over gloo (how the tests run it)
    python -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/tp.py

The world size is torchrun's (WORLD_SIZE): N > 1 needs DeepSpeed (the `tp` extra); plain `python
benchmarks/tp.py` is one process, unsharded, without DeepSpeed.

Host memory: the model is built on the meta device, AutoTP allocates each rank's shard directly on
its device, and the weights are then drawn there (normal, one seed on every rank, so the replicated
parts, the embedding and the norms, agree; speed does not depend on the values). No process ever
holds the whole model, so a 70B run needs no more host memory than a small one: a few GiB per rank
for Python, torch and DeepSpeed. (`chunkqa ask --tp` loads a checkpoint on the host first; loading
is not what this measures.)
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, print_table, sync, write_results

from chunkqa.budget import kv_bytes_per_token
from chunkqa.engine.cuda_graphs import DecodeGraph
from chunkqa.engine.forward import cache_kwargs
from chunkqa.engine.generate import prefill
from chunkqa.engine.kvcache import GrowingCache, new_cache
from chunkqa.engine.parallel import Parallel, init_parallel, leave_parallel, shard
from chunkqa.engine.results import default_piece
from chunkqa.methods.dca import apply_dca

GIB = 2**30
SEED = 0
WARMUP_STEPS = 2


@dataclass(frozen=True)
class Shape:
    """A Llama-family model's shape; `pretraining` is P, the context it was trained on."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    inner: int
    vocab: int
    pretraining: int
    theta: float


SHAPES = {
    "llama3-70b": Shape(80, 8192, 64, 8, 28672, 128256, 8192, 500000.0),
    "llama3-8b": Shape(32, 4096, 32, 8, 14336, 128256, 8192, 500000.0),
    "tiny": Shape(2, 256, 4, 2, 512, 1024, 256, 10000.0),  # CPU smoke shape: 512 tokens are 2x its P
}


def make_config(shape: Shape, layers: int | None = None) -> Any:
    """A Llama config of this shape (`layers` overrides its layer count)."""
    from transformers import AutoConfig

    return AutoConfig.for_model(
        "llama",
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.inner,
        num_hidden_layers=layers or shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.pretraining,
        rope_parameters={"rope_type": "default", "rope_theta": shape.theta},
        tie_word_embeddings=False,
    )


def build(config: Any, parallel: Parallel | None, device: torch.device, dtype: torch.dtype) -> Any:
    """The model on `device`, sharded over the ranks when there are several, with random weights.

    Built on the meta device, so only this rank's shard is ever allocated (AutoTP slices meta weights
    and allocates its shard on the rank's device)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    if parallel is not None and parallel.world > 1:
        model = shard(model, parallel, dtype)
    else:
        model.to_empty(device=device)
    materialize(model, device)
    return model


@torch.no_grad()
def materialize(model: Any, device: torch.device) -> None:
    """Random weights (normal, std = the config's initializer_range), norms at one, and a fresh rotary
    embedding (its buffers are computed, not parameters). The same seed on every rank."""
    generator = torch.Generator(device=device).manual_seed(SEED)
    std = model.config.initializer_range
    for name, param in model.named_parameters():
        if param.dim() >= 2:
            param.normal_(0.0, std, generator=generator)
        else:
            param.fill_(1.0 if "norm" in name else 0.0)
    rotary = model.model.rotary_emb
    model.model.rotary_emb = type(rotary)(config=model.config).to(device)


def rank_facts(model: Any) -> dict[str, Any]:
    """What this rank holds: its heads (from the first layer's projections) and its weight bytes."""
    attention = model.model.layers[0].self_attn
    head_dim = attention.head_dim
    return {
        "q_out": attention.q_proj.weight.shape[0],
        "q_heads": attention.q_proj.weight.shape[0] // head_dim,
        "kv_heads": attention.k_proj.weight.shape[0] // head_dim,
        "o_in": attention.o_proj.weight.shape[1],
        "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / GIB,
    }


def gather(value: Any, parallel: Parallel | None) -> list[Any]:
    """Every rank's value, in rank order, on every rank."""
    if parallel is None or parallel.world == 1:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * parallel.world
    dist.all_gather_object(values, value)
    return values


def barrier(parallel: Parallel | None) -> None:
    if parallel is not None and parallel.world > 1:
        import torch.distributed as dist

        dist.barrier()


@torch.inference_mode()
def eager_step(model: Any, cache: GrowingCache, token: int) -> torch.Tensor:
    """One decode step the way chunkqa decodes under tensor parallelism: the model's own forward."""
    ids = torch.tensor([[token]], device=model.device)
    return model(input_ids=ids, **cache_kwargs(model, cache), use_cache=True, logits_to_keep=1).logits[0, -1]


def time_steps(step: Callable[[int], Any], token: int, steps: int, device: torch.device) -> tuple[float, int]:
    """Median ms of `steps` decode steps after WARMUP_STEPS, each fed the previous step's argmax."""
    times = []
    for _ in range(steps + WARMUP_STEPS):
        start = time.perf_counter()
        logits = step(token)
        sync(device)
        times.append(time.perf_counter() - start)
        token = int(torch.argmax(logits))
    return 1000 * statistics.median(times[WARMUP_STEPS:]), token


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


@torch.inference_mode()
def measure(
    model: Any, handle: Any, length: int, args: argparse.Namespace, parallel: Parallel | None
) -> dict[str, Any]:
    """This rank's prefill seconds, eager decode ms/token (and, on one GPU, the captured step's) and peak."""
    device = model.device
    ids = torch.randint(
        3, model.config.vocab_size, (length,), generator=torch.Generator().manual_seed(length)
    )
    one_gpu_graph = device.type == "cuda" and (parallel is None or parallel.world == 1)
    steps = (args.steps + WARMUP_STEPS) * (2 if one_gpu_graph else 1)
    reset_memory(device)
    cache = new_cache(model.config)
    cache.reserve(length + steps + 1)
    with handle.prompt_length(length):
        barrier(parallel)
        sync(device)
        start = time.perf_counter()
        logits = prefill(model, ids.tolist(), cache, args.piece)
        sync(device)
        prefill_s = time.perf_counter() - start
        eager = functools.partial(eager_step, model, cache)
        decode_ms, token = time_steps(eager, int(torch.argmax(logits)), args.steps, device)
        graph_ms = None
        if one_gpu_graph:
            decoder = DecodeGraph(model, cache, handle, capture=True)
            graph_ms, token = time_steps(decoder.step, token, args.steps, device)
            graph_ms = graph_ms if decoder.failure is None else None
            del decoder
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    del cache
    return {
        "prefill_s": prefill_s,
        "decode_ms": decode_ms,
        "graph_ms": graph_ms,
        "peak_gib": peak / GIB if peak is not None else None,
        "last_token": token,  # the same on every rank: the ranks computed one model's logits
    }


def summarize(
    length: int, ranks: list[dict[str, Any]], model: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """One row from every rank's figures: the slowest rank's times, the largest peak, the floor."""
    world = len(ranks)
    dtype_bytes = next(model.parameters()).element_size()
    tokens = length + args.steps + WARMUP_STEPS + 1
    kv_gib = kv_bytes_per_token(model.config, dtype_bytes) * tokens / GIB
    peaks = [r["peak_gib"] for r in ranks]
    prefill_s = max(r["prefill_s"] for r in ranks)
    return {
        "length": length,
        "prefill_s": prefill_s,
        "prefill_tok_s": length / prefill_s,
        "decode_ms": max(r["decode_ms"] for r in ranks),
        "decode": "eager",
        "graph_ms": ranks[0]["graph_ms"],
        "peak_gib": max(peaks) if None not in peaks else None,
        "floor_gib": max(r["weights_gib"] for r in ranks) + kv_gib / world,
        "kv_gib": kv_gib,
        "ranks": [{"rank": i, **r} for i, r in enumerate(ranks)],
    }


def lengths_for(args: argparse.Namespace, device: torch.device) -> list[int]:
    default = "32768,131072" if device.type == "cuda" else "512,1024"
    return [int(x) for x in (args.lengths or default).split(",")]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default=None,
        help="default: tiny on the CPU; on GPUs llama3-70b sharded, llama3-8b on one",
    )
    parser.add_argument("--layers", type=int, default=None, help="override the shape's layer count")
    parser.add_argument(
        "--lengths", default=None, help="comma-separated token counts (default 32768,131072 on GPUs)"
    )
    parser.add_argument("--piece", type=int, default=None, help="tokens per prefill call (chunkqa's default)")
    parser.add_argument("--steps", type=int, default=16, help="decode steps timed")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for tp.jsonl (default benchmarks/results)"
    )
    return parser.parse_args()


def sum_weights(config: Any, dtype: torch.dtype) -> int:
    """The whole (unsharded) model's parameter bytes, counted on the meta device."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def describe_run(
    device: torch.device, config: Any, dtype: torch.dtype, handle: Any, args: argparse.Namespace
):
    """The facts every row carries: environment, shape, world, settings, DCA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return {
        **environment(device),
        "dtype": str(dtype).removeprefix("torch."),
        "shape": args.shape,
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "heads": config.num_attention_heads,
        "kv_heads": config.num_key_value_heads,
        "model_gib": sum_weights(config, dtype) / GIB,
        "world": world,
        "backend": ("nccl" if device.type == "cuda" else "gloo") if world > 1 else None,
        "piece": args.piece,
        "steps": args.steps,
        **handle.config.describe(),
    }


def main() -> None:
    args = parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    parallel = init_parallel(world) if world > 1 else None
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", parallel.local_rank if parallel else 0) if cuda else torch.device("cpu")
    args.piece = args.piece or default_piece(device)
    args.shape = args.shape or (("llama3-70b" if world > 1 else "llama3-8b") if cuda else "tiny")
    dtype = torch.bfloat16 if cuda else torch.float32
    config = make_config(SHAPES[args.shape], args.layers)
    model = build(config, parallel, device, dtype)
    handle = apply_dca(model)
    facts = rank_facts(model)
    env = describe_run(device, config, dtype, handle, args)
    leader = parallel is None or parallel.leader
    rows, path = [], None
    for length in lengths_for(
        args, device
    ):  # each row is written when measured: a cut-short run keeps its rows
        ranks = gather({**facts, **measure(model, handle, length, args, parallel)}, parallel)
        if leader:
            rows.append({**env, **summarize(length, ranks, model, args)})
            path = write_results("tp", rows[-1:], args.out)
            print(f"# {length:,} tokens, {world} rank(s): {rows[-1]['prefill_s']:.1f} s prefill", flush=True)
    if leader:
        report(rows, env, path)
    leave_parallel(parallel)


def report(rows: list[dict[str, Any]], env: dict[str, Any], path: Path) -> None:
    print(
        f"# {env['shape']} ({env['layers']} layers, {env['model_gib']:.3g} GiB) over {env['world']} x "
        f"{env['device']}, {env['dtype']}, torch {env['torch']}, DCA P={env['pretraining_length']} "
        f"c={env['chunk_size']} w={env['local_window']}, prefill pieces of {env['piece']}; {path}"
    )
    columns = ["shape", "world", "length", "prefill_s", "prefill_tok_s", "decode_ms", "decode", "graph_ms"]
    print_table(rows, [*columns, "peak_gib", "floor_gib"])
    ranks = [{"length": row["length"], **r} for row in rows for r in row["ranks"]]
    print_table(
        ranks, ["length", "rank", "q_heads", "kv_heads", "weights_gib", "peak_gib", "prefill_s", "decode_ms"]
    )


if __name__ == "__main__":
    main()
