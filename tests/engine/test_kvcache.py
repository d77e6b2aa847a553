"""chunkqa.engine.kvcache: a cache that writes in place, grows rarely, and keeps shared positions intact."""

from __future__ import annotations

import pytest
import torch
from tiny_models import VOCAB, load_tiny
from transformers import DynamicCache

from chunkqa import apply_dca
from chunkqa.engine.forward import cache_kwargs
from chunkqa.engine.kvcache import BLOCK, GrowingCache, GrowingLayer, new_cache


def kv(n: int, start: int = 0, heads: int = 2, dim: int = 4):
    """Keys whose values say their position (so a view shows which positions it holds)."""
    pos = torch.arange(start, start + n, dtype=torch.float32)
    k = pos[None, None, :, None].expand(1, heads, n, dim).clone()
    return k, -k


def test_update_appends_and_returns_views_of_the_filled_part():
    layer = GrowingLayer()
    k, v = layer.update(*kv(5))
    assert k.shape == (1, 2, 5, 4) and layer.get_seq_length() == 5 and layer.capacity == BLOCK
    k, v = layer.update(*kv(3, start=5))
    assert torch.equal(k[0, 0, :, 0], torch.arange(8.0)) and torch.equal(v, -k)
    assert layer.keys.data_ptr() == layer.buffers[0].data_ptr()  # a view, no copy


def test_reserve_sizes_the_first_allocation_and_growth_keeps_contents():
    layer = GrowingLayer()
    layer.reserve(3000)
    layer.update(*kv(10))
    assert layer.capacity == 3072
    first = layer.buffers[0].data_ptr()
    layer.update(*kv(4000, start=10))  # past the capacity: moves to bigger buffers
    assert layer.capacity >= 4010 and layer.buffers[0].data_ptr() != first
    assert torch.equal(layer.keys[0, 1, :, 2], torch.arange(4010.0))


def test_unfilled_positions_are_zeros_not_garbage():
    """A graph step attends over whole buffers (later positions masked): 0 x NaN would be NaN."""
    layer = GrowingLayer()
    layer.update(*kv(5, start=1))
    assert torch.equal(layer.buffers[0][:, :, 5:], torch.zeros(1, 2, BLOCK - 5, 4))
    layer.update(*kv(BLOCK, start=1))  # grows: the new tail is zeroed too
    k, v = layer.buffers
    assert not k[:, :, layer.length :].any() and not v[:, :, layer.length :].any()


def test_crop_and_reset():
    layer = GrowingLayer()
    layer.update(*kv(10))
    layer.crop(-4)
    assert layer.get_seq_length() == 6 and layer.keys.shape[-2] == 6
    layer.update(*kv(2, start=100))
    assert layer.keys[0, 0, :, 0].tolist() == [0, 1, 2, 3, 4, 5, 100, 101]
    layer.crop(-100)
    assert layer.get_seq_length() == 0
    with pytest.raises(ValueError):
        layer.crop(3)
    layer.reset()
    assert layer.capacity == 0 and layer.keys is None and not layer.is_initialized


def test_shared_positions_are_never_overwritten():
    """A document-cache writer's snapshot survives a rollback below it and new writes after."""
    layer = GrowingLayer()
    layer.update(*kv(6))
    snap_k, snap_v = layer.share()
    layer.update(*kv(2, start=6))  # past the shared part: in place is fine
    assert snap_k.data_ptr() == layer.keys.data_ptr()
    layer.crop(-5)  # below the shared part: the layer moves to fresh buffers
    layer.update(*kv(4, start=50))
    assert snap_k[0, 0, :, 0].tolist() == [0, 1, 2, 3, 4, 5] and torch.equal(snap_v, -snap_k)
    assert layer.keys[0, 0, :, 0].tolist() == [0, 1, 2, 50, 51, 52, 53]


def test_write_at_and_advance():
    layer = GrowingLayer()
    layer.reserve(16)
    layer.update(*kv(3))
    k, _ = layer.write_at(*kv(1, start=77), torch.tensor([3]))
    assert k.shape[-2] == layer.capacity and layer.get_seq_length() == 3  # nothing counted yet
    layer.advance(1)
    assert layer.keys[0, 0, :, 0].tolist() == [0, 1, 2, 77]


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen3", "qwen3_moe"])
def test_model_logits_equal_dynamic_cache(tiny_paths, family):
    """Prefill in pieces and decode with a GrowingCache: the same logits as with DynamicCache."""
    model = load_tiny(tiny_paths[family])
    handle = apply_dca(model)
    ids = torch.randint(3, VOCAB, (1, 130), generator=torch.Generator().manual_seed(4))
    outs = []
    for cache in (DynamicCache(config=model.config), new_cache(model.config)):
        logits = []
        with torch.no_grad():
            for lo in range(0, 120, 50):
                piece = ids[:, lo : min(lo + 50, 120)]
                logits.append(model(input_ids=piece, **cache_kwargs(model, cache), use_cache=True).logits)
            for i in range(120, 130):
                logits.append(model(input_ids=ids[:, i : i + 1], **cache_kwargs(model, cache)).logits)
        outs.append(torch.cat(logits, dim=1))
        assert cache.get_seq_length() == 130
    handle.remove()
    assert isinstance(cache, GrowingCache) and cache.capacity == BLOCK
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-9, atol=1e-9)
