"""Context and memory budget, decided before any prefill.

Tokens: document + framing + answer against a limit the user sets (or one sized for the machine);
over it, either a truncation policy the user chose or a DoesNotFitError (exit code 3). Memory: weights
plus KV cache plus prefill activations, so a user learns before loading that a length will not fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from chunkqa.engine.results import PREFILL_PIECE
from chunkqa.errors import DoesNotFitError, UsageError

POLICIES = ("start", "middle", "end")
ELISION = "\n[...]\n"  # marks where --truncate middle cut the document
MAX_DEFAULT_CONTEXT = 1 << 20  # never default past ~1M tokens


@dataclass(frozen=True)
class TokenBudget:
    """How the context splits, and whether it fits."""

    document_tokens: int  # after any truncation
    framing_tokens: int  # system prompt, template text, question
    answer_tokens: int  # room kept for the answer (--max-new-tokens)
    limit: int
    dropped_tokens: int = 0  # document tokens removed by the truncation policy

    @property
    def total(self) -> int:
        return self.document_tokens + self.framing_tokens + self.answer_tokens


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed to answer with a context of `tokens` tokens."""

    tokens: int
    weights: int
    kv_cache: int
    activations: int
    available: int | None  # what the device has free (None: unknown)
    weights_loaded: bool = False  # the weights already sit in memory: `available` excludes them

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations

    @property
    def fits(self) -> bool:
        needed = self.total - (self.weights if self.weights_loaded else 0)
        return self.available is None or needed <= self.available


def fit_document(
    document: list[int],
    framing: int,
    answer: int,
    limit: int,
    policy: str | None,
    elision: list[int] | None = None,
) -> tuple[list[int], TokenBudget]:
    """Keep the document whole if it fits, else cut it by `policy`, else raise DoesNotFitError."""
    if policy is not None and policy not in POLICIES:
        raise UsageError(f"unknown `truncate` policy {policy!r}", hint=f"use one of {', '.join(POLICIES)}")
    room = limit - framing - answer
    if len(document) <= room:
        return document, TokenBudget(len(document), framing, answer, limit)
    if room <= 0:  # no cut of the document can help: the question and answer alone are too long
        raise DoesNotFitError(
            f"the question and template ({framing:,} tokens) and the answer ({answer:,}) alone need "
            f"{framing + answer:,} tokens, and the limit is {limit:,}: no room is left for the document",
            hint="lower `max_new_tokens` or raise `max_context`",
        )
    if policy is None:
        raise DoesNotFitError(
            f"the prompt needs {len(document) + framing + answer:,} tokens (document {len(document):,}, "
            f"question and template {framing:,}, answer {answer:,}) but the limit is {limit:,}",
            hint="raise `max_context` or lower `max_new_tokens`, or cut the document with `truncate` "
            "start, middle or end",
        )
    kept = truncate(document, room, policy, elision or [])
    return kept, TokenBudget(len(kept), framing, answer, limit, len(document) - len(kept))


def truncate(ids: list[int], keep: int, policy: str, elision: list[int]) -> list[int]:
    """Drop tokens from the start, the middle or the end so that `keep` remain."""
    if policy == "start":
        return ids[len(ids) - keep :]
    if policy == "end":
        return ids[:keep]
    keep -= len(elision)
    head = keep // 2
    return ids[:head] + elision + ids[len(ids) - (keep - head) :]


@dataclass(frozen=True)
class Shape:
    """The sizes the estimates need, read from any decoder config (with fallbacks for older names)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    inner: int
    vocab: int

    @classmethod
    def of(cls, config: Any) -> Shape:
        hidden, heads = config.hidden_size, config.num_attention_heads
        inner = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
        return cls(
            hidden,
            config.num_hidden_layers,
            heads,
            getattr(config, "num_key_value_heads", None) or heads,
            getattr(config, "head_dim", None) or hidden // heads,
            inner,
            config.vocab_size,
        )


def kv_bytes_per_token(config: Any, dtype_bytes: int, key_copies: int = 1) -> int:
    """Key + value bytes one token adds to the cache, over all layers (SelfExtend keeps 2 key copies)."""
    s = Shape.of(config)
    return (key_copies + 1) * s.layers * s.kv_heads * s.head_dim * dtype_bytes


def weight_bytes(config: Any, dtype_bytes: int) -> int:
    """Parameter bytes estimated from the config's shapes (MoE: every expert)."""
    s = Shape.of(config)
    attention = s.hidden * s.head_dim * (2 * s.heads + 2 * s.kv_heads)
    experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None) or 1
    inner = getattr(config, "moe_intermediate_size", None) if experts > 1 else None
    mlp = 3 * s.hidden * (inner or s.inner) * experts
    shared = 3 * s.hidden * (getattr(config, "shared_expert_intermediate_size", None) or 0)
    embeddings = s.vocab * s.hidden * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return (s.layers * (attention + mlp + shared) + embeddings) * dtype_bytes


def activation_bytes(config: Any, tokens: int, dtype_bytes: int, piece: int = PREFILL_PIECE) -> int:
    """Peak working memory of one prefill piece: hidden states, MLP intermediates, attention partials."""
    s = Shape.of(config)
    rows = min(tokens, piece)
    attention = 4 * rows * s.heads * s.head_dim * 4  # rotated queries and float32 partial outputs
    return rows * (6 * s.hidden + 3 * max(s.inner, 4 * s.hidden)) * dtype_bytes + attention + s.vocab * 4


def estimate_memory(
    config: Any,
    tokens: int,
    dtype_bytes: int,
    available: int | None,
    weights_loaded: bool = False,
    key_copies: int = 1,
    piece: int = PREFILL_PIECE,
) -> MemoryEstimate:
    return MemoryEstimate(
        tokens,
        weight_bytes(config, dtype_bytes),
        kv_bytes_per_token(config, dtype_bytes, key_copies) * tokens,
        activation_bytes(config, tokens, dtype_bytes, piece),
        available,
        weights_loaded,
    )


def available_memory(device: Any) -> int | None:
    """Free bytes on the device: GPU free memory, or the system's available RAM for the CPU."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_max_context(
    config: Any,
    dtype_bytes: int,
    available: int | None,
    cap: int | None,
    pretraining: int,
    weights_loaded: bool = False,
    key_copies: int = 1,
    piece: int = PREFILL_PIECE,
) -> int:
    """The limit when none is given: `cap` when the method has one (the window without DCA, SelfExtend's
    longest sequence), else the longest context that fits in memory (90 % of what is free)."""
    if cap is not None:
        return cap
    if available is None:
        return 32 * pretraining
    spare = 0.9 * available - (0 if weights_loaded else weight_bytes(config, dtype_bytes))
    spare -= activation_bytes(config, piece, dtype_bytes, piece)
    tokens = int(spare // kv_bytes_per_token(config, dtype_bytes, key_copies))
    return max(pretraining, min(tokens, MAX_DEFAULT_CONTEXT))
