"""chunkqa.engine.cuda_graphs: the fixed-shape decode step (as a CUDA graph captures it) equals decoding.

On the CPU the step runs eagerly (capture=False): the same positions-as-tensors path a graph
replays. The capture itself is checked on the GPU (marked `gpu`).
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import VOCAB, load_tiny
from transformers import DynamicCache

from chunkqa import apply_dca
from chunkqa.engine import cuda_graphs
from chunkqa.engine.cuda_graphs import DecodeGraph, graphs_wanted
from chunkqa.engine.forward import cache_kwargs
from chunkqa.engine.kvcache import new_cache
from chunkqa.engine.loading import LoadedModel
from chunkqa.session import trim_cache

PROMPT, STEPS = 100, 30  # with P = 64 (c 48, w 8) the steps cross chunk boundaries at 120


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


@pytest.mark.parametrize("family", ["llama", "llama-yarn", "mistral", "qwen2", "qwen3"])
def test_fixed_shape_steps_equal_ordinary_decoding(tiny_paths, family):
    model = load_tiny(tiny_paths[family])
    handle = apply_dca(model)
    with handle.prompt_length(PROMPT):
        expected, expected_logits = greedy(model, prompt_ids(), DynamicCache(config=model.config))
        cache = new_cache(model.config)
        cache.reserve(PROMPT + STEPS)
        decoder = DecodeGraph(model, cache, handle, capture=False)
        tokens, logits = greedy(model, prompt_ids(), cache, decoder.step)
    assert tokens == expected and cache.get_seq_length() == PROMPT + STEPS
    torch.testing.assert_close(logits, expected_logits, rtol=1e-9, atol=1e-9)


def test_a_full_cache_hands_the_step_back(tiny_paths):
    """No room for the token: step returns None and the ordinary forward grows the cache."""
    model = load_tiny(tiny_paths["llama"])
    handle = apply_dca(model)
    cache = new_cache(model.config)
    with torch.inference_mode():
        cache.reserve(1)
        forward(model, torch.randint(3, VOCAB, (1, 1024)), cache)  # fills one block exactly
        decoder = DecodeGraph(model, cache, handle, capture=False)
        assert cache.capacity == 1024 and decoder.step(5) is None and cache.get_seq_length() == 1024
        forward(model, torch.tensor([[5]]), cache)
        assert cache.capacity > 1024 and decoder.step(6) is not None
    assert cache.get_seq_length() == 1026


def test_graphs_wanted_only_on_cuda_with_dca(tiny_paths, monkeypatch):
    model = load_tiny(tiny_paths["llama"], torch.float32)
    handle = apply_dca(model)
    loaded = LoadedModel.wrap(model, None, handle=handle, device=torch.device("cpu"))
    assert not graphs_wanted(loaded)
    cuda = LoadedModel.wrap(model, None, handle=handle, device=torch.device("cuda"))
    assert graphs_wanted(cuda)
    monkeypatch.setenv("CHUNKQA_CUDA_GRAPHS", "0")
    assert not graphs_wanted(cuda)
    monkeypatch.delenv("CHUNKQA_CUDA_GRAPHS")
    handle.remove()
    assert not graphs_wanted(cuda)  # no DCA: the model's own attention does not take tensor positions
    moe = load_tiny(tiny_paths["qwen3_moe"], torch.float32)
    moe_handle = apply_dca(moe)
    assert not graphs_wanted(LoadedModel.wrap(moe, None, handle=moe_handle, device=torch.device("cuda")))


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_captured_steps_equal_ordinary_decoding_on_gpu(tiny_paths, family):
    model = load_tiny(tiny_paths[family], torch.float32).to("cuda")
    handle = apply_dca(model)
    poison = torch.full((2**24,), float("nan"), device="cuda")  # memory the cache may be given next
    del poison
    with handle.prompt_length(PROMPT):
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


@pytest.mark.parametrize("method", ["dca", "selfextend"])
def test_steps_attend_to_the_filled_length_not_the_capacity(tiny_paths, monkeypatch, method):
    """A cache reserved far past the answer: each step attends to the filled length rounded up to
    SPAN_BLOCK (so its cost follows the length), and the logits are those of ordinary decoding."""
    from chunkqa import apply_selfextend
    from chunkqa.methods.dca import patch as dca_patch
    from chunkqa.methods.selfextend import patch as se_patch

    monkeypatch.setattr(cuda_graphs, "SPAN_BLOCK", 64)
    module = dca_patch if method == "dca" else se_patch
    name = "masked_dca_attention" if method == "dca" else "masked_selfextend_attention"
    attended = []
    fused = getattr(module, name)

    def recording(q, k, v, *args, **kwargs):
        attended.append(k.shape[2])
        return fused(q, k, v, *args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    model = load_tiny(tiny_paths["llama"])
    handle = apply_dca(model) if method == "dca" else apply_selfextend(model, group_size=4, window=16)
    with handle.prompt_length(PROMPT):
        expected, expected_logits = greedy(model, prompt_ids(), DynamicCache(config=model.config))
        cache = new_cache(model.config)
        cache.reserve(4096)
        decoder = DecodeGraph(model, cache, handle, capture=False)
        tokens, logits = greedy(model, prompt_ids(), cache, decoder.step)
    layers = model.config.num_hidden_layers
    spans = [-(-(PROMPT + i + 1) // 64) * 64 for i in range(STEPS) for _ in range(layers)]
    assert cache.capacity == 4096 and attended == spans  # 128 then 192: never the 4,096 reserved
    assert tokens == expected
    torch.testing.assert_close(logits, expected_logits, rtol=1e-9, atol=1e-9)


@pytest.mark.gpu
def test_one_captured_step_per_span_on_gpu(tiny_paths, monkeypatch):
    """Spans of 64 keys: a graph per span, replayed for the steps inside it, reused by the next answer."""
    monkeypatch.setattr(cuda_graphs, "SPAN_BLOCK", 64)
    model = load_tiny(tiny_paths["llama"], torch.float32).to("cuda")
    handle = apply_dca(model)
    with handle.prompt_length(PROMPT):
        expected, expected_logits = greedy(model, prompt_ids("cuda"), DynamicCache(config=model.config))
        cache = new_cache(model.config)
        cache.reserve(4096)
        decoder = DecodeGraph(model, cache, handle)
        tokens, logits = greedy(model, prompt_ids("cuda"), cache, decoder.step)
        assert decoder.failure is None and [key[1] for key in decoder._graphs] == [128, 192]
        graphs = {key: graph for key, (graph, _) in decoder._graphs.items()}
        trim_cache(cache, PROMPT - 1)
        again, _ = greedy(model, prompt_ids("cuda")[:, -1:], cache, decoder.step)
    assert tokens == expected == again
    assert {key: graph for key, (graph, _) in decoder._graphs.items()} == graphs  # none captured anew
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)
