"""A KV cache that writes into preallocated storage instead of concatenating.

transformers' DynamicCache concatenates every layer's whole cache on every step: at 32k tokens
that copies the full 4 GiB cache of a Llama-3-8B-sized model per generated token. Here each layer
owns buffers [B, Hkv, capacity, D]; `update` writes the new positions in place and returns views of
the filled part. `reserve(n)` sizes the buffers once for a whole answer (prompt + new tokens), so a
session grows them rarely. The views are what transformers' DynamicLayer exposes (`keys`, `values`
of shape [B, Hkv, length, D]), so code reading a cache keeps working.

Positions handed out by `share()` (a document-cache writer copying the prefix in the background)
are never overwritten in place: cropping below them moves the layer to fresh buffers first.

A decode step captured in a CUDA graph cannot pass Python offsets: `write_at` writes at positions
given as a tensor and returns the whole buffers; the caller advances `length` after each replay, and
sets `span` so that the step attends to the first `span` positions only (a bound on the filled
length, fixed for a run of steps), not to the whole capacity.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

BLOCK = 1024  # capacity grows in whole blocks of positions


def round_up(n: int, block: int = BLOCK) -> int:
    return -(-n // block) * block


class GrowingLayer(DynamicLayer):
    """One layer's keys and values in buffers that grow by reallocation, never by concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.length = 0
        self.target = 0  # capacity to allocate at the next growth (set by reserve)
        self.shared = 0  # positions [0, shared) are held by someone else: never overwrite them
        self._k: torch.Tensor | None = None  # [B, Hkv, capacity, D]
        self._v: torch.Tensor | None = None

    @property
    def capacity(self) -> int:
        return 0 if self._k is None else self._k.shape[-2]

    @property
    def buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole storage [B, Hkv, capacity, D] (positions past `length` hold stale values)."""
        return self._k, self._v

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        """Append [B, Hkv, n, D] keys and values; return views of every cached position."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        self._ensure(end, key_states, value_states)
        self._k[:, :, self.length : end].copy_(key_states)
        self._v[:, :, self.length : end].copy_(value_states)
        self.length = end
        self._refresh()
        return self.keys, self.values

    def write_at(self, key_states: torch.Tensor, value_states: torch.Tensor, positions: torch.Tensor):
        """Write [B, Hkv, n, D] at positions [n] (a tensor: capturable); return the whole buffers."""
        self._k.index_copy_(2, positions, key_states)
        self._v.index_copy_(2, positions, value_states)
        return self._k, self._v

    def advance(self, count: int) -> None:
        """Count positions written by `write_at` (outside Python's view, e.g. by a graph replay)."""
        self.length += count
        self._refresh()

    def reserve(self, capacity: int) -> None:
        self.target = max(self.target, capacity)

    def share(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the filled positions that stay valid: those positions are not overwritten later."""
        self.shared = max(self.shared, self.length)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last `-tokens_to_remove` positions (transformers' negative-count convention)."""
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative count of positions to remove")
        new = max(0, self.length + tokens_to_remove)
        if new < self.shared:  # someone still reads those positions: move to fresh buffers
            self._move(self.capacity, new)
            self.shared = 0
        self.length = new
        self._refresh()

    def reset(self) -> None:
        self._k = self._v = None
        self.length = self.shared = 0
        self.keys = self.values = None
        self.is_initialized = False

    def _ensure(self, end: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        if self._k is None:
            shape = (*key_states.shape[:2], round_up(max(end, self.target)), key_states.shape[-1])
            self._k = key_states.new_zeros(shape)  # zeros, not garbage: see _move
            self._v = value_states.new_zeros((*shape[:3], value_states.shape[-1]))
        elif end > self.capacity:
            self._move(round_up(max(end, self.target, self.capacity + self.capacity // 4)), self.length)

    def _move(self, capacity: int, keep: int) -> None:
        """Fresh buffers of `capacity` positions holding the first `keep` positions of the old ones.

        The rest is zeroed: a graph step attends over whole buffers with later positions masked, and
        a masked weight of 0 times a value is 0 only if the value is finite (uninitialised memory
        can hold NaNs, and 0 * NaN poisons the answer).
        """
        old_k, old_v = self._k, self._v
        self._k = old_k.new_zeros((*old_k.shape[:2], capacity, old_k.shape[-1]))
        self._v = old_v.new_zeros((*old_v.shape[:2], capacity, old_v.shape[-1]))
        self._k[:, :, :keep].copy_(old_k[:, :, :keep])
        self._v[:, :, :keep].copy_(old_v[:, :, :keep])

    def _refresh(self) -> None:
        if self._k is not None:
            self.keys = self._k[:, :, : self.length]
            self.values = self._v[:, :, : self.length]


class GrowingCache(Cache):
    """A cache of GrowingLayers, one per decoder layer; `positions` set = graph-capturable writes."""

    def __init__(self, num_layers: int) -> None:
        super().__init__(layers=[GrowingLayer() for _ in range(num_layers)])
        self.positions: torch.Tensor | None = None  # [n] absolute positions while capturing a step
        self.span: int | None = None  # with positions: the step attends to keys [0, span) (None: all)

    def reserve(self, capacity: int) -> None:
        """Let every layer's next allocation hold `capacity` positions (no growth until then)."""
        for layer in self.layers:
            layer.reserve(capacity)

    @property
    def capacity(self) -> int:
        return min((layer.capacity for layer in self.layers), default=0)

    def advance(self, count: int) -> None:
        for layer in self.layers:
            layer.advance(count)


def new_cache(config: Any) -> GrowingCache:
    """A GrowingCache for a model of this config (its text part, for multimodal configs)."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    return GrowingCache(text.num_hidden_layers)
