"""The chunkqa command line: the Typer app, its commands, and the entry point `main`.

`chunkqa --help` and argument or file errors answer before torch is imported.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from chunkqa import __version__
from chunkqa.cli.ask import ask
from chunkqa.cli.cache import cache_app
from chunkqa.cli.chat import chat
from chunkqa.cli.common import EXIT_CODES, silence_stdout
from chunkqa.cli.eval import eval_app, selftest
from chunkqa.cli.inspect import inspect
from chunkqa.cli.models import models
from chunkqa.errors import EXIT_INTERRUPTED, EXIT_USAGE


class ChunkqaGroup(TyperGroup):
    """The command group; its help is tidied (see tidy_help) however it is run (main, a test runner)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        tidy_help(self)
        return super().main(*args, **kwargs)


app = typer.Typer(
    cls=ChunkqaGroup,
    name="chunkqa",
    help="Ask questions about long documents with an LLM stretched by Dual Chunk Attention.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
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


for command in (ask, inspect, chat, models, selftest):
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
    except no_args as exc:  # a group named without a command: its help, on stdout
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")
        code = 0
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


METAVARS = {int: "N", float: "X", str: "TEXT"}


def tidy_help(command: Any) -> Any:
    """Help written for people: options show a placeholder (N, X, TEXT) rather than typer's types
    (<int>, <list[str]>), and arguments read DOCUMENT... rather than {DOCUMENT...}... <list[str]>."""
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)
    for param in getattr(command, "params", ()):
        if param.param_type_name == "argument":
            name = param.metavar or param.name.upper()
            param.metavar = name
            param._usage_display_name = lambda name=name: name  # instance attributes: this command only
            param.display_type = lambda ctx: ""
            param.display_type_rich = lambda ctx: ""
        elif not getattr(param, "is_flag", False) and param.metavar is None:
            annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
            param.metavar = "PATH" if "Path" in str(annotation) else METAVARS.get(_base(annotation), "TEXT")
    return command


def _base(annotation: Any) -> Any:
    """int for `int | None` or `list[int] | None`."""
    import typing

    for arg in (*typing.get_args(annotation), annotation):
        inner = typing.get_args(arg)
        if inner and typing.get_origin(arg) is list:
            return inner[0]
        if arg in METAVARS:
            return arg
    return None


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
