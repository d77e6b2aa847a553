"""SelfExtend in chunkqa.engine.cuda_graphs' fixed-shape decode step (positions as tensors) equals decoding.

On the CPU the step runs eagerly (capture=False): the same path a graph replays, writing keys at a
tensor position into the GrowingCache's whole buffers and masking the unfilled tail. The capture
itself is checked on the GPU (marked `gpu`).
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import VOCAB, load_tiny
from transformers import DynamicCache

from chunkqa import apply_selfextend
from chunkqa.engine.cuda_graphs import DecodeGraph, graphs_wanted
from chunkqa.engine.forward import cache_kwargs
from chunkqa.engine.kvcache import new_cache
from chunkqa.engine.loading import LoadedModel
from chunkqa.session import trim_cache

PROMPT, STEPS = 100, 30  # with P = 64 (G 8, W 16) the steps run past P and past 2 * P


def forward(model, ids, cache):
    return model(input_ids=ids, **cache_kwargs(model, cache), use_cache=True, logits_to_keep=1).logits[0, -1]


@torch.inference_mode()
def greedy(model, prompt, cache, step=None):
    """Greedy tokens and each step's logits, fed through `step` (a DecodeGraph) or the forward."""
    logits, tokens, seen = forward(model, prompt, cache), [], []
    for _ in range(STEPS):
        token = int(torch.argmax(logits))
        tokens.append(token)
        seen.append(logits.clone())  # a graph step reuses its output tensor
        stepped = step(token) if step else None
        logits = (
            stepped
            if stepped is not None
            else forward(model, torch.tensor([[token]], device=prompt.device), cache)
        )
    return tokens, torch.stack(seen)


def prompt_ids(device="cpu"):
    return torch.randint(3, VOCAB, (1, PROMPT), generator=torch.Generator().manual_seed(7)).to(device)


@pytest.mark.parametrize("family", ["llama", "llama-yarn", "llama-dynamic", "mistral", "qwen2", "qwen3"])
def test_fixed_shape_steps_equal_ordinary_decoding(tiny_paths, family):
    model = load_tiny(tiny_paths[family])
    handle = apply_selfextend(model)
    expected, expected_logits = greedy(model, prompt_ids(), DynamicCache(config=model.config))
    cache = new_cache(model.config)
    cache.reserve(PROMPT + STEPS)
    decoder = DecodeGraph(model, cache, handle, capture=False)
    tokens, logits = greedy(model, prompt_ids(), cache, decoder.step)
    assert tokens == expected and cache.get_seq_length() == PROMPT + STEPS
    torch.testing.assert_close(logits, expected_logits, rtol=1e-9, atol=1e-9)
    handle.remove()


def test_a_full_cache_hands_the_step_back(tiny_paths):
    """No room for the token: step returns None, the ordinary forward grows the cache (and the RoPE
    tables), and the next fixed-shape step runs over the new buffers."""
    model = load_tiny(tiny_paths["llama"])
    handle = apply_selfextend(model)
    cache = new_cache(model.config)
    ids = torch.randint(3, VOCAB, (1, 1026), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        cache.reserve(1)
        forward(model, ids[:, :1024], cache)  # fills one block exactly
        decoder = DecodeGraph(model, cache, handle, capture=False)
        assert cache.capacity == 1024 and decoder.step(5) is None and cache.get_seq_length() == 1024
        forward(model, torch.tensor([[5]]), cache)
        stepped = decoder.step(6)
        assert cache.capacity > 1024 and stepped is not None
        full = model(torch.cat([ids[:, :1024], torch.tensor([[5, 6]])], 1)).logits[0, -1]
    assert cache.get_seq_length() == 1026
    torch.testing.assert_close(stepped, full, rtol=1e-9, atol=1e-9)
    handle.remove()


def test_graphs_wanted_with_selfextend(tiny_paths):
    model = load_tiny(tiny_paths["llama"], torch.float32)
    handle = apply_selfextend(model)
    assert graphs_wanted(LoadedModel.wrap(model, None, handle=handle, device=torch.device("cuda")))
    assert not graphs_wanted(LoadedModel.wrap(model, None, handle=handle, device=torch.device("cpu")))
    handle.remove()


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_captured_steps_equal_ordinary_decoding_on_gpu(tiny_paths, family):
    model = load_tiny(tiny_paths[family], torch.float32).to("cuda")
    handle = apply_selfextend(model)
    poison = torch.full((2**24,), float("nan"), device="cuda")  # memory the cache may be given next
    del poison
    expected, expected_logits = greedy(model, prompt_ids("cuda"), DynamicCache(config=model.config))
    cache = new_cache(model.config)
    cache.reserve(PROMPT + STEPS)
    decoder = DecodeGraph(model, cache, handle)
    tokens, logits = greedy(model, prompt_ids("cuda"), cache, decoder.step)
    assert decoder.failure is None and decoder._graph is not None
    captured = decoder._graph
    trim_cache(cache, PROMPT - 1)  # a second answer in the same buffers replays the same graph
    again, _ = greedy(model, prompt_ids("cuda")[:, -1:], cache, decoder.step)
    assert tokens == expected == again and decoder._graph is captured
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)
    handle.remove()
