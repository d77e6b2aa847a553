"""A chat about a document: one loaded model, a Session on the current document, and its disk cache.

`plan_chat` and `open_chat` plan and load once; `ChatEngine` answers with the conversation so far
(history on), and re-points the session when the user switches document (/doc), reloads it
(/reset) or changes the system prompt (/set system). Re-planning reuses the loaded tokenizer and
the first plan's token limit, so a switch costs a tokenization, never a model load.
Nothing here prints or reads stdin.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from chunkqa.errors import DoesNotFitError
from chunkqa.plan import Request
from chunkqa.results import GenerationConfig, Stats, Step

SAMPLE_QUESTION = "What does the document say about this question, in a few sentences?"  # for the budget
STDIN_SOURCE = "<stdin>"


@dataclass(frozen=True)
class ChatRequest(Request):
    """A chat's settings, options resolved; the password re-opens documents on /doc and /reset."""

    password: str | None = None


def plan_chat(request: ChatRequest) -> Any:
    """Tokenize and check the document against the budget, before any weights load."""
    return request.plan([SAMPLE_QUESTION])


def open_chat(request: ChatRequest, plan: Any) -> ChatEngine:
    """Load the planned model and start the session on the plan's document."""
    from chunkqa.doccache import DocCache
    from chunkqa.model import load_model, pick_device

    cache = None
    if request.cache is not None:  # prepared before the weights load: it may pin its buffers meanwhile
        cache = DocCache(request.cache).prepare(pick_device(plan.spec.device), plan.builder.tokenizer)
    loaded = load_model(plan.spec, plan.dca_options, tokenizer=plan.builder.tokenizer)
    engine = ChatEngine(replace(request, max_context=plan.budget.limit), loaded, cache)
    engine.use(plan)
    return engine


class ChatEngine:
    """The model side of a chat; every method either succeeds or leaves the chat as it was."""

    def __init__(self, request: ChatRequest, loaded: Any, cache: Any = None) -> None:
        self.request = request
        self.loaded = loaded
        self.cache = cache
        self.plan: Any = None
        self.session: Any = None

    def use(self, plan: Any, refresh: bool = False) -> None:
        """Start a fresh session on the plan's document (refresh: recompute even if cached on disk)."""
        from chunkqa.session import Session

        session = Session(self.loaded, plan.builder, plan.document_ids, self.request.prefill_chunk)
        if self.cache is not None:
            self.cache.label = {"model": plan.spec.name, "documents": [d.name for d in plan.documents]}
            self.cache.refresh = refresh
            self.cache.attach(session)
        self.plan, self.session = plan, session

    # -- questions -------------------------------------------------------------------------------
    def ask(self, question: str, config: GenerationConfig, on_progress: Any = None) -> Iterator[Step]:
        """Stream an answer that sees the earlier turns; DoesNotFitError if the conversation is too long."""
        needed = len(self.session.prompt(question, history=True)) + config.max_new_tokens
        if needed > self.plan.budget.limit:
            raise DoesNotFitError(
                f"the conversation needs {needed:,} tokens, over the limit of {self.plan.budget.limit:,}",
                hint="/clear forgets earlier turns; /set max_tokens shortens answers",
            )
        return self.session.ask(question, config, history=True, on_progress=on_progress)

    @property
    def last_stats(self) -> Stats | None:
        return self.session.last_stats

    @property
    def context_used(self) -> int:
        return len(self.session.cache_ids)

    # -- commands --------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget the turns, keep the document: the next question rolls the cache back to it."""
        self.session.clear()

    def reset(self) -> None:
        """Re-read the documents from disk and compute them again (turns forgotten)."""
        from chunkqa.documents import load_document

        docs = [
            d if d.source == STDIN_SOURCE else load_document(d.source, self.request.password)
            for d in self.plan.documents
        ]
        self.use(self._plan(docs, self.request.system), refresh=True)

    def switch(self, path: str) -> None:
        """Chat about another document from now on."""
        from chunkqa.documents import load_document

        self.use(self._plan([load_document(path, self.request.password)], self.request.system))

    def set_system(self, text: str) -> None:
        """A new system prompt ('' for none): the prefix changes, so the session starts over."""
        plan = self._plan(self.plan.documents, text)
        self.request = replace(self.request, system=text)
        self.use(plan)

    def _plan(self, documents: Sequence[Any], system: str | None) -> Any:
        request = replace(self.request, documents=documents, system=system)
        # strict=False: the memory check would count the loaded weights twice
        plan = request.plan([SAMPLE_QUESTION], strict=False, tokenizer=self.loaded.tokenizer)
        if plan.budget.total > plan.budget.limit:
            raise DoesNotFitError(
                f"{plan.budget.total:,} tokens do not fit the limit of {plan.budget.limit:,}",
                hint="start chunkqa chat with --truncate start|middle|end to cut long documents",
            )
        return plan

    # -- reporting ---------------------------------------------------------------------------------
    def cache_events(self, wait: bool = False) -> list[Any]:
        if self.cache is None:
            return []
        return self.cache.wait() if wait else self.cache.events()

    def describe(self) -> list[str]:
        """/show: model, document, DCA settings, context used, prompt settings, disk cache."""
        from chunkqa.report import banner_lines

        plan, builder = self.plan, self.plan.builder
        lines = banner_lines(plan, self.loaded)
        if self.loaded.handle is not None:
            prefix = len(self.session.prompt(SAMPLE_QUESTION, history=False).prefix)
            lines.append(
                f"DCA logit factor {self.loaded.handle.logit_factor(prefix):.4f} at {prefix:,} tokens"
            )
        turns = len(self.session.turns)
        lines.append(
            f"context {self.context_used:,} of {plan.budget.limit:,} tokens in use · {turns} earlier turns"
        )
        system = builder.system.replace("\n", " ") if builder.system else "(none)"
        lines.append(f"template {builder.template_name} · system prompt {_clip(system, 70)}")
        if self.cache is not None:
            options = self.cache.options
            lines.append(
                f"document cache {options.directory} · prefixes from {options.min_tokens:,} tokens · "
                f"this document: {self.cache.status}"
            )
        else:
            lines.append("document cache off")
        return lines


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
