"""chunkqa.methods.dca.positions: chunk groups and RoPE positions."""

from __future__ import annotations

import torch

from chunkqa.methods.dca.positions import (
    QueryGroup,
    intra_positions,
    key_positions,
    query_groups,
    successive_positions,
)

CPU = torch.device("cpu")


def test_query_groups_split_at_chunk_boundaries():
    assert query_groups(0, 10, 40) == [QueryGroup(0, 0, 10)]
    assert query_groups(35, 50, 40) == [QueryGroup(0, 35, 40), QueryGroup(1, 40, 80), QueryGroup(2, 80, 85)]
    assert query_groups(80, 1, 40) == [QueryGroup(2, 80, 81)]
    assert query_groups(5, 0, 40) == []


def test_key_positions_wrap_every_chunk():
    assert key_positions(38, 5, 40, CPU).tolist() == [38, 39, 0, 1, 2]


def test_query_positions():
    group = QueryGroup(2, 80, 90)  # s = 40, c = 48
    assert intra_positions(group, 40, CPU).tolist() == list(range(10))
    assert successive_positions(group, 40, 48, CPU).tolist() == [40, 41, 42, 43, 44, 45, 46, 47, 48, 48]


def test_relative_distances_never_exceed_chunk_size():
    s, c = 40, 48
    for start in range(0, 200, 7):
        for group in query_groups(start, 13, s):
            own = intra_positions(group, s, CPU)
            prev = successive_positions(group, s, c, CPU)
            keys = torch.arange(s)  # every key position
            assert int((prev[:, None] - keys[None, :]).max()) <= c
            assert int((prev[:, None] - keys[None, :]).min()) > 0  # previous-chunk keys stay behind
            assert int((own[:, None] - own[None, :]).max()) < s  # inside a chunk: plain distances
            assert int((c - keys).max()) <= c and int((c - keys).min()) > c - s
