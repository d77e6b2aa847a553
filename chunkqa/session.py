"""Sessions: a document read once, many questions.

The session owns one KV cache and the token ids it holds. Each question's prompt shares the
document prefix (and, in a conversation, the earlier turns) with what is cached: only the tokens
past the longest common prefix are computed. The method's length-dependent settings (DCA's logit
scale) are pinned to the document-prefix length, so every question about a document sees the same
attention and a cached prefix is exact.

A prefix store (the on-disk document cache, `chunkqa.cache.DocCache`) is consulted through three
calls: `fetch(session, prompt)` before the prefix would be computed (it may call
`session.load_prefix`), `keep(session, prompt)` right after it was (it may call
`session.snapshot_prefix`), and `first_token_out()` once the answer has begun.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any, Protocol

import torch

from chunkqa.engine import cuda_graphs as graphs
from chunkqa.engine.cuda_graphs import DecodeGraph
from chunkqa.engine.generate import (
    AnswerText,
    Clock,
    Progress,
    decode_tokens,
    peak_memory,
    prefill,
    reset_peak_memory,
    stop_token_ids,
)
from chunkqa.engine.kvcache import new_cache
from chunkqa.engine.loading import LoadedModel, load_model
from chunkqa.engine.results import GenerationConfig, Stats, Step, default_piece
from chunkqa.prompt import PromptBuilder, PromptTokens, Turn


class PrefixStore(Protocol):
    """Somewhere a document prefix's KV cache can come from and go to (chunkqa.cache.DocCache)."""

    def fetch(self, session: Session, prompt: PromptTokens) -> None: ...

    def keep(self, session: Session, prompt: PromptTokens) -> None: ...

    def first_token_out(self) -> None: ...


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def trim_cache(cache: Any, length: int) -> None:
    """Drop cached positions past `length` in every layer (layers may disagree after an interrupt)."""
    for layer in cache.layers:
        extra = layer.get_seq_length() - length
        if extra > 0:
            layer.crop(-extra)


