"""What an evaluation runs over: lengths, needle depths and method settings, parsed from option text.

Pure Python (no torch), so the CLI rejects a bad `--lengths` before anything heavy is imported.
Lengths are token counts (`512`), kibi-tokens (`4k` = 4096) or multiples of the pretraining
length (`2x` = 2P, resolved once the model's P is known).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


SETTING_HINT = (
    "write a setting as METHOD[,KEY=VALUE...], e.g. none, dca, dca,logit_scale=1, "
    "selfextend,group_size=8,window=2048, rope,rope=yarn:4, dca,rope=linear:2"
)


@dataclass(frozen=True)
class Setting:
    """One way of running the model: a method, and the settings it sets over the command's own."""

    method: str = "dca"
    changes: tuple[tuple[str, Any], ...] = ()  # (MethodSpec field, value)
    name: str | None = None  # as the user wrote it; the table's column header

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return ",".join([self.method, *(f"{k}={v}" for k, v in self.changes)])

    def spec(self, base: Any) -> Any:
        """The MethodSpec this setting runs: the base's settings this method reads, then its changes."""
        from dataclasses import replace

        from chunkqa.methods.spec import SETTINGS

        kept = {f: getattr(base, f) for f in (*SETTINGS[self.method], "kernel")}
        cleared = replace(base.__class__(name="none"), **kept)
        return replace(cleared, name=self.method, **dict(self.changes))


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_setting(text: str) -> Setting:
    """ "selfextend,group_size=8,window=2048" -> its Setting (values as numbers where they read as one)."""
    from chunkqa.methods.spec import METHODS, SETTINGS

    name, *pairs = [part.strip() for part in text.split(",")]
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r} in the setting {text!r}", hint=SETTING_HINT)
    changes = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key.strip() not in SETTINGS[name]:
            allowed = ", ".join(SETTINGS[name]) or "none"
            raise UsageError(
                f"cannot read {pair!r} in the setting {text!r} (settings of {name}: {allowed})",
                hint=SETTING_HINT,
            )
        changes.append((key.strip(), _value(value.strip())))
    return Setting(name, tuple(changes), text.strip())


def parse_scales(text: str | None) -> list[str | float]:
    """'1,auto,auto:0.1' -> [1.0, 'auto', 'auto:0.1'] (each checked like --logit-scale)."""
    from chunkqa.methods.dca.config import parse_logit_scale

    scales: list[str | float] = []
    for item in str(text or "1").split(","):
        scale = parse_logit_scale(item.strip())
        if scale not in scales:
            scales.append(scale)
    return scales


NO_METHOD = Setting("none", name="no DCA")


def make_settings(
    method: str, compare: bool, scales_text: str | None, methods: Sequence[str] = ()
) -> list[Setting]:
    """The settings to run, in order.

    With `methods` (eval's repeatable --method): one setting each, plus 'no DCA' first with --compare.
    Otherwise the command's own method: for DCA one setting per logit scale ('DCA auto',
    'DCA scale=1.0'), 'no DCA' first with --compare; another method runs as it is.
    """
    if methods:
        chosen = [parse_setting(text) for text in methods]
        missing = compare and not any(s.method == "none" for s in chosen)
        return ([NO_METHOD] if missing else []) + chosen
    if method == "none":
        return [NO_METHOD]
    without = [NO_METHOD] if compare else []
    if method != "dca":
        return [*without, Setting(method, name=method)]
    scales = parse_scales(scales_text)
    return without + [Setting("dca", (("logit_scale", s),), name=_scale_label(s)) for s in scales]


def _scale_label(scale: str | float) -> str:
    return f"DCA scale={scale}" if isinstance(scale, float) else f"DCA {scale}"
