"""Which context-extension method to run, as asked for, and its settings resolved for one model.

`MethodSpec` is what a user or caller asks for (None: the model's defaults); `resolve_method` turns
it into the method's own frozen settings for a model config, once, before any weights load, and
`apply_method` patches a loaded model with those settings. Pure Python until `apply_method`.

The methods: `dca` (Dual Chunk Attention), `selfextend` (SelfExtend), `rope` (RoPE scaling alone:
no patch, the config's rope_parameters; chunkqa.methods.ropescale) and `none` (the model as it is).
`rope` scaling also composes with `dca` (DCA then works within the stretched window); with
`selfextend`, or dynamic NTK under DCA, it is refused (see `check_rope`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chunkqa.errors import UsageError
from chunkqa.methods.dca.config import (
    DEFAULT_LOGIT_SCALE,
    DCAConfig,
    default_settings,
    parse_logit_scale,
    resolve_config,
)
from chunkqa.methods.ropescale import RopeScaling, parse_rope
from chunkqa.methods.selfextend.config import SelfExtendConfig
from chunkqa.methods.selfextend.config import resolve_config as resolve_selfextend

METHODS = ("dca", "selfextend", "rope", "none")
SETTINGS = {  # the MethodSpec fields each method reads (kernel: every method)
    "dca": ("pretraining_length", "chunk_size", "local_window", "logit_scale", "rope"),
    "selfextend": ("pretraining_length", "group_size", "window"),
    "rope": ("rope",),
    "none": (),
}
_OWN = {"dca": ("chunk_size", "local_window"), "selfextend": ("group_size", "window")}  # per-method fields


@dataclass(frozen=True)
class MethodSpec:
    """A method and the settings given for it; None: derived from the model's config."""

    name: str = "dca"
    pretraining_length: int | None = None  # P
    chunk_size: int | None = None  # DCA's c
    local_window: int | None = None  # DCA's w
    logit_scale: str | float = DEFAULT_LOGIT_SCALE  # DCA's logit scale (SelfExtend has none)
    group_size: int | None = None  # SelfExtend's G
    window: int | None = None  # SelfExtend's W
    rope: str | RopeScaling | None = None  # RoPE scaling, "kind:factor" (e.g. "yarn:4")
    kernel: str = "auto"  # the attention kernel ("auto": the fastest that works here)

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise UsageError(f"unknown method {self.name!r}", hint=f"choose one of {', '.join(METHODS)}")
        for name in ("pretraining_length", "chunk_size", "local_window", "group_size", "window"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise UsageError(f"`{name}` must be a positive whole number, got {value!r}")
        object.__setattr__(self, "logit_scale", parse_logit_scale(self.logit_scale))
        object.__setattr__(self, "rope", parse_rope(self.rope))
        check_rope(self.name, self.rope)
        if self.name == "selfextend" and self.logit_scale != DEFAULT_LOGIT_SCALE:
            given = ["logit_scale"]
        else:
            given = [n for m, fields in _OWN.items() if m != self.name for n in fields if getattr(self, n)]
        if given and self.patches:  # another method's setting: refused, not silently dropped
            owner = "dca" if given[0] in ("logit_scale", *_OWN["dca"]) else "selfextend"
            raise UsageError(
                f"`{given[0]}` is a setting of {owner}, not of {self.name}",
                hint=f"leave it out, or choose the method {owner!r}",
            )

    @property
    def enabled(self) -> bool:
        """Whether the model runs other than as it is (a patch, or a scaled RoPE)."""
        return self.name != "none"

    @property
    def patches(self) -> bool:
        """Whether the method patches the attention (dca, selfextend)."""
        return self.name in ("dca", "selfextend")

    @property
    def label(self) -> str:
        """A short name for banners and tables: "dca", "selfextend", "dca + yarn:4", "rope yarn:4"."""
        if self.rope is None:
            return self.name
        return f"rope {self.rope}" if self.name == "rope" else f"{self.name} + {self.rope}"


def check_rope(method: str, rope: RopeScaling | None) -> None:
    """Which RoPE scalings a method composes with."""
    if method == "rope" and rope is None:
        raise UsageError("the method rope needs a `rope` scaling", hint="e.g. yarn:4, linear:2 or ntk:4")
    if rope is None:
        return
    if method == "none":
        raise UsageError("the method none runs the model as it is", hint="for RoPE scaling alone, use rope")
    if method == "selfextend":
        raise UsageError(
            "SelfExtend does not compose with `rope` scaling: it maps distant positions into the "
            "window itself",
            hint="use `rope` with dca, or alone (the method rope)",
        )
    if method == "dca" and not rope.stretches_window:
        raise UsageError(
            f"`rope` {rope} does nothing under DCA: dynamic NTK scales only past the window, which "
            "DCA never passes",
            hint="use linear, ntk or yarn with dca, or dynamic alone (the method rope)",
        )


Resolved = DCAConfig | SelfExtendConfig | None  # a method's resolved settings (None: the model as it is)


def pretraining_length(model_config: Any, override: int | None = None) -> int:
    """P: the override, else the length the model's config says it was trained at."""
    return override if override is not None else default_settings(model_config)[0]


def resolve_method(spec: MethodSpec, model_config: Any, target_length: int | None = None) -> Resolved:
    """The method's settings for this model (architecture checked), or None for no method.

    `target_length`: the longest sequence the caller will run (prompt and answer), when known.
    SelfExtend derives the G and W not given from it (chunkqa.methods.selfextend.config.defaults:
    the smallest G keeping W + (N - W) / G within P / 2, W = P // 4); without it, the reference
    code's defaults G = 8, W = P // 4. DCA's defaults do not depend on it.
    """
    if not spec.patches:
        return None
    from chunkqa.methods.adapters import check_architecture

    check_architecture(model_config)
    if spec.name == "selfextend":
        p = pretraining_length(model_config, spec.pretraining_length)
        return resolve_selfextend(p, spec.group_size, spec.window, target_length)
    return resolve_config(
        model_config, spec.pretraining_length, spec.chunk_size, spec.local_window, spec.logit_scale
    )


def apply_method(model: Any, resolved: Resolved, *, kernel: str = "auto") -> Any:
    """Patch the model with resolved settings; the handle (None when there is no method)."""
    if resolved is None:
        return None
    if isinstance(resolved, SelfExtendConfig):
        from chunkqa.methods.selfextend.patch import apply_selfextend

        return apply_selfextend(model, kernel=kernel, config=resolved)
    from chunkqa.methods.dca.patch import apply_dca

    return apply_dca(model, kernel=kernel, config=resolved)
