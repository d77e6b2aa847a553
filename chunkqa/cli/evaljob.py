"""The machinery every `chunkqa eval` command shares: load the model once, score every cell under
every setting with progress on stderr, stream JSON lines, print the table. Imports no torch at
module level; the evaluation code is imported inside the job, after options are checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from chunkqa.cli.common import run
from chunkqa.cli.console import Console
from chunkqa.cli.options import MethodOptions, ModelOptions
from chunkqa.cli.settings import Settings
from chunkqa.errors import UsageError

Lengths = Annotated[
    str, typer.Option("--lengths", help="Prompt lengths: tokens (512, 4k = 4096) or multiples of P (2x).")
]
JsonOut = Annotated[bool, typer.Option("--json", help="JSON lines on stdout instead of the table.")]
JsonlPath = Annotated[Path | None, typer.Option("--jsonl", help="Also append the JSON lines to this file.")]
Compare = Annotated[bool, typer.Option("--compare", help="Also run every length with no method.")]
SettingsToRun = Annotated[
    list[str] | None,
    typer.Option(
        "--setting",
        metavar="METHOD[,KEY=VALUE...]",
        help="A method and settings to run, one table column each (repeatable), e.g. none, dca, "
        "dca,logit_scale=1, selfextend,group_size=8,window=2048, rope,rope=yarn:4; default: --method.",
    ),
]


@dataclass(frozen=True)
class RunOptions:
    """What every eval command runs over and where its records go."""

    lengths: Lengths = "1x,2x,4x,8x"
    setting: SettingsToRun = None
    compare: Compare = False
    prefill_chunk: Annotated[
        int | None,
        typer.Option(
            "--prefill-chunk", metavar="N", help="Tokens per prefill step [4096 on a CPU, 16384 on a GPU]."
        ),
    ] = None
    json: JsonOut = False
    jsonl: JsonlPath = None


@dataclass(frozen=True)
class Job:
    """One eval command, options as given; `make` builds the evaluation (reading its inputs)."""

    model: ModelOptions
    method: MethodOptions  # its logit_scale: several, comma-separated
    run: RunOptions
    make: Callable[[], Any]  # -> PerplexityEval | PasskeyEval | NeedleEval


def run_job(job: Job, output: Any, after: Callable | None = None) -> None:
    """Check options, load the model once, score every cell under every setting, print the table (or JSON)."""

    def body(console: Console, settings: Settings) -> int:
        from chunkqa.evals.grid import make_settings, parse_lengths
        from chunkqa.evals.runner import load_once

        lengths = parse_lengths(job.run.lengths)
        evaluation = job.make()
        spec = settings.model_spec(job.model)
        base = settings.method_spec(job.method, logit_scale=1.0)  # each setting brings its own scale
        scales = job.method.logit_scale
        if base.name != "dca" and scales is not None:
            console.warn(f"--logit-scale has no effect with --method {base.name}")
        scales = scales or str(settings.get("logit_scale"))
        runs = make_settings(base.name, job.run.compare, scales, job.run.setting or ())
        with _jsonl(job.run.jsonl) as write:
            loaded = load_once(spec, base, runs)
            tokens = banner(console, loaded, base, lengths, None, f"{evaluation.describe} · {_labels(runs)}")

            def on_record(record: dict) -> None:
                write(record)
                if job.run.json:
                    console.json(record)

            records = score_all(console, evaluation, loaded, base, runs, tokens, on_record)
        if not job.run.json:
            console.answer_piece(_table(evaluation.kind, records) + "\n")
        if after:
            after(console, records)
        return 0

    run(output, body)


def _labels(runs: Sequence[Any]) -> str:
    return ", ".join(s.label for s in runs)


def banner(console: Console, loaded: Any, base: Any, lengths: Any, default: Any, what: str) -> list[int]:
    """Model and settings on stderr; returns the lengths in tokens (multiples of P resolved)."""
    from chunkqa.evals.grid import resolve_lengths
    from chunkqa.evals.runner import pretraining_length

    p = pretraining_length(loaded, base)
    tokens = resolve_lengths(lengths, p) if lengths else default(p)
    dtype = str(loaded.dtype).removeprefix("torch.")
    console.info(f"model {loaded.spec.name} ({loaded.config.model_type}, {dtype}, {loaded.device}) · P {p:,}")
    console.info(f"{what} · lengths {', '.join(map(str, tokens))}")
    return tokens


def score_all(
    console, evaluation, loaded, base, runs, tokens, on_record: Callable[[dict], None]
) -> list[dict]:
    """Run every cell under every setting with a progress bar; a line on stderr per scored cell."""
    from chunkqa.evals.runner import run_cells, total_tokens

    cells = evaluation.cells(loaded, tokens)
    for cell in cells:
        if len(cell.items) < getattr(evaluation, "windows", 0):
            console.warn(f"only {len(cell.items)} windows of {cell.length:,} tokens fit in the texts")
    records, done, total = [], 0, total_tokens(cells, runs)
    with console.progress(evaluation.kind, total) as update:

        def tick(count: int) -> None:
            nonlocal done
            done += count
            update(done, total)

        for record in run_cells(loaded, base, runs, cells, evaluation.score_cell, evaluation.kind, tick):
            records.append(record)
            on_record(record)
            layout = f"{record['layout']} · " if record.get("layout") else ""
            console.info(
                f"{record['setting']} · {layout}{record['length']:,} tokens · {evaluation.summary(record)}"
            )
    return records


@contextmanager
def _jsonl(path: Path | None) -> Iterator[Callable[[dict], None]]:
    """Append records to a file as they come; opened before the model loads, so a bad path fails early."""
    if path is None:
        yield lambda record: None
        return
    try:
        file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    with file:

        def write(record: dict) -> None:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
            file.flush()

        yield write


def _table(kind: str, records: list[dict]) -> str:
    from chunkqa.evals.table import metric_table, needle_table

    return needle_table(records) if kind == "needle" else metric_table(records)
