"""SelfExtend: settings (`config`), positions and RoPE tables, the kernel path (`attention`), the
fused masked pass (`masked`) and the instance patch (`patch`). Names load lazily: `config` alone
needs no torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SelfExtendConfig": "chunkqa.methods.selfextend.config",
    "resolve_config": "chunkqa.methods.selfextend.config",
    "SelfExtendHandle": "chunkqa.methods.selfextend.patch",
    "apply_selfextend": "chunkqa.methods.selfextend.patch",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'chunkqa.methods.selfextend' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = sorted(_EXPORTS)
