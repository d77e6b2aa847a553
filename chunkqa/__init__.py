"""chunkqa: ask questions about long documents with an LLM stretched by Dual Chunk Attention.

The public API is imported lazily so that `import chunkqa` (and `chunkqa --help`) stays fast:
torch is loaded only when a name that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "apply_dca": "chunkqa.dca.patch",
    "DCAHandle": "chunkqa.dca.patch",
    "DCAConfig": "chunkqa.dca.config",
    "resolve_config": "chunkqa.dca.config",
    "ChunkqaError": "chunkqa.errors",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chunkqa' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
