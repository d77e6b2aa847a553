"""What an evaluation runs over: lengths, needle depths and DCA settings, parsed from option text.

Pure Python (no torch), so the CLI rejects a bad `--lengths` before anything heavy is imported.
Lengths are token counts (`512`), kibi-tokens (`4k` = 4096) or multiples of the pretraining
length (`2x` = 2P, resolved once the model's P is known).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from chunkqa.errors import UsageError

LENGTH_HINT = "use token counts such as 256,512,1k,2k (k = 1024) or multiples of P such as 1x,2x,4x"
_LENGTH = re.compile(r"^(\d+(?:\.\d+)?)([kx]?)$")


@dataclass(frozen=True)
class Length:
    """A length as asked for: a token count, or a multiple of the pretraining length P."""

    tokens: int | None = None
    times_p: float | None = None

    def resolve(self, pretraining_length: int) -> int:
        if self.tokens is not None:
            return self.tokens
        return max(1, round(self.times_p * pretraining_length))

    def __str__(self) -> str:
        return str(self.tokens) if self.tokens is not None else f"{self.times_p:g}x"


def parse_lengths(text: str) -> tuple[Length, ...]:
    """'256,512,1k,2x' -> Lengths; a UsageError names the first bad item."""
    items = [item.strip().lower() for item in str(text).split(",")]
    if not any(items):
        raise UsageError("--lengths is empty", hint=LENGTH_HINT)
    lengths = []
    for item in items:
        match = _LENGTH.match(item)
        if not match:
            raise UsageError(f"bad length {item!r} in --lengths", hint=LENGTH_HINT)
        number, suffix = float(match.group(1)), match.group(2)
        if suffix == "x":
            if number <= 0:
                raise UsageError(f"length {item!r} must be positive", hint=LENGTH_HINT)
            lengths.append(Length(times_p=number))
            continue
        tokens = number * 1024 if suffix == "k" else number
        if tokens != int(tokens) or tokens < 2:
            raise UsageError(f"length {item!r} must be a whole number of at least 2 tokens", hint=LENGTH_HINT)
        lengths.append(Length(tokens=int(tokens)))
    return tuple(lengths)


def resolve_lengths(lengths: Sequence[Length], pretraining_length: int) -> list[int]:
    """Token counts, ascending and without repeats."""
    return sorted({length.resolve(pretraining_length) for length in lengths})


def parse_depths(text: str) -> list[float]:
    """'0,0.25,50%,1' -> [0.0, 0.25, 0.5, 1.0]: fractions of the document, ascending."""
    depths = set()
    for item in str(text).split(","):
        item = item.strip()
        try:
            value = float(item[:-1]) / 100 if item.endswith("%") else float(item)
        except ValueError:
            raise UsageError(
                f"bad depth {item!r} in --depths", hint="use fractions such as 0,0.25,0.5,1"
            ) from None
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise UsageError(f"depth {item!r} is outside 0..1", hint="0 = the start, 1 = the end")
        depths.add(value)
    return sorted(depths)


def parse_positive(value: int, flag: str) -> int:
    if value < 1:
        raise UsageError(f"{flag} must be at least 1, got {value}")
    return value


@dataclass(frozen=True)
class Setting:
    """One way of running the model: without DCA, or with DCA under one logit scale."""

    dca: bool
    logit_scale: str | float | None = None

    @property
    def label(self) -> str:
        if not self.dca:
            return "no DCA"
        if isinstance(self.logit_scale, float):
            return f"DCA scale={self.logit_scale}"
        return f"DCA {self.logit_scale}"


def parse_scales(text: str | None) -> list[str | float]:
    """'1,auto,auto:0.1' -> [1.0, 'auto', 'auto:0.1'] (each checked like --logit-scale)."""
    from chunkqa.methods.dca.config import parse_logit_scale

    scales: list[str | float] = []
    for item in str(text or "auto").split(","):
        scale = parse_logit_scale(item.strip())
        if scale not in scales:
            scales.append(scale)
    return scales


def make_settings(dca: bool, compare: bool, scales_text: str | None) -> list[Setting]:
    """The settings to run: 'no DCA' first with --compare, then one DCA setting per logit scale.

    Without DCA (--no-dca) only 'no DCA' runs, whatever the scales say.
    """
    if not dca:
        return [Setting(dca=False)]
    without = [Setting(dca=False)] if compare else []
    return without + [Setting(dca=True, logit_scale=scale) for scale in parse_scales(scales_text)]
