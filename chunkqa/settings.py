"""User settings: flag > environment (CHUNKQA_*) > config file > built-in default.

Typer fills a flag from its CHUNKQA_* twin; what is still unset comes from the config file
($CHUNKQA_CONFIG, else $XDG_CONFIG_HOME/chunkqa/config.toml, else ~/.config/chunkqa/config.toml),
then from DEFAULTS. Pure Python, no torch.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from chunkqa.errors import UsageError

DEFAULTS: dict[str, Any] = {
    "model": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
    "revision": None,
    "dtype": "auto",
    "device": "auto",
    "max_new_tokens": 512,
    "temperature": 0.0,
    "top_p": 1.0,
    "seed": None,
    "max_context": None,
    "prefill_chunk": 4096,
    "template": None,
    "system": None,
    "pretraining_length": None,
    "chunk_size": None,
    "local_window": None,
    "logit_scale": "auto",
    "kernel": "auto",
    "color": "auto",
    "cache_dir": None,
    "cache_size": "20GiB",
}
TYPES: dict[str, type | tuple[type, ...]] = {
    "max_new_tokens": int,
    "temperature": (int, float),
    "top_p": (int, float),
    "seed": int,
    "max_context": int,
    "prefill_chunk": int,
    "pretraining_length": int,
    "chunk_size": int,
    "local_window": int,
    "logit_scale": (str, int, float),
}


def config_path() -> Path:
    if os.environ.get("CHUNKQA_CONFIG"):
        return Path(os.environ["CHUNKQA_CONFIG"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "chunkqa" / "config.toml"


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    """The config file's settings ({} when there is none), checked against the known keys and types."""
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise UsageError(
            f"cannot read the config file {path}: {exc}", hint="fix or remove that file"
        ) from None
    for key, value in data.items():
        if key not in DEFAULTS:
            raise UsageError(f"unknown setting {key!r} in {path}", hint=f"known: {', '.join(DEFAULTS)}")
        expected = TYPES.get(key, str)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise UsageError(f"setting {key!r} in {path} has the wrong type ({type(value).__name__})")
    return data


class Settings:
    """Resolves each setting by precedence; `get(key, flag_value)`."""

    def __init__(self, file_values: dict[str, Any] | None = None) -> None:
        self.file = read_config_file() if file_values is None else file_values

    def get(self, key: str, value: Any = None) -> Any:
        if value is not None:
            return value
        if key in self.file:
            return self.file[key]
        return DEFAULTS[key]
