"""chunkqa.engine.generate: sampling, prefill in pieces, decoding, text streaming, stop ids."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from chunkqa import apply_dca
from chunkqa.engine.generate import TextStream, decode_tokens, prefill, sample, stop_token_ids
from chunkqa.engine.results import GenerationConfig, Stats
from chunkqa.errors import UsageError


@pytest.fixture(scope="module")
def llama(cli_models):
    model = AutoModelForCausalLM.from_pretrained(cli_models["llama"], dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(cli_models["llama"])


def test_greedy_and_nucleus_sampling():
    logits = torch.tensor([0.1, 3.0, 2.9, -5.0])
    assert sample(logits, 0.0, 1.0, None) == 1
    gen = torch.Generator().manual_seed(0)
    draws = {sample(logits, 1.0, 0.5, gen) for _ in range(50)}
    assert draws == {1}  # top_p=0.5 keeps only the most likely token (mass 0.52)
    draws = {sample(logits, 1.0, 0.99, gen) for _ in range(200)}
    assert draws == {0, 1, 2}  # -5.0 has mass < 1%: cut


def test_generation_config_validation():
    with pytest.raises(UsageError):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(UsageError):
        GenerationConfig(temperature=-1)
    with pytest.raises(UsageError):
        GenerationConfig(top_p=0)


def test_prefill_in_pieces_gives_the_full_forward_logits(llama):
    model, _ = llama
    ids = torch.randint(5, 300, (1, 150), generator=torch.Generator().manual_seed(1))
    handle = apply_dca(model)
    with torch.no_grad(), handle.prompt_length(150):
        full = model(ids).logits[0, -1]
        logits = prefill(model, ids[0].tolist(), DynamicCache(config=model.config), piece=37)
    handle.remove()
    torch.testing.assert_close(logits, full, rtol=1e-5, atol=1e-5)


def test_decode_stops_at_stop_ids_and_length(llama):
    model, _ = llama
    ids = list(range(5, 60))
    cache = DynamicCache(config=model.config)
    logits = prefill(model, ids, cache, piece=64)
    greedy = list(decode_tokens(model, cache, logits, GenerationConfig(max_new_tokens=6), set()))
    assert len(greedy) == 6
    cache = DynamicCache(config=model.config)
    logits = prefill(model, ids, cache, piece=64)
    stopped = list(decode_tokens(model, cache, logits, GenerationConfig(max_new_tokens=6), {greedy[2]}))
    assert stopped == greedy[:3]
    assert cache.get_seq_length() == len(ids) + 2  # the stop token itself is never fed


def test_text_stream_holds_back_partial_characters(llama):
    _, tok = llama
    ids = tok("naïve café ✓", add_special_tokens=False)["input_ids"]
    stream = TextStream(tok)
    pieces = [stream.add(i) for i in ids]
    assert "".join(pieces) == "naïve café ✓" == stream.text
    assert all("\ufffd" not in p for p in pieces)


def test_stop_ids_include_eos(llama):
    model, tok = llama
    assert tok.eos_token_id in stop_token_ids(model, tok)


def test_stats_rates():
    stats = Stats(100, 0, 100, 0.5, 11, 2.0, 0.5, "eos")
    assert stats.prefill_tps == 200 and stats.decode_tps == 5.0
    assert Stats(1, 0, 1, 0.0, 1, 0.0, 0.0, "eos").decode_tps == 0.0
