"""Tensor parallelism with DeepSpeed AutoTP (the `tp` extra): one model sharded over N processes.

Launch N processes (torchrun --nproc-per-node N). AutoTP shards the
q/k/v/o and MLP projections by heads and keeps each attention module's own forward, so the DCA patch
(applied after sharding) runs per head on every rank. Rank 0 alone reads the input (stdin included)
and shares it, so every rank answers the same question; all ranks decode in lockstep.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from chunkqa.errors import ModelLoadError, UsageError

T = TypeVar("T")
SHM_OP = "deepspeed_shm_comm"  # DeepSpeed's CPU shared-memory all-reduce


@dataclass(frozen=True)
class Parallel:
    """This process's place in a tensor-parallel group."""

    rank: int
    world: int
    local_rank: int

    @property
    def leader(self) -> bool:
        return self.rank == 0


def init_parallel(tp: int) -> Parallel:
    """Join the process group started by torchrun/deepspeed for `tp` ranks (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != tp:
        raise UsageError(
            f"`tp` {tp} needs {tp} processes, but this is one of {world}",
            hint=f"launch one process per rank: torchrun --nproc-per-node {tp}",
        )
    import torch

    cuda = torch.cuda.is_available()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if cuda else "cpu")
    try:
        import deepspeed
        import deepspeed.comm.comm as ds_comm
    except ImportError:
        raise UsageError("tensor parallelism needs DeepSpeed", hint="pip install 'chunkqa[tp]'") from None
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    with _no_cpu_shm_op(cuda):
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False)
    if not cuda:  # DeepSpeed's CPU shared-memory all-reduce crashed here (0.19.8); use the process group
        ds_comm.cdb.shm_vector_kernel_level = 0
    return Parallel(int(os.environ.get("RANK", "0")), world, local_rank)


def leave_parallel(parallel: Parallel | None) -> None:
    """Wait for every rank, then tear the process group down: a group left to the interpreter's exit
    can abort a rank ("terminate called without an active exception", seen with gloo)."""
    if parallel is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def share(value: T, parallel: Parallel | None) -> T:
    """The leader's value, on every rank (input read once, on rank 0)."""
    if parallel is None or parallel.world == 1:
        return value
    import torch.distributed as dist

    box = [value if parallel.leader else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_call(fn: Any, parallel: Parallel | None) -> Any:
    """Run fn() on the leader only (e.g. read stdin) and give every rank its result or its error.

    The error a rank other than 0 receives is marked `shown_by_leader`: rank 0 reports it, once.
    """
    if parallel is None or parallel.world == 1:
        return fn()
    from chunkqa.errors import ChunkqaError

    outcome = None
    if parallel.leader:
        try:
            outcome = ("ok", fn())
        except ChunkqaError as exc:
            outcome = ("error", exc)
    kind, value = share(outcome, parallel)
    if kind == "error":
        value.shown_by_leader = not parallel.leader
        raise value
    return value


def shard(model: Any, parallel: Parallel, dtype: Any) -> Any:
    """Split the model's projections over the ranks with AutoTP; returns the sharded model."""
    import deepspeed

    config = model.config.get_text_config()
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    if kv_heads % parallel.world:
        raise ModelLoadError(
            f"{parallel.world} tensor-parallel ranks do not divide the model's {kv_heads} key/value heads",
            hint=f"use a number of ranks that divides {kv_heads}",
        )
    engine = deepspeed.init_inference(
        model, tensor_parallel={"tp_size": parallel.world}, dtype=dtype, replace_with_kernel_inject=False
    )
    return engine.module


@contextmanager
def _no_cpu_shm_op(cuda: bool) -> Iterator[None]:
    """On CPU, keep DeepSpeed from JIT-compiling its shared-memory all-reduce while it initialises.

    chunkqa never uses that op (it crashed here; the gloo process group does the all-reduce), yet
    DeepSpeed builds it on every fresh machine: a minute of compiling per launch, and a build that is
    killed leaves a lock in ~/.cache/torch_extensions that makes every later launch wait forever.
    DeepSpeed looks the op up in `deepspeed.ops.__compatible_ops__`; it is marked unusable for the
    duration of init_distributed only, and restored afterwards.
    """
    if cuda:
        yield
        return
    import deepspeed.ops

    table = deepspeed.ops.__compatible_ops__
    saved = table.get(SHM_OP)
    table[SHM_OP] = False
    try:
        yield
    finally:
        if saved is None:
            table.pop(SHM_OP, None)
        else:
            table[SHM_OP] = saved


def same_seed(config: Any, parallel: Parallel | None) -> Any:
    """`config` (a GenerationConfig) with a sampling seed that every rank shares.

    The ranks sample from identical logits; with unseeded generators they could pick different tokens
    and feed the shards different inputs. Rank 0 draws the seed when none was given; a given seed, or
    no parallelism, leaves `config` as it is.
    """
    if parallel is None or parallel.world == 1 or config.seed is not None:
        return config
    import secrets
    from dataclasses import replace

    return replace(config, seed=share(secrets.randbits(63), parallel))


def device_for(parallel: Parallel | None, requested: Any) -> Any:
    """Each rank's device: its own GPU under tensor parallelism, else what was asked for."""
    import torch

    if parallel is not None and torch.cuda.is_available():
        return torch.device("cuda", parallel.local_rank)
    return requested
