"""apply_dca on tiny random models of every supported family, loaded through from_pretrained."""

from __future__ import annotations

import pytest
import torch
from dca_reference import attention_modules, reference_logits
from tiny_models import DCA_FAMILIES as FAMILIES
from tiny_models import load_tiny, save_tiny, tokens
from transformers import DynamicCache, StaticCache

from chunkqa import apply_dca
from chunkqa.engine.forward import cache_kwargs
from chunkqa.errors import DCAConfigError, PaddedBatchError, UnsupportedModelError, UsageError
from chunkqa.methods.dca import patch

TOL = {"rtol": 1e-9, "atol": 1e-9}


@pytest.fixture
def load(tiny_paths):
    def _load(name: str, dtype=torch.float64):
        return load_tiny(tiny_paths[name], dtype)

    return _load


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("length", [79, 80, 81, 150])
def test_patched_logits_match_reference(load, family, length):
    model = load(family)
    ids = tokens(length, seed=length)
    handle = apply_dca(model)
    assert (handle.config.chunk_size, handle.config.local_window) == (48, 8)
    with torch.no_grad():
        patched = model(ids).logits
    handle.remove()
    expected = reference_logits(model, ids, 48, 8, handle.logit_factor(length))
    torch.testing.assert_close(patched, expected, **TOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_below_one_chunk_equals_unpatched(load, family):
    model = load(family)
    window = getattr(model.config, "sliding_window", None) or 10**9
    ids = tokens(min(39, window - 1), seed=1)  # s - 1 = 39 tokens: DCA is plain attention
    with torch.no_grad():
        before = model(ids).logits
        handle = apply_dca(model)
        torch.testing.assert_close(model(ids).logits, before, **TOL)
    handle.remove()


@pytest.mark.parametrize("masked", [False, True], ids=["kernel-path", "fused-masked"])
@pytest.mark.parametrize("family", FAMILIES)
def test_decode_equals_full_forward(load, family, masked, monkeypatch):
    """Decoding through the cache equals one full forward: by the kernel path (the CPU's choice) and
    by the fused masked pass (the GPU's choice for few queries), forced here."""
    monkeypatch.setattr(patch, "use_masked", lambda q, k: masked)
    model = load(family)
    ids = tokens(105, seed=2)
    handle = apply_dca(model)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        steps = [model(ids[:, :100], **cache_kwargs(model, cache)).logits[:, -1]]
        for t in range(100, 104):  # one token at a time, never re-rotating the cache
            steps.append(model(ids[:, t : t + 1], **cache_kwargs(model, cache)).logits[:, -1])
        with handle.prompt_length(100):  # the full forward uses the prompt's logit scale too
            full = model(ids[:, :104]).logits
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 99:104], **TOL)
    handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_under_dca(load, family):
    model = load(family)
    ids = tokens(100, seed=3)
    handle = apply_dca(model)
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
        with handle.prompt_length(100):
            full = model(sequence[:, :-1]).logits
    assert sequence.shape == (1, 106)
    # generate hands logits back as float32
    torch.testing.assert_close(torch.stack(out.logits, 1), full[:, 99:].float(), rtol=1e-6, atol=1e-6)
    assert torch.equal(sequence[:, 100:], full[:, 99:].argmax(-1))
    handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_prefill_equals_single_pass(load, family):
    model = load(family)
    ids = tokens(130, seed=4)
    handle = apply_dca(model)
    with torch.no_grad():
        single = model(ids).logits
        cache = DynamicCache(config=model.config)
        with handle.prompt_length(130):
            pieces = [
                model(ids[:, a:b], **cache_kwargs(model, cache)).logits
                for a, b in [(0, 33), (33, 73), (73, 74), (74, 130)]
            ]
    torch.testing.assert_close(torch.cat(pieces, 1), single, **TOL)
    handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_remove_restores_the_model(load, family):
    model = load(family)
    ids = tokens(150, seed=5)
    sliding = getattr(model.config, "sliding_window", None)
    with torch.no_grad():
        before = model(ids).logits
        handle = apply_dca(model)
        assert not torch.allclose(model(ids).logits, before)
        handle.remove()
        after = model(ids).logits
    assert torch.equal(after, before)
    assert not handle.active
    assert all("forward" not in m.__dict__ for m in attention_modules(model))
    assert not model.base_model._forward_pre_hooks
    assert not hasattr(model, "_chunkqa_dca")
    assert getattr(model.config, "sliding_window", None) == sliding
    handle.remove()  # a second remove is harmless


