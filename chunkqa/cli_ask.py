"""`chunkqa ask`: plan, banner, load, stream each answer, stats or JSON. Presentation only; the work
is done by the public API (make_plan, open_session, Session.ask, answer_record)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chunkqa.console import Console, stats_line
from chunkqa.plan import Request
from chunkqa.results import GenerationConfig, Stats


@dataclass(frozen=True)
class AskRequest(Request):
    """One `ask` invocation: documents, settings, and its questions."""

    questions: Sequence[str] = ()
    json_output: bool = False
    parallel: Any = None  # chunkqa.tp.Parallel under --tp


def run_ask(request: AskRequest, console: Console) -> int:
    from chunkqa.report import answer_record, banner_lines
    from chunkqa.session import open_session

    plan = request.plan(request.questions)
    for line in banner_lines(plan):
        console.info(line)
    if plan.dca is None and plan.budget.total > plan.pretraining_length:
        console.warn(
            "the context is longer than the model's pretraining length and DCA is off: expect poor answers"
        )
    cache = doc_cache(request.cache, plan)  # before the weights load: it may pin its buffers meanwhile
    session = open_session(plan, request.prefill_chunk, request.parallel)
    if cache is not None:
        cache.attach(session)
    try:
        for index, question in enumerate(request.questions):
            if index and not request.json_output:
                console.answer_piece("\n")
            text, stats = stream_answer(
                session, question, request.generation, console, not request.json_output
            )
            report_cache(cache, console)
            if request.json_output:
                prefix = len(session.prompt(question, history=False).prefix)
                console.json(answer_record(question, text, plan, session.loaded, stats, prefix))
            else:
                console.info(stats_line(stats))
    finally:
        report_cache(cache, console, wait=True)  # a save still being written finishes first
    return 0


def doc_cache(options: Any, plan: Any) -> Any:
    """The link to the on-disk document cache (prepared for the plan's device), or None when it is off."""
    if options is None:
        return None
    from chunkqa.doccache import DocCache
    from chunkqa.model import pick_device

    label = {"model": plan.spec.name, "documents": [d.name for d in plan.documents]}
    return DocCache(options, label).prepare(pick_device(plan.spec.device), plan.builder.tokenizer)


def report_cache(cache: Any, console: Console, wait: bool = False) -> None:
    """Cache hits and saves as info lines; rejected entries and failed saves as warnings."""
    for event in (cache.wait() if wait else cache.events()) if cache is not None else ():
        (console.warn if event.kind in ("corrupt", "failed") else console.info)(event.message)


def stream_answer(
    session: Any, question: str, config: GenerationConfig, console: Console, echo: bool, history: bool = False
) -> tuple[str, Stats]:
    """Prefill (with a progress bar on a terminal), then stream the answer to stdout when `echo`."""
    text = ""
    with console.progress("reading", 0) as update:
        steps = session.ask(question, config, history=history, on_progress=update)
        step = next(steps)
    try:
        while step.stats is None:
            text += step.text
            if echo:
                console.answer_piece(step.text)
            step = next(steps)
    finally:
        if echo and text:
            console.end_answer()
    return text, step.stats
