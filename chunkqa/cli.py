"""The chunkqa command line: parse options, call the public API, hand results to the console.

`chunkqa --help` and argument or file errors answer before torch is imported.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from chunkqa import __version__
from chunkqa.cli_common import (
    EXIT_CODES,
    Answering,
    Common,
    dca_options,
    make_console,
    model_spec,
    pick,
    read_documents,
    request_fields,
    run,
)
from chunkqa.cli_options import (
    CacheMinTokens,
    ChunkSize,
    Color,
    Debug,
    Device,
    Dtype,
    Json,
    Kernel,
    LocalWindow,
    LogitScale,
    MaxContext,
    MaxNewTokens,
    Model,
    NoCache,
    NoDca,
    Password,
    PrefillChunk,
    PretrainingLength,
    Questions,
    Quiet,
    Revision,
    Seed,
    System,
    Temperature,
    Template,
    TopP,
    Tp,
    Truncate,
    TrustRemoteCode,
)
from chunkqa.console import Console
from chunkqa.errors import EXIT_DOES_NOT_FIT, EXIT_USAGE, UsageError
from chunkqa.settings import Settings

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


def _parallel(tp: int | None):
    """Join the tensor-parallel group when --tp > 1 (see chunkqa.tp)."""
    if tp is None or tp == 1:
        return None
    if tp < 1:
        raise UsageError(f"--tp must be at least 1, got {tp}")
    from chunkqa.tp import init_parallel

    return init_parallel(tp)


def _split_args(args: list[str], questions: list[str] | None) -> tuple[list[str], list[str]]:
    if questions:
        if not args:
            raise UsageError("no document given", hint="chunkqa ask paper.pdf -q 'question' (or - for stdin)")
        return args, questions
    if len(args) < 2:
        raise UsageError(
            "give at least one document and a question",
            hint="chunkqa ask paper.pdf 'What is the main result?'",
        )
    return args[:-1], [args[-1]]


@app.command(epilog=EXIT_CODES)
def ask(
    args: Annotated[
        list[str],
        typer.Argument(help="Documents (paths, or - for stdin), then the question.", show_default=False),
    ],
    question: Questions = None,
    model: Model = None,
    revision: Revision = None,
    dtype: Dtype = None,
    device: Device = None,
    trust_remote_code: TrustRemoteCode = False,
    pretraining_length: PretrainingLength = None,
    chunk_size: ChunkSize = None,
    local_window: LocalWindow = None,
    logit_scale: LogitScale = None,
    no_dca: NoDca = False,
    kernel: Kernel = None,
    max_new_tokens: MaxNewTokens = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    seed: Seed = None,
    system: System = None,
    template: Template = None,
    max_context: MaxContext = None,
    truncate: Truncate = None,
    prefill_chunk: PrefillChunk = None,
    password: Password = None,
    json_output: Json = False,
    no_cache: NoCache = False,
    cache_min_tokens: CacheMinTokens = None,
    tp: Tp = None,
    quiet: Quiet = False,
    color: Color = None,
    debug: Debug = False,
) -> None:
    """Answer a question about one or more documents; the answer streams to stdout."""
    settings = Settings()
    common, answering = pick(Common, locals()), pick(Answering, locals())

    def body(console) -> int:
        from chunkqa.cli_ask import AskRequest, run_ask
        from chunkqa.cli_chat import cache_options
        from chunkqa.tp import share_call

        sources, questions = _split_args(args, question)
        parallel = _parallel(tp)
        documents = share_call(lambda: read_documents(sources, password), parallel)  # stdin: rank 0 only
        if parallel is not None and not parallel.leader:
            console = Console.silent()  # rank 0 prints; the others compute in lockstep
        request = AskRequest(
            documents=documents,
            **request_fields(common, answering, settings),
            cache=None if parallel else cache_options(settings, no_cache, cache_min_tokens),
            questions=questions,
            json_output=json_output,
            parallel=parallel,
        )
        return run_ask(request, console)

    run(lambda: make_console(color, quiet, settings), debug, body)


@app.command(epilog=EXIT_CODES)
def inspect(
    documents: Annotated[
        list[str], typer.Argument(help="Documents (paths, or - for stdin).", show_default=False)
    ],
    question: Annotated[
        str, typer.Option("-q", "--question", help="A question, to count its tokens too.")
    ] = "What is the main result?",
    model: Model = None,
    revision: Revision = None,
    dtype: Dtype = None,
    device: Device = None,
    trust_remote_code: TrustRemoteCode = False,
    pretraining_length: PretrainingLength = None,
    chunk_size: ChunkSize = None,
    local_window: LocalWindow = None,
    no_dca: NoDca = False,
    max_new_tokens: MaxNewTokens = None,
    system: System = None,
    template: Template = None,
    max_context: MaxContext = None,
    password: Password = None,
    json_output: Json = False,
    color: Color = None,
    debug: Debug = False,
) -> None:
    """Pages, characters, tokens, DCA settings and memory: does it fit? No weights are loaded."""
    settings = Settings()
    common = pick(Common, locals())

    def body(console) -> int:
        from chunkqa.plan import make_plan
        from chunkqa.report import inspect_lines, inspect_record

        docs = read_documents(documents, password)
        plan = make_plan(
            docs,
            [question],
            model_spec(common, settings),
            dca_options(common, settings),
            settings.get("template", template),
            settings.get("system", system),
            settings.get("max_new_tokens", max_new_tokens),
            settings.get("max_context", max_context),
            strict=False,
        )
        if json_output:
            console.json(inspect_record(plan))
        else:
            for line in inspect_lines(plan):
                console.info(line)
        return 0 if plan.fits else EXIT_DOES_NOT_FIT

    run(lambda: make_console(color, False, settings), debug, body)


from chunkqa.cli_eval import eval_app, selftest  # noqa: E402

app.add_typer(eval_app, name="eval")
app.command(epilog=EXIT_CODES)(selftest)

from chunkqa.cli_chat import cache_app, chat  # noqa: E402

app.command(epilog=EXIT_CODES)(chat)
app.add_typer(cache_app, name="cache")


def main() -> None:
    """Entry point: usage errors become one `Error:` line and exit code 2; a closed stdout exits quietly."""
    from typer.main import get_command

    from chunkqa.cli_common import silence_stdout

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
        sys.exit(130)
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
