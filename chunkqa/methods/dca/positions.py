"""DCA positions: which chunk a token sits in and where RoPE places it in each kind of attention.

With s = c - w tokens per chunk, token i sits in chunk i // s. Keys are rotated once, at i mod s.
A query i is rotated at
  i mod s                  against keys of its own chunk (causal inside the chunk),
  min(i mod s + s, c)      against keys of the previous chunk,
  c                        against keys of any older chunk,
so no relative distance ever exceeds c.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class QueryGroup:
    """Consecutive query positions [start, end) that all sit in chunk `chunk`."""

    chunk: int
    start: int
    end: int


def query_groups(start: int, count: int, chunk_len: int) -> list[QueryGroup]:
    """Split the absolute query positions [start, start + count) at chunk boundaries."""
    groups = []
    pos, end = start, start + count
    while pos < end:
        chunk = pos // chunk_len
        stop = min(end, (chunk + 1) * chunk_len)
        groups.append(QueryGroup(chunk, pos, stop))
        pos = stop
    return groups


def key_positions(start: int, count: int, chunk_len: int, device: torch.device) -> torch.Tensor:
    """RoPE positions of keys at absolute positions [start, start + count): i mod s."""
    return torch.arange(start, start + count, device=device) % chunk_len


def intra_positions(group: QueryGroup, chunk_len: int, device: torch.device) -> torch.Tensor:
    """Query positions against keys of the query's own chunk: i mod s."""
    return torch.arange(group.start, group.end, device=device) - group.chunk * chunk_len


def successive_positions(
    group: QueryGroup, chunk_len: int, chunk_size: int, device: torch.device
) -> torch.Tensor:
    """Query positions against keys of the previous chunk: min(i mod s + s, c)."""
    return (intra_positions(group, chunk_len, device) + chunk_len).clamp(max=chunk_size)
