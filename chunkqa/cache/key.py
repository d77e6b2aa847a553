"""The document cache's key: a sha256 over everything a document prefix's KV cache depends on.

Model (id, revision, a GGUF file's sha256 or a directory's file fingerprint), dtype, device type,
method settings and kernel, template, system prompt, tokenizer (its full definition, hashed),
library versions and the prefix token ids (which cover the document and the framing around it):
any change gives another key.
"""

from __future__ import annotations

import functools
import hashlib
import json
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chunkqa import __version__
from chunkqa.cache.entry import FORMAT


def ids_digest(ids: Sequence[int]) -> str:
    return hashlib.sha256(array("q", ids).tobytes()).hexdigest()


def text_digest(text: str | None) -> str:
    return hashlib.sha256((text or "").encode("utf-8")).hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of the tokenizer's full definition (vocab, merges, normalisers, special tokens, template)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = [type(tokenizer).__name__, sorted(tokenizer.all_special_tokens), tokenizer.chat_template]
    return text_digest(body + json.dumps(extra, default=str))


def model_fingerprint(source: Any) -> list[list[Any]] | None:
    """A local model's files: a GGUF file by its sha256; a directory's config and weight files by
    name, size and mtime. None for hub ids (their revision keys them)."""
    gguf = source.file
    if gguf is not None:
        stat = gguf.stat()
        return [[gguf.name, stat.st_size, file_sha256(str(gguf), stat.st_size, stat.st_mtime_ns)]]
    path = Path(source.path)
    if not path.is_dir():
        return None
    files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".safetensors", ".bin", ".pt"))
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


@functools.lru_cache(maxsize=16)
def file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, remembered while its size and mtime stay the same (a GGUF file: gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def key_fields(loaded: Any, builder: Any, prefix: Sequence[int], tokenizer_id: str) -> dict[str, Any]:
    """Everything the prefix's KV depends on, as JSON-ready values."""
    import torch
    import transformers

    where = loaded.source.path
    source = str(Path(where).resolve()) if Path(where).is_dir() else where
    dca = None
    if loaded.handle is not None:
        config = loaded.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kernel = loaded.handle.kernel_name(loaded.device, loaded.dtype, head_dim)
        dca = {**loaded.handle.config.describe(), "kernel": kernel}
    return {
        "format": FORMAT,
        "versions": {
            "chunkqa": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "model": {
            "source": source,
            "gguf_file": loaded.source.gguf_file,
            "revision": loaded.revision,
            "files": model_fingerprint(loaded.source),
        },
        "architecture": loaded.config.model_type,
        "rope": json.loads(json.dumps(getattr(loaded.config, "rope_parameters", None), default=str)),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "device": loaded.device.type,
        "dca": dca,
        "template": text_digest(builder.template),
        "system": text_digest(builder.system),
        "chat": builder.chat,
        "tokenizer": tokenizer_id,
        "prefix": {"tokens": len(prefix), "sha256": ids_digest(prefix)},
    }


def entry_key(fields: dict[str, Any]) -> str:
    return text_digest(json.dumps(fields, sort_keys=True))
