"""apply_selfextend on tiny random models of every supported family, loaded through from_pretrained.

P = 64, so the defaults are G = 8, W = 16 (max_length 400); a few tests take G = 3, W = 8 (G not
dividing W).
"""

from __future__ import annotations

import pytest
import torch
from selfextend_reference import attention_modules, reference_logits
from tiny_models import FAMILIES, load_tiny, tokens
from transformers import DynamicCache, StaticCache

from chunkqa import apply_dca, apply_selfextend
from chunkqa.engine.forward import cache_kwargs
from chunkqa.engine.kvcache import new_cache
from chunkqa.errors import PaddedBatchError, SelfExtendConfigError, UnsupportedModelError, UsageError
from chunkqa.methods.selfextend import patch

TOL = {"rtol": 1e-9, "atol": 1e-9}
G, W = 8, 16


@pytest.fixture
def load(tiny_paths):
    def _load(name: str, dtype=torch.float64):
        return load_tiny(tiny_paths[name], dtype)

    return _load


def make_cache(kind: str, model):
    return DynamicCache(config=model.config) if kind == "dynamic" else new_cache(model.config)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("length", [17, 60, 150])
def test_patched_logits_match_reference(load, family, length):
    model = load(family)
    ids = tokens(length, seed=length)
    handle = apply_selfextend(model)
    assert (handle.config.group_size, handle.config.window) == (G, W)
    with torch.no_grad():
        patched = model(ids).logits
    handle.remove()
    torch.testing.assert_close(patched, reference_logits(model, ids, G, W), **TOL)


