"""What to run, decided before any weights load: the request, the model's facts, tokens, budget, memory.

A `Request` is everything a caller asks for, resolved from flags, environment and config file by
the CLI (or written by a library user), frozen. `make_plan` reads only the model's config and
tokenizer, so `chunkqa inspect` and the checks that end with exit code 3 cost seconds, not a model
load. It resolves each fact once (model source, config, device, dtype, the method's settings, P);
everything below receives the plan's resolved objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chunkqa.budget import (
    ELISION,
    POLICIES,
    MemoryEstimate,
    TokenBudget,
    available_memory,
    default_max_context,
    estimate_memory,
    fit_document,
)
from chunkqa.documents import Document, combine_documents
from chunkqa.engine.loading import ModelInfo, ModelSpec, load_tokenizer, resolve_model
from chunkqa.engine.results import GenerationConfig, default_piece
from chunkqa.errors import DoesNotFitError, UsageError
from chunkqa.methods.ropescale import scaled_config
from chunkqa.methods.spec import MethodSpec, Resolved, pretraining_length, resolve_method
from chunkqa.prompt import PromptBuilder, Turn


@dataclass(frozen=True)
class Request:
    """What to read and how to answer, every setting resolved: the common part of `ask` and `chat`."""

    documents: tuple[Document, ...]
    model: ModelSpec = field(default_factory=ModelSpec)
    method: MethodSpec = field(default_factory=MethodSpec)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    template: str | None = None  # qa, summary, base or a file; None: by the tokenizer
    system: str | None = None  # None: the default system prompt; "": none
    max_context: int | None = None  # None: sized for this machine
    truncate: str | None = None  # start, middle or end; None: refuse what does not fit
    prefill_chunk: int | None = None  # tokens per prefill call; None: by device (default_piece)
    cache: Any = None  # chunkqa.cache.CacheOptions; None: no disk cache
    password: str | None = None  # re-opens encrypted PDFs when a chat re-reads them

    def __post_init__(self) -> None:
        object.__setattr__(self, "documents", tuple(self.documents))
        if not self.documents:
            raise UsageError("no document given")
        check_options(max_context=self.max_context, truncate=self.truncate, prefill_chunk=self.prefill_chunk)


def check_options(*, max_context: int | None, truncate: str | None, prefill_chunk: int | None) -> None:
    """The budget settings a Request checks, callable before any document is read."""
    if prefill_chunk is not None and prefill_chunk < 1:
        raise UsageError(f"`prefill_chunk` must be at least 1, got {prefill_chunk}")
    if max_context is not None and max_context < 1:
        raise UsageError(f"`max_context` must be at least 1, got {max_context}")
    if truncate is not None and truncate not in POLICIES:
        raise UsageError(f"unknown `truncate` policy {truncate!r}", hint=f"use one of {', '.join(POLICIES)}")


@dataclass(frozen=True)
class Plan:
    """Everything decided before loading weights."""

    request: Request
    model: ModelInfo
    method: Resolved  # the method's resolved settings (DCAConfig), or None
    pretraining_length: int  # P
    builder: PromptBuilder
    document_ids: tuple[int, ...]  # after any truncation
    document_tokens: int  # before truncation
    budget: TokenBudget
    memory: MemoryEstimate

    @property
    def documents(self) -> tuple[Document, ...]:
        return self.request.documents

    @property
    def config(self) -> Any:
        """The model's text config."""
        return self.model.text_config

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the longest prompt (document and framing), without the answer."""
        return self.budget.document_tokens + self.budget.framing_tokens

    @property
    def extension(self) -> float:
        """Prompt length over the pretraining length (L / P)."""
        return self.prompt_tokens / self.pretraining_length

    @property
    def piece(self) -> int:
        """Tokens per prefill call: the request's, else the device's default."""
        return self.request.prefill_chunk or default_piece(self.model.device)

    @property
    def fits(self) -> bool:
        return self.budget.total <= self.budget.limit and self.memory.fits


def model_facts(request: Request) -> ModelInfo:
    """The model's facts for a request: config, device, dtype, and the config's RoPE scaled when asked."""
    info = resolve_model(request.model)
    rope = request.method.rope
    return info.with_config(scaled_config(info.config, rope)) if rope is not None else info


def make_plan(
    request: Request,
    questions: Sequence[str],
    *,
    strict: bool = True,
    model: ModelInfo | None = None,
    tokenizer: Any = None,
    weights_loaded: bool = False,
) -> Plan:
    """Tokenize, resolve the method, fit the document in the budget and estimate memory.

    strict=True raises DoesNotFitError when tokens or memory do not fit; strict=False reports it.
    `model` and `tokenizer` reuse what an earlier plan resolved (a chat switching documents);
    `weights_loaded`: the weights already sit in memory, so free memory is not reduced by them again.
    """
    model = model or model_facts(request)
    builder = PromptBuilder(tokenizer or load_tokenizer(model), request.template, request.system)
    doc_ids = builder.encode_document(combine_documents(request.documents))
    framing = max(sum(len(part) for part in builder.frame([Turn(q)])) for q in questions)
    answer = request.generation.max_new_tokens
    wanted = len(doc_ids) + framing + answer
    method = resolve_method(request.method, model.config, target_length=request.max_context or wanted)
    p = pretraining_length(model.config, request.method.pretraining_length)
    p = method.pretraining_length if method is not None else p
    copies = getattr(method, "key_copies", 1)
    piece = request.prefill_chunk or default_piece(model.device)
    free = available_memory(model.device)
    cap = p if method is None else method.max_length  # DCA: none (memory decides)
    limit = request.max_context or default_max_context(
        model.text_config,
        model.dtype_bytes,
        free,
        cap,
        p,
        weights_loaded=weights_loaded,
        key_copies=copies,
        piece=piece,
    )
    try:
        kept, budget = fit_document(
            doc_ids, framing, answer, limit, request.truncate, builder.encode(ELISION)
        )
    except DoesNotFitError:
        if strict:
            raise
        kept, budget = doc_ids, TokenBudget(len(doc_ids), framing, answer, limit)
    memory = estimate_memory(
        model.text_config,
        budget.total,
        model.dtype_bytes,
        free,
        weights_loaded,
        key_copies=copies,
        piece=piece,
    )
    plan = Plan(request, model, method, p, builder, tuple(kept), len(doc_ids), budget, memory)
    if strict and not memory.fits:
        raise DoesNotFitError(
            f"{budget.total:,} tokens need about {_gib(memory.total)} ({_gib(memory.weights)} weights, "
            f"{_gib(memory.kv_cache)} KV cache) but {model.device} has {_gib(memory.available or 0)} free",
            hint="lower `max_context` or cut the document with `truncate`; or use `dtype` bfloat16 or a GPU",
        )
    return plan


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
