"""chunkqa.model: resolving names, offline errors, checks before weights load, device and dtype."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import GPT2Config, LlamaConfig

from chunkqa.errors import DCAConfigError, ModelLoadError, UnsupportedModelError, UsageError
from chunkqa.model import (
    BUNDLED,
    DCAOptions,
    ModelSpec,
    check_dca,
    load_model,
    pick_device,
    pick_dtype,
    resolve_source,
)


def test_resolve_source(tmp_path):
    assert resolve_source(str(tmp_path)) == str(tmp_path)
    assert resolve_source("Org/model-name") == "Org/model-name"
    with pytest.raises(ModelLoadError, match="no such model directory"):
        resolve_source("./not-here")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        resolve_source(str(tmp_path / "file.bin"))


def test_bundled_alias_points_into_the_package():
    assert BUNDLED["tiny"].parts[-3:] == ("chunkqa", "assets", "tiny")


def test_offline_hub_id_fails_fast_with_a_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="offline") as info:
        load_model(ModelSpec("someone/some-model-not-cached"))
    assert time.perf_counter() - start < 30  # no minutes of network retries
    assert "local directory" in info.value.hint


def test_checks_before_weights():
    assert check_dca(LlamaConfig(max_position_embeddings=4096), DCAOptions()).chunk_size == 3072
    assert check_dca(GPT2Config(), DCAOptions(enabled=False)) is None
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        check_dca(GPT2Config(), DCAOptions())
    with pytest.raises(DCAConfigError):
        check_dca(LlamaConfig(max_position_embeddings=4096), DCAOptions(local_window=4000))


def test_spec_and_device_validation():
    with pytest.raises(UsageError, match="unknown dtype"):
        ModelSpec(dtype="float8")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="unknown device"):
        pick_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no usable CUDA"):
            pick_device("cuda")
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_load_model_with_and_without_dca(cli_models):
    loaded = load_model(ModelSpec(str(cli_models["llama"])), DCAOptions(logit_scale=1.0))
    assert loaded.handle is not None and loaded.handle.config.logit_scale == 1.0
    assert loaded.pretraining_length == 64 and loaded.dtype == torch.float32
    loaded.close()
    assert not loaded.handle.active
    plain = load_model(ModelSpec(str(cli_models["llama"])), DCAOptions(enabled=False))
    assert plain.handle is None and plain.pretraining_length == 64


def test_a_model_directory_without_weights(tmp_path):
    LlamaConfig(max_position_embeddings=64).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_model(ModelSpec(str(tmp_path)))
