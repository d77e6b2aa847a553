"""benchmarks/capacity.py builds the shapes it names and measures what its table claims."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from capacity import build, one_length

from chunkqa.budget import kv_bytes_per_token
from chunkqa.methods.dca import apply_dca
from chunkqa.methods.dca.config import resolve_config


def test_the_1m_shape_is_qwen25_7b_1m_with_its_dca_config():
    model = build("qwen2.5-7b-1m", torch.device("meta"), torch.bfloat16)
    config = model.config
    assert (config.model_type, config.num_hidden_layers, config.num_key_value_heads) == ("qwen2", 28, 4)
    dca = resolve_config(config)
    assert (dca.pretraining_length, dca.chunk_size, dca.local_window) == (262144, 262144, 8192)
    kv_gib_at_1m = kv_bytes_per_token(config, 2) * 2**20 / 2**30
    assert 55 < kv_gib_at_1m < 57  # 28 layers x 4 KV heads x d 128, keys and values, bf16: 56 GiB


def test_one_length_decodes_and_reports_the_floor():
    model = build("tiny", torch.device("cpu"), torch.float32)
    handle = apply_dca(model)
    args = argparse.Namespace(piece=512, steps=3)
    row = one_length(model, handle, 1500, args, torch.device("cpu"))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    floor = weights + kv_bytes_per_token(model.config, 4) * (1500 + 3 + 2)
    assert row["length"] == 1500 and row["graph"] == "eager"
    assert row["prefill_s"] > 0 and row["decode_ms"] > 0
    assert abs(row["floor_gib"] * 2**30 - floor) < 1
    assert row["estimate_gib"] * 2**30 >= floor  # the estimate holds at least the weights and the cache
