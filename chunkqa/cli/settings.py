"""User settings, resolved once: flag > environment (CHUNKQA_*) > config file > built-in default.

Typer fills a flag from its CHUNKQA_* twin; what is still unset comes from the config file
($CHUNKQA_CONFIG, else $XDG_CONFIG_HOME/chunkqa/config.toml, else ~/.config/chunkqa/config.toml),
then from DEFAULTS. The option groups of a command become the frozen objects the library takes
(ModelSpec, MethodSpec, GenerationConfig, CacheOptions, Request) here, and nowhere else.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chunkqa.errors import UsageError

DEFAULTS: dict[str, Any] = {
    "model": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
    "revision": None,
    "gguf_file": None,
    "trust_remote_code": False,
    "dtype": "auto",
    "device": "auto",
    "max_new_tokens": 512,
    "temperature": None,
    "top_p": None,
    "repeat_penalty": None,
    "no_repeat_ngram": None,
    "stop": None,
    "seed": None,
    "max_context": None,
    "truncate": None,
    "prefill_chunk": None,  # None: by device (chunkqa.engine.results.default_piece)
    "template": None,
    "system": None,
    "method": "dca",
    "pretraining_length": None,
    "chunk_size": None,
    "local_window": None,
    "logit_scale": 1.0,
    "group_size": None,
    "window": None,
    "rope": None,
    "kernel": "auto",
    "color": "auto",
    "cache_dir": None,
    "cache_size": "20GiB",
}
TYPES: dict[str, type | tuple[type, ...]] = {
    "trust_remote_code": bool,
    "max_new_tokens": int,
    "temperature": (int, float),
    "top_p": (int, float),
    "repeat_penalty": (int, float),
    "no_repeat_ngram": int,
    "stop": list,
    "seed": int,
    "max_context": int,
    "prefill_chunk": int,
    "pretraining_length": int,
    "chunk_size": int,
    "local_window": int,
    "group_size": int,
    "window": int,
    "logit_scale": (str, int, float),
    "cache_size": (str, int),
}


def config_path() -> Path:
    if os.environ.get("CHUNKQA_CONFIG"):
        return Path(os.environ["CHUNKQA_CONFIG"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "chunkqa" / "config.toml"


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    """The config file's settings ({} when there is none), checked against the known keys and types.

    A file named by $CHUNKQA_CONFIG must exist: a typo there must not silently drop every setting.
    """
    named = path is None and bool(os.environ.get("CHUNKQA_CONFIG"))
    path = path or config_path()
    if not path.is_file():
        if named:
            raise UsageError(
                f"the config file {path} named by CHUNKQA_CONFIG does not exist",
                hint="fix the path, or unset CHUNKQA_CONFIG",
            )
        return {}
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise UsageError(
            f"cannot read the config file {path}: {exc}", hint="fix or remove that file"
        ) from None
    for key, value in data.items():
        if key not in DEFAULTS:
            raise UsageError(
                f"unknown setting {key!r} in {path}", hint=f"known settings: {', '.join(DEFAULTS)}"
            )
        expected = TYPES.get(key, str)
        wrong_items = isinstance(value, list) and not all(isinstance(item, str) for item in value)
        wrong_bool = isinstance(value, bool) and expected is not bool
        if not isinstance(value, expected) or wrong_bool or wrong_items:
            raise UsageError(
                f"setting {key!r} in {path} has the wrong type ({type(value).__name__})",
                hint=f"write it like {key} = {_example(key)}",
            )
    return data


def _example(key: str) -> str:
    value = DEFAULTS[key]
    if value is None:
        kind = TYPES.get(key)
        return {int: "1024", list: '["..."]'}.get(kind, "0.5" if kind == (int, float) else '"..."')
    return repr(value).replace("'", '"')


class Settings:
    """Resolves each setting by precedence: `get(key, flag_value)`."""

    def __init__(self, file_values: dict[str, Any] | None = None) -> None:
        self.file = read_config_file() if file_values is None else file_values

    def get(self, key: str, value: Any = None) -> Any:
        if value is not None:
            return value
        if key in self.file:
            return self.file[key]
        return DEFAULTS[key]

    # -- the library's objects, built once ---------------------------------------------------------
    def model_spec(self, options: Any) -> Any:
        from chunkqa.engine.loading import ModelSpec

        return ModelSpec(
            name=self.get("model", options.model),
            revision=self.get("revision", options.revision),
            dtype=self.get("dtype", options.dtype),
            device=self.get("device", options.device),
            trust_remote_code=options.trust_remote_code or self.get("trust_remote_code"),
            gguf_file=self.get("gguf_file", options.gguf_file),
        )

    def method_spec(self, options: Any, logit_scale: Any = None) -> Any:
        """The method asked for and the settings it reads; a setting typed for another method is refused
        (one from the config file only counts for its own method)."""
        from chunkqa.methods.spec import METHODS, SETTINGS, MethodSpec

        name = "none" if options.no_dca else self.get("method", options.method)
        if options.no_dca and options.method not in (None, "none"):
            raise UsageError(f"--no-dca and --method {options.method} contradict each other")
        if name not in METHODS:
            raise UsageError(f"unknown `method` {name!r}", hint=f"choose one of {', '.join(METHODS)}")
        chosen = {field: self.get(field, getattr(options, field)) for field in SETTINGS[name]}
        for field in ("chunk_size", "local_window", "logit_scale", "group_size", "window", "rope"):
            if field not in chosen and getattr(options, field) is not None:
                owner = next(m for m, fields in SETTINGS.items() if field in fields)
                raise UsageError(
                    f"`{field}` is a setting of {owner}, not of {name}", hint=f"add `method` {owner}"
                )
        if logit_scale is not None and "logit_scale" in chosen:
            chosen["logit_scale"] = logit_scale
        return MethodSpec(name=name, kernel=self.get("kernel", options.kernel), **chosen)

    def generation(self, prompt: Any, generation: Any) -> Any:
        from chunkqa.engine.results import GenerationConfig

        return GenerationConfig(
            max_new_tokens=self.get("max_new_tokens", prompt.max_new_tokens),
            temperature=self.get("temperature", generation.temperature),
            top_p=self.get("top_p", generation.top_p),
            repeat_penalty=self.get("repeat_penalty", generation.repeat_penalty),
            no_repeat_ngram=self.get("no_repeat_ngram", generation.no_repeat_ngram),
            stop=tuple(self.get("stop", generation.stop or None) or ()),
            seed=self.get("seed", generation.seed),
        )

    def cache_directory(self, flag: str | None = None) -> Path:
        """Flag > CHUNKQA_CACHE_DIR > config file `cache_dir` > $XDG_CACHE_HOME/chunkqa/kv."""
        from chunkqa.cache import default_cache_dir

        chosen = self.get("cache_dir", flag or os.environ.get("CHUNKQA_CACHE_DIR") or None)
        return Path(chosen).expanduser() if chosen else default_cache_dir()

    def cache_size(self) -> int:
        from chunkqa.cache import parse_size

        return parse_size(self.get("cache_size", os.environ.get("CHUNKQA_CACHE_SIZE") or None))

    def cache_options(self, flags: Any) -> Any:
        """The document cache settings, or None with --no-cache."""
        from chunkqa.cache import DEFAULT_MIN_TOKENS, CacheOptions

        if flags.no_cache:
            return None
        minimum = DEFAULT_MIN_TOKENS if flags.cache_min_tokens is None else flags.cache_min_tokens
        if minimum < 0:
            raise UsageError(f"`cache_min_tokens` must be >= 0, got {minimum}")
        return CacheOptions(self.cache_directory(), self.cache_size(), minimum)

    def request_fields(
        self,
        *,
        model: Any,
        method: Any,
        prompt: Any,
        generation: Any = None,
        cache: Any = None,
        password: str | None = None,
        prefill_chunk: int | None = None,
    ) -> dict[str, Any]:
        """Every Request field but the documents, each option checked: a usage error comes before any
        document is read (a long PDF) or any heavy import."""
        from chunkqa.engine.results import GenerationConfig
        from chunkqa.plan import check_options

        fields = {
            "model": self.model_spec(model),
            "method": self.method_spec(method),
            "generation": self.generation(prompt, generation)
            if generation is not None
            else GenerationConfig(max_new_tokens=self.get("max_new_tokens", prompt.max_new_tokens)),
            "template": self.get("template", prompt.template),
            "system": self.get("system", prompt.system),
            "max_context": self.get("max_context", prompt.max_context),
            "truncate": self.get("truncate", prompt.truncate),
            "prefill_chunk": self.get("prefill_chunk", getattr(generation, "prefill_chunk", prefill_chunk)),
            "cache": self.cache_options(cache) if cache is not None else None,
            "password": password,
        }
        check_options(
            max_context=fields["max_context"],
            truncate=fields["truncate"],
            prefill_chunk=fields["prefill_chunk"],
        )
        return fields

    def request(self, documents: Callable[[], Sequence[Any]], **options: Any) -> Any:
        """The one frozen Request every layer below the CLI receives; `documents()` is called once every
        option has been checked."""
        from chunkqa.plan import Request

        fields = self.request_fields(**options)
        return Request(documents=tuple(documents()), **fields)
