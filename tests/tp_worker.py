"""One rank of a DeepSpeed AutoTP group (NCCL on GPUs, gloo on the CPU); launched by torchrun.

Loads the model at argv[1] whole, takes each method's logits (prefill and a decode step) as the
reference, then loads it again sharded over argv[2] ranks, applies the method to the shard and
compares. Every rank reports the shapes of its first layer's projections, so the caller can check
that each holds its share of the heads. Rank 0 prints one JSON line.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, DynamicCache

from chunkqa.engine.forward import cache_kwargs
from chunkqa.engine.parallel import init_parallel, leave_parallel, shard
from chunkqa.methods.spec import MethodSpec, apply_method, resolve_method

METHODS = {"dca": MethodSpec("dca"), "selfextend": MethodSpec("selfextend", group_size=4, window=16)}


def method_logits(model, spec: MethodSpec, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefill logits of ids[:, :-1] [1, n-1, V] and the decode step's logits for ids[:, -1] [1, V]."""
    handle = apply_method(model, resolve_method(spec, model.config))
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        prefill = model(ids[:, :-1], **cache_kwargs(model, cache)).logits
        step = model(ids[:, -1:], **cache_kwargs(model, cache)).logits[:, -1]
    handle.remove()
    return prefill, step


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


def projections(model) -> dict[str, list[int]]:
    """The first layer's projection weight shapes on this rank ([out, in])."""
    attention = model.model.layers[0].self_attn
    return {
        name: list(getattr(attention, name).weight.shape) for name in ("q_proj", "k_proj", "v_proj", "o_proj")
    }


def main(path: str, world: int) -> None:
    parallel = init_parallel(world)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", parallel.local_rank) if cuda else torch.device("cpu")
    ids = torch.randint(4, 90, (1, 201), generator=torch.Generator().manual_seed(0)).to(device)
    load = lambda: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()  # noqa: E731
    whole = load().to(device)
    reference = {name: method_logits(whole, spec, ids) for name, spec in METHODS.items()}
    full = projections(whole)
    del whole
    sharded = shard(load(), parallel, torch.float32)
    errors = {}
    for name, spec in METHODS.items():
        prefill, step = method_logits(sharded, spec, ids)
        errors[name] = {
            "prefill": rel_err(prefill, reference[name][0]),
            "decode": rel_err(step, reference[name][1]),
        }
    shapes = [None] * world
    dist.all_gather_object(shapes, projections(sharded))
    if parallel.leader:
        record = {
            "world": world,
            "device": torch.cuda.get_device_name(device) if cuda else "cpu",
            "errors": errors,
            "full": full,
            "ranks": shapes,
            "sharded_o_proj": type(sharded.model.layers[0].self_attn.o_proj).__name__,
        }
        print(json.dumps(record), flush=True)
    leave_parallel(parallel)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
