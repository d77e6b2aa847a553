"""The keyword a model's forward takes its KV cache by: transformers renamed it in 5.24.

transformers 5.17-5.23 call it `past_key_values`; 5.24 renamed it to `cache` (the old name still
works there, with a FutureWarning, until 5.40). chunkqa supports both lines, so every caller asks
here instead of spelling either name.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

NEW, OLD = "cache", "past_key_values"


@functools.lru_cache(maxsize=64)
def _name_for(forward: Any) -> str:
    try:
        parameters = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return OLD
    return NEW if NEW in parameters else OLD


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """{name: cache} with the name this model's forward expects."""
    return {_name_for(type(model).forward): cache}


def pick_cache(cache: Any, past_key_values: Any) -> Any:
    """Inside an attention forward: the cache, whichever name the caller passed it by."""
    return cache if cache is not None else past_key_values
