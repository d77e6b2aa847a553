"""SelfExtend settings: pretraining length P, group size G, neighbor window W; validation and defaults.

Owns the numbers and what follows from them: the longest sequence whose relative positions all stay
below P (`max_length`), and the rule of thumb that picks G and W for a target length. Pure Python.

Reference: Jin et al. 2024, "LLM Maybe LongLM: Self-Extend LLM Context Window Without Tuning", and its
code (github.com/datamllab/LongLM). Defaults, when nothing is given:
  W = P // 4   the reference's own defaults: 1024 for Llama-2 (P 4096), 512 for Phi-2 (P 2048), 2048 for
               Mistral (P 8192)
  G = 8        the reference's default group size (with P 4096, W 1024: 25,600 tokens, the paper's "25k")
With a target length N, G is the smallest group size that keeps W + (N - W) / G, roughly the largest
relative position used, within half of P: the README's rule of thumb asks for 1/2 .. 2/3 of P, since
only the first positions of the pretraining window are well trained; we take the cautious end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chunkqa.errors import SelfExtendConfigError

DEFAULT_GROUP = 8
WINDOW_SHARE = 4  # W = P // WINDOW_SHARE
WELL_TRAINED_SHARE = 2  # keep W + (N - W) / G within P // WELL_TRAINED_SHARE


@dataclass(frozen=True)
class SelfExtendConfig:
    """Resolved SelfExtend settings for one model."""

    pretraining_length: int  # P: the length the model was trained at
    group_size: int  # G: distant keys and queries share a position per G tokens (floor(i / G))
    window: int  # W: keys fewer than W tokens back keep their exact relative position

    def __post_init__(self) -> None:
        for name in ("pretraining_length", "group_size", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SelfExtendConfigError(f"`{name}` must be a positive integer, got {value!r}")
        if self.window >= self.pretraining_length:
            raise SelfExtendConfigError(
                f"`window` ({self.window}) must be smaller than the pretraining length "
                f"`pretraining_length` ({self.pretraining_length})"
            )

    key_copies = 2  # each key is cached rotated twice: at j (neighbors) and at floor(j / G) (grouped)

    @property
    def max_length(self) -> int:
        """The longest sequence whose largest relative position stays below P.

        The largest relative position of a sequence of N tokens is floor((N - 1) / G) + W - floor(W / G)
        (the last query against key 0), so N <= G (P - W + floor(W / G)). That is the paper's
        (P - W) G + W when G divides W, and up to G - 1 tokens less when it does not.
        """
        p, g, w = self.pretraining_length, self.group_size, self.window
        return (p - w + w // g) * g

    def largest_position(self, length: int) -> int:
        """The largest relative position a sequence of `length` tokens uses."""
        if length <= self.window:
            return length - 1
        return (length - 1) // self.group_size + self.window - self.window // self.group_size

    def describe(self) -> dict[str, Any]:
        """The settings as plain JSON-friendly values."""
        return {
            "method": "selfextend",
            "pretraining_length": self.pretraining_length,
            "group_size": self.group_size,
            "window": self.window,
            "max_length": self.max_length,
        }


def defaults(
    pretraining_length: int, target_length: int | None = None, *, window: int | None = None
) -> tuple[int, int]:
    """(G, W) for a model trained at P, for sequences up to `target_length` tokens (see the module doc).

    W = P // 4 unless given. Without a target G = 8; with one, the smallest G with
    W + (N - W) / G <= P / 2 (G = 1 when N fits in that already: the model as it is), and never less
    than the G whose `max_length` reaches N (the hard limit, when W leaves no room below P / 2).
    """
    p = pretraining_length
    w = window if window is not None else max(1, p // WINDOW_SHARE)
    if target_length is None:
        return DEFAULT_GROUP, w
    if isinstance(target_length, bool) or not isinstance(target_length, int) or target_length <= 0:
        raise SelfExtendConfigError(f"`target_length` must be a positive integer, got {target_length!r}")
    if w >= p:  # refused by SelfExtendConfig, with its own message
        return 1, w
    over = max(0, target_length - w)  # tokens past the window
    room = p // WELL_TRAINED_SHARE - w  # relative positions the rule leaves for them
    rule = -(-over // room) if room > 0 else 1
    group = max(1, rule, -(-over // (p - w)))  # and at least the hard limit, (P - W) G + W >= N
    while SelfExtendConfig(p, group, w).max_length < target_length:  # G not dividing W: a little less
        group += 1
    return group, w


def resolve_config(
    pretraining_length: int,
    group_size: int | None = None,
    window: int | None = None,
    target_length: int | None = None,
) -> SelfExtendConfig:
    """Settings for a model trained at P: the caller's G and W where given, else `defaults`."""
    p = pretraining_length
    if isinstance(p, bool) or not isinstance(p, int) or p <= 0:
        raise SelfExtendConfigError(f"`pretraining_length` must be a positive integer, got {p!r}")
    group, win = defaults(pretraining_length, target_length, window=window)
    return SelfExtendConfig(
        pretraining_length=pretraining_length,
        group_size=group_size if group_size is not None else group,
        window=win,
    )
