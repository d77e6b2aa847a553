"""What `-m` accepts on this machine: the bundled model, installed GGUF aliases, and the models already
in the Hugging Face cache (through huggingface_hub's own cache scan), each with its size and P.

Reads configs as JSON and GGUF headers only: no weights, and no model class is imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkqa.engine.hub import BUNDLED, INSTALLED
from chunkqa.errors import ModelLoadError


@dataclass(frozen=True)
class ModelEntry:
    """One model `-m NAME` can load here."""

    name: str  # what to pass to -m
    kind: str  # bundled, installed, hub cache
    architecture: str | None
    pretraining_length: int | None  # P
    size: int  # bytes on disk
    path: str
    note: str = ""


def list_models() -> list[ModelEntry]:
    return [*bundled_models(), *installed_models(), *cached_models()]


def bundled_models() -> list[ModelEntry]:
    entries = []
    for name, path in BUNDLED.items():
        arch, p = config_facts(path / "config.json")
        entries.append(ModelEntry(name, "bundled", arch, p, folder_size(path), str(path)))
    return entries


def installed_models() -> list[ModelEntry]:
    from chunkqa.engine.hub import installed_gguf

    entries = []
    for name, entry in INSTALLED.items():
        try:
            file = installed_gguf(name)
        except ModelLoadError:
            entries.append(ModelEntry(name, "not installed", None, None, 0, "", f"{entry.install}"))
            continue
        arch, p = gguf_facts(file)
        entries.append(
            ModelEntry(name, "installed GGUF", arch, p, file.stat().st_size, str(file), entry.description)
        )
    return entries


def cached_models() -> list[ModelEntry]:
    """Models in the Hugging Face cache whose snapshot holds a config.json (None when there is no cache)."""
    try:
        from huggingface_hub import scan_cache_dir

        scanned = scan_cache_dir()
    except Exception:  # no cache folder yet, or one huggingface_hub cannot read: nothing to list
        return []
    entries = []
    for repo in sorted(scanned.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            config = Path(revision.snapshot_path) / "config.json"
            if config.is_file():
                arch, p = config_facts(config)
                entries.append(
                    ModelEntry(
                        repo.repo_id, "hub cache", arch, p, repo.size_on_disk, str(revision.snapshot_path)
                    )
                )
                break
    return entries


def config_facts(path: Path) -> tuple[str | None, int | None]:
    """(model_type, P) from a config.json, text part first for multimodal configs."""
    try:
        data: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None, None
    text = data.get("text_config") or data
    dual = text.get("dual_chunk_attention_config") or {}
    p = dual.get("original_max_position_embeddings") or text.get("max_position_embeddings")
    return text.get("model_type") or data.get("model_type"), p


def gguf_facts(path: Path) -> tuple[str | None, int | None]:
    """(architecture, context length) from a GGUF file's header."""
    try:
        from transformers.integrations.gguf import read_gguf_metadata

        metadata, _ = read_gguf_metadata(str(path))
    except Exception:  # an older transformers, or a file it cannot read: the facts are unknown
        return None, None
    arch = metadata.get("general.architecture")
    return arch, metadata.get(f"{arch}.context_length")


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
