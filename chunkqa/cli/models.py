"""`chunkqa models`: what `-m` accepts on this machine, with sizes and pretraining lengths."""

from __future__ import annotations

from typing import Annotated

import typer

from chunkqa.cli.common import run
from chunkqa.cli.console import Console, human_bytes
from chunkqa.cli.options import TerminalOptions, options
from chunkqa.cli.settings import Settings


@options(output=TerminalOptions)
def models(
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per model.")] = False,
    *,
    output: TerminalOptions,
) -> None:
    """Models -m can load here: the bundled one, installed GGUF files, the Hugging Face cache.

    Any hub id works too when online, and so does a local folder or .gguf file.
    """

    def body(console: Console, settings: Settings) -> int:
        from dataclasses import asdict

        from chunkqa.engine.catalog import list_models
        from chunkqa.evals.table import aligned

        entries = list_models()
        if json_output:
            for entry in entries:
                console.json(asdict(entry))
            return 0
        rows = []
        for e in entries:
            p = f"{e.pretraining_length:,}" if e.pretraining_length else "?"
            size = human_bytes(e.size) if e.size else "-"
            rows.append((e.name, e.kind, e.architecture or "?", p, size, e.note))
        header = ("NAME", "KIND", "ARCHITECTURE", "P", "SIZE", "NOTE")
        console.answer_piece(aligned(header, rows, left=(0, 1, 2, 5)) + "\n")
        console.info("Also: any hub id (online), a local model folder, or a .gguf file.")
        return 0

    run(output, body)
