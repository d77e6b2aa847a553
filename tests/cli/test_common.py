"""chunkqa.cli.common: how failures become one `Error:` line and an exit code."""

from __future__ import annotations

import io
import sys
from types import SimpleNamespace

import pytest
import typer

from chunkqa.cli.common import as_flags, describe_unexpected, read_documents, run
from chunkqa.errors import DoesNotFitError, UsageError


def run_body(body, debug: bool = False, monkeypatch=None) -> tuple[int, str]:
    err = io.StringIO()
    output = SimpleNamespace(color="never", quiet=False, debug=debug)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stderr", err)  # where the boundary's console writes
        with pytest.raises(typer.Exit) as info:
            run(output, lambda console, settings: body())
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
    output = SimpleNamespace(color="never", quiet=False, debug=True)
    with pytest.raises(ValueError):
        run(output, lambda console, settings: raise_(ValueError("boom"))())


def test_library_setting_names_become_flags():
    assert as_flags("`max_new_tokens` must be at least 1") == "--max-new-tokens must be at least 1"
    assert (
        as_flags("raise `max_context` or cut with `truncate`") == "raise --max-context or cut with --truncate"
    )
    assert as_flags(None) is None
    code, err = run_body(raise_(UsageError("`top_p` must be in (0, 1]", hint="see `top_p`")))
    assert (code, err) == (2, "Error: --top-p must be in (0, 1]\nHint: see --top-p\n")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("modle = 'typo'\n", "unknown setting 'modle'"),
        ("model = \n", "cannot read the config file"),
        ("max_new_tokens = 'many'\n", "wrong type"),
    ],
)
def test_a_bad_config_file_is_one_error_line_and_exit_2(clean_env, content, message):
    clean_env.config.parent.mkdir(parents=True)
    clean_env.config.write_text(content)
    code, err = run_body(lambda: 0)
    assert code == 2 and err.startswith("Error: ") and message in err and "Traceback" not in err


def test_describe_unexpected_never_multiline():
    message, hint = describe_unexpected(RuntimeError(""))
    assert message == "RuntimeError: " and "--debug" in hint


def test_stdin_only_once():
    with pytest.raises(UsageError, match="only once"):
        read_documents(["-", "-"], None)


@pytest.mark.parametrize(
    "command",
    [
        ["ask", "doc.txt", "Why?"],
        ["inspect", "doc.txt"],
        ["chat", "doc.txt"],
        ["eval", "ppl"],
        ["eval", "passkey"],
        ["eval", "needle"],
        ["selftest"],
        ["cache", "list"],
        ["cache", "clear", "--yes"],
    ],
)
def test_every_command_reports_a_bad_config_file(clean_env, tmp_path, command):
    """Invalid TOML, an unknown key or a wrong type: one `Error:` line, a hint, exit 2, in every command."""
    from typer.testing import CliRunner

    from chunkqa.cli.app import app

    clean_env.config.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "doc.txt").write_text("text")
    for content, message in (
        ("model = \n", "cannot read the config file"),
        ("modle = 'x'\n", "unknown setting 'modle'"),
        ("top_p = 'high'\n", "wrong type"),
    ):
        clean_env.config.write_text(content)
        result = CliRunner().invoke(app, [c.replace("doc.txt", str(tmp_path / "doc.txt")) for c in command])
        lines = result.stderr.splitlines()
        assert result.exit_code == 2, result.stderr
        assert lines[0].startswith("Error: ") and message in lines[0] and lines[1].startswith("Hint: ")
        assert "Traceback" not in result.stderr and result.stdout == ""
