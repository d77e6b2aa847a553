"""`chunkqa chat`: questions about a document, in a loop at the terminal.

Options in, the library out: chunkqa.chat loads and answers, chunkqa.cli.repl runs the loop,
chunkqa.cli.terminal reads the lines, chunkqa.cli.console shows the rest.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chunkqa.cli.common import read_documents, run
from chunkqa.cli.console import Console
from chunkqa.cli.flags import Password, Tp
from chunkqa.cli.options import (
    CacheFlags,
    GenerationOptions,
    MethodOptions,
    ModelOptions,
    PromptOptions,
    TerminalOptions,
    options,
)
from chunkqa.cli.settings import Settings


@options(
    model=ModelOptions,
    method=MethodOptions,
    prompt=PromptOptions,
    generation=GenerationOptions,
    cache=CacheFlags,
    output=TerminalOptions,
)
def chat(
    documents: Annotated[
        list[str],
        typer.Argument(help="Documents (paths, or - for stdin).", metavar="DOCUMENT...", show_default=False),
    ],
    password: Password = None,
    tp: Tp = None,
    *,
    model: ModelOptions,
    method: MethodOptions,
    prompt: PromptOptions,
    generation: GenerationOptions,
    cache: CacheFlags,
    output: TerminalOptions,
) -> None:
    """Chat about documents: read once, then ask away (/? for commands, Ctrl-D to leave).

    Answers go to stdout; the banner, prompts and stats to the terminal (stderr). With --tp N under
    torchrun, rank 0 holds the terminal and the other ranks compute with it.
    """

    def body(console: Console, settings: Settings) -> int:
        from chunkqa.cli.ask import join_parallel
        from chunkqa.engine.parallel import leave_parallel, share_call

        parallel = join_parallel(tp)
        try:
            terminal = _open_terminal(documents, parallel)  # before any work
            if parallel is not None and not parallel.leader:
                console = Console.silent()  # rank 0 shows everything; the others compute with it

            def read() -> list:
                with console.status("reading the documents"):
                    return share_call(lambda: read_documents(documents, password, console), parallel)

            request = settings.request(
                read,
                model=model,
                method=method,
                prompt=prompt,
                generation=generation,
                cache=cache if parallel is None else None,  # no disk cache under --tp
                password=password,
            )
            return run_chat(request, terminal, console, parallel=parallel)
        finally:
            leave_parallel(parallel)

    run(output, body)


def _open_terminal(documents: list[str], parallel: Any) -> Any:
    """The terminal (rank 0's under --tp; None on the others). Without one, every rank stops."""
    from chunkqa.cli.terminal import Terminal
    from chunkqa.engine.parallel import share_call

    opened: list[Any] = []
    share_call(lambda: opened.append(Terminal.open(stdin_is_document="-" in documents)), parallel)
    return opened[0] if opened else None


def run_chat(request: Any, terminal: Any, console: Console, *, parallel: Any = None) -> int:
    """Plan, load, then the loop on rank 0 (or alone); the other ranks of --tp replay its calls."""
    from chunkqa.chat import MirroredChat, follow_chat, open_chat, plan_chat
    from chunkqa.cli.ask import doc_cache, report_cache
    from chunkqa.cli.repl import COMMANDS, Repl
    from chunkqa.cli.report import banner_lines

    plan = plan_chat(request)
    for line in banner_lines(plan):
        console.info(line)
    if plan.method is None and plan.budget.total > plan.pretraining_length:
        console.warn("the context is longer than the model's pretraining length and DCA is off")
    engine = open_chat(request, plan, store=doc_cache(request.cache, plan), parallel=parallel)
    if parallel is not None and parallel.world > 1:
        if not parallel.leader:
            follow_chat(engine, parallel)
            return 0
        engine = MirroredChat(engine, parallel)
    console.info("Type a question, /? for help; Ctrl-D or /bye to leave.")
    terminal.attach(COMMANDS)
    try:
        return Repl(engine, console, terminal.read_line, request.generation).run()
    finally:
        terminal.close()
        if isinstance(engine, MirroredChat):
            engine.close()
        report_cache(engine.cache, console, wait=True)  # a save still being written finishes first
