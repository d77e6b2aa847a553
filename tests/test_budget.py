"""chunkqa.budget: token fitting, truncation policies, memory estimates."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig, MixtralConfig

from chunkqa.budget import (
    activation_bytes,
    default_max_context,
    estimate_memory,
    fit_document,
    kv_bytes_per_token,
    truncate,
    weight_bytes,
)
from chunkqa.errors import DoesNotFitError, UsageError

LLAMA3_8B = LlamaConfig(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
)


def test_document_that_fits_is_kept_whole():
    doc = list(range(100))
    kept, budget = fit_document(doc, framing=10, answer=20, limit=130, policy=None)
    assert kept == doc and budget.total == 130 and budget.dropped_tokens == 0


def test_over_the_limit_without_policy_raises_with_the_numbers():
    with pytest.raises(DoesNotFitError) as info:
        fit_document(list(range(1000)), framing=10, answer=20, limit=500, policy=None)
    assert info.value.exit_code == 3
    assert "1,030 tokens" in info.value.message and "500" in info.value.message
    assert "`truncate`" in info.value.hint and "`max_context`" in info.value.hint


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("start", list(range(30, 100))),
        ("end", list(range(70))),
        ("middle", [*range(34), -1, *range(65, 100)]),
    ],
)
def test_truncation_policies(policy, expected):
    kept, budget = fit_document(
        list(range(100)), framing=10, answer=20, limit=100, policy=policy, elision=[-1]
    )
    assert kept == expected
    assert budget.document_tokens == 70 and budget.dropped_tokens == 30 and budget.total == 100


def test_truncate_helper_and_bad_policy():
    assert truncate([1, 2, 3, 4], 2, "start", []) == [3, 4]
    with pytest.raises(UsageError, match="unknown `truncate` policy"):
        fit_document([1], 1, 1, 10, "left")
    with pytest.raises(DoesNotFitError):  # no room at all for the document
        fit_document([1, 2], framing=50, answer=60, limit=100, policy="end")


def test_llama3_8b_memory_estimate():
    assert kv_bytes_per_token(LLAMA3_8B, 2) == 2 * 32 * 8 * 128 * 2  # 128 KiB per token in bf16
    params = weight_bytes(LLAMA3_8B, 1)
    assert 7.9e9 < params < 8.1e9  # Llama-3-8B has 8.03B parameters
    est = estimate_memory(LLAMA3_8B, 32768, 2, available=80 * 2**30)
    assert est.kv_cache == 4 * 2**30  # 32k tokens x 128 KiB
    assert est.fits and est.total == est.weights + est.kv_cache + est.activations
    assert not estimate_memory(LLAMA3_8B, 1_000_000, 2, available=80 * 2**30).fits
    assert estimate_memory(LLAMA3_8B, 32768, 2, available=None, key_copies=2).kv_cache == 6 * 2**30


def test_the_estimate_counts_the_prefill_piece_in_use():
    small = estimate_memory(LLAMA3_8B, 131072, 2, available=None, piece=4096)
    large = estimate_memory(LLAMA3_8B, 131072, 2, available=None, piece=16384)
    assert large.activations > small.activations and large.kv_cache == small.kv_cache
    tight = 40 * 2**30  # the default context shrinks by what the larger piece's activations take
    assert default_max_context(LLAMA3_8B, 2, tight, None, 8192, piece=16384) < default_max_context(
        LLAMA3_8B, 2, tight, None, 8192, piece=4096
    )


def test_moe_weights_count_every_expert():
    dense = weight_bytes(MixtralConfig(num_local_experts=1), 2)
    eight = weight_bytes(MixtralConfig(num_local_experts=8), 2)
    assert eight > 5 * dense


def test_activation_memory_is_bounded_by_the_prefill_piece():
    assert activation_bytes(LLAMA3_8B, 1_000_000, 2) == activation_bytes(LLAMA3_8B, 4096, 2)
    assert activation_bytes(LLAMA3_8B, 100, 2) < activation_bytes(LLAMA3_8B, 4096, 2)


def test_default_max_context():
    gib = 2**30
    assert default_max_context(LLAMA3_8B, 2, 80 * gib, cap=8192, pretraining=8192) == 8192
    tokens = default_max_context(LLAMA3_8B, 2, 80 * gib, cap=None, pretraining=8192)
    assert 440_000 < tokens < 470_000  # (0.9 * 80 GiB - 15 GiB weights - activations) / 128 KiB per token
    assert default_max_context(LLAMA3_8B, 2, None, cap=None, pretraining=8192) == 32 * 8192
    assert default_max_context(LLAMA3_8B, 2, 4 * gib, cap=None, pretraining=8192) == 8192  # never below P
    three = default_max_context(LLAMA3_8B, 2, 80 * gib, cap=None, pretraining=8192, key_copies=2)
    assert abs(three - tokens * 2 / 3) < 2  # SelfExtend's second key copy: 1.5x the bytes per token