@pytest.mark.parametrize("family", ["llama", "qwen3", "llama-yarn", "mixtral"])
def test_group_not_dividing_window_matches_reference(load, family):
    model = load(family)
    ids = tokens(120, seed=11)
    handle = apply_selfextend(model, group_size=3, window=8)
    with torch.no_grad():
        patched = model(ids).logits
    handle.remove()
    torch.testing.assert_close(patched, reference_logits(model, ids, 3, 8), **TOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_within_the_window_equals_unpatched(load, family):
    model = load(family)
    sliding = getattr(model.config, "sliding_window", None) or 10**9
    ids = tokens(min(W, sliding - 1), seed=1)  # every key fewer than W back: plain attention
    with torch.no_grad():
        before = model(ids).logits
        handle = apply_selfextend(model)
        torch.testing.assert_close(model(ids).logits, before, **TOL)
    handle.remove()


@pytest.mark.parametrize("masked", [False, True], ids=["kernel-path", "fused-masked"])
@pytest.mark.parametrize("kind", ["dynamic", "growing"])
@pytest.mark.parametrize("family", FAMILIES)
def test_pieces_and_decode_equal_one_full_forward(load, family, kind, masked, monkeypatch):
    """Prefill in pieces, then one token at a time, through DynamicCache or chunkqa's GrowingCache,
    by the kernel path or the fused masked pass (forced): the logits of one full forward."""
    monkeypatch.setattr(patch, "use_masked", lambda q, keys: masked)
    model = load(family)
    ids = tokens(135, seed=2)
    handle = apply_selfextend(model)
    cache = make_cache(kind, model)
    with torch.no_grad():
        full = model(ids).logits
        pieces = [(0, 33), (33, 73), (73, 74), (74, 130)] + [(t, t + 1) for t in range(130, 135)]
        steps = [model(ids[:, a:b], **cache_kwargs(model, cache)).logits for a, b in pieces]
    assert cache.get_seq_length() == 135
    layer = cache.layers[0]
    assert layer.keys.shape[-1] == 2 * layer.values.shape[-1]  # [neighbor | grouped] keys
    torch.testing.assert_close(torch.cat(steps, 1), full, **TOL)
    handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_under_selfextend(load, family):
    model = load(family)
    ids = tokens(100, seed=3)
    handle = apply_selfextend(model)
    with torch.no_grad():
        out = model.generate(
            ids,
            max_new_tokens=6,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
        sequence = out.sequences
        full = model(sequence[:, :-1]).logits
    assert sequence.shape == (1, 106)
    # generate hands logits back as float32
    torch.testing.assert_close(torch.stack(out.logits, 1), full[:, 99:].float(), rtol=1e-6, atol=1e-6)
    assert torch.equal(sequence[:, 100:], full[:, 99:].argmax(-1))
    handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_remove_restores_the_model(load, family):
    model = load(family)
    ids = tokens(150, seed=5)
    sliding = getattr(model.config, "sliding_window", None)
    with torch.no_grad():
        before = model(ids).logits
        handle = apply_selfextend(model)
        assert not torch.allclose(model(ids).logits, before)
        handle.remove()
        after = model(ids).logits
    assert torch.equal(after, before)
    assert not handle.active
    assert all("forward" not in m.__dict__ for m in attention_modules(model))
    assert not model.base_model._forward_pre_hooks
    assert not hasattr(model, "_chunkqa_method")
    assert getattr(model.config, "sliding_window", None) == sliding
    handle.remove()  # a second remove is harmless


def test_handle_and_sliding_window(load):
    model = load("mistral")
    handle = apply_selfextend(model, group_size=4, window=12)
    assert handle.method == "SelfExtend" and handle.active
    assert handle.config.describe()["max_length"] == (64 - 12) * 4 + 12
    assert "SelfExtendHandle" in repr(handle) and handle.logit_factor(1000) == 1.0
    assert model.config.sliding_window is None  # every key is attended
    handle.remove()
    assert model.config.sliding_window == 16


def test_settings_from_a_target_length(load):
    model = load("llama")
    handle = apply_selfextend(model, target_length=1000)
    assert (handle.config.group_size, handle.config.window) == (62, 16)  # 16 + 984 / 62 <= 32
    handle.remove()
    handle = apply_selfextend(model, pretraining_length=32, group_size=2)  # W = 32 // 4
    assert (handle.config.pretraining_length, handle.config.window) == (32, 8)
    handle.remove()


def test_equal_length_batch_matches_single_sequences(load):
    model = load("qwen2")
    ids = tokens(120, seed=7, batch=2)
    handle = apply_selfextend(model)
    with torch.no_grad():
        batched = model(ids, attention_mask=torch.ones_like(ids)).logits
        singles = torch.cat([model(ids[i : i + 1]).logits for i in range(2)])
    torch.testing.assert_close(batched, singles, **TOL)
    handle.remove()


def test_padded_batch_is_refused(load):
    model = load("llama")
    ids = tokens(60, seed=8, batch=2)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    handle = apply_selfextend(model)
    with pytest.raises(PaddedBatchError, match="SelfExtend got a padded batch"), torch.no_grad():
        model(ids, attention_mask=mask)
    with pytest.raises(PaddedBatchError), torch.no_grad():
        model.generate(ids, attention_mask=mask, max_new_tokens=2, pad_token_id=0)
    handle.remove()


def test_applying_twice_is_refused(load):
    model = load("llama")
    handle = apply_selfextend(model)
    with pytest.raises(UsageError, match="already has SelfExtend"):
        apply_selfextend(model)
    with pytest.raises(UsageError, match="already has SelfExtend"):
        apply_dca(model)
    handle.remove()
    apply_selfextend(model).remove()  # after remove() it can be applied again


@pytest.mark.parametrize("kwargs", [{"window": 64}, {"group_size": 0}, {"window": -4}])
def test_bad_settings_fail_before_patching(load, kwargs):
    model = load("llama")
    with pytest.raises(SelfExtendConfigError):
        apply_selfextend(model, **kwargs)
    assert all("forward" not in m.__dict__ for m in attention_modules(model))
    assert not model.base_model._forward_pre_hooks


def test_unsupported_architecture_is_refused():
    from transformers import AutoModelForCausalLM, GPT2Config

    model = AutoModelForCausalLM.from_config(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match="'gpt2'"):
        apply_selfextend(model)


def test_cache_that_drops_keys_is_refused(load):
    model = load("llama")
    handle = apply_selfextend(model)
    cache = StaticCache(config=model.config, max_cache_len=200)
    with pytest.raises(UsageError, match="SelfExtend needs a cache that keeps every key"), torch.no_grad():
        model(tokens(50), **cache_kwargs(model, cache))
    handle.remove()


def test_float32_model_close_to_float64_reference(load):
    model = load("qwen3", torch.float32)
    ids = tokens(150, seed=10)
    handle = apply_selfextend(model)
    with torch.no_grad():
        patched = model(ids).logits.double()
    handle.remove()
    expected = reference_logits(load("qwen3"), ids, G, W)
    assert (patched - expected).norm() / expected.norm() < 1e-5


def test_past_max_length_still_runs(load):
    """Past (P - W) G + W the grouped positions pass P: no error, the model's RoPE extrapolates."""
    model = load("llama")
    handle = apply_selfextend(model, group_size=2, window=8)  # max_length 120
    ids = tokens(130, seed=12)
    with torch.no_grad():
        patched = model(ids).logits
    handle.remove()
    torch.testing.assert_close(patched, reference_logits(model, ids, 2, 8), **TOL)
