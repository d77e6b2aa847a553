"""chunkqa.cli_common: how failures become one `Error:` line and an exit code."""

from __future__ import annotations

import io

import pytest
import typer

from chunkqa.cli_common import describe_unexpected, read_documents, run
from chunkqa.console import Console
from chunkqa.errors import DoesNotFitError, UsageError


def run_body(body, debug: bool = False) -> tuple[int, str]:
    err = io.StringIO()
    with pytest.raises(typer.Exit) as info:
        run(lambda: Console("never", stdout=io.StringIO(), stderr=err), debug, lambda console: body())
    return info.value.exit_code, err.getvalue()


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the CLI recognises without importing torch."""


def raise_(exc: BaseException):
    def body():
        raise exc

    return body


def test_exit_codes_and_messages():
    assert run_body(lambda: 0) == (0, "")
    assert run_body(raise_(UsageError("bad flag", hint="fix it"))) == (2, "Error: bad flag\nHint: fix it\n")
    assert run_body(raise_(DoesNotFitError("too long")))[0] == 3
    assert run_body(raise_(KeyboardInterrupt())) == (130, "Error: interrupted\n")
    code, err = run_body(raise_(OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")))
    assert code == 1 and err.startswith("Error: the GPU ran out of memory\nHint: lower --max-context")
    code, err = run_body(raise_(ValueError("weird\nsecond line")))
    assert code == 1 and err == (
        "Error: ValueError: weird\nHint: rerun with --debug for the traceback, and report it if it is a bug\n"
    )


def test_debug_shows_the_traceback():
    with pytest.raises(ValueError):
        run(lambda: Console("never"), True, lambda console: raise_(ValueError("boom"))())


def test_describe_unexpected_never_multiline():
    message, hint = describe_unexpected(RuntimeError(""))
    assert message == "RuntimeError: " and "--debug" in hint


def test_stdin_only_once():
    with pytest.raises(UsageError, match="only once"):
        read_documents(["-", "-"], None)
