"""One rank of a DeepSpeed AutoTP group on CUDA (NCCL), for test_tp_gpu.py; launched by torchrun.

Loads the model at argv[1] whole on this rank's GPU, takes DCA logits (prefill and a decode step) as
the reference, then loads it again sharded over argv[2] ranks, applies DCA to the shard and compares.
Rank 0 prints one JSON line.
"""

from __future__ import annotations

import json
import sys

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from chunkqa import apply_dca
from chunkqa.engine.forward import cache_kwargs
from chunkqa.engine.parallel import init_parallel, shard


def dca_logits(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefill logits of ids[:, :-1] [1, n-1, V] and the decode step's logits for ids[:, -1] [1, V]."""
    handle = apply_dca(model)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        prefill = model(ids[:, :-1], **cache_kwargs(model, cache)).logits
        step = model(ids[:, -1:], **cache_kwargs(model, cache)).logits[:, -1]
    handle.remove()
    return prefill, step


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


def main(path: str, world: int) -> None:
    parallel = init_parallel(world)
    device = torch.device("cuda", parallel.local_rank)
    ids = torch.randint(4, 300, (1, 301), generator=torch.Generator().manual_seed(0)).to(device)
    load = lambda: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()  # noqa: E731
    whole = load().to(device)
    ref_prefill, ref_step = dca_logits(whole, ids)
    del whole
    sharded = shard(load(), parallel, torch.float32)
    prefill, step = dca_logits(sharded, ids)
    if parallel.leader:
        record = {
            "world": world,
            "device": torch.cuda.get_device_name(device),
            "prefill_rel_err": rel_err(prefill, ref_prefill),
            "decode_rel_err": rel_err(step, ref_step),
            "sharded_o_proj": type(sharded.model.layers[0].self_attn.o_proj).__name__,
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
