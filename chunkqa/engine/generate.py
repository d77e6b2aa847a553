"""Generation: prefill in pieces, sample, decode; an iterator of tokens, then of text steps with stats.

Layers, smallest first: `sample` -> `prefill` / `decode_tokens` -> `TextStream` -> `Stats`.
Only the last position's logits are computed while prefilling (logits_to_keep=1).
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from chunkqa.engine.forward import cache_kwargs
from chunkqa.engine.results import GenerationConfig, Stats, Step

__all__ = ["GenerationConfig", "Stats", "Step", "decode_tokens", "prefill", "sample"]

Progress = Callable[[int, int], None]  # (tokens done, tokens in all)
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>")


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """One token id from logits [V]: argmax when temperature is 0, else nucleus sampling."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        outside = (
            torch.cumsum(sorted_probs, dim=-1) - sorted_probs > top_p
        )  # drop once the mass reaches top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def prefill(
    model: Any,
    ids: Sequence[int],
    cache: Any,
    piece: int,
    on_progress: Progress | None = None,
    on_piece: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Feed ids through the model in pieces of `piece` tokens; return the last position's logits [V]."""
    device = model.device
    logits = None
    for start in range(0, len(ids), piece):
        chunk = torch.tensor([list(ids[start : start + piece])], device=device)
        logits = model(input_ids=chunk, **cache_kwargs(model, cache), use_cache=True, logits_to_keep=1).logits
        done = min(start + piece, len(ids))
        if on_piece:
            on_piece(done)
        if on_progress:
            on_progress(done, len(ids))
    if logits is None:
        raise ValueError("nothing to prefill")
    return logits[0, -1]


Stepper = Callable[[int], "torch.Tensor | None"]  # feed one token, get the next logits (None: can't)


@torch.inference_mode()
def decode_tokens(
    model: Any,
    cache: Any,
    logits: torch.Tensor,
    config: GenerationConfig,
    stop_ids: set[int],
    step: Stepper | None = None,
) -> Iterator[int]:
    """Tokens one by one from the prefill's logits. The last token yielded is never fed to the model.

    `step` (a CUDA-graph decoder, say) feeds a token instead of the model's forward where it can.
    """
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=logits.device).manual_seed(config.seed)
    for produced in range(1, config.max_new_tokens + 1):
        token = sample(logits, config.temperature, config.top_p, generator)
        yield token
        if token in stop_ids or produced == config.max_new_tokens:
            return
        stepped = step(token) if step is not None else None
        if stepped is None:
            ids = torch.tensor([[token]], device=logits.device)
            stepped = model(
                input_ids=ids, **cache_kwargs(model, cache), use_cache=True, logits_to_keep=1
            ).logits
            stepped = stepped[0, -1]
        logits = stepped


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-sequence and end-of-turn ids from the generation config and the tokenizer."""
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN if t in vocab and t in tokenizer.all_special_tokens)
    return ids


class TextStream:
    """Turns generated token ids into text pieces, holding back incomplete characters."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0  # characters already handed out

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
            return ""
        piece, self.emitted = text[self.emitted :], len(text)
        return piece

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, dict[str, int]]:
    """Peak GPU memory (allocated and reserved) per device in use, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return {
            f"cuda:{i}": {
                "allocated": torch.cuda.max_memory_allocated(i),
                "reserved": torch.cuda.max_memory_reserved(i),
            }
            for i in range(torch.cuda.device_count())
            if torch.cuda.max_memory_reserved(i) > 0
        }
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"cpu": {"rss": rss if sys.platform == "darwin" else rss * 1024}}


class Clock:
    """Wall time that waits for this stream's GPU work, so it is counted where it happens.

    Only the current stream: background work on other streams (the document cache copying a prefix
    off the GPU) does not delay an answer, so it must not be counted in its time either.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return time.perf_counter()
