"""`chunkqa chat` (questions about a document, in a loop) and `chunkqa cache list|clear`.

Options in, the public API out: chunkqa.chat loads and answers, chunkqa.repl runs the loop,
chunkqa.doccache keeps document prefixes on disk, chunkqa.console owns the terminal. Imports no
torch; option types come from chunkqa.cli_options, and chunkqa.cli registers these commands.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from chunkqa.cli_common import (
    EXIT_CODES,
    Answering,
    Common,
    make_console,
    pick,
    read_documents,
    request_fields,
    run,
)
from chunkqa.cli_options import (
    CacheDir,
    CacheMinTokens,
    ChunkSize,
    Color,
    Debug,
    Device,
    Dtype,
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
    Revision,
    Seed,
    System,
    Temperature,
    Template,
    TopP,
    Truncate,
    TrustRemoteCode,
)
from chunkqa.console import Console, human_bytes
from chunkqa.errors import UsageError
from chunkqa.settings import Settings

cache_app = typer.Typer(
    help="The on-disk document cache: KV caches of documents already read.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def cache_directory(settings: Settings, flag: str | None = None) -> Path:
    """Flag > CHUNKQA_CACHE_DIR > config file `cache_dir` > $XDG_CACHE_HOME/chunkqa/kv."""
    from chunkqa.doccache import default_cache_dir

    chosen = settings.get("cache_dir", flag or os.environ.get("CHUNKQA_CACHE_DIR") or None)
    return Path(chosen).expanduser() if chosen else default_cache_dir()


def cache_options(settings: Settings, no_cache: bool, min_tokens: int | None) -> Any:
    """The document cache settings for ask and chat, or None with --no-cache."""
    from chunkqa.doccache import DEFAULT_MIN_TOKENS, CacheOptions, parse_size

    if no_cache:
        return None
    if min_tokens is not None and min_tokens < 0:
        raise UsageError(f"--cache-min-tokens must be >= 0, got {min_tokens}")
    size = parse_size(settings.get("cache_size", os.environ.get("CHUNKQA_CACHE_SIZE") or None))
    minimum = DEFAULT_MIN_TOKENS if min_tokens is None else min_tokens
    return CacheOptions(cache_directory(settings), size, minimum)


def chat(
    documents: Annotated[
        list[str], typer.Argument(help="Documents (paths, or - for stdin).", show_default=False)
    ],
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
    no_cache: NoCache = False,
    cache_min_tokens: CacheMinTokens = None,
    color: Color = None,
    debug: Debug = False,
) -> None:
    """Chat about documents: read once, then ask away (/? for commands, Ctrl-D to leave).

    Answers go to stdout; the banner, prompts and stats to the terminal (stderr).
    """
    settings = Settings()
    common, answering = pick(Common, locals()), pick(Answering, locals())

    def body(console: Console) -> int:
        from chunkqa.chat import ChatRequest
        from chunkqa.console import Terminal

        terminal = Terminal.open(stdin_is_document="-" in documents)  # fail before any work
        request = ChatRequest(
            documents=read_documents(documents, password),
            **request_fields(common, answering, settings),
            cache=cache_options(settings, no_cache, cache_min_tokens),
            password=password,
        )
        return run_chat(request, terminal, console)

    run(lambda: make_console(color, False, settings), debug, body)


def run_chat(request: Any, terminal: Any, console: Console) -> int:
    from chunkqa.chat import open_chat, plan_chat
    from chunkqa.cli_ask import report_cache
    from chunkqa.repl import COMMANDS, Repl
    from chunkqa.report import banner_lines

    plan = plan_chat(request)
    for line in banner_lines(plan):
        console.info(line)
    if plan.dca is None and plan.budget.total > plan.pretraining_length:
        console.warn("the context is longer than the model's pretraining length and DCA is off")
    engine = open_chat(request, plan)
    console.info("Type a question, /? for help; Ctrl-D or /bye to leave.")
    terminal.attach(COMMANDS)
    try:
        return Repl(engine, console, terminal.read_line, request.generation).run()
    finally:
        terminal.close()
        report_cache(engine.cache, console, wait=True)  # a save still being written finishes first


@cache_app.command("list", epilog=EXIT_CODES)
def cache_list(
    cache_dir: CacheDir = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per entry.")] = False,
    color: Color = None,
) -> None:
    """Cached documents: model, document, tokens, size, last use (least recent first)."""
    settings = Settings()

    def body(console: Console) -> int:
        from chunkqa.doccache import list_entries, parse_size

        directory = cache_directory(settings, cache_dir)
        entries = list_entries(directory)
        for entry in entries if json_output else ():
            console.json(_entry_record(entry))
        if not json_output:
            for line in _entry_lines(entries):
                console.answer_piece(line + "\n")
            limit = human_bytes(parse_size(settings.get("cache_size", os.environ.get("CHUNKQA_CACHE_SIZE"))))
            total = human_bytes(sum(e.size for e in entries))
            console.info(f"{_count(entries)}, {total} of {limit}, in {directory}")
        return 0

    run(lambda: make_console(color, False, settings), False, body)


@cache_app.command("clear", epilog=EXIT_CODES)
def cache_clear(
    cache_dir: CacheDir = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    color: Color = None,
) -> None:
    """Remove every cached document (asks first on a terminal; --yes elsewhere)."""
    settings = Settings()

    def body(console: Console) -> int:
        from chunkqa.doccache import clear_entries, list_entries

        directory = cache_directory(settings, cache_dir)
        entries = list_entries(directory)
        size = human_bytes(sum(e.size for e in entries))
        if entries and not yes:
            if not console.can_confirm():
                raise UsageError(
                    f"this would remove {_count(entries)} ({size})",
                    hint="add --yes to confirm",
                )
            if not console.confirm(f"Remove {_count(entries)} ({size}) from {directory}?"):
                console.info("Nothing removed.")
                return 0
        removed = clear_entries(directory)
        console.info(f"Removed {_count(removed)} ({size}) from {directory}.")
        return 0

    run(lambda: make_console(color, False, settings), False, body)


def _count(entries: list[Any]) -> str:
    return f"{len(entries)} cached document{'' if len(entries) == 1 else 's'}"


def _entry_lines(entries: list[Any]) -> list[str]:
    if not entries:
        return []
    rows = [("LAST USED", "SIZE", "TOKENS", "MODEL", "DOCUMENTS")]
    for e in entries:
        when = datetime.datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M")
        tokens = f"{e.tokens:,}" if e.tokens is not None else "?"
        model = e.model or ("(unreadable)" if e.tokens is None else "?")
        rows.append((when, human_bytes(e.size), tokens, model, ", ".join(e.documents) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}"
        for r in rows
    ]


def _entry_record(entry: Any) -> dict[str, Any]:
    return {
        "path": str(entry.path),
        "size": entry.size,
        "last_used": datetime.datetime.fromtimestamp(entry.last_used)
        .astimezone()
        .isoformat(timespec="seconds"),
        "tokens": entry.tokens,
        "model": entry.model,
        "documents": list(entry.documents),
        "created": entry.created,
        "readable": entry.tokens is not None,
    }
