"""Generation: prefill in pieces, sample, decode; an iterator of tokens, then of text steps with stats.

Layers, smallest first: `penalize`, `sample` -> `prefill` / `decode_tokens` -> `AnswerText` -> `Stats`.
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

__all__ = [
    "AnswerText",
    "GenerationConfig",
    "Stats",
    "Step",
    "decode_tokens",
    "penalize",
    "prefill",
    "sample",
]

Progress = Callable[[int, int], None]  # (tokens done, tokens in all)
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>")


def penalize(logits: torch.Tensor, recent: Sequence[int], penalty: float) -> torch.Tensor:
    """Logits [V] with the tokens in `recent` made less likely by transformers' repetition penalty:
    positive logits divided by the penalty, negative ones multiplied (the CTRL rule)."""
    if penalty == 1.0 or not recent:
        return logits
    from transformers import RepetitionPenaltyLogitsProcessor

    ids = torch.tensor([list(recent)], device=logits.device)  # [1, n]
    return RepetitionPenaltyLogitsProcessor(penalty)(ids, logits[None])[0]


def ban_repeats(logits: torch.Tensor, answer: Sequence[int], size: int) -> torch.Tensor:
    """Logits [V] with every token that would repeat a run of `size` answer tokens set to -inf
    (transformers' no-repeat-n-gram rule, applied to the answer alone)."""
    if size <= 0 or len(answer) < size:
        return logits
    from transformers import NoRepeatNGramLogitsProcessor

    ids = torch.tensor([list(answer)], device=logits.device)  # [1, n]
    return NoRepeatNGramLogitsProcessor(size)(ids, logits[None])[0]


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

    `config` must be resolved (GenerationConfig.resolved). `step` (a CUDA-graph decoder, say) feeds a
    token instead of the model's forward where it can.
    """
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=logits.device).manual_seed(config.seed)
    answer: list[int] = []
    for produced in range(1, config.max_new_tokens + 1):
        logits = penalize(logits, answer[-config.repeat_window :], config.repeat_penalty)
        logits = ban_repeats(logits, answer, config.no_repeat_ngram)
        token = sample(logits, config.temperature, config.top_p, generator)
        answer.append(token)
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


class AnswerText:
    """Generated token ids as the answer's text, handed out in pieces as they become final.

    Held back: an incomplete multi-byte character, and a tail that could be the start of a stop
    string. Dropped: white space before the answer's first character, and everything from the first
    stop string on (`stopped` is then set, and the caller stops generating).
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.ids: list[int] = []
        self.emitted = 0  # characters of the answer already handed out
        self.stopped = False
        self._answer = ""

    def add(self, token: int) -> str:
        """The next final piece of text (often empty) after `token`."""
        self.ids.append(token)
        raw = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if raw.endswith("\ufffd"):  # a multi-byte character is not complete yet
            return ""
        self._answer = raw.lstrip()
        cut = self._first_stop()
        if cut is not None:
            self._answer, self.stopped = self._answer[:cut], True
            return self._hand_out(len(self._answer))
        return self._hand_out(len(self._answer) - self._stop_prefix())

    def flush(self) -> str:
        """What is still held back, once no token follows."""
        return self._hand_out(len(self._answer))

    @property
    def text(self) -> str:
        """The answer so far, held-back tail included."""
        return self._answer

    def _hand_out(self, end: int) -> str:
        piece = self._answer[self.emitted : end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return piece

    def _first_stop(self) -> int | None:
        found = [i for s in self.stops if (i := self._answer.find(s, max(0, self.emitted - len(s)))) >= 0]
        return min(found) if found else None

    def _stop_prefix(self) -> int:
        """The length of the longest tail that a stop string starts with."""
        return max(
            (k for s in self.stops for k in range(1, len(s)) if self._answer.endswith(s[:k])), default=0
        )


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
