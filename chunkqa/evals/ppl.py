"""Perplexity on windows of exactly L tokens: how windows are cut, and the NLL of one window.

Windows (identical for every DCA setting, no randomness):
  * each text is tokenized on its own, without special tokens;
  * a window is L tokens as fed to the model: [BOS] + (L - 1) text tokens when the tokenizer adds
    a BOS, else L text tokens;
  * a text of n tokens offers floor(n / T) non-overlapping slots of T text tokens, from its start
    (T = L - 1 with BOS, else L); the slots of all texts are listed in order, S in all;
  * of those S slots, N are taken evenly spaced: slot floor((i + 1/2) * S / N) for i = 0..N-1
    (all S when S <= N).
Every window scores its L - 1 next-token predictions (positions 1..L-1); perplexity at a length is
exp(total NLL / total predictions) over all its windows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from chunkqa.engine.forward import cache_kwargs
from chunkqa.engine.results import default_piece
from chunkqa.errors import UsageError

LOGITS_BUDGET = 1 << 26  # floats of [piece, vocab] logits kept at once (256 MiB in float32)
MAX_PIECE = 4096


@dataclass(frozen=True)
class Window:
    """One window: where its text comes from, and the ids fed to the model."""

    source: str
    offset: int  # first text token of the window within its text
    ids: tuple[int, ...]


@dataclass(frozen=True)
class PplScore:
    """Summed NLL over predicted positions of some windows."""

    nll: float
    predictions: int
    windows: int

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / self.predictions)

    @property
    def mean_nll(self) -> float:
        return self.nll / self.predictions


def slots(lengths: Sequence[int], span: int) -> list[tuple[int, int]]:
    """(text index, offset) of every non-overlapping span of `span` tokens, text by text from the start."""
    return [(t, k * span) for t, n in enumerate(lengths) for k in range(n // span)]


def pick_evenly(total: int, count: int) -> list[int]:
    """`count` of range(total), evenly spaced (all of them when count >= total)."""
    if count >= total:
        return list(range(total))
    return [int((i + 0.5) * total / count) for i in range(count)]


def cut_windows(
    texts: Sequence[tuple[str, Sequence[int]]], length: int, count: int, bos: Sequence[int]
) -> list[Window]:
    """`count` windows of exactly `length` ids from tokenized texts [(name, ids)], as the module says."""
    span = length - len(bos)
    if span < 1 or length < 2:
        raise UsageError(f"a perplexity window needs at least 2 tokens, got {length}")
    every = slots([len(ids) for _, ids in texts], span)
    if not every:
        longest = max((len(ids) for _, ids in texts), default=0)
        raise UsageError(
            f"no text is long enough for a window of {length:,} tokens (the longest has {longest:,})",
            hint="pass longer texts with --data, or lower --lengths",
        )
    windows = []
    for index in pick_evenly(len(every), count):
        text, offset = every[index]
        name, ids = texts[text]
        windows.append(Window(name, offset, (*bos, *ids[offset : offset + span])))
    return windows


def piece_size(vocab_size: int) -> int:
    """Tokens per forward call: bounded so that one piece's logits stay within LOGITS_BUDGET."""
    return max(16, min(MAX_PIECE, LOGITS_BUDGET // max(1, vocab_size)))


def window_nll(model: Any, handle: Any, ids: Sequence[int], piece: int) -> float:
    """Summed NLL of ids[1:] given their prefixes, fed in pieces through a KV cache.

    Every position's logits are used, one piece at a time (never [L, vocab] at once); under DCA the
    logit scale is pinned to the window's length, as if it had been fed in one pass.
    """
    import torch
    from transformers import DynamicCache

    ids_t = torch.tensor([list(ids)], device=model.device)  # [1, L]
    cache = DynamicCache(config=model.config)
    total = torch.zeros((), dtype=torch.float64)
    scale = handle.prompt_length(len(ids)) if handle is not None else nullcontext()
    with torch.inference_mode(), scale:
        for start in range(0, len(ids) - 1, piece):
            chunk = ids_t[:, start : start + piece]  # [1, p]
            logits = model(input_ids=chunk, **cache_kwargs(model, cache), use_cache=True).logits[0]  # [p, V]
            targets = ids_t[0, start + 1 : start + 1 + chunk.shape[1]]  # [p] (one fewer at the end)
            wide = logits[: len(targets)].to(torch.promote_types(logits.dtype, torch.float32))  # half -> fp32
            loss = torch.nn.functional.cross_entropy(wide, targets, reduction="sum")
            total += loss.double().cpu()
    return float(total)


def perplexity(
    model: Any,
    handle: Any,
    windows: Sequence[Window],
    piece: int,
    on_window: Callable[[Window], None] | None = None,
) -> PplScore:
    """Perplexity over all predicted positions of all windows."""
    nll, predictions = 0.0, 0
    for window in windows:
        nll += window_nll(model, handle, window.ids, piece)
        predictions += len(window.ids) - 1
        if on_window:
            on_window(window)
    return PplScore(nll, predictions, len(windows))


@dataclass(frozen=True)
class PerplexityEval:
    """`chunkqa eval ppl`: N windows per length from some texts."""

    texts: tuple[Any, ...]  # chunkqa.evals.data.Text
    windows: int
    label: str  # where the texts come from, for the banner
    # tokens per forward call, never past LOGITS_BUDGET; None: the device's default piece
    piece: int | None = MAX_PIECE
    kind: str = "ppl"

    @property
    def describe(self) -> str:
        return f"perplexity · {self.windows} windows per length from {self.label}"

    def cells(self, loaded: Any, lengths: Sequence[int]) -> list[Any]:
        """One cell per length holding its windows; the texts are tokenized once."""
        from chunkqa.evals.data import bos_ids, encode
        from chunkqa.evals.runner import Cell

        bos = bos_ids(loaded.tokenizer)
        tokenized = [(t.name, encode(loaded.tokenizer, t.text)) for t in self.texts]
        out = []
        for length in lengths:
            windows = cut_windows(tokenized, length, self.windows, bos)
            out.append(Cell(length, tuple(windows), sum(len(w.ids) for w in windows)))
        return out

    def score_cell(self, run: Any, cell: Any, tick: Callable[[int], None]) -> dict[str, Any]:
        """Record fields for one length under the setting `run` carries."""
        vocab = run.model.config.get_text_config().vocab_size
        piece = min(self.piece or default_piece(run.model.device), piece_size(vocab))
        score = perplexity(run.model, run.handle, cell.items, piece, lambda w: tick(len(w.ids)))
        return {
            "metric": "ppl",
            "value": score.ppl,
            "n": score.windows,
            "seed": None,  # windows are fixed by the texts, the tokenizer, L and N
            "mean_nll": score.mean_nll,
            "predictions": score.predictions,
            "mean_tokens": cell.length,
            "texts": sorted({w.source for w in cell.items}),
        }

    @staticmethod
    def summary(record: dict[str, Any]) -> str:
        return f"ppl {record['value']:,.3f} ({record['n']} windows)"
