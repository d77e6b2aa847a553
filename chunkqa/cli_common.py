"""Pieces every chunkqa command shares: option types, settings resolution, documents from args, errors.

Imports no torch: commands import the heavy API inside their bodies, after arguments are checked.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import typer

from chunkqa.console import COLOR_CHOICES, Console
from chunkqa.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, ChunkqaError, UsageError
from chunkqa.settings import Settings

EXIT_CODES = (
    "Exit codes: 0 ok · 1 runtime error (model, document, device) · "
    "2 usage error (bad option, missing file) · "
    "3 the prompt or its memory does not fit (see --max-context, --truncate) · 130 interrupted."
)


@dataclass(frozen=True)
class Common:
    """The options shared by commands that load a model."""

    model: str | None = None
    revision: str | None = None
    dtype: str | None = None
    device: str | None = None
    trust_remote_code: bool = False
    pretraining_length: int | None = None
    chunk_size: int | None = None
    local_window: int | None = None
    logit_scale: str | None = None
    no_dca: bool = False
    kernel: str | None = None


@dataclass(frozen=True)
class Answering:
    """The prompt and generation options shared by commands that answer questions."""

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    system: str | None = None
    template: str | None = None
    max_context: int | None = None
    truncate: str | None = None
    prefill_chunk: int | None = None


def pick(cls: type, values: dict[str, Any]) -> Any:
    """An options dataclass filled from a command's parameters (its `locals()`), by field name."""
    return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def request_fields(common: Common, answering: Answering, settings: Settings) -> dict[str, Any]:
    """The chunkqa.plan.Request fields (all but documents) from the options, resolved by precedence."""
    from chunkqa.results import GenerationConfig

    a = answering
    generation = GenerationConfig(
        settings.get("max_new_tokens", a.max_new_tokens),
        settings.get("temperature", a.temperature),
        settings.get("top_p", a.top_p),
        settings.get("seed", a.seed),
    )
    return {
        "spec": model_spec(common, settings),
        "dca": dca_options(common, settings),
        "generation": generation,
        "template": settings.get("template", a.template),
        "system": settings.get("system", a.system),
        "max_context": settings.get("max_context", a.max_context),
        "truncate": a.truncate,
        "prefill_chunk": settings.get("prefill_chunk", a.prefill_chunk),
    }


def model_spec(common: Common, settings: Settings) -> Any:
    from chunkqa.model import ModelSpec

    return ModelSpec(
        name=settings.get("model", common.model),
        revision=settings.get("revision", common.revision),
        dtype=settings.get("dtype", common.dtype),
        device=settings.get("device", common.device),
        trust_remote_code=common.trust_remote_code,
    )


def dca_options(common: Common, settings: Settings) -> Any:
    from chunkqa.dca.config import parse_logit_scale
    from chunkqa.model import DCAOptions

    for name in ("pretraining_length", "chunk_size", "local_window"):
        value = getattr(common, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
    return DCAOptions(
        enabled=not common.no_dca,
        pretraining_length=settings.get("pretraining_length", common.pretraining_length),
        chunk_size=settings.get("chunk_size", common.chunk_size),
        local_window=settings.get("local_window", common.local_window),
        logit_scale=parse_logit_scale(settings.get("logit_scale", common.logit_scale)),
        kernel=settings.get("kernel", common.kernel),
    )


def make_console(color: str | None, quiet: bool, settings: Settings) -> Console:
    choice = settings.get("color", color)
    if choice not in COLOR_CHOICES:
        raise UsageError(f"--color must be one of {', '.join(COLOR_CHOICES)}, got {choice!r}")
    return Console(choice, quiet)


def read_documents(sources: list[str], password: str | None) -> list[Any]:
    """Documents from paths; '-' reads standard input (once)."""
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
    return documents


def run(console_factory: Callable[[], Console], debug: bool, body: Callable[[Console], int | None]) -> None:
    """Run a command body; turn failures into one `Error:` line, a hint and the documented exit code."""
    console = None
    try:
        console = console_factory()
        code = body(console) or 0
    except ChunkqaError as exc:
        (console or Console()).error(exc.message, exc.hint)
        code = exc.exit_code
        if debug:
            raise
    except KeyboardInterrupt:
        (console or Console()).error("interrupted")
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        silence_stdout()
        code = 0
    except Exception as exc:  # the last resort: one line, with the traceback only under --debug
        if debug:
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


def silence_stdout() -> None:
    """After the reader of stdout went away (`| head -1`), drop further output quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
