"""The chunkqa command line: the Typer app, its commands, and the entry point `main`.

`chunkqa --help` and argument or file errors answer before torch is imported.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from chunkqa import __version__
from chunkqa.cli.ask import ask
from chunkqa.cli.cache import cache_app
from chunkqa.cli.chat import chat
from chunkqa.cli.common import EXIT_CODES, silence_stdout
from chunkqa.cli.eval import eval_app, selftest
from chunkqa.cli.inspect import inspect
from chunkqa.errors import EXIT_INTERRUPTED, EXIT_USAGE

app = typer.Typer(
    name="chunkqa",
    help="Ask questions about long documents with an LLM stretched by Dual Chunk Attention.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"chunkqa {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Ask questions about long documents with an LLM stretched by Dual Chunk Attention."""


for command in (ask, inspect, chat, selftest):
    app.command(epilog=EXIT_CODES)(command)
app.add_typer(eval_app, name="eval")
app.add_typer(cache_app, name="cache")


def main() -> None:
    """Entry point: usage errors become one `Error:` line and exit code 2; a closed stdout exits quietly."""
    from typer.main import get_command

    command = get_command(app)
    usage_error, no_args = _click_exceptions()
    try:
        _run_app(command, usage_error, no_args, silence_stdout)
    finally:
        _forget_caught_interrupts()


def _run_app(command: Any, usage_error: type, no_args: type, silence_stdout: Any) -> None:
    code = 0
    try:
        code = command.main(args=sys.argv[1:], prog_name="chunkqa", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except no_args:
        code = 0  # the help text has been shown
    except usage_error as exc:
        ctx = getattr(exc, "ctx", None)
        name = ctx.command_path if ctx is not None else "chunkqa"
        sys.stderr.write(f"Error: {exc.format_message()}\nHint: see `{name} --help`\n")
        sys.exit(EXIT_USAGE)
    except typer.Abort:
        sys.stderr.write("Error: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        silence_stdout()
    sys.exit(code if isinstance(code, int) else 0)


def _forget_caught_interrupts() -> None:
    """Keep `python -m chunkqa` (and torchrun) exiting with our code after a Ctrl-C we handled.

    CPython marks a KeyboardInterrupt as unhandled when it ends code run from a string (exec/eval
    of source, which libraries do at run time), even when a caller catches it later; under `-m`
    the interpreter then ignores the exit code and kills itself with SIGINT (-2, not 130). Every
    string exec clears that mark first, so a harmless one just before exiting forgets it.
    """
    exec("pass", {})


def _click_exceptions() -> tuple[type[Exception], type[Exception]]:
    """(UsageError, NoArgsIsHelpError): typer >= 0.26 vendors click as typer._click, older ones use click."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions
    return exceptions.UsageError, getattr(exceptions, "NoArgsIsHelpError", exceptions.UsageError)
