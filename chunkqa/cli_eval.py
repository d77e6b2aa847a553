"""`chunkqa eval ppl|passkey|needle` and `chunkqa selftest`: options in, chunkqa.evals runs, results out.

stdout holds the result (a table, or JSON lines with --json); banner, progress and per-cell lines go
to stderr. Imports no torch: command bodies import the evaluation code after options are checked.
The job every eval command runs is in chunkqa.cli_evaljob; this module holds options and commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from chunkqa.cli_common import EXIT_CODES, dca_options, make_console, model_spec, run
from chunkqa.cli_evaljob import Job, banner, common_options, run_job, score_all
from chunkqa.cli_options import (
    ChunkSize,
    Color,
    Debug,
    Device,
    Dtype,
    Kernel,
    LocalWindow,
    LogitScale,
    Model,
    NoDca,
    PretrainingLength,
    Quiet,
    Revision,
    TrustRemoteCode,
)
from chunkqa.console import Console
from chunkqa.errors import UsageError
from chunkqa.settings import Settings

eval_app = typer.Typer(
    help="Measure a model with and without DCA: perplexity, pass-key retrieval, needle in a haystack.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEFAULT_LENGTHS = "1x,2x,4x,8x"
Lengths = Annotated[
    str, typer.Option("--lengths", help="Prompt lengths: tokens (512, 4k = 4096) or multiples of P (2x).")
]
Seed = Annotated[int, typer.Option("--seed", help="First seed; trial i uses seed + i.")]
JsonOut = Annotated[bool, typer.Option("--json", help="JSON lines on stdout instead of the table.")]
JsonlPath = Annotated[Path | None, typer.Option("--jsonl", help="Also append the JSON lines to this file.")]
Compare = Annotated[bool, typer.Option("--compare", help="Also run every length without DCA.")]
Scales = Annotated[
    str | None,
    typer.Option(
        "--logit-scale",
        envvar="CHUNKQA_LOGIT_SCALE",
        help="DCA logit scales to run, e.g. 1,auto,auto:0.1 (default auto).",
    ),
]
Trials = Annotated[int, typer.Option("--trials", min=1, help="Prompts per length (per cell for needle).")]
Windows = Annotated[int, typer.Option("--windows", min=1, help="Windows per length.")]
Data = Annotated[
    list[str] | None,
    typer.Option("--data", help="A text or PDF to read (repeatable); default: the validation books."),
]
Depths = Annotated[str, typer.Option("--depths", help="Needle depths: 0 = start, 1 = end.")]
Plot = Annotated[Path | None, typer.Option("--plot", help="Write the accuracy heatmap to this PNG.")]


@eval_app.command(epilog=EXIT_CODES)
def ppl(
    model: Model = None,
    revision: Revision = None,
    dtype: Dtype = None,
    device: Device = None,
    trust_remote_code: TrustRemoteCode = False,
    pretraining_length: PretrainingLength = None,
    chunk_size: ChunkSize = None,
    local_window: LocalWindow = None,
    logit_scale: Scales = None,
    no_dca: NoDca = False,
    kernel: Kernel = None,
    compare: Compare = False,
    lengths: Lengths = DEFAULT_LENGTHS,
    windows: Windows = 20,
    data: Data = None,
    json_output: JsonOut = False,
    jsonl: JsonlPath = None,
    quiet: Quiet = False,
    color: Color = None,
    debug: Debug = False,
) -> None:
    """Perplexity on windows of exactly L tokens (docs/evaluation.md says how they are cut)."""

    def make() -> Any:
        from chunkqa.evals.data import data_label, load_texts
        from chunkqa.evals.ppl import PerplexityEval

        return PerplexityEval(tuple(load_texts(data)), windows, data_label(data))

    options = common_options(locals(), logit_scale=None)
    run_job(Job(options, lengths, compare, logit_scale, make, json_output, jsonl), quiet, color, debug)


@eval_app.command(epilog=EXIT_CODES)
def passkey(
    model: Model = None,
    revision: Revision = None,
    dtype: Dtype = None,
    device: Device = None,
    trust_remote_code: TrustRemoteCode = False,
    pretraining_length: PretrainingLength = None,
    chunk_size: ChunkSize = None,
    local_window: LocalWindow = None,
    logit_scale: Scales = None,
    no_dca: NoDca = False,
    kernel: Kernel = None,
    compare: Compare = False,
    lengths: Lengths = DEFAULT_LENGTHS,
    trials: Trials = 20,
    seed: Seed = 0,
    json_output: JsonOut = False,
    jsonl: JsonlPath = None,
    quiet: Quiet = False,
    color: Color = None,
    debug: Debug = False,
) -> None:
    """Pass-key retrieval (the ChunkLlama protocol): accuracy per length, greedy, seeded."""

    def make() -> Any:
        from chunkqa.evals.passkey import PasskeyEval

        return PasskeyEval(trials, seed)

    options = common_options(locals(), logit_scale=None)
    run_job(Job(options, lengths, compare, logit_scale, make, json_output, jsonl), quiet, color, debug)


@eval_app.command(epilog=EXIT_CODES)
def needle(
    model: Model = None,
    revision: Revision = None,
    dtype: Dtype = None,
    device: Device = None,
    trust_remote_code: TrustRemoteCode = False,
    pretraining_length: PretrainingLength = None,
    chunk_size: ChunkSize = None,
    local_window: LocalWindow = None,
    logit_scale: Scales = None,
    no_dca: NoDca = False,
    kernel: Kernel = None,
    compare: Compare = False,
    lengths: Lengths = DEFAULT_LENGTHS,
    depths: Depths = "0,0.25,0.5,0.75,1",
    trials: Trials = 5,
    seed: Seed = 0,
    data: Data = None,
    plot: Plot = None,
    json_output: JsonOut = False,
    jsonl: JsonlPath = None,
    quiet: Quiet = False,
    color: Color = None,
    debug: Debug = False,
) -> None:
    """Needle in a haystack: accuracy per (depth, length) cell, asked the way `chunkqa ask` asks."""

    def make() -> Any:
        from chunkqa.evals.data import data_label, load_texts
        from chunkqa.evals.grid import parse_depths
        from chunkqa.evals.needle import NeedleEval

        found = tuple(parse_depths(depths))
        _check_plot_path(plot)
        return NeedleEval(tuple(load_texts(data)), found, trials, seed, data_label(data))

    def after(console: Console, records: list[dict]) -> None:
        if plot is not None:
            from chunkqa.evals.plot import write_heatmap

            title = f"needle · {records[0]['model']} · P {records[0]['pretraining_length']:,}"
            console.info(f"heatmap written to {write_heatmap(plot, records, title)}")

    options = common_options(locals(), logit_scale=None)
    run_job(Job(options, lengths, compare, logit_scale, make, json_output, jsonl), quiet, color, debug, after)


def _check_plot_path(plot: Path | None) -> None:
    import importlib.util

    if plot is None:
        return
    if not plot.parent.is_dir():
        raise UsageError(f"cannot write the heatmap: no folder {plot.parent}")
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib", hint="pip install 'chunkqa[eval]'")


def selftest(
    model: Model = None,
    revision: Revision = None,
    dtype: Dtype = None,
    device: Device = None,
    trust_remote_code: TrustRemoteCode = False,
    pretraining_length: PretrainingLength = None,
    chunk_size: ChunkSize = None,
    local_window: LocalWindow = None,
    logit_scale: LogitScale = None,
    kernel: Kernel = None,
    lengths: Annotated[
        str | None, typer.Option("--lengths", help="Pass-key lengths; default 2x,4x,8x (each at most 32k).")
    ] = None,
    trials: Trials = 5,
    seed: Seed = 0,
    quiet: Quiet = False,
    color: Color = None,
    debug: Debug = False,
) -> None:
    """Check that DCA works here: the patch is active and exact, and pass keys are found at 2P, 4P, 8P."""
    settings = Settings()
    options = common_options(locals())

    def body(console: Console) -> int:
        from chunkqa.evals import selftest as check_module
        from chunkqa.evals.grid import Setting, parse_lengths
        from chunkqa.evals.passkey import PasskeyEval
        from chunkqa.evals.runner import load_once, versions
        from chunkqa.evals.table import selftest_table

        parsed = parse_lengths(lengths) if lengths is not None else None
        spec, base = model_spec(options, settings), dca_options(options, settings)
        runs = [Setting(dca=True, logit_scale=base.logit_scale)]
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

    run(lambda: make_console(color, quiet, settings), debug, body)
