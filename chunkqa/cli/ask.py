"""`chunkqa ask`: documents and a question in; banner, streamed answer and stats (or JSON) out.

The work is done by the library (make_plan, open_session, Session.ask); this module turns options
into a Request, decides what is shown where, and nothing else.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from chunkqa.cli.common import read_documents, run
from chunkqa.cli.console import Console, stats_line, stdout_to_stderr
from chunkqa.cli.flags import Json, Password, Questions, Tp
from chunkqa.cli.options import (
    CacheFlags,
    GenerationOptions,
    MethodOptions,
    ModelOptions,
    OutputOptions,
    PromptOptions,
    options,
)
from chunkqa.cli.settings import Settings
from chunkqa.errors import UsageError

FILE_NAME = re.compile(r"\S+\.(pdf|txt|md|markdown|html?|rst|csv|json|tex)", re.IGNORECASE)
Arguments = Annotated[
    list[str],
    typer.Argument(
        help="Documents (paths, or - for stdin), then the question.",
        metavar="DOCUMENT... QUESTION",
        show_default=False,
    ),
]


@options(
    model=ModelOptions,
    method=MethodOptions,
    prompt=PromptOptions,
    generation=GenerationOptions,
    cache=CacheFlags,
    output=OutputOptions,
)
def ask(
    args: Arguments,
    question: Questions = None,
    password: Password = None,
    json_output: Json = False,
    tp: Tp = None,
    *,
    model: ModelOptions,
    method: MethodOptions,
    prompt: PromptOptions,
    generation: GenerationOptions,
    cache: CacheFlags,
    output: OutputOptions,
) -> None:
    """Answer a question about one or more documents; the answer streams to stdout."""

    def body(console: Console, settings: Settings) -> int:
        from chunkqa.engine.parallel import leave_parallel

        sources, questions = split_args(args, question)
        fields = settings.request_fields(
            model=model,
            method=method,
            prompt=prompt,
            generation=generation,
            cache=None if tp not in (None, 1) else cache,  # no disk cache under tensor parallelism
            password=password,
        )
        parallel = join_parallel(tp)
        try:
            return _ask_as_rank(
                sources,
                questions,
                fields,
                console,
                password=password,
                json_output=json_output,
                parallel=parallel,
            )
        finally:
            leave_parallel(parallel)

    run(output, body)


def _ask_as_rank(
    sources: list[str],
    questions: list[str],
    fields: dict[str, Any],
    console: Console,
    *,
    password: str | None,
    json_output: bool,
    parallel: Any,
) -> int:
    """Read the documents (rank 0 alone, shared with the others) and answer; only rank 0 prints."""
    from chunkqa.engine.parallel import same_seed, share_call
    from chunkqa.plan import Request

    with console.status("reading the documents"):
        documents = share_call(lambda: read_documents(sources, password, console), parallel)
    if parallel is not None and not parallel.leader:
        console = Console.silent()  # rank 0 prints; the others compute in lockstep
    generation = same_seed(fields["generation"], parallel)  # the ranks sample alike
    request = Request(documents=tuple(documents), **{**fields, "generation": generation})
    return run_ask(request, questions, console, json_output=json_output, parallel=parallel)


def split_args(args: list[str], questions: list[str] | None) -> tuple[list[str], list[str]]:
    if questions:
        if not args:
            raise UsageError("no document given", hint="chunkqa ask paper.pdf -q 'question' (or - for stdin)")
        return args, questions
    if len(args) < 2:
        raise UsageError(
            "give at least one document and a question",
            hint="chunkqa ask paper.pdf 'What is the main result?'",
        )
    question = args[-1]
    if FILE_NAME.fullmatch(question.strip()):  # `ask doc.txt typo.txt`: a document, not a question
        state = "is a file" if Path(question).exists() else "names no file that exists"
        raise UsageError(
            f"the last argument, {question!r}, looks like a document, not a question (it {state})",
            hint="give the question last, in quotes: chunkqa ask DOCUMENT... 'question?' (or use -q)",
        )
    return args[:-1], [question]


def join_parallel(tp: int | None) -> Any:
    """Join the tensor-parallel group when --tp > 1 (see chunkqa.engine.parallel)."""
    if tp is None or tp == 1:
        return None
    if tp < 1:
        raise UsageError(f"`tp` must be at least 1, got {tp}")
    from chunkqa.engine.parallel import init_parallel

    with stdout_to_stderr():
        return init_parallel(tp)


def run_ask(
    request: Any,
    questions: Sequence[str],
    console: Console,
    *,
    json_output: bool = False,
    parallel: Any = None,
) -> int:
    from chunkqa.cli.report import answer_record, banner_lines
    from chunkqa.plan import make_plan
    from chunkqa.session import open_session

    with console.status("reading and counting tokens"):
        plan = make_plan(request, questions)
    for line in banner_lines(plan):
        console.info(line)
    if plan.method is None and plan.budget.total > plan.pretraining_length:
        console.warn(
            "the context is longer than the model's pretraining length and DCA is off: expect poor answers"
        )
    store = doc_cache(request.cache, plan)  # before the weights load: it may pin its buffers meanwhile
    with console.status(f"loading {plan.model.spec.name}"), stdout_to_stderr():
        session = open_session(plan, parallel=parallel, store=store)
    startup = time.perf_counter() - console.started
    labelled = len(questions) > 1 and not json_output
    try:
        for index, question in enumerate(questions):
            if labelled:
                console.answer_piece(("\n" if index else "") + f"Q: {question}\nA: ")
            text, stats = stream_answer(
                session, question, request.generation, console, echo=not json_output,
                on_first=lambda: report_cache(store, console),
            )  # fmt: skip
            report_cache(store, console)
            load = startup if index == 0 else None
            if json_output:
                prefix = len(session.prompt(question, history=False).prefix)
                record = answer_record(question, text, plan, session.loaded, stats, prefix)
                if load is not None:
                    record["timings"]["startup_seconds"] = round(load, 4)
                console.json(record)
            else:
                console.info(stats_line(stats, load_seconds=load))
    finally:
        report_cache(store, console, wait=True)  # a save still being written finishes first
    return 0


def doc_cache(options: Any, plan: Any) -> Any:
    """The on-disk document cache (prepared for the plan's device), or None when it is off."""
    if options is None:
        return None
    from chunkqa.cache import DocCache

    label = {"model": plan.model.spec.name, "documents": [d.name for d in plan.documents]}
    return DocCache(options, label).prepare(
        plan.model.device, plan.builder.tokenizer, source=plan.model.source
    )


def report_cache(cache: Any, console: Console, wait: bool = False) -> None:
    """Cache hits and saves as info lines; rejected entries and failed saves as warnings."""
    for event in (cache.wait() if wait else cache.events()) if cache is not None else ():
        (console.warn if event.kind in ("corrupt", "failed") else console.info)(event.message)


def stream_answer(
    session: Any,
    question: str,
    config: Any,
    console: Console,
    *,
    echo: bool,
    history: bool = False,
    on_first: Any = None,
) -> tuple[str, Any]:
    """Prefill (with a progress bar on a terminal), then stream the answer to stdout when `echo`.

    `on_first` runs once the prompt is read, before any of the answer is shown (cache messages)."""
    text = ""
    with console.progress("reading", 0) as update:
        steps = session.ask(question, config, history=history, on_progress=update)
        step = next(steps)
    if on_first is not None:
        on_first()
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