def test_sliding_window_is_switched_off_while_patched(load):
    model = load("mistral")
    assert model.config.sliding_window == 16
    handle = apply_dca(model)
    assert model.config.sliding_window is None  # DCA needs every key in the cache
    handle.remove()
    assert model.config.sliding_window == 16


def test_two_models_with_different_settings(load):
    first, second = load("llama"), load("llama")
    ids = tokens(150, seed=6)
    h1 = apply_dca(first)
    h2 = apply_dca(second, pretraining_length=32, logit_scale=1.0)  # c = 24, w = 4
    assert (h2.config.chunk_size, h2.config.local_window) == (24, 4)
    with torch.no_grad():
        out1, out2 = first(ids).logits, second(ids).logits
    h1.remove()
    h2.remove()
    torch.testing.assert_close(out1, reference_logits(first, ids, 48, 8, h1.logit_factor(150)), **TOL)
    torch.testing.assert_close(out2, reference_logits(second, ids, 24, 4, 1.0), **TOL)
    assert not torch.allclose(out1, out2)


def test_equal_length_batch_matches_single_sequences(load):
    model = load("qwen2")
    ids = tokens(120, seed=7, batch=2)
    handle = apply_dca(model)
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
    handle = apply_dca(model)
    with pytest.raises(PaddedBatchError, match="padded batch"), torch.no_grad():
        model(ids, attention_mask=mask)
    with pytest.raises(PaddedBatchError), torch.no_grad():
        model.generate(ids, attention_mask=mask, max_new_tokens=2, pad_token_id=0)
    handle.remove()


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    from transformers import AutoModelForCausalLM, GPT2Config

    model = AutoModelForCausalLM.from_config(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match="'gpt2'") as info:
        apply_dca(model)
    assert "llama" in info.value.hint and "qwen3_moe" in info.value.hint


@pytest.mark.parametrize("kwargs", [{"local_window": 48}, {"chunk_size": 65}, {"chunk_size": -4}])
def test_bad_settings_fail_before_patching(load, kwargs):
    model = load("llama")
    with pytest.raises(DCAConfigError):
        apply_dca(model, **kwargs)
    assert all("forward" not in m.__dict__ for m in attention_modules(model))
    assert not model.base_model._forward_pre_hooks


def test_applying_twice_is_refused(load):
    model = load("llama")
    handle = apply_dca(model)
    with pytest.raises(UsageError, match="already has DCA"):
        apply_dca(model)
    handle.remove()
    apply_dca(model).remove()  # after remove() it can be applied again


def test_cache_that_drops_keys_is_refused(load):
    model = load("llama")
    handle = apply_dca(model)
    cache = StaticCache(config=model.config, max_cache_len=200)
    with pytest.raises(UsageError, match="keeps every key"), torch.no_grad():
        model(tokens(50), **cache_kwargs(model, cache))
    handle.remove()


def test_logit_scale_is_fixed_per_sequence(load):
    """While decoding, the factor stays at the prompt's: no drift as the sequence grows."""
    model = load("llama")
    ids = tokens(300, seed=9)
    handle = apply_dca(model, logit_scale="auto")  # a factor that depends on the length
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(ids[:, :200], **cache_kwargs(model, cache))
        step = model(ids[:, 200:201], **cache_kwargs(model, cache)).logits[:, -1]
        with handle.prompt_length(200):
            same = model(ids[:, :201]).logits[:, -1]
        drifted = model(ids[:, :201]).logits[:, -1]  # a fresh sequence of 201 tokens: m(201)
    torch.testing.assert_close(step, same, **TOL)
    assert not torch.allclose(step, drifted, rtol=1e-12, atol=1e-12)
    handle.remove()


def test_float32_model_close_to_float64_reference(load):
    model = load("qwen3", torch.float32)
    ids = tokens(150, seed=10)
    handle = apply_dca(model)
    with torch.no_grad():
        patched = model(ids).logits.double()
    handle.remove()
    expected = reference_logits(load("qwen3"), ids, 48, 8, handle.logit_factor(150))
    assert (patched - expected).norm() / expected.norm() < 1e-5


def test_saved_and_reloaded_model_keeps_working(tmp_path):
    path = save_tiny("llama", tmp_path, seed=3)
    model = load_tiny(path)
    handle = apply_dca(model)
    with torch.no_grad():
        assert torch.isfinite(model(tokens(200)).logits).all()
    handle.remove()
