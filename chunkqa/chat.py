"""A chat about a document: one loaded model, a Session on the current document, and its disk cache.

`plan_chat` and `open_chat` plan and load once; `ChatEngine` answers with the conversation so far
(history on), and re-points the session when the user switches document, reloads it or changes the
system prompt. Re-planning reuses the loaded model's facts, tokenizer and the first plan's token
limit, so a switch costs a tokenization, never a model load. Nothing here prints or reads stdin:
`state()` describes the chat as data and the caller decides how to show it.

Under tensor parallelism every rank holds a ChatEngine on its shard. Rank 0 talks to the user through
`MirroredChat`, which sends each call that computes to the other ranks before making it; they replay
it in `follow_chat`. An answer advances one step at a time on every rank, so one stopped early stops
everywhere, and sampling uses a seed every rank shares.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any

from chunkqa.documents import Document, load_document
from chunkqa.engine.parallel import share
from chunkqa.engine.results import GenerationConfig, Stats, Step
from chunkqa.errors import ChunkqaError, DoesNotFitError
from chunkqa.plan import Plan, Request, make_plan

SAMPLE_QUESTION = "What does the document say about this question, in a few sentences?"  # for the budget
STDIN_SOURCE = "<stdin>"


@dataclass(frozen=True)
class ChatState:
    """What a chat holds right now (for /show): the plan, the context in use, turns, cache status."""

    plan: Plan
    loaded: Any
    context_used: int
    turns: int
    logit_factor: float | None  # the method's factor at the document's prefix length
    prefix_tokens: int
    cache: Any  # CacheOptions, or None when the disk cache is off
    cache_status: str


def plan_chat(request: Request) -> Plan:
    """Tokenize and check the document against the budget, before any weights load."""
    return make_plan(request, [SAMPLE_QUESTION])


def open_chat(request: Request, plan: Plan, *, store: Any = None, parallel: Any = None) -> ChatEngine:
    """Load the planned model and start the session on the plan's document.

    `store`: the document cache (chunkqa.cache.DocCache), prepared by the caller before this call so
    that it pins its buffers while the weights load. `parallel` (chunkqa.engine.parallel.Parallel):
    this rank's shard of the model is loaded.
    """
    from chunkqa.engine.loading import load_model

    loaded = load_model(
        plan.model,
        method=plan.method,
        kernel=request.method.kernel,
        tokenizer=plan.builder.tokenizer,
        parallel=parallel,
    )
    engine = ChatEngine(replace(request, max_context=plan.budget.limit), loaded, store)
    engine.use(plan)
    return engine


class ChatEngine:
    """The model side of a chat; every method either succeeds or leaves the chat as it was."""

    def __init__(self, request: Request, loaded: Any, store: Any = None) -> None:
        self.request = request
        self.loaded = loaded
        self.cache = store
        self.plan: Any = None
        self.session: Any = None

    def use(self, plan: Plan, refresh: bool = False) -> None:
        """Start a fresh session on the plan's document (refresh: recompute even if cached on disk)."""
        from chunkqa.session import Session

        if self.cache is not None:
            self.cache.label = {"model": plan.model.spec.name, "documents": [d.name for d in plan.documents]}
            self.cache.refresh = refresh
        self.session = Session(
            self.loaded, plan.builder, plan.document_ids, piece=plan.piece, store=self.cache
        )
        self.plan = plan

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
    def generation_defaults(self) -> dict[str, Any]:
        """What the model's own generation_config asks for (GenerationConfig.resolved uses it)."""
        return self.loaded.generation_defaults

    @property
    def last_stats(self) -> Stats | None:
        return self.session.last_stats

    @property
    def context_used(self) -> int:
        """Tokens the next question starts from: the document, plus the turns still remembered."""
        if not self.session.turns:
            return min(len(self.session.cache_ids), len(self._prefix()))
        return len(self.session.cache_ids)

    # -- commands --------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget the turns, keep the document: the next question rolls the cache back to it."""
        self.session.clear()

    def reset(self) -> None:
        """Re-read the documents from disk and compute them again (turns forgotten)."""
        docs = [
            d if d.source == STDIN_SOURCE else load_document(d.source, self.request.password)
            for d in self.plan.documents
        ]
        self.use(self._plan(docs, self.request.system), refresh=True)

    def switch(self, path: str) -> None:
        """Chat about another document from now on."""
        self.use(self._plan([load_document(path, self.request.password)], self.request.system))

    def set_system(self, text: str) -> None:
        """A new system prompt ('' for none): the prefix changes, so the session starts over."""
        plan = self._plan(self.plan.documents, text)
        self.request = replace(self.request, system=text)
        self.use(plan)

    def _plan(self, documents: Sequence[Document], system: str | None) -> Plan:
        request = replace(self.request, documents=tuple(documents), system=system)
        plan = make_plan(
            request,
            [SAMPLE_QUESTION],
            strict=False,
            model=self.plan.model,
            tokenizer=self.loaded.tokenizer,
            weights_loaded=True,
        )
        if plan.budget.total > plan.budget.limit:
            raise DoesNotFitError(
                f"{plan.budget.total:,} tokens do not fit the limit of {plan.budget.limit:,}",
                hint="start the chat with `truncate` start, middle or end to cut long documents",
            )
        return plan

    def _prefix(self) -> Sequence[int]:
        return self.session.prompt(SAMPLE_QUESTION, history=False).prefix

    # -- reporting ---------------------------------------------------------------------------------
    def cache_events(self, wait: bool = False) -> list[Any]:
        if self.cache is None:
            return []
        return self.cache.wait() if wait else self.cache.events()

    def state(self) -> ChatState:
        """What /show reports: plan, context in use, turns, the method's logit factor, disk cache."""
        prefix = len(self._prefix())
        handle = self.loaded.handle
        return ChatState(
            plan=self.plan,
            loaded=self.loaded,
            context_used=self.context_used,
            turns=len(self.session.turns),
            logit_factor=handle.logit_factor(prefix) if handle is not None else None,
            prefix_tokens=prefix,
            cache=self.cache.options if self.cache is not None else None,
            cache_status=self.cache.status if self.cache is not None else "off",
        )


