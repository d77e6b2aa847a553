"""What chunkqa reports about a run: banner and /show lines, and JSON records, built from plans and stats."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from chunkqa.documents import Document


def document_summary(documents: tuple[Document, ...] | list[Document]) -> str:
    parts = []
    for doc in documents:
        pages = f"{doc.pages} pages · " if doc.pages is not None else ""
        parts.append(f"{doc.name} ({pages}{doc.chars:,} chars)")
    return ", ".join(parts)


def banner_lines(plan: Any, loaded: Any = None) -> list[str]:
    """Model, document, tokens and DCA settings, before an answer."""
    device = loaded.device if loaded is not None else plan.model.device
    dtype = str(plan.model.dtype).removeprefix("torch.")
    lines = [
        f"model {plan.model.spec.name} ({plan.config.model_type}, {dtype}, {device})",
        f"document {document_summary(plan.documents)} · {plan.document_tokens:,} tokens"
        + (f" ({plan.budget.dropped_tokens:,} cut by --truncate)" if plan.budget.dropped_tokens else ""),
    ]
    lines.append(method_line(plan))
    return lines


def method_line(plan: Any) -> str:
    """The method and its settings, in one line."""
    spec, p, m = plan.request.method, plan.pretraining_length, plan.method
    rope = f" · RoPE {spec.rope}" if spec.rope is not None else ""
    fit = f"L/P {plan.extension:.1f}x"
    if m is None:
        what = "DCA off (the model as it is)" if spec.name == "none" else f"RoPE {spec.rope} alone (no patch)"
        return f"{what} · P {p:,} · context {plan.budget.total:,} = {plan.extension:.1f}x P"
    if spec.name == "selfextend":
        return (
            f"SelfExtend · P {p:,} · group size {m.group_size} · neighbor window {m.window:,} · "
            f"longest {m.max_length:,} tokens · {fit}"
        )
    active = "on" if plan.prompt_tokens > m.chunk_len else "on (inactive: shorter than one chunk)"
    return (
        f"DCA {active}{rope} · P {p:,} · chunk size {m.chunk_size:,} · local window {m.local_window:,} · "
        f"{fit} · logit scale {m.logit_scale}"
    )


def model_record(plan: Any, loaded: Any) -> dict[str, Any]:
    return {
        "name": plan.model.spec.name,
        "source": loaded.source.path,
        "gguf_file": loaded.source.gguf_file,
        "revision": loaded.revision,
        "architecture": plan.config.model_type,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "device": str(loaded.device),
    }


def document_record_of(documents: Any) -> dict[str, Any]:
    """The documents alone (inspect without a model)."""
    return {
        "sources": [
            {
                "source": d.source,
                "name": d.name,
                "kind": d.kind,
                "sha256": d.sha256,
                "pages": d.pages,
                "chars": d.chars,
            }
            for d in documents
        ],
        "pages": sum(d.pages or 0 for d in documents) or None,
    }


def document_record(plan: Any) -> dict[str, Any]:
    return {
        "sources": [
            {
                "source": d.source,
                "name": d.name,
                "kind": d.kind,
                "sha256": d.sha256,
                "pages": d.pages,
                "chars": d.chars,
            }
            for d in plan.documents
        ],
        "pages": sum(d.pages or 0 for d in plan.documents) or None,
        "tokens": plan.document_tokens,
        "tokens_used": len(plan.document_ids),
        "truncated_tokens": plan.budget.dropped_tokens,
    }


def method_record(plan: Any) -> dict[str, Any]:
    """The method as run: its name and resolved settings, the RoPE scaling, P."""
    spec = plan.request.method
    return {
        "name": spec.name,
        "settings": plan.method.describe() if plan.method is not None else None,
        "rope": str(spec.rope) if spec.rope is not None else None,
        "pretraining_length": plan.pretraining_length,
    }


def answer_record(question: str, answer: str, plan: Any, loaded: Any, stats: Any, prefix_tokens: int) -> dict:
    """One JSON object per answer: the answer, model, document, method settings, timings and memory."""
    method = method_record(plan)
    method["extension"] = round(stats.context_tokens / plan.pretraining_length, 3)
    if loaded.handle is not None:
        method["logit_factor"] = loaded.handle.logit_factor(prefix_tokens)
    timings = {
        "prefill_seconds": round(stats.prefill_seconds, 4),
        "prefill_tokens_per_second": round(stats.prefill_tps, 1),
        "decode_seconds": round(stats.decode_seconds, 4),
        "decode_tokens_per_second": round(stats.decode_tps, 1),
        "ttft_seconds": round(stats.ttft_seconds, 4),
    }
    tokens = {k: v for k, v in asdict(stats).items() if k.endswith("_tokens")}
    return {
        "question": question,
        "answer": answer,
        "stop_reason": stats.stop_reason,
        "model": model_record(plan, loaded),
        "document": document_record(plan),
        "method": method,
        "tokens": tokens,
        "timings": timings,
        "memory": {"peak": stats.peak_memory},
    }


def _gib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**30:.2f} GiB"


def document_lines(documents: Any) -> list[str]:
    """What each document is: kind, pages, characters, sha256 (no model needed)."""
    lines = []
    for doc in documents:
        pages = f"{doc.pages} pages, " if doc.pages is not None else ""
        lines.append(
            f"document {doc.name}: {doc.kind}, {pages}{doc.chars:,} characters, sha256 {doc.sha256[:12]}"
        )
    return lines


def inspect_lines(plan: Any) -> list[str]:
    """`chunkqa inspect`: what the documents hold and whether the question fits, as text lines."""
    b, m = plan.budget, plan.memory
    lines = [
        f"model {plan.model.spec.name} ({plan.config.model_type}) · device {plan.model.device} · dtype "
        f"{str(plan.model.dtype).removeprefix('torch.')}"
    ]
    lines.extend(document_lines(plan.documents))
    lines.append(
        f"tokens: document {plan.document_tokens:,} + question and template {b.framing_tokens:,} + "
        f"answer {b.answer_tokens:,} = {plan.document_tokens + b.framing_tokens + b.answer_tokens:,}"
    )
    lines.extend(banner_lines(plan)[2:])
    verdict = "fits" if b.total <= b.limit else "does NOT fit"
    lines.append(f"limit {b.limit:,} tokens (--max-context): {verdict}")
    lines.append(
        f"memory estimate: {_gib(m.total)} = weights {_gib(m.weights)} + KV cache {_gib(m.kv_cache)} + "
        f"activations {_gib(m.activations)} (prefill in pieces of {plan.piece:,} tokens, --prefill-chunk); "
        f"free on {plan.model.device}: {_gib(m.available)}" + ("" if m.fits else " -> does NOT fit")
    )
    return lines


def inspect_record(plan: Any) -> dict[str, Any]:
    b, m = plan.budget, plan.memory
    return {
        "model": {
            "name": plan.model.spec.name,
            "architecture": plan.config.model_type,
            "device": str(plan.model.device),
            "dtype": str(plan.model.dtype).removeprefix("torch."),
        },
        "document": document_record(plan),
        "tokens": {
            "document": plan.document_tokens,
            "framing": b.framing_tokens,
            "answer": b.answer_tokens,
            "total": plan.document_tokens + b.framing_tokens + b.answer_tokens,
            "limit": b.limit,
        },
        "pretraining_length": plan.pretraining_length,
        "method": method_record(plan),
        "memory": {
            "weights": m.weights,
            "kv_cache": m.kv_cache,
            "activations": m.activations,
            "prefill_piece": plan.piece,
            "total": m.total,
            "available": m.available,
        },
        "fits": plan.fits,
    }


def chat_lines(state: Any) -> list[str]:
    """/show: model, document, DCA settings, context in use, prompt settings, disk cache."""
    plan, builder = state.plan, state.plan.builder
    lines = banner_lines(plan, state.loaded)
    if state.logit_factor is not None:
        lines.append(f"DCA logit factor {state.logit_factor:.4f} at {state.prefix_tokens:,} tokens")
    lines.append(
        f"context {state.context_used:,} of {plan.budget.limit:,} tokens in use · {state.turns} earlier turns"
    )
    system = builder.system.replace("\n", " ") if builder.system else "(none)"
    lines.append(f"template {builder.template_name} · system prompt {_clip(system, 70)}")
    if state.cache is not None:
        lines.append(
            f"document cache {state.cache.directory} · prefixes from {state.cache.min_tokens:,} tokens · "
            f"this document: {state.cache_status}"
        )
    else:
        lines.append("document cache off")
    return lines


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
