"""chunkqa.settings: flag > environment > config file > default."""

from __future__ import annotations

import pytest

from chunkqa.errors import UsageError
from chunkqa.settings import DEFAULTS, Settings, config_path, read_config_file


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
