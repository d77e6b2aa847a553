"""chunkqa.methods.dca.config: defaults from model configs, overrides, validation, the logit-scale rule."""

from __future__ import annotations

import math

import pytest
from transformers import LlamaConfig, MistralConfig, Qwen2Config

from chunkqa.errors import DCAConfigError, UsageError
from chunkqa.methods.dca.config import DCAConfig, parse_logit_scale, resolve_config

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_theta": 500000.0,
}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (LlamaConfig(max_position_embeddings=4096), (4096, 3072, 512)),  # Llama 2
        (LlamaConfig(max_position_embeddings=8192), (8192, 6144, 1024)),  # Llama 3
        (LlamaConfig(max_position_embeddings=131072, rope_parameters=LLAMA3_ROPE), (131072, 98304, 16384)),
        (MistralConfig(max_position_embeddings=32768), (32768, 24576, 4096)),
    ],
)
def test_defaults_come_from_max_position_embeddings(config, expected):
    cfg = resolve_config(config)
    assert (cfg.pretraining_length, cfg.chunk_size, cfg.local_window) == expected
    assert cfg.chunk_len == expected[1] - expected[2]
    assert cfg.logit_scale == 1.0  # no scaling by default (the real model's evidence, docs/evaluation.md)


def test_qwen_dual_chunk_config_supplies_its_own_settings():
    config = Qwen2Config(
        max_position_embeddings=1010000,
        dual_chunk_attention_config={
            "chunk_size": 262144,
            "local_size": 8192,
            "original_max_position_embeddings": 262144,
        },
    )
    cfg = resolve_config(config)
    assert (cfg.pretraining_length, cfg.chunk_size, cfg.local_window) == (262144, 262144, 8192)


def test_overrides():
    config = LlamaConfig(max_position_embeddings=4096)
    assert resolve_config(config, pretraining_length=2048).chunk_size == 1536
    assert resolve_config(config, pretraining_length=2048).local_window == 256
    cfg = resolve_config(config, chunk_size=2000, local_window=100, logit_scale=1.0)
    assert (cfg.pretraining_length, cfg.chunk_size, cfg.local_window, cfg.logit_scale) == (
        4096,
        2000,
        100,
        1.0,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"local_window": 3072}, "`local_window` .* smaller than `chunk_size`"),
        ({"local_window": 4000}, "`local_window` .* smaller than `chunk_size`"),
        ({"chunk_size": 5000}, "must not exceed the pretraining length"),
        ({"chunk_size": 0}, "`chunk_size` must be a positive integer"),
        ({"local_window": -1}, "`local_window` must be a positive integer"),
        ({"pretraining_length": 0}, "`pretraining_length` must be a positive integer"),
        ({"logit_scale": 0}, "`logit_scale` must be"),
        ({"logit_scale": "sometimes"}, "`logit_scale` must be"),
        ({"logit_scale": "auto:-1"}, "must be positive"),
        ({"logit_scale": float("nan")}, "`logit_scale` must be a positive number"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, message):
    with pytest.raises(DCAConfigError, match=message) as info:
        resolve_config(LlamaConfig(max_position_embeddings=4096), **kwargs)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_logit_factor_auto_follows_the_reference_formula():
    cfg = DCAConfig(4096, 3072, 512, "auto")
    assert cfg.logit_factor(4096) == 1.0
    assert cfg.logit_factor(100) == 1.0
    m = 0.05 * math.log(32768 / 4096) + 1
    assert cfg.logit_factor(32768) == pytest.approx(m * m, rel=1e-12)


def test_logit_factor_variants():
    m = 0.1 * math.log(8) + 1
    assert DCAConfig(4096, 3072, 512, "auto:0.1").logit_factor(32768) == pytest.approx(m * m)
    assert DCAConfig(4096, 3072, 512, 1.0).logit_factor(10**6) == 1.0
    assert DCAConfig(4096, 3072, 512, 1.3).logit_factor(10) == 1.3


def test_parse_logit_scale():
    assert parse_logit_scale("AUTO") == "auto"
    assert parse_logit_scale("auto:0.05") == "auto"
    assert parse_logit_scale("auto:0.1") == "auto:0.1"
    assert parse_logit_scale("1") == 1.0
    assert parse_logit_scale(2) == 2.0


def test_config_is_frozen():
    cfg = DCAConfig(64, 48, 8)
    with pytest.raises(AttributeError):
        cfg.chunk_size = 10  # type: ignore[misc]
    assert cfg.describe() == {
        "method": "dca",
        "pretraining_length": 64,
        "chunk_size": 48,
        "local_window": 8,
        "chunk_len": 40,
        "logit_scale": 1.0,
    }
