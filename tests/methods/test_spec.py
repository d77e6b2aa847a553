"""chunkqa.methods.spec: a method as asked for, resolved once against a model config."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, LlamaConfig

from chunkqa.errors import DCAConfigError, UnsupportedModelError, UsageError
from chunkqa.methods.spec import MethodSpec, pretraining_length, resolve_method


def test_resolve_before_any_weights():
    assert resolve_method(MethodSpec(), LlamaConfig(max_position_embeddings=4096)).chunk_size == 3072
    assert resolve_method(MethodSpec("none"), GPT2Config()) is None
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        resolve_method(MethodSpec(), GPT2Config())
    with pytest.raises(DCAConfigError):
        resolve_method(MethodSpec(local_window=4000), LlamaConfig(max_position_embeddings=4096))


def test_spec_validation():
    with pytest.raises(UsageError, match="unknown method"):
        MethodSpec("magic")
    with pytest.raises(UsageError, match="`chunk_size` must be a positive"):
        MethodSpec(chunk_size=0)
    assert MethodSpec(logit_scale="AUTO").logit_scale == "auto"
    assert not MethodSpec("none").enabled


def test_pretraining_length_is_the_override_or_the_config():
    config = LlamaConfig(max_position_embeddings=8192)
    assert pretraining_length(config) == 8192
    assert pretraining_length(config, 4096) == 4096
