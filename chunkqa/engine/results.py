"""What a generation asks for and gives back, as frozen types; no torch, so the CLI imports them early."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from chunkqa.errors import UsageError

PREFILL_PIECE = 4096  # tokens per prefill call by default on a CPU: bounds activation memory
PREFILL_PIECE_GPU = 16384  # on a GPU: 16-18 % faster than 4,096 at 128k-256k tokens, +1.3 GiB (H200)


def default_piece(device: Any) -> int:
    """Tokens per prefill call when none is asked for: PREFILL_PIECE_GPU on CUDA, else PREFILL_PIECE."""
    return PREFILL_PIECE_GPU if getattr(device, "type", str(device)).startswith("cuda") else PREFILL_PIECE


REPEAT_PENALTY = 1.0  # off by default: it turned "two years and two months" into "... and a half"
REPEAT_WINDOW = 64  # the penalty covers the answer's last this many tokens
NO_REPEAT_NGRAM = 10  # the default against loops: no run of 10 answer tokens comes twice (see README)


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick tokens. None: the model's own generation_config default, else chunkqa's.

    temperature 0 is greedy; repeat_penalty divides the (positive) logits of tokens among the answer's
    last `repeat_window` tokens (1 = off); no_repeat_ngram forbids a run of that many answer tokens to
    come twice (0 = off; the document is not counted, so quoting it stays free); `stop` strings end
    the answer and are not part of it.
    """

    max_new_tokens: int = 512
    temperature: float | None = None  # chunkqa's default: 0 (greedy)
    top_p: float | None = None  # chunkqa's default: 1
    seed: int | None = None
    repeat_penalty: float | None = None  # chunkqa's default: REPEAT_PENALTY
    repeat_window: int = REPEAT_WINDOW
    no_repeat_ngram: int | None = None  # chunkqa's default: NO_REPEAT_NGRAM
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.max_new_tokens < 1:
            raise UsageError(f"`max_new_tokens` must be at least 1, got {self.max_new_tokens}")
        if self.temperature is not None and self.temperature < 0:
            raise UsageError(f"`temperature` must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError(f"`top_p` must be in (0, 1], got {self.top_p}")
        if self.repeat_penalty is not None and self.repeat_penalty <= 0:
            raise UsageError(f"`repeat_penalty` must be positive (1 = off), got {self.repeat_penalty}")
        if self.repeat_window < 1:
            raise UsageError(f"`repeat_window` must be at least 1, got {self.repeat_window}")
        if self.no_repeat_ngram is not None and self.no_repeat_ngram < 0:
            raise UsageError(f"`no_repeat_ngram` must be 0 (off) or more, got {self.no_repeat_ngram}")
        if any(not s for s in self.stop):
            raise UsageError("a `stop` string must not be empty")

    @classmethod
    def greedy(cls, max_new_tokens: int) -> GenerationConfig:
        """Plain greedy decoding, no repetition penalty: what the evaluations score."""
        return cls(
            max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, repeat_penalty=1.0, no_repeat_ngram=0
        )

    def resolved(self, model_defaults: Mapping[str, Any] | None = None) -> GenerationConfig:
        """Every None filled: from the model's generation defaults (model_defaults), else chunkqa's."""
        found = model_defaults or {}

        def pick(name: str, fallback: Any) -> Any:
            value = getattr(self, name)
            return value if value is not None else found.get(name, fallback)

        return replace(
            self,
            temperature=pick("temperature", 0.0),
            top_p=pick("top_p", 1.0),
            repeat_penalty=pick("repeat_penalty", REPEAT_PENALTY),
            no_repeat_ngram=pick("no_repeat_ngram", NO_REPEAT_NGRAM),
        )


def model_generation_defaults(generation_config: Any) -> dict[str, Any]:
    """What a model's transformers GenerationConfig asks for, in chunkqa's names.

    Sampling settings count only where the model samples (do_sample); a repetition penalty counts always.
    """
    if generation_config is None:
        return {}
    found: dict[str, Any] = {}
    if getattr(generation_config, "do_sample", False):
        for name in ("temperature", "top_p"):
            value = getattr(generation_config, name, None)
            if value is not None:
                found[name] = float(value)
    penalty = getattr(generation_config, "repetition_penalty", None)
    if penalty is not None and penalty != 1.0:
        found["repeat_penalty"] = float(penalty)
    ngram = getattr(generation_config, "no_repeat_ngram_size", None)
    if ngram:
        found["no_repeat_ngram"] = int(ngram)
    return found


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
    stop_reason: str  # "eos", "stop" (a stop string), "length" or "interrupted"
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
    """One generated token and the text it makes final (often ""); the last step carries the stats.

    token -1: no token, text released once the answer ended (it was held back as a possible stop string).
    """

    token: int
    text: str
    stats: Stats | None = None
