"""Which context-extension method to run, as asked for, and its settings resolved for one model.

`MethodSpec` is what a user or caller asks for (None: the model's defaults); `resolve_method` turns
it into the method's own frozen settings for a model config, once, before any weights load, and
`apply_method` patches a loaded model with those settings. Pure Python until `apply_method`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chunkqa.errors import UsageError
from chunkqa.methods.dca.config import DCAConfig, default_settings, parse_logit_scale, resolve_config

METHODS = ("dca", "none")


@dataclass(frozen=True)
class MethodSpec:
    """A method and the settings given for it; None: derived from the model's config."""

    name: str = "dca"
    pretraining_length: int | None = None  # P
    chunk_size: int | None = None  # DCA's c
    local_window: int | None = None  # DCA's w
    logit_scale: str | float = "auto"
    kernel: str = "auto"  # the attention kernel ("auto": the fastest that works here)

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise UsageError(f"unknown method {self.name!r}", hint=f"choose one of {', '.join(METHODS)}")
        for name in ("pretraining_length", "chunk_size", "local_window"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise UsageError(f"`{name}` must be a positive whole number, got {value!r}")
        object.__setattr__(self, "logit_scale", parse_logit_scale(self.logit_scale))

    @property
    def enabled(self) -> bool:
        return self.name != "none"


Resolved = DCAConfig | None  # a method's resolved settings (None: the model runs as it is)


def pretraining_length(model_config: Any, override: int | None = None) -> int:
    """P: the override, else the length the model's config says it was trained at."""
    return override if override is not None else default_settings(model_config)[0]


def resolve_method(spec: MethodSpec, model_config: Any) -> Resolved:
    """The method's settings for this model (architecture checked), or None for no method."""
    if not spec.enabled:
        return None
    from chunkqa.methods.adapters import check_architecture

    check_architecture(model_config)
    return resolve_config(
        model_config, spec.pretraining_length, spec.chunk_size, spec.local_window, spec.logit_scale
    )


def apply_method(model: Any, resolved: Resolved, *, kernel: str = "auto") -> Any:
    """Patch the model with resolved settings; the handle (None when there is no method)."""
    if resolved is None:
        return None
    from chunkqa.methods.dca.patch import apply_dca

    return apply_dca(model, kernel=kernel, config=resolved)
