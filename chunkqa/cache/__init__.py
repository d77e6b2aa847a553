"""The document cache on disk: a document prefix's KV cache, keyed by everything that shapes it.

`key` (what an entry depends on), `entry` (the safetensors file: format, checks, writing, eviction),
`stream` and `hostring` (loading an entry onto a GPU through pinned memory) and `store` (`DocCache`,
a session's prefix store). Importing this package loads no torch.
"""

from chunkqa.cache.entry import Entry, clear_entries, list_entries
from chunkqa.cache.store import (
    DEFAULT_MIN_TOKENS,
    CacheEvent,
    CacheOptions,
    DocCache,
    default_cache_dir,
    parse_size,
)

__all__ = [
    "DEFAULT_MIN_TOKENS",
    "CacheEvent",
    "CacheOptions",
    "DocCache",
    "Entry",
    "clear_entries",
    "default_cache_dir",
    "list_entries",
    "parse_size",
]
