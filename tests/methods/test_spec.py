"""chunkqa.methods.spec: a method as asked for, resolved once against a model config."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, LlamaConfig

from chunkqa.errors import DCAConfigError, SelfExtendConfigError, UnsupportedModelError, UsageError
from chunkqa.methods.selfextend import SelfExtendConfig
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


def test_selfextend_resolves_from_the_config_or_a_target_length():
    config = LlamaConfig(max_position_embeddings=4096)
    resolved = resolve_method(MethodSpec("selfextend"), config)
    assert resolved == SelfExtendConfig(4096, 8, 1024)  # the reference code's defaults
    assert resolve_method(MethodSpec("selfextend"), config, target_length=16_384).group_size == 15
    given = MethodSpec("selfextend", group_size=4, window=512, pretraining_length=2048)
    assert resolve_method(given, config, target_length=10**6) == SelfExtendConfig(2048, 4, 512)
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        resolve_method(MethodSpec("selfextend"), GPT2Config())
    with pytest.raises(SelfExtendConfigError):
        resolve_method(MethodSpec("selfextend", window=4096), config)
    # DCA does not depend on the target length
    assert resolve_method(MethodSpec(), config, target_length=10**6) == resolve_method(MethodSpec(), config)


def test_settings_of_another_method_are_refused():
    with pytest.raises(UsageError, match="`group_size` is a setting of selfextend, not of dca"):
        MethodSpec(group_size=4)
    with pytest.raises(UsageError, match="`chunk_size` is a setting of dca, not of selfextend"):
        MethodSpec("selfextend", chunk_size=100)
    with pytest.raises(UsageError, match="`logit_scale` is a setting of dca"):
        MethodSpec("selfextend", logit_scale=1.5)
    with pytest.raises(UsageError, match="`window` must be a positive"):
        MethodSpec("selfextend", window=0)
    assert MethodSpec("none", chunk_size=100, window=8).enabled is False  # no method: nothing applies


def test_apply_method_dispatches_by_the_resolved_settings(tiny_paths):
    from tiny_models import load_tiny

    from chunkqa.methods.dca import DCAHandle
    from chunkqa.methods.selfextend import SelfExtendHandle
    from chunkqa.methods.spec import apply_method

    model = load_tiny(tiny_paths["llama"])
    handle = apply_method(model, resolve_method(MethodSpec("selfextend", group_size=2), model.config))
    assert isinstance(handle, SelfExtendHandle) and handle.config.group_size == 2
    handle.remove()
    handle = apply_method(model, resolve_method(MethodSpec(), model.config))
    assert isinstance(handle, DCAHandle)
    handle.remove()
    assert apply_method(model, None) is None
