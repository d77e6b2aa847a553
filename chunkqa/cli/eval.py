"""`chunkqa eval ppl|passkey|needle` and `chunkqa selftest`: options in, chunkqa.evals runs, results out.

stdout holds the result (a table, or JSON lines with --json); banner, progress and per-cell lines go
to stderr. Imports no torch: command bodies import the evaluation code after options are checked.
The job every eval command runs is in chunkqa.cli.evaljob; this module holds options and commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from chunkqa.cli.common import EXIT_CODES, run
from chunkqa.cli.console import Console
from chunkqa.cli.evaljob import Job, RunOptions, banner, run_job, score_all
from chunkqa.cli.options import MethodOptions, ModelOptions, ResultOutputOptions, options
from chunkqa.cli.settings import Settings
from chunkqa.errors import UsageError

eval_app = typer.Typer(
    help="Measure a model with and without DCA: perplexity, pass-key retrieval, needle in a haystack.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

Seed = Annotated[int, typer.Option("--seed", help="First seed; trial i uses seed + i.")]
Trials = Annotated[int, typer.Option("--trials", help="Prompts per length (per cell for needle).")]
Windows = Annotated[int, typer.Option("--windows", help="Windows per length.")]
Data = Annotated[
    list[str] | None,
    typer.Option("--data", help="A text or PDF to read (repeatable); default: the validation books."),
]
Depths = Annotated[str, typer.Option("--depths", help="Needle depths: 0 = start, 1 = end.")]
Layouts = Annotated[
    str,
    typer.Option(
        "--layouts",
        help="Pass-key prompt layouts, reported apart: lines (filler cut mid-sentence, lines joined by "
        "newlines), sentences (whole sentences joined by spaces), prose (book text as filler).",
    ),
]
Plot = Annotated[Path | None, typer.Option("--plot", help="Write the accuracy heatmap to this PNG.")]


@eval_app.command(epilog=EXIT_CODES)
@options(model=ModelOptions, method=MethodOptions, run=RunOptions, output=ResultOutputOptions)
def ppl(
    windows: Windows = 20,
    data: Data = None,
    *,
    model: ModelOptions,
    method: MethodOptions,
    run: RunOptions,
    output: ResultOutputOptions,
) -> None:
    """Perplexity on windows of exactly L tokens (docs/evaluation.md says how they are cut)."""

    def make() -> Any:
        from chunkqa.evals.data import data_label, load_texts
        from chunkqa.evals.ppl import PerplexityEval

        at_least_one("windows", windows)
        return PerplexityEval(tuple(load_texts(data)), windows, data_label(data), run.prefill_chunk)

    run_job(Job(model, method, run, make), output)


@eval_app.command(epilog=EXIT_CODES)
@options(model=ModelOptions, method=MethodOptions, run=RunOptions, output=ResultOutputOptions)
def passkey(
    trials: Trials = 20,
    seed: Seed = 0,
    layouts: Layouts = "lines",
    data: Data = None,
    *,
    model: ModelOptions,
    method: MethodOptions,
    run: RunOptions,
    output: ResultOutputOptions,
) -> None:
    """Pass-key retrieval (the ChunkLlama protocol): accuracy per length and layout, greedy, seeded."""

    def make() -> Any:
        from chunkqa.evals.data import load_texts
        from chunkqa.evals.passkey import PasskeyEval, make_layout

        at_least_one("trials", trials)
        names = [name.strip() for name in layouts.split(",") if name.strip()]
        texts = load_texts(data) if "prose" in names else ()
        return PasskeyEval(trials, seed, tuple(make_layout(name, texts) for name in names), run.prefill_chunk)

    run_job(Job(model, method, run, make), output)


@eval_app.command(epilog=EXIT_CODES)
@options(model=ModelOptions, method=MethodOptions, run=RunOptions, output=ResultOutputOptions)
def needle(
    depths: Depths = "0,0.25,0.5,0.75,1",
    trials: Trials = 5,
    seed: Seed = 0,
    data: Data = None,
    plot: Plot = None,
    *,
    model: ModelOptions,
    method: MethodOptions,
    run: RunOptions,
    output: ResultOutputOptions,
) -> None:
    """Needle in a haystack: accuracy per (depth, length) cell, asked the way `chunkqa ask` asks."""

    def make() -> Any:
        from chunkqa.evals.data import data_label, load_texts
        from chunkqa.evals.grid import parse_depths
        from chunkqa.evals.needle import NeedleEval

        at_least_one("trials", trials)
        found = tuple(parse_depths(depths))
        _check_plot_path(plot)
        return NeedleEval(tuple(load_texts(data)), found, trials, seed, data_label(data), run.prefill_chunk)

    def after(console: Console, records: list[dict]) -> None:
        if plot is not None:
            from chunkqa.evals.plot import write_heatmap

            title = f"needle · {records[0]['model']} · P {records[0]['pretraining_length']:,}"
            console.info(f"heatmap written to {write_heatmap(plot, records, title)}")

    run_job(Job(model, method, run, make), output, after)


def at_least_one(name: str, value: int) -> None:
    if value < 1:
        raise UsageError(f"`{name}` must be at least 1, got {value}")


def _check_plot_path(plot: Path | None) -> None:
    import importlib.util

    if plot is None:
        return
    if not plot.parent.is_dir():
        raise UsageError(f"cannot write the heatmap: no folder {plot.parent}")
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib", hint="pip install 'chunkqa[eval]'")


@options(model=ModelOptions, method=MethodOptions, output=ResultOutputOptions)
def selftest(
    lengths: Annotated[
        str | None, typer.Option("--lengths", help="Pass-key lengths; default 2x,4x,8x (each at most 32k).")
    ] = None,
    trials: Trials = 5,
    seed: Seed = 0,
    *,
    model: ModelOptions,
    method: MethodOptions,
    output: ResultOutputOptions,
) -> None:
    """Check that DCA works here: the patch is active and exact, and pass keys are found at 2P, 4P, 8P."""

    def body(console: Console, settings: Settings) -> int:
        from chunkqa.evals import selftest as check_module
        from chunkqa.evals.grid import Setting, parse_lengths
        from chunkqa.evals.passkey import PasskeyEval
        from chunkqa.evals.runner import load_once, versions
        from chunkqa.evals.table import selftest_table

        parsed = parse_lengths(lengths) if lengths is not None else None
        spec, base = settings.model_spec(model), settings.method_spec(method)
        runs = [Setting(base.name, name=base.label)]
        loaded = load_once(spec, base, runs)
        what = f"selftest · {runs[0].label} · {trials} pass keys per length"
        tokens = banner(console, loaded, base, parsed, check_module.default_lengths, what)
        check = check_module.patch_check(loaded, base, runs[0])
        records = score_all(console, PasskeyEval(trials, seed), loaded, base, runs, tokens, lambda r: None)
        console.answer_piece(f"{check.describe()}\n{selftest_table(records, check_module.THRESHOLD)}\n")
        error = check_module.verdict(records, check, versions()["transformers"])
        if error is not None:
            raise error
        console.info("selftest passed")
        return 0

    run(output, body)
