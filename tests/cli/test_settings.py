"""chunkqa.cli.settings: flag > environment > config file > default."""

from __future__ import annotations

import pytest

from chunkqa.cli.settings import DEFAULTS, Settings, config_path, read_config_file
from chunkqa.errors import UsageError


def test_precedence():
    settings = Settings({"model": "from-file", "max_new_tokens": 64})
    assert settings.get("model", "from-flag") == "from-flag"
    assert settings.get("model") == "from-file"
    assert settings.get("max_new_tokens") == 64
    assert settings.get("dtype") == DEFAULTS["dtype"] == "auto"


def test_config_path(monkeypatch, tmp_path):
    monkeypatch.setenv("CHUNKQA_CONFIG", str(tmp_path / "c.toml"))
    assert config_path() == tmp_path / "c.toml"
    monkeypatch.delenv("CHUNKQA_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_path() == tmp_path / "chunkqa" / "config.toml"


def test_read_config_file(tmp_path):
    path = tmp_path / "c.toml"
    assert read_config_file(path) == {}
    path.write_text('model = "org/m"\nmax_new_tokens = 32\nlogit_scale = 1.0\n')
    assert read_config_file(path) == {"model": "org/m", "max_new_tokens": 32, "logit_scale": 1.0}
    path.write_text("modle = 'typo'\n")
    with pytest.raises(UsageError, match="unknown setting 'modle'"):
        read_config_file(path)
    path.write_text("max_new_tokens = 'many'\n")
    with pytest.raises(UsageError, match="wrong type"):
        read_config_file(path)
    path.write_text("model = \n")
    with pytest.raises(UsageError, match="cannot read the config file"):
        read_config_file(path)


def test_a_config_file_named_by_chunkqa_config_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("CHUNKQA_CONFIG", str(tmp_path / "typo.toml"))
    with pytest.raises(UsageError, match="named by CHUNKQA_CONFIG does not exist"):
        read_config_file()
    monkeypatch.delenv("CHUNKQA_CONFIG")
    assert read_config_file() == {}  # the default place may hold no file


def test_settings_become_the_library_objects(cli_models):
    from chunkqa.cli.options import CacheFlags, GenerationOptions, MethodOptions, ModelOptions, PromptOptions

    settings = Settings({"max_new_tokens": 64, "logit_scale": 1.0, "dtype": "bfloat16"})
    from chunkqa.documents import document_from_bytes

    doc = document_from_bytes(b"Some text.")
    request = settings.request(
        lambda: [doc],
        model=ModelOptions(model="tiny"),
        method=MethodOptions(chunk_size=100),
        prompt=PromptOptions(template="summary"),
        generation=GenerationOptions(temperature=0.5, prefill_chunk=256),
        cache=CacheFlags(),
    )
    assert request.model.name == "tiny" and request.model.dtype == "bfloat16"  # flag, then config file
    assert (request.method.name, request.method.chunk_size, request.method.logit_scale) == ("dca", 100, 1.0)
    assert request.generation.max_new_tokens == 64 and request.generation.temperature == 0.5
    assert request.template == "summary" and request.prefill_chunk == 256
    assert request.cache.min_tokens == 2048 and request.cache.max_bytes == 20 * 2**30
    no_cache = settings.request(
        lambda: [doc],
        model=ModelOptions(),
        method=MethodOptions(no_dca=True),
        prompt=PromptOptions(),
        cache=CacheFlags(no_cache=True),
    )
    assert no_cache.cache is None and not no_cache.method.enabled
