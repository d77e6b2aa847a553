"""chunkqa.engine.hub: resolving model names, and failing fast and clearly when offline."""

from __future__ import annotations

import time

import pytest

from chunkqa.engine.hub import BUNDLED, resolve_source
from chunkqa.engine.loading import ModelSpec, resolve_model
from chunkqa.errors import ModelLoadError


def test_resolve_source(tmp_path):
    assert resolve_source(str(tmp_path)) == str(tmp_path)
    assert resolve_source("Org/model-name") == "Org/model-name"
    with pytest.raises(ModelLoadError, match="no such model directory"):
        resolve_source("./not-here")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        resolve_source(str(tmp_path / "file.bin"))


def test_bundled_alias_points_into_the_package():
    assert BUNDLED["tiny"].parts[-3:] == ("chunkqa", "assets", "tiny")
    assert resolve_source("tiny") == str(BUNDLED["tiny"])


def test_offline_hub_id_fails_fast_with_a_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="offline") as info:
        resolve_model(ModelSpec("someone/some-model-not-cached"))
    assert time.perf_counter() - start < 30  # no minutes of network retries
    assert "local directory" in info.value.hint
