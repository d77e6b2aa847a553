"""What a generation asks for and gives back, as frozen types; no torch, so the CLI imports them early."""

from __future__ import annotations

from dataclasses import dataclass, field

from chunkqa.errors import UsageError

PREFILL_PIECE = 4096  # tokens per prefill call by default: bounds activation memory


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick tokens: greedy by default (temperature 0)."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise UsageError(f"`max_new_tokens` must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UsageError(f"`temperature` must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"`top_p` must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Stats:
    """What one answer cost."""

    context_tokens: int  # tokens in the sequence at the end (prompt + answer)
    reused_tokens: int  # prompt tokens taken from the KV cache
    prefill_tokens: int  # prompt tokens computed
    prefill_seconds: float
    generated_tokens: int
    decode_seconds: float
    ttft_seconds: float  # from the start of prefill to the first answer token
    stop_reason: str  # "eos", "length" or "interrupted"
    peak_memory: dict[str, dict[str, int]] = field(default_factory=dict)  # device -> {kind: bytes}

    @property
    def prefill_tps(self) -> float:
        return self.prefill_tokens / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        steps = self.generated_tokens - 1  # the first token comes from the prefill's logits
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds > 0 else 0.0


@dataclass(frozen=True)
class Step:
    """One generated token and the text it completes; the last step also carries the stats."""

    token: int
    text: str
    stats: Stats | None = None
