"""Shared fixtures: a clean environment for every test, and tiny random models saved once per session.

Every test runs with no CHUNKQA_* variable set, its own empty config, cache and state folders
(XDG_CONFIG_HOME, XDG_CACHE_HOME, XDG_STATE_HOME under its tmp_path) and the hub offline, so no
test reads the user's config or writes to the real ~/.cache/chunkqa. Child processes inherit it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@dataclass(frozen=True)
class CleanEnv:
    """The folders a test's chunkqa sees."""

    config: Path  # the config file chunkqa would read (absent unless a test writes it)
    cache: Path  # the document cache folder
    state: Path  # chat history lives under it


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path_factory) -> CleanEnv:
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if name.startswith("CHUNKQA_") or name == "NO_COLOR":
            monkeypatch.delenv(name)
    for name in ("CONFIG", "CACHE", "STATE"):
        monkeypatch.setenv(f"XDG_{name}_HOME", str(home / name.lower()))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return CleanEnv(
        home / "config" / "chunkqa" / "config.toml", home / "cache" / "chunkqa" / "kv", home / "state"
    )


@pytest.fixture(scope="session")
def tiny_paths(tmp_path_factory) -> dict[str, Path]:
    """Every tiny family model, saved with save_pretrained; load with tiny_models.load_tiny."""
    from tiny_models import family_configs, save_tiny

    directory = tmp_path_factory.mktemp("tiny-models")
    return {name: save_tiny(name, directory) for name in family_configs()}


@pytest.fixture(scope="session")
def cli_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny random base Llama and a tiny random ChatML Qwen2, each with a tokenizer (P = 64)."""
    from tiny_models import save_cli_model

    directory = tmp_path_factory.mktemp("cli-models")
    return {kind: save_cli_model(kind, directory) for kind in ("llama", "qwen2")}
