"""The evaluation loop: load a model once, then for each setting apply DCA, score every cell, remove it.

A cell is one length (and, for the needle, one depth) with its items (windows or trials), built
once and scored identically under every setting. Each scored cell becomes one JSON-ready record.
Heavy imports (torch, transformers) happen inside the functions that need them.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

from chunkqa.evals.grid import Setting

Tick = Callable[[int], None]  # called with the number of tokens just processed
Scorer = Callable[[Any, "Cell", Tick], dict[str, Any]]  # (loaded model, cell, tick) -> record fields


@dataclass(frozen=True)
class Cell:
    """One length (and depth) of an evaluation, with the items scored there."""

    length: int
    items: tuple[Any, ...]
    tokens: int  # tokens fed to the model for all items, for progress
    depth: float | None = None
    variant: str | None = None  # e.g. the pass-key layout


def load_once(spec: Any, base: Any, settings: Sequence[Setting]) -> Any:
    """Check every setting against the model's config, then load the weights once, with no method.

    spec: chunkqa.engine.loading.ModelSpec; base: chunkqa.methods.spec.MethodSpec (the command's own
    settings; each Setting picks a method and changes some of them).
    """
    from chunkqa.engine.loading import load_model, resolve_model

    info = resolve_model(spec)
    for setting in settings:
        resolve_for(setting.spec(base), info.config)
    return load_model(info)


def resolve_for(spec: Any, config: Any, length: int | None = None) -> Any:
    """A setting's resolved method for a model config (its RoPE scaled first, when it asks)."""
    from chunkqa.methods.ropescale import scaled_config
    from chunkqa.methods.spec import resolve_method

    scaled = scaled_config(config, spec.rope) if spec.rope is not None else config
    return resolve_method(spec, scaled, target_length=length)


def pretraining_length(loaded: Any, base: Any) -> int:
    """P: the base settings' override when given, else what the model's config implies."""
    from chunkqa.methods.spec import pretraining_length as configured

    return configured(loaded.model.config, base.pretraining_length)


@contextmanager
def applied(loaded: Any, base: Any, setting: Setting, length: int | None = None) -> Iterator[Any]:
    """The loaded model as this setting runs it at `length` tokens (SelfExtend's defaults depend on it);
    the method (and a scaled RoPE) are removed again on the way out."""
    from chunkqa.methods.ropescale import apply_rope
    from chunkqa.methods.spec import apply_method

    spec = setting.spec(base)
    resolved = resolve_for(spec, loaded.model.config, length)
    undo_rope = apply_rope(loaded.model, spec.rope) if spec.rope is not None else None
    try:
        handle = apply_method(loaded.model, resolved, kernel=base.kernel)
        try:
            yield replace(loaded, handle=handle)
        finally:
            if handle is not None:
                handle.remove()
    finally:
        if undo_rope is not None:
            undo_rope()


def logit_scale_pinned(loaded: Any, length: int) -> Any:
    """Pin the DCA logit scale to a prompt's full length while it is fed in pieces (no-op without DCA)."""
    return loaded.handle.prompt_length(length) if loaded.handle is not None else nullcontext()


def greedy(loaded: Any, ids: Sequence[int], max_new_tokens: int, piece: int | None = None) -> list[int]:
    """Greedy tokens after a prompt (stop tokens included), the prompt prefilled in pieces."""
    from transformers import DynamicCache

    from chunkqa.engine.generate import decode_tokens, prefill, stop_token_ids
    from chunkqa.engine.results import GenerationConfig, default_piece

    cache = DynamicCache(config=loaded.model.config)
    config = GenerationConfig.greedy(max_new_tokens)
    stops = stop_token_ids(loaded.model, loaded.tokenizer)
    with logit_scale_pinned(loaded, len(ids)):
        logits = prefill(loaded.model, ids, cache, piece or default_piece(loaded.device))
        return list(decode_tokens(loaded.model, cache, logits, config, stops))


def versions() -> dict[str, str]:
    found = {}
    for name in ("chunkqa", "torch", "transformers"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found


def record(kind: str, loaded: Any, setting: Setting, length: int, pretraining: int, **fields: Any) -> dict:
    """One JSON-ready result: what was run (model, setting, length) and what it scored."""
    method = None
    if loaded.handle is not None:
        method = {**loaded.handle.config.describe(), "logit_factor": loaded.handle.logit_factor(length)}
    return {
        "eval": kind,
        "model": loaded.spec.name,
        "revision": loaded.revision,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "device": str(loaded.device),
        "setting": setting.label,
        "method": setting.method,
        "method_settings": method,
        "pretraining_length": pretraining,
        "length": length,
        "extension": round(length / pretraining, 3),
        **fields,
        "versions": versions(),
    }


def run_cells(
    loaded: Any,
    base: Any,
    settings: Sequence[Setting],
    cells: Sequence[Cell],
    scorer: Scorer,
    kind: str,
    tick: Tick | None = None,
) -> Iterator[dict]:
    """Score every cell under every setting (settings outer, so DCA is applied once per setting)."""
    pretraining = pretraining_length(loaded, base)
    tick = tick or (lambda tokens: None)
    for setting in settings:
        for cell in cells:  # applied per cell: a method's defaults may follow the length (SelfExtend)
            start = time.perf_counter()
            with applied(loaded, base, setting, cell.length) as run:
                fields = scorer(run, cell, tick)
            rope = setting.spec(base).rope
            seconds = round(time.perf_counter() - start, 2)  # wall time of the cell, patching included
            fields = {"rope": str(rope) if rope is not None else None, **fields, "seconds": seconds}
            if cell.variant is not None:
                fields = {"layout": cell.variant, **fields}
            yield record(kind, run, setting, cell.length, pretraining, **fields)


def total_tokens(cells: Sequence[Cell], settings: Sequence[Setting]) -> int:
    return sum(cell.tokens for cell in cells) * len(settings)
