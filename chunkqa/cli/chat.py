"""`chunkqa chat`: questions about a document, in a loop at the terminal.

Options in, the library out: chunkqa.chat loads and answers, chunkqa.cli.repl runs the loop,
chunkqa.cli.terminal reads the lines, chunkqa.cli.console shows the rest.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chunkqa.cli.common import read_documents, run
from chunkqa.cli.console import Console
from chunkqa.cli.flags import Password
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
    *,
    model: ModelOptions,
    method: MethodOptions,
    prompt: PromptOptions,
    generation: GenerationOptions,
    cache: CacheFlags,
    output: TerminalOptions,
) -> None:
    """Chat about documents: read once, then ask away (/? for commands, Ctrl-D to leave).

    Answers go to stdout; the banner, prompts and stats to the terminal (stderr).
    """

    def body(console: Console, settings: Settings) -> int:
        from chunkqa.cli.terminal import Terminal

        terminal = Terminal.open(stdin_is_document="-" in documents)  # fail before any work

        def read() -> list:
            with console.status("reading the documents"):
                return read_documents(documents, password, console)

        request = settings.request(
            read,
            model=model,
            method=method,
            prompt=prompt,
            generation=generation,
            cache=cache,
            password=password,
        )
        return run_chat(request, terminal, console)

    run(output, body)


def run_chat(request: Any, terminal: Any, console: Console) -> int:
    from chunkqa.chat import open_chat, plan_chat
    from chunkqa.cli.ask import doc_cache, report_cache
    from chunkqa.cli.repl import COMMANDS, Repl
    from chunkqa.cli.report import banner_lines

    plan = plan_chat(request)
    for line in banner_lines(plan):
        console.info(line)
    if plan.method is None and plan.budget.total > plan.pretraining_length:
        console.warn("the context is longer than the model's pretraining length and DCA is off")
    engine = open_chat(request, plan, store=doc_cache(request.cache, plan))
    console.info("Type a question, /? for help; Ctrl-D or /bye to leave.")
    terminal.attach(COMMANDS)
    try:
        return Repl(engine, console, terminal.read_line, request.generation).run()
    finally:
        terminal.close()
        report_cache(engine.cache, console, wait=True)  # a save still being written finishes first
