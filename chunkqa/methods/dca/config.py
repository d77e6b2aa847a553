"""DCA settings: defaults read from a model config, validation, and the logit-scale rule.

Owns the numbers P (pretraining length), c (chunk size), w (local window) and s = c - w, and the
factor that multiplies attention logits for a sequence whose prompt has L tokens. Pure Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from chunkqa.errors import DCAConfigError

AUTO_COEF = 0.05  # the reference patch: m = 0.05 * ln(L / P) + 1
# No scaling: on SmolLM2-135M "auto" lost pass keys and perplexity (docs/evaluation.md, "Choosing defaults")
DEFAULT_LOGIT_SCALE = 1.0


def parse_logit_scale(value: str | float | int) -> str | float:
    """Normalise a logit-scale setting: "auto", "auto:<coef>", or a positive float."""
    if isinstance(value, bool):
        raise DCAConfigError(
            f"`logit_scale` must be 'auto', 'auto:<coef>' or a positive number, got {value!r}"
        )
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if text.startswith("auto:"):
            coef = _positive_float(text[5:], "the coefficient in logit_scale 'auto:<coef>'")
            return "auto" if coef == AUTO_COEF else f"auto:{coef:g}"
        number = _positive_float(text, "`logit_scale`")
    if not math.isfinite(number) or number <= 0:
        raise DCAConfigError(f"`logit_scale` must be a positive number, got {value!r}")
    return number


def _positive_float(text: str, what: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise DCAConfigError(
            f"{what} must be 'auto', 'auto:<coef>' or a positive number, got {text!r}"
        ) from None
    if not math.isfinite(number) or number <= 0:
        raise DCAConfigError(f"{what} must be positive, got {text!r}")
    return number


@dataclass(frozen=True)
class DCAConfig:
    """Resolved Dual Chunk Attention settings for one model."""

    pretraining_length: int  # P: the length the model was trained at with its own RoPE settings
    chunk_size: int  # c: the largest relative position DCA ever uses
    local_window: int  # w: tokens of the previous chunk kept at exact relative positions
    logit_scale: str | float = DEFAULT_LOGIT_SCALE  # "auto", "auto:<coef>" or a constant factor

    def __post_init__(self) -> None:
        for name in ("pretraining_length", "chunk_size", "local_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise DCAConfigError(f"`{name}` must be a positive integer, got {value!r}")
        if self.local_window >= self.chunk_size:
            raise DCAConfigError(
                f"`local_window` ({self.local_window}) must be smaller than `chunk_size` ({self.chunk_size})"
            )
        if self.chunk_size > self.pretraining_length:
            raise DCAConfigError(
                f"`chunk_size` ({self.chunk_size}) must not exceed the pretraining length "
                f"`pretraining_length` ({self.pretraining_length}): relative positions past it were "
                "never trained"
            )
        object.__setattr__(self, "logit_scale", parse_logit_scale(self.logit_scale))

    key_copies = 1  # each key is cached once, rotated at its in-chunk position
    max_length = None  # no longest sequence: memory is the limit

    @property
    def chunk_len(self) -> int:
        """s = c - w: the number of tokens in each chunk."""
        return self.chunk_size - self.local_window

    def logit_factor(self, prompt_length: int) -> float:
        """The factor on attention logits for a sequence whose prompt has `prompt_length` tokens.

        "auto" is m**2 with m = coef * ln(L / P) + 1 when L > P, else 1 (coef 0.05 unless "auto:<coef>").
        """
        if isinstance(self.logit_scale, float):
            return self.logit_scale
        coef = AUTO_COEF if self.logit_scale == "auto" else float(self.logit_scale[5:])
        if prompt_length <= self.pretraining_length:
            return 1.0
        m = coef * math.log(prompt_length / self.pretraining_length) + 1.0
        return m * m

    def describe(self) -> dict[str, Any]:
        """The settings as plain JSON-friendly values."""
        return {
            "method": "dca",
            "pretraining_length": self.pretraining_length,
            "chunk_size": self.chunk_size,
            "local_window": self.local_window,
            "chunk_len": self.chunk_len,
            "logit_scale": self.logit_scale,
        }


def default_settings(model_config: Any) -> tuple[int, int, int]:
    """(P, c, w) as the model's config implies them, before any caller override."""
    config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    dual = getattr(config, "dual_chunk_attention_config", None)
    if dual:
        dual = dict(dual)
        length = dual.get("original_max_position_embeddings") or config.max_position_embeddings
        return int(length), int(dual["chunk_size"]), int(dual["local_size"])
    length = getattr(config, "max_position_embeddings", None)
    if not length:
        raise DCAConfigError("the model config has no max_position_embeddings; give `pretraining_length`")
    return int(length), int(length) * 3 // 4, int(length) // 8


def resolve_config(
    model_config: Any,
    pretraining_length: int | None = None,
    chunk_size: int | None = None,
    local_window: int | None = None,
    logit_scale: str | float = DEFAULT_LOGIT_SCALE,
) -> DCAConfig:
    """Settings for a model: the caller's values where given, else those its config implies.

    Overriding P alone recomputes c = 3P/4 and w = P/8 from it, as the defaults are defined.
    """
    if pretraining_length is None:
        length, chunk, window = default_settings(model_config)
    else:
        length, chunk, window = pretraining_length, None, None
        if isinstance(length, int) and not isinstance(length, bool) and length > 0:
            chunk, window = length * 3 // 4, length // 8
            if (chunk_size is None and chunk < 2) or (local_window is None and window < 1):
                raise DCAConfigError(
                    f"`pretraining_length` {length} is too small for DCA: its chunk size "
                    f"(3P/4 = {chunk}) and local window (P/8 = {window}) must be positive",
                    hint="give the length the model was trained at (at least 16), or also "
                    "`chunk_size` and `local_window`",
                )
    return DCAConfig(
        pretraining_length=length,
        chunk_size=chunk_size if chunk_size is not None else chunk,
        local_window=local_window if local_window is not None else window,
        logit_scale=logit_scale,
    )
