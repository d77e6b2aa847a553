"""chunkqa: ask questions about long documents with an LLM stretched by Dual Chunk Attention.

The public API (documented in the README, "Using chunkqa from Python"). It is imported lazily so
that `import chunkqa` (and `chunkqa --help`) stays fast: torch loads only when a name needs it.

    answer = "".join(step.text for step in chunkqa.ask("paper.pdf", "Main result?", model=ModelSpec("tiny")))

Layers, top to bottom: `cli` (the command line) > `evals` > `chat`, `api` > `session` > `plan`
(with `prompt`, `budget`) > `engine` (loading, generation, KV cache), `cache` (documents' KV on
disk), `documents` > `methods` (DCA, SelfExtend: plain tensor code) > `errors`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # one call
    "ask": "chunkqa.api",
    "load": "chunkqa.api",
    "open_document_session": "chunkqa.api",
    # documents
    "Document": "chunkqa.documents",
    "load_document": "chunkqa.documents",
    "document_from_bytes": "chunkqa.documents",
    # what to run
    "ModelSpec": "chunkqa.engine.loading",
    "MethodSpec": "chunkqa.methods.spec",
    "GenerationConfig": "chunkqa.engine.results",
    "Request": "chunkqa.plan",
    "Plan": "chunkqa.plan",
    "make_plan": "chunkqa.plan",
    # running it
    "resolve_model": "chunkqa.engine.loading",
    "load_model": "chunkqa.engine.loading",
    "LoadedModel": "chunkqa.engine.loading",
    "resolve_method": "chunkqa.methods.spec",
    "open_session": "chunkqa.session",
    "Session": "chunkqa.session",
    "Step": "chunkqa.engine.results",
    "Stats": "chunkqa.engine.results",
    "CacheOptions": "chunkqa.cache",
    "DocCache": "chunkqa.cache",
    # methods on any Hugging Face model
    "apply_dca": "chunkqa.methods.dca",
    "DCAHandle": "chunkqa.methods.dca",
    "DCAConfig": "chunkqa.methods.dca",
    "resolve_config": "chunkqa.methods.dca",
    "apply_selfextend": "chunkqa.methods.selfextend",
    "SelfExtendHandle": "chunkqa.methods.selfextend",
    "SelfExtendConfig": "chunkqa.methods.selfextend",
    # errors
    "ChunkqaError": "chunkqa.errors",
    "UsageError": "chunkqa.errors",
    "DoesNotFitError": "chunkqa.errors",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chunkqa' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
