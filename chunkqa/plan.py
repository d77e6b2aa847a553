"""Planning a question before any weights load: tokens, DCA settings, budget and memory.

`make_plan` reads only the model's config and tokenizer, so `chunkqa inspect` and the checks that
end with exit code 3 cost seconds, not a model load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chunkqa.budget import (
    ELISION,
    MemoryEstimate,
    TokenBudget,
    available_memory,
    default_max_context,
    estimate_memory,
    fit_document,
)
from chunkqa.documents import Document, combine_documents
from chunkqa.errors import DoesNotFitError
from chunkqa.model import (
    DCAOptions,
    ModelSpec,
    check_dca,
    load_config,
    load_tokenizer,
    pick_device,
    pick_dtype,
)
from chunkqa.prompt import PromptBuilder, Turn
from chunkqa.results import GenerationConfig


@dataclass(frozen=True)
class Plan:
    """Everything decided before loading weights."""

    spec: ModelSpec
    dca_options: DCAOptions
    config: Any  # the model's text config
    dca: Any  # DCAConfig, or None without DCA
    builder: PromptBuilder
    documents: tuple[Document, ...]
    document_ids: tuple[int, ...]  # after any truncation
    document_tokens: int  # before truncation
    budget: TokenBudget
    memory: MemoryEstimate
    device: Any
    dtype: Any

    @property
    def pretraining_length(self) -> int:
        return self.dca.pretraining_length if self.dca else int(self.config.max_position_embeddings)

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the longest prompt (document and framing), without the answer."""
        return self.budget.document_tokens + self.budget.framing_tokens

    @property
    def extension(self) -> float:
        """Prompt length over the pretraining length (L / P)."""
        return self.prompt_tokens / self.pretraining_length

    @property
    def fits(self) -> bool:
        return self.budget.total <= self.budget.limit and self.memory.fits


def make_plan(
    documents: Sequence[Document],
    questions: Sequence[str],
    spec: ModelSpec,
    dca: DCAOptions,
    template: str | None = None,
    system: str | None = None,
    max_new_tokens: int = 512,
    max_context: int | None = None,
    truncate: str | None = None,
    strict: bool = True,
    tokenizer: Any = None,
) -> Plan:
    """Tokenize, check DCA settings, fit the document in the budget and estimate memory.

    strict=True raises DoesNotFitError when tokens or memory do not fit; strict=False reports it.
    """
    import torch

    config = load_config(spec)
    dca_config = check_dca(config, dca)
    text_config = config.get_text_config()
    tokenizer = tokenizer or load_tokenizer(spec)
    builder = PromptBuilder(tokenizer, template, system)
    doc_ids = builder.encode_document(combine_documents(documents))
    framing = max(sum(len(part) for part in builder.frame([Turn(q)])) for q in questions)
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    dtype_bytes = torch.tensor([], dtype=dtype).element_size()
    free = available_memory(device)
    pretraining = dca_config.pretraining_length if dca_config else int(text_config.max_position_embeddings)
    limit = max_context or default_max_context(text_config, dtype_bytes, free, dca.enabled, pretraining)
    try:
        kept, budget = fit_document(
            doc_ids, framing, max_new_tokens, limit, truncate, builder.encode(ELISION)
        )
    except DoesNotFitError:
        if strict:
            raise
        kept, budget = doc_ids, _over_budget(len(doc_ids), framing, max_new_tokens, limit)
    memory = estimate_memory(text_config, budget.total, dtype_bytes, free)
    plan = Plan(
        spec,
        dca,
        text_config,
        dca_config,
        builder,
        tuple(documents),
        tuple(kept),
        len(doc_ids),
        budget,
        memory,
        device,
        dtype,
    )
    if strict and not memory.fits:
        raise DoesNotFitError(
            f"{budget.total:,} tokens need about {_gib(memory.total)} ({_gib(memory.weights)} weights, "
            f"{_gib(memory.kv_cache)} KV cache) but {device} has {_gib(memory.available or 0)} free",
            hint="lower --max-context or cut the document with --truncate; or use --dtype bfloat16 or a GPU",
        )
    return plan


def _over_budget(document: int, framing: int, answer: int, limit: int) -> TokenBudget:
    return TokenBudget(document, framing, answer, limit)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


@dataclass(frozen=True)
class Request:
    """What to read and how to answer, options resolved (the common part of `ask` and `chat`)."""

    documents: Sequence[Document]
    spec: ModelSpec
    dca: DCAOptions
    generation: GenerationConfig
    template: str | None = None
    system: str | None = None
    max_context: int | None = None
    truncate: str | None = None
    prefill_chunk: int = 4096
    cache: Any = None  # doccache.CacheOptions; None: no disk cache

    def plan(self, questions: Sequence[str], **kwargs: Any) -> Plan:
        """make_plan for these documents and questions under this request's settings."""
        return make_plan(
            self.documents,
            questions,
            self.spec,
            self.dca,
            self.template,
            self.system,
            self.generation.max_new_tokens,
            self.max_context,
            self.truncate,
            **kwargs,
        )
