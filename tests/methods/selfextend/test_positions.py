"""chunkqa.methods.selfextend.positions: the two positions of each query and key, and the RoPE tables."""

from __future__ import annotations

import pytest
import torch
from tiny_models import load_tiny

from chunkqa.methods.selfextend import positions
from chunkqa.methods.selfextend.positions import (
    RopeTables,
    key_positions,
    query_positions,
    rope_table,
    table_length,
)


@pytest.mark.parametrize(("group", "window"), [(4, 16), (3, 8), (5, 7), (1, 6), (8, 3)])
def test_positions_follow_the_formulas(group, window):
    pos = torch.arange(200)
    for i in range(200):
        assert query_positions(pos, group, window)[i].tolist() == [i, i // group + window - window // group]
        assert key_positions(pos, group)[i].tolist() == [i, i // group]
    assert int(query_positions(pos, group, window).max()) < table_length(200, window)


def test_grouped_distances_continue_the_neighbor_ones():
    """Grouped pairs (i - j >= W) sit at least W apart, so they continue the neighbor distances
    0 .. W-1; with G dividing W the first grouped pair (i - j = W) sits exactly W apart."""
    pos = torch.arange(300)
    for group, window in [(4, 16), (3, 8), (5, 7), (1, 6)]:
        qg = query_positions(pos, group, window)[:, 1]
        kg = key_positions(pos, group)[:, 1]
        distance = qg[:, None] - kg[None, :]  # [i, j]
        apart = pos[:, None] - pos[None, :]  # [i, j]
        assert int(distance[apart >= window].min()) == window
        if window % group == 0:
            assert bool((distance[apart == window] == window).all())


@pytest.mark.parametrize("family", ["llama", "llama-yarn", "llama3-rope", "qwen3"])
def test_tables_are_the_models_own_rope(tiny_paths, family):
    model = load_tiny(tiny_paths[family])
    rotary = model.base_model.rotary_emb
    probe = torch.ones(1, dtype=torch.float64)
    cos, sin = rope_table(rotary, 200, probe.device, torch.float64)
    want_cos, want_sin = rotary(probe, torch.arange(200)[None])  # static RoPEs: any length
    assert torch.equal(cos, want_cos[0]) and torch.equal(sin, want_sin[0])


def test_a_length_adaptive_rope_keeps_its_short_sequence_frequencies(tiny_paths):
    """Dynamic NTK would rescale for a 200-position table; SelfExtend keeps the frequencies it has
    inside the pretraining window (64), even after the model ran a long sequence."""
    model = load_tiny(tiny_paths["llama-dynamic"])
    rotary = model.base_model.rotary_emb
    probe = torch.ones(1, dtype=torch.float64)
    short_cos, _ = rotary(probe, torch.arange(64)[None])
    rotary(probe, torch.arange(300)[None])  # the model's own forward at 300 tokens rescales it
    cos, _ = rope_table(rotary, 200, probe.device, torch.float64)
    assert torch.equal(cos[:64], short_cos[0])
    angles = torch.arange(200)[:, None].float() * rotary.original_inv_freq.float()
    torch.testing.assert_close(cos[:, : angles.shape[1]], angles.cos().double(), rtol=0, atol=0)
    assert torch.equal(rotary.inv_freq, rotary.original_inv_freq)  # and the module is back to it


def test_tables_grow_and_keep_what_they_outgrew(tiny_paths, monkeypatch):
    monkeypatch.setattr(positions, "TABLE_BLOCK", 16)
    rotary = load_tiny(tiny_paths["llama"]).base_model.rotary_emb
    tables = RopeTables(rotary)
    cpu = torch.device("cpu")
    first = tables.get(cpu, torch.float64, 20)
    assert first[0].shape[0] == 32 and tables.get(cpu, torch.float64, 32) is first
    grown = tables.get(cpu, torch.float64, 33)
    assert grown[0].shape[0] == 64  # at least doubles
    assert torch.equal(grown[0][:32], first[0])
    assert any(old is first for old in tables._retired)  # a captured graph may still read it
    assert tables.get(cpu, torch.float32, 5)[0].dtype == torch.float32
