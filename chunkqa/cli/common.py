"""What every chunkqa command shares: the error boundary, flag names in messages, documents from args.

Imports no torch: commands import the library inside their bodies, after options are checked.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any

import typer

from chunkqa.cli.console import COLOR_CHOICES, Console
from chunkqa.cli.settings import Settings
from chunkqa.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, ChunkqaError, UsageError

EXIT_CODES = (
    "Exit codes: 0 ok · 1 runtime error (model, document, device) · "
    "2 usage error (bad option, missing file) · "
    "3 the prompt or its memory does not fit (see --max-context, --truncate) · 130 interrupted."
)
SETTING_NAME = re.compile(r"`([a-z][a-z0-9_]*)`")  # the library names a setting in backquotes

Body = Callable[[Console, Settings], "int | None"]


def as_flags(text: str | None) -> str | None:
    """The library's setting names (`max_new_tokens`) as the flags a user types (--max-new-tokens)."""
    if text is None:
        return None
    return SETTING_NAME.sub(lambda m: "--" + m.group(1).replace("_", "-"), text)


def make_console(color: str | None, quiet: bool, settings: Settings) -> Console:
    choice = settings.get("color", color)
    if choice not in COLOR_CHOICES:
        raise UsageError(f"`color` must be one of {', '.join(COLOR_CHOICES)}, got {choice!r}")
    return Console(choice, quiet)


def run(output: Any, body: Body) -> None:
    """Run a command body; turn failures into one `Error:` line, a hint and the documented exit code.

    The config file is read in here too, so a bad one is reported like any other usage error.
    """
    console = None
    try:
        settings = Settings()
        console = make_console(output.color, output.quiet, settings)
        code = body(console, settings) or 0
    except ChunkqaError as exc:
        if not getattr(exc, "shown_by_leader", False):  # under --tp, rank 0 reports an input error once
            (console or Console()).error(as_flags(exc.message), as_flags(exc.hint))
        code = exc.exit_code
        if output.debug:
            raise
    except KeyboardInterrupt:
        (console or Console()).error("interrupted")
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        silence_stdout()
        code = 0
    except Exception as exc:  # the last resort: one line, with the traceback only under --debug
        if output.debug:
            raise
        message, hint = describe_unexpected(exc)
        (console or Console()).error(message, hint)
        code = EXIT_RUNTIME
    raise typer.Exit(code)


def describe_unexpected(exc: BaseException) -> tuple[str, str]:
    if type(exc).__name__ == "OutOfMemoryError":
        return (
            "the GPU ran out of memory",
            "lower --max-context or --prefill-chunk, cut with --truncate, or use a smaller --dtype",
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (
        f"{type(exc).__name__}: {first}",
        "rerun with --debug for the traceback, and report it if it is a bug",
    )


def read_documents(sources: list[str], password: str | None, console: Console | None = None) -> list[Any]:
    """Documents from paths; '-' reads standard input (once). Their warnings go to the console."""
    from chunkqa.documents import document_from_bytes, load_document

    if sources.count("-") > 1:
        raise UsageError("standard input ('-') can be read only once")
    documents = []
    for source in sources:
        if source == "-":
            if sys.stdin is None or sys.stdin.isatty():
                raise UsageError(
                    "'-' reads the document from standard input, but nothing is piped in",
                    hint="pipe a document: cat notes.txt | chunkqa ask - 'question'",
                )
            documents.append(document_from_bytes(sys.stdin.buffer.read(), password=password))
        else:
            documents.append(load_document(source, password=password))
    for doc in documents if console is not None else ():
        for warning in doc.warnings:
            console.warn(f"{doc.name}: {warning}")
    return documents


def silence_stdout() -> None:
    """After the reader of stdout went away (`| head -1`), drop further output quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
