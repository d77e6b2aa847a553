"""chunkqa's command-line options, in groups: each group a frozen dataclass whose fields are options.

A command names the groups it takes (`@options(model=ModelOptions, ...)`) instead of repeating
their parameters; Typer sees every field as an option (flag, CHUNKQA_* twin, help), and the command
receives one filled dataclass per group. Defaults are None: chunkqa.cli.settings fills what is unset
from the config file and the built-in defaults.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from chunkqa.cli.flags import (
    CacheMinTokens,
    ChunkSize,
    Color,
    Debug,
    Device,
    Dtype,
    GgufFile,
    GroupSize,
    Kernel,
    LocalWindow,
    LogitScale,
    MaxContext,
    MaxNewTokens,
    Method,
    Model,
    NoCache,
    NoDca,
    NoRepeatNgram,
    PrefillChunk,
    PretrainingLength,
    Quiet,
    QuietResult,
    RepeatPenalty,
    Revision,
    Rope,
    Seed,
    Stop,
    System,
    Temperature,
    Template,
    TopP,
    Truncate,
    TrustRemoteCode,
    Window,
)


@dataclass(frozen=True)
class ModelOptions:
    """Which model, and where it runs."""

    model: Model = None
    revision: Revision = None
    dtype: Dtype = None
    device: Device = None
    trust_remote_code: TrustRemoteCode = False
    gguf_file: GgufFile = None


@dataclass(frozen=True)
class MethodOptions:
    """How the context is extended: the method and its settings."""

    method: Method = None
    pretraining_length: PretrainingLength = None
    chunk_size: ChunkSize = None
    local_window: LocalWindow = None
    logit_scale: LogitScale = None
    group_size: GroupSize = None
    window: Window = None
    rope: Rope = None
    no_dca: NoDca = False
    kernel: Kernel = None


@dataclass(frozen=True)
class PromptOptions:
    """What the model is asked, and how much of the document fits."""

    max_new_tokens: MaxNewTokens = None
    system: System = None
    template: Template = None
    max_context: MaxContext = None
    truncate: Truncate = None


@dataclass(frozen=True)
class GenerationOptions:
    """How tokens are computed and picked."""

    temperature: Temperature = None
    top_p: TopP = None
    repeat_penalty: RepeatPenalty = None
    no_repeat_ngram: NoRepeatNgram = None
    stop: Stop = None
    seed: Seed = None
    prefill_chunk: PrefillChunk = None


@dataclass(frozen=True)
class CacheFlags:
    """The on-disk document cache, for commands that read documents."""

    no_cache: NoCache = False
    cache_min_tokens: CacheMinTokens = None


@dataclass(frozen=True)
class OutputOptions:
    """Where and how output is shown."""

    quiet: Quiet = False
    color: Color = None
    debug: Debug = False


@dataclass(frozen=True)
class ResultOutputOptions:
    """Where and how output is shown, for commands whose output is a result table."""

    quiet: QuietResult = False
    color: Color = None
    debug: Debug = False


@dataclass(frozen=True)
class TerminalOptions:
    """Output options of commands that print no answer: colour and tracebacks."""

    color: Color = None
    debug: Debug = False

    @property
    def quiet(self) -> bool:
        return False


def options(**groups: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the options of each group; it receives one dataclass per group, by keyword.

    `@options(model=ModelOptions)` on `def ask(args, *, model: ModelOptions)`: Typer sees --model,
    --dtype, ... as parameters of `ask`, and `ask` gets `model=ModelOptions(...)`.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        hints = get_type_hints(command, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
            if p.name not in groups
        ]
        flat = [*own, *(_fields_as_parameters(cls) for cls in groups.values())]
        parameters = [p for item in flat for p in (item if isinstance(item, list) else [item])]

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            for name, cls in groups.items():
                values[name] = cls(**{f.name: values.pop(f.name) for f in fields(cls)})
            return command(**values)

        del wrapper.__wrapped__  # Typer must read the new signature, not the command's
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


def _fields_as_parameters(cls: type) -> list[inspect.Parameter]:
    hints = get_type_hints(cls, include_extras=True)
    return [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
        for f in fields(cls)
    ]
