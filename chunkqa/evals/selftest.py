"""`chunkqa selftest`: is DCA really working for this model, these settings and this transformers?

Two checks, never a silent pass:
  * the patch: on one prompt of c + 16 tokens (SelfExtend: W + 16), the patched model's logits must
    equal the unpatched model's at the last position of the first chunk (SelfExtend: the W-th token;
    the method is plain attention there; checked when the logit factor is 1) and must differ at the
    last position (where the method moves positions);
  * retrieval: pass-key accuracy >= 0.8 at every length (default 2P, 4P, 8P, at most 32k tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chunkqa.errors import ChunkqaError

THRESHOLD = 0.8
MAX_DEFAULT_LENGTH = 32768
DEFAULT_MULTIPLES = (2, 4, 8)
PAST_CHUNK = 16  # tokens past c in the patch check's prompt


def default_lengths(pretraining_length: int) -> list[int]:
    """2P, 4P, 8P, each at most MAX_DEFAULT_LENGTH tokens, without repeats."""
    return sorted({min(k * pretraining_length, MAX_DEFAULT_LENGTH) for k in DEFAULT_MULTIPLES})


def tolerance(dtype: Any) -> float:
    """Relative logit difference still counted as equal: kernels differ in rounding."""
    return 3e-2 if str(dtype) in ("torch.bfloat16", "torch.float16") else 1e-3


@dataclass(frozen=True)
class PatchCheck:
    """Relative logit differences, patched vs unpatched, inside the first chunk and past c."""

    tokens: int
    within: float | None  # None: not checked (the logit factor is not 1 at this length)
    beyond: float
    tolerance: float

    @property
    def intact(self) -> bool:
        return self.within is None or self.within <= self.tolerance

    @property
    def active(self) -> bool:
        """A change past c clearly above the rounding noise seen inside the first chunk."""
        noise = self.within if self.within is not None and self.intact else 0.0
        return self.beyond > max(1e-6, 2 * noise)

    def describe(self) -> str:
        within = "not checked" if self.within is None else f"{self.within:.1e}"
        return (
            f"patch check on {self.tokens} tokens: relative logit change past one chunk {self.beyond:.1e} "
            f"({'active' if self.active else 'NOT ACTIVE'}), inside the first chunk {within} "
            f"({'intact' if self.intact else 'BROKEN'})"
        )


def relative(a: Any, b: Any) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def exact_span(config: Any) -> tuple[int, int]:
    """(tokens over which the method is plain attention, a prompt length where it is not).

    DCA is plain attention within its first chunk (s = c - w tokens) and moves positions past c;
    SelfExtend is plain attention while every key is less than W back, and groups positions past W.
    """
    if hasattr(config, "chunk_len"):
        return config.chunk_len, config.chunk_size + PAST_CHUNK
    return config.window, config.window + PAST_CHUNK


def patch_check(loaded: Any, base: Any, setting: Any) -> PatchCheck:
    """Compare one forward pass with and without DCA (the loaded model must be unpatched)."""
    import torch

    from chunkqa.evals.data import bos_ids, encode
    from chunkqa.evals.passkey import garbage
    from chunkqa.evals.runner import applied

    with applied(loaded, base, setting) as run:
        if run.handle is None:
            raise ChunkqaError(
                f"selftest checks a patch, and the method {setting.method} has none",
                hint="use dca or selfextend",
            )
        plain_until, count = exact_span(run.handle.config)
        factor_is_one = run.handle.logit_factor(count) == 1.0
    text_ids = encode(loaded.tokenizer, garbage(16 * count))
    ids = torch.tensor([[*bos_ids(loaded.tokenizer), *text_ids][:count]], device=loaded.device)
    keep = torch.tensor([plain_until - 1, ids.shape[1] - 1], device=loaded.device)
    with torch.inference_mode():
        plain = loaded.model(ids, use_cache=False, logits_to_keep=keep).logits[0]  # [2, V]
        with applied(loaded, base, setting) as run:
            patched = run.model(ids, use_cache=False, logits_to_keep=keep).logits[0]  # [2, V]
    within = relative(patched[0], plain[0]) if factor_is_one else None
    return PatchCheck(ids.shape[1], within, relative(patched[1], plain[1]), tolerance(loaded.dtype))


def failures(records: Sequence[dict[str, Any]], check: PatchCheck) -> list[str]:
    """Why the selftest fails (empty when it passes)."""
    reasons = []
    if not check.active:
        reasons.append("DCA did not change the model's output past one chunk: the patch is not active")
    if not check.intact:
        reasons.append("DCA changed the output inside one chunk, where it must equal plain attention")
    for r in sorted(records, key=lambda r: r["length"]):
        if r["value"] < THRESHOLD:
            reasons.append(f"pass-key accuracy {r['correct']}/{r['n']} at {r['length']:,} tokens")
    return reasons


def verdict(
    records: Sequence[dict[str, Any]], check: PatchCheck, transformers_version: str
) -> ChunkqaError | None:
    """The `selftest failed` error with every reason and a hint on what to try; None when it passes."""
    reasons = failures(records, check)
    if not reasons:
        return None
    if not (check.active and check.intact):
        hint = (
            f"the DCA patch may be broken for transformers {transformers_version}; "
            "please report it with the output of this command"
        )
    else:
        hint = (
            "see whether the model finds pass keys at all with `chunkqa eval passkey --compare`: if it "
            "does at 1x but not with DCA, the DCA patch may be broken for this transformers version"
        )
    return ChunkqaError("selftest failed: " + "; ".join(reasons), hint=hint)
