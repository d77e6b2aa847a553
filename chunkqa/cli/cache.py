"""`chunkqa cache list|clear`: the on-disk document cache, seen and emptied from the shell."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import typer

from chunkqa.cli.common import EXIT_CODES, run
from chunkqa.cli.console import Console, human_bytes
from chunkqa.cli.flags import CacheDir
from chunkqa.cli.options import TerminalOptions, options
from chunkqa.cli.settings import Settings
from chunkqa.errors import UsageError

cache_app = typer.Typer(
    help="The on-disk document cache: KV caches of documents already read.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@cache_app.command("list", epilog=EXIT_CODES)
@options(output=TerminalOptions)
def cache_list(
    cache_dir: CacheDir = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per entry.")] = False,
    *,
    output: TerminalOptions,
) -> None:
    """Cached documents: model, document, tokens, size, last use (least recent first)."""

    def body(console: Console, settings: Settings) -> int:
        from chunkqa.cache import list_entries

        directory = settings.cache_directory(cache_dir)
        entries = list_entries(directory)
        for entry in entries if json_output else ():
            console.json(_entry_record(entry))
        if not json_output:
            for line in _entry_lines(entries):
                console.answer_piece(line + "\n")
            limit = human_bytes(settings.cache_size())
            total = human_bytes(sum(e.size for e in entries))
            console.info(f"{_count(entries)}, {total} of {limit}, in {directory}")
        return 0

    run(output, body)


@cache_app.command("clear", epilog=EXIT_CODES)
@options(output=TerminalOptions)
def cache_clear(
    cache_dir: CacheDir = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    *,
    output: TerminalOptions,
) -> None:
    """Remove every cached document (asks first on a terminal; --yes elsewhere)."""

    def body(console: Console, settings: Settings) -> int:
        from chunkqa.cache import clear_entries, list_entries

        directory = settings.cache_directory(cache_dir)
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

    run(output, body)


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
