"""Shared fixtures: tiny random models of every supported family, saved once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


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
