"""Decode steps replayed from a CUDA graph: one launch per token instead of hundreds.

At long contexts an eager decode step is bound by Python and kernel launches, not by the GPU (at
32k tokens on an H200: ~90 ms per token for ~35 ms of GPU work). A DCA model decodes with fixed
shapes when its cache is a GrowingCache with room for the answer: the new token's position is a
tensor (`cache.positions`), its keys are written at that position into the buffers, and the fused
masked pass attends over the first `cache.span` positions with later ones masked. The span is the
filled length rounded up to a whole SPAN_BLOCK, so a step costs what the filled length costs, not
what the reserved capacity (prompt + --max-new-tokens) would. One step is captured per span and
replayed per token (a run of SPAN_BLOCK tokens per graph, kept for the next answer of a chat); all
are captured again when the buffers move (the cache grew) or the logit scale changes. Where a graph
cannot be captured (the CPU, tensor parallelism, mixture-of-experts routing that syncs with the
host), `capture=False` runs the same step eagerly or the caller keeps its ordinary forward.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from chunkqa.engine.forward import cache_kwargs
from chunkqa.engine.kvcache import GrowingCache, round_up

SPAN_BLOCK = 1024  # keys a captured step attends to: the filled length rounded up to this
KEPT_GRAPHS = 8  # captured steps kept per decoder (the most recently used)


def graphs_wanted(loaded: Any) -> bool:
    """CUDA, DCA applied, one process, no expert routing, and not switched off by CHUNKQA_CUDA_GRAPHS=0."""
    if os.environ.get("CHUNKQA_CUDA_GRAPHS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if loaded.device.type != "cuda" or loaded.handle is None or not loaded.handle.active:
        return False
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.distributed.get_world_size() > 1:
        return False
    config = loaded.config
    return not any(
        getattr(config, name, 0) for name in ("num_experts", "num_local_experts", "n_routed_experts")
    )


class DecodeGraph:
    """`step(token)` -> logits [V] of the next position, the cache advanced by one.

    Returns None (nothing done) when the cache has no room left for the token: the caller then
    runs its ordinary forward, which grows the cache, and the next step is captured anew.
    """

    def __init__(self, model: Any, cache: GrowingCache, handle: Any, capture: bool = True) -> None:
        self.model, self.cache, self.handle = model, cache, handle
        self.capture = capture
        self.failure: str | None = None  # why capturing failed, if it did (then steps run eagerly)
        device = model.device
        self.ids = torch.zeros((1, 1), dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self._graph: Any = None  # the step replayed last
        self._logits: torch.Tensor | None = None
        self._graphs: dict[tuple, tuple[Any, torch.Tensor]] = {}  # state key -> (graph, its logits)
        self._span: int | None = None

    def step(self, token: int) -> torch.Tensor | None:
        length = self.cache.get_seq_length()
        if length + 1 > self.cache.capacity:
            return None
        self.ids.fill_(token)
        self.pos.fill_(length)
        self._span = min(round_up(length + 1, SPAN_BLOCK), self.cache.capacity)
        logits = self._replay() if self.capture and self.failure is None else self._forward()
        self.cache.advance(1)
        return None if logits is None else logits[0, -1]

    def _forward(self) -> torch.Tensor:
        """The fixed-shape step, run now (eagerly or while being captured)."""
        self.cache.positions, self.cache.span = self.pos, self._span
        try:
            out = self.model(
                input_ids=self.ids, **cache_kwargs(self.model, self.cache), use_cache=True, logits_to_keep=1
            )
        finally:
            self.cache.positions = self.cache.span = None
        return out.logits  # [1, 1, V]

    def _replay(self) -> torch.Tensor | None:
        key = self._state_key()
        if key not in self._graphs:
            if self._graphs and next(iter(self._graphs))[0] != key[0]:  # the buffers moved
                self._graphs.clear()
            self._record(key)
            if self.failure is not None:
                return self._forward()
        self._graph, self._logits = self._graphs.pop(key)
        self._graphs[key] = (self._graph, self._logits)  # most recently used last
        self._graph.replay()
        return self._logits

    def _state_key(self) -> tuple:
        """What a captured step depends on: every buffer's address and size, the span, the logit scale."""
        buffers = tuple((b.data_ptr(), b.shape[-2]) for layer in self.cache.layers for b in layer.buffers)
        return buffers, self._span, self.handle.stated_length if self.handle is not None else None

    def _record(self, key: tuple) -> None:
        current = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(current)
        try:
            with torch.cuda.stream(side):
                self._forward()  # warm-up: lazy allocations, kernel choice (writes the same slot)
            current.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the document-cache writer may be copying on its own stream meanwhile
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                logits = self._forward()
        except RuntimeError as exc:  # e.g. an operation that syncs with the host
            current.wait_stream(side)
            self.failure = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return
        while len(self._graphs) >= KEPT_GRAPHS:  # the least recently used goes
            self._graphs.pop(next(iter(self._graphs)))
        self._graphs[key] = (graph, logits)
