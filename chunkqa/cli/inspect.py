"""`chunkqa inspect`: what the documents hold and whether a question about them fits. No weights load."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chunkqa.cli.common import read_documents, run
from chunkqa.cli.console import Console
from chunkqa.cli.flags import Json, Password, PrefillChunk
from chunkqa.cli.options import MethodOptions, ModelOptions, PromptOptions, TerminalOptions, options
from chunkqa.cli.settings import Settings
from chunkqa.errors import EXIT_DOES_NOT_FIT, ModelLoadError

Question = Annotated[str, typer.Option("-q", "--question", help="A question, to count its tokens too.")]


@options(model=ModelOptions, method=MethodOptions, prompt=PromptOptions, output=TerminalOptions)
def inspect(
    documents: Annotated[
        list[str],
        typer.Argument(help="Documents (paths, or - for stdin).", metavar="DOCUMENT...", show_default=False),
    ],
    question: Question = "What is the main result?",
    password: Password = None,
    json_output: Json = False,
    prefill_chunk: PrefillChunk = None,
    *,
    model: ModelOptions,
    method: MethodOptions,
    prompt: PromptOptions,
    output: TerminalOptions,
) -> None:
    """Pages, characters, tokens, DCA settings and memory: does it fit? No weights are loaded."""

    def body(console: Console, settings: Settings) -> int:
        from chunkqa.cli.report import inspect_lines, inspect_record
        from chunkqa.plan import make_plan

        request = settings.request(
            lambda: read_documents(documents, password, console),
            model=model,
            method=method,
            prompt=prompt,
            prefill_chunk=prefill_chunk,  # the activations of the memory estimate follow the piece
        )
        try:
            plan = make_plan(request, [question], strict=False)
        except ModelLoadError as exc:  # the documents can still be described
            documents_only(request, exc, console, json_output)
            raise

        if json_output:
            console.json(inspect_record(plan))
        else:
            for line in inspect_lines(plan):  # the report is this command's output: stdout
                console.answer_piece(line + "\n")
        return 0 if plan.fits else EXIT_DOES_NOT_FIT

    run(output, body)


def documents_only(request: Any, exc: ModelLoadError, console: Console, json_output: bool) -> None:
    """What inspect can say without the model: the documents; then why the rest is missing."""
    from chunkqa.cli.report import document_lines, document_record_of

    if json_output:
        console.json({"document": document_record_of(request.documents), "model": None, "fits": None})
    else:
        for line in document_lines(request.documents):
            console.answer_piece(line + "\n")
    exc.message = f"no token counts or memory estimate without the model: {exc.message}"
    exc.hint = f"{exc.hint}; or pass a local model with -m (tiny, smollm2, a folder, a .gguf file)".lstrip(
        "; "
    )