# -- tensor parallelism: rank 0 leads, the others replay ------------------------------------------
COMMANDS = ("clear", "reset", "switch", "set_system")  # the ChatEngine calls that change a session


class MirroredChat:
    """Rank 0's ChatEngine under tensor parallelism: what computes runs on every rank (`follow_chat`).

    Reads (`state`, `last_stats`, …) go to the engine. `close()` releases the other ranks.
    """

    def __init__(self, engine: ChatEngine, parallel: Any) -> None:
        self.engine = engine
        self.parallel = parallel

    def __getattr__(self, name: str) -> Any:
        if name in COMMANDS:
            return lambda *args: self._call(name, *args)
        return getattr(self.engine, name)

    def _call(self, name: str, *args: Any) -> Any:
        share((name, args), self.parallel)
        return getattr(self.engine, name)(*args)  # an error here is met on every rank alike

    def ask(self, question: str, config: GenerationConfig, on_progress: Any = None) -> Iterator[Step]:
        if config.seed is None:  # the ranks sample alike: the seed travels with the question
            config = replace(config, seed=secrets.randbits(63))
        share(("ask", (question, config)), self.parallel)
        return self._lockstep(self.engine.ask(question, config, on_progress))

    def _lockstep(self, steps: Iterator[Step]) -> Iterator[Step]:
        """Each step on every rank: True before each `next`, False when the answer is dropped early."""
        with closing(steps):  # type: ignore[type-var]
            while True:
                share(True, self.parallel)
                try:
                    step = next(steps)
                except StopIteration:
                    return
                try:
                    yield step
                except GeneratorExit:
                    share(False, self.parallel)
                    raise

    def close(self) -> None:
        share(("bye", ()), self.parallel)


def follow_chat(engine: ChatEngine, parallel: Any) -> None:
    """On a rank other than 0: replay rank 0's calls (see MirroredChat) until it closes the chat."""
    while True:
        name, args = share(None, parallel)
        if name == "bye":
            return
        try:
            if name != "ask":
                getattr(engine, name)(*args)
                continue
            with closing(engine.ask(*args)) as steps:  # type: ignore[type-var]
                while share(None, parallel):
                    if next(steps, None) is None:
                        break
        except ChunkqaError:
            pass  # rank 0 met the same error and showed it
