"""chunkqa.engine.loading: specs, facts resolved once before the weights, device and dtype, loading."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from chunkqa.engine.loading import ModelSpec, load_model, pick_device, pick_dtype, resolve_model
from chunkqa.errors import ModelLoadError, UsageError
from chunkqa.methods.spec import MethodSpec, resolve_method


def test_spec_and_device_validation():
    with pytest.raises(UsageError, match="unknown `dtype`"):
        ModelSpec(dtype="float8")
    with pytest.raises(UsageError, match="unknown `device` 'tpu'"):
        ModelSpec(device="tpu")  # refused before torch is even imported
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="unknown device"):
        pick_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no usable CUDA"):
            pick_device("cuda")
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_resolve_model_reads_the_config_without_weights(cli_models):
    info = resolve_model(ModelSpec(str(cli_models["llama"]), device="cpu"))
    assert info.text_config.max_position_embeddings == 64
    assert (info.device, info.dtype, info.dtype_bytes) == (torch.device("cpu"), torch.float32, 4)


def test_load_model_with_and_without_a_method(cli_models):
    info = resolve_model(ModelSpec(str(cli_models["llama"])))
    method = resolve_method(MethodSpec(logit_scale=1.0), info.config)
    loaded = load_model(info, method=method)
    assert loaded.handle is not None and loaded.handle.config is method
    assert loaded.pretraining_length == 64 and loaded.dtype == torch.float32
    loaded.close()
    assert not loaded.handle.active
    plain = load_model(info)
    assert plain.handle is None and plain.pretraining_length == 64
    # the plan's config is never the patched model's: a method changes the model's own copy
    assert loaded.model.config is not info.config and plain.model.config is not info.config


def test_a_model_directory_without_weights(tmp_path):
    LlamaConfig(max_position_embeddings=64).save_pretrained(tmp_path)
    info = resolve_model(ModelSpec(str(tmp_path)))
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_model(info)
