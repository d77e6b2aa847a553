"""Dual Chunk Attention: settings (`config`), positions, the kernel path (`attention`), the fused
masked pass (`masked`) and the instance patch (`patch`). Names load lazily: `config` alone needs no torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DCAConfig": "chunkqa.methods.dca.config",
    "resolve_config": "chunkqa.methods.dca.config",
    "DCAHandle": "chunkqa.methods.dca.patch",
    "apply_dca": "chunkqa.methods.dca.patch",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'chunkqa.methods.dca' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = sorted(_EXPORTS)