class Session:
    """A loaded model and one document; `ask` answers a question, reusing the cached document."""

    def __init__(
        self,
        loaded: LoadedModel,
        builder: PromptBuilder,
        document_ids: Sequence[int],
        *,
        piece: int | None = None,
        store: PrefixStore | None = None,
    ) -> None:
        self.loaded = loaded
        self.builder = builder
        self.document_ids = tuple(document_ids)
        self.piece = piece or default_piece(loaded.device)  # tokens per prefill call
        self.turns: list[Turn] = []
        self.cache = new_cache(loaded.model.config)
        # decode steps replayed from a CUDA graph where that works (else None: the ordinary forward)
        self.decoder = None
        if graphs.graphs_wanted(loaded):
            capture = loaded.device.type == "cuda"  # elsewhere the same fixed-shape step runs eagerly
            self.decoder = DecodeGraph(loaded.model, self.cache, loaded.handle, capture=capture)
        self.cache_ids: list[int] = []
        self.stop_ids = stop_token_ids(loaded.model, loaded.tokenizer)
        self.store = store
        self.last_stats: Stats | None = None

    def prompt(self, question: str, history: bool) -> PromptTokens:
        turns = [*self.turns, Turn(question)] if history else [Turn(question)]
        return self.builder.build(self.document_ids, turns)

    def ask(
        self,
        question: str,
        config: GenerationConfig | None = None,
        history: bool = False,
        on_progress: Progress | None = None,
    ) -> Iterator[Step]:
        """Stream the answer; the final Step carries Stats. history=True continues the conversation."""
        config = (config or GenerationConfig()).resolved(self.loaded.generation_defaults)
        prompt = self.prompt(question, history)
        device = self.loaded.device
        clock = Clock(device)
        reset_peak_memory(device)
        start = clock.now()
        self.cache.reserve(len(prompt) + config.max_new_tokens)  # room for the whole answer, allocated once
        with self._scale(prompt):
            reused, logits = self._prefill(prompt, on_progress)
            first = clock.now()
            text, tokens, reason = AnswerText(self.loaded.tokenizer, config.stop), [], "length"
            try:
                step = self.decoder.step if self.decoder is not None else None
                for token in decode_tokens(
                    self.loaded.model, self.cache, logits, config, self.stop_ids, step
                ):
                    tokens.append(token)
                    if len(tokens) > 1:  # the previous token has been fed; the newest is not in the cache yet
                        self.cache_ids.append(tokens[-2])
                    if len(tokens) == 1:
                        first = clock.now()
                        self._first_token_out()
                    if token in self.stop_ids:
                        reason = "eos"
                        break
                    yield Step(token, text.add(token))
                    if text.stopped:
                        reason = "stop"
                        break
                if not text.stopped and (tail := text.flush()):
                    yield Step(-1, tail)
            except (KeyboardInterrupt, GeneratorExit):  # GeneratorExit: the caller stopped reading
                reason = "interrupted"
                trim_cache(self.cache, len(self.cache_ids))
                raise
            finally:
                end = clock.now()
                self._first_token_out()  # idempotent: also when no token came
                if history:
                    self.turns.append(Turn(question, text.text))
                self.last_stats = Stats(
                    context_tokens=len(prompt) + len(tokens),
                    reused_tokens=reused,
                    prefill_tokens=len(prompt) - reused,
                    prefill_seconds=first - start if tokens else end - start,
                    generated_tokens=len(tokens),
                    decode_seconds=end - first,
                    ttft_seconds=first - start,
                    stop_reason=reason,
                    peak_memory=peak_memory(device),
                )
        yield Step(-1, "", self.last_stats)

    def _first_token_out(self) -> None:
        """Work that would compete with the first token (a document-cache write) may start now."""
        if self.store is not None:
            self.store.first_token_out()

    # -- the prefix, for a prefix store ---------------------------------------------------------------
    def load_prefix(self, ids: Sequence[int], layers: list[Any]) -> None:
        """Make the cache hold `layers` ([(keys, values)] per layer, each [B, Hkv, n, D]) for `ids`.

        The list is emptied as it is consumed, so each layer's loaded copy is freed once cached.
        """
        if len(layers) != len(self.cache.layers):
            raise ValueError(f"{len(layers)} layers given for a cache of {len(self.cache.layers)}")
        trim_cache(self.cache, 0)
        for i in range(len(layers)):
            keys, values = layers[i]
            layers[i] = None
            self.cache.update(keys, values, i)
        self.cache_ids = list(ids)

    def snapshot_prefix(self) -> list[tuple[Any, Any]]:
        """Every layer's cached keys and values as they are now, kept so while someone reads them."""
        return [layer.share() for layer in self.cache.layers]

    def _scale(self, prompt: PromptTokens):
        """Pin the DCA logit scale to the document-prefix length for everything in this session."""
        handle = self.loaded.handle
        return handle.prompt_length(len(prompt.prefix)) if handle is not None else nullcontext()

    def _prefill(self, prompt: PromptTokens, on_progress: Progress | None) -> tuple[int, torch.Tensor]:
        """Bring the cache to the prompt's ids; return (tokens reused, last logits)."""
        ids = prompt.ids
        reused = min(common_prefix(self.cache_ids, ids), len(ids) - 1)  # at least one token for the logits
        trim_cache(self.cache, reused)
        self.cache_ids = self.cache_ids[:reused]
        if reused < len(prompt.prefix) and self.store is not None:
            self.store.fetch(self, prompt)  # may load the prefix
            reused = len(self.cache_ids)
        base = reused

        def progress(done: int, total: int) -> None:
            if on_progress:
                on_progress(base + done, len(ids))

        def mark(done: int) -> None:
            self.cache_ids = ids[: base + done]

        try:
            if reused < len(prompt.prefix) and self.store is not None:
                prefix = ids[base : len(prompt.prefix)]
                prefill(self.loaded.model, prefix, self.cache, self.piece, progress, mark)
                self.store.keep(self, prompt)
                base = len(prompt.prefix)
            logits = prefill(self.loaded.model, ids[base:], self.cache, self.piece, progress, mark)
        except KeyboardInterrupt:  # layers may disagree mid-forward: keep only completed pieces
            trim_cache(self.cache, len(self.cache_ids))
            raise
        return reused, logits

    def clear(self) -> None:
        """Forget the conversation, keep the document: the next question rolls the cache back to it."""
        self.turns = []

    def reset(self) -> None:
        """Forget everything, document cache included."""
        self.turns = []
        self.cache_ids = []
        trim_cache(self.cache, 0)

    def answer(
        self, question: str, config: GenerationConfig | None = None, history: bool = False
    ) -> tuple[str, Stats]:
        """The whole answer and its stats (collects `ask`)."""
        text = ""
        for step in self.ask(question, config, history):
            text += step.text
        return text, self.last_stats


def open_session(plan: Any, *, parallel: Any = None, store: PrefixStore | None = None) -> Session:
    """Load the planned model (reusing the plan's tokenizer) and start a session on its document.

    With `parallel` (chunkqa.engine.parallel.Parallel) the model is sharded over the tensor-parallel
    group. `store`: a prefix store (chunkqa.cache.DocCache) to load the document from and save it to.
    """
    loaded = load_model(
        plan.model,
        method=plan.method,
        kernel=plan.request.method.kernel,
        tokenizer=plan.builder.tokenizer,
        parallel=parallel,
    )
    return Session(loaded, plan.builder, plan.document_ids, piece=plan.piece, store=store)
