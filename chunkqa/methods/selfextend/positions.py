"""SelfExtend positions, and the RoPE tables at them.

For a query at absolute position i and a key at j <= i (floor division everywhere):
  i - j <  W   neighbor: query at i,                         key at j        (ordinary RoPE)
  i - j >= W   grouped:  query at floor(i/G) + W - floor(W/G), key at floor(j/G)
Neither key position depends on the query, so every key is rotated twice, once, and cached so:
[neighbor | grouped] along the head dim. Queries are rotated at both of their positions; each
(query, key) pair picks one by i - j. Positions here are tensors, so a CUDA graph can capture them.

The tables hold the model's own RoPE (its scaling applies) at positions 0 .. T-1, as it is inside
its pretraining window: absolute neighbor positions grow with the sequence, but a RoPE that adapts
to the sequence length (dynamic NTK, longrope) must not change under SelfExtend, whose relative
positions never leave the pretraining window.
"""

from __future__ import annotations

import torch
from torch import nn

TABLE_BLOCK = 4096  # tables grow to a whole number of these positions
Table = tuple[torch.Tensor, torch.Tensor]  # cos, sin [T, D]


def query_positions(pos: torch.Tensor, group_size: int, window: int) -> torch.Tensor:
    """[n] absolute positions -> [n, 2]: the neighbor (i) and grouped (i // G + W - W // G) positions."""
    return torch.stack([pos, pos // group_size + (window - window // group_size)], dim=-1)


def key_positions(pos: torch.Tensor, group_size: int) -> torch.Tensor:
    """[n] absolute positions -> [n, 2]: the neighbor (j) and grouped (j // G) positions."""
    return torch.stack([pos, pos // group_size], dim=-1)


def table_length(end: int, window: int) -> int:
    """Positions a table must cover for tokens 0 .. end-1 (a grouped query sits at most at W)."""
    return max(end, window + 1)


def rope_table(rotary: nn.Module, length: int, device: torch.device, dtype: torch.dtype) -> Table:
    """cos, sin [length, D] from the model's rotary embedding, at the frequencies of short sequences.

    A RoPE that adapts to the length (transformers' `dynamic_rope_update`) goes back to its original
    frequencies when called with a short sequence; the table is then computed by the undecorated
    forward, so the long table does not scale them again. Other RoPEs are unaffected.
    """
    probe = torch.ones(1, device=device, dtype=dtype)
    rotary(probe, torch.zeros(1, 1, dtype=torch.long, device=device))  # reset an adaptive RoPE
    forward = getattr(type(rotary).forward, "__wrapped__", None)
    positions = torch.arange(length, device=device)[None]  # [1, T]
    cos, sin = forward(rotary, probe, positions) if forward is not None else rotary(probe, positions)
    return cos[0], sin[0]


class RopeTables:
    """Tables per (device, dtype), grown on demand by whole blocks, at least doubling.

    A table that is outgrown is kept, not freed: a CUDA graph captured earlier may still read it.
    """

    def __init__(self, rotary: nn.Module) -> None:
        self.rotary = rotary
        self._tables: dict[tuple[torch.device, torch.dtype], Table] = {}
        self._retired: list[Table] = []

    def get(self, device: torch.device, dtype: torch.dtype, length: int) -> Table:
        """cos, sin [T, D] with T >= length."""
        key = (device, dtype)
        have = self._tables.get(key)
        if have is None or have[0].shape[0] < length:
            size = max(length, 2 * have[0].shape[0]) if have is not None else length
            size = -(-size // TABLE_BLOCK) * TABLE_BLOCK
            if have is not None:
                self._retired.append(have)
            self._tables[key] = rope_table(self.rotary, size, device, dtype)
        return self._tables[key]


def gather(table: Table, positions: torch.Tensor) -> Table:
    """cos, sin [..., D] at positions [...] (a tensor index: capturable)."""
    cos, sin = table
    return cos[positions], sin[positions]
