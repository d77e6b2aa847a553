"""`chunkqa chat` in a real terminal (pexpect): commands, multiline, Ctrl-C, Ctrl-D, pipes, no terminal."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from childproc import default_sigint

pexpect = pytest.importorskip("pexpect")

CODE = "from chunkqa.cli.app import main; main()"
DOC = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 12
PROMPT = ">>> "
STATS = re.compile(r"([\d,]+) context tokens · ([\d,]+) reused from cache, ([\d,]+) computed")


@pytest.fixture
def setup(tmp_path, cli_models):
    doc, other = tmp_path / "doc.txt", tmp_path / "other.txt"
    doc.write_text(DOC)
    other.write_text("The pass key is 12345. Remember it. " * 20)
    env = {
        **os.environ,
        "TERM": "dumb",
        "NO_COLOR": "1",
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "CHUNKQA_CACHE_DIR": str(tmp_path / "kv"),
    }
    return {"tmp": tmp_path, "doc": doc, "other": other, "model": str(cli_models["qwen2"]), "env": env}


def chat_args(setup, *extra: str) -> list[str]:
    return ["chat", *extra, "-m", setup["model"], "--max-new-tokens", "6", "--color", "never"]


def spawn(setup, args: list[str]):
    return pexpect.spawn(
        sys.executable,
        ["-c", CODE, *args],
        env=setup["env"],
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 250),
        preexec_fn=default_sigint,
    )


def stats_after(child) -> tuple[int, int]:
    """(reused, computed) from the next stats line; then wait for the prompt."""
    child.expect(STATS)
    reused, computed = (int(child.match.group(i).replace(",", "")) for i in (2, 3))
    child.expect_exact(PROMPT)
    return reused, computed


def command(child, line: str, reply: str) -> None:
    child.sendline(line)
    child.expect_exact(reply)
    child.expect_exact(PROMPT)


def test_a_chat_session_in_a_terminal(setup):
    child = spawn(setup, chat_args(setup, str(setup["doc"])))
    child.expect_exact("Type a question, /? for help; Ctrl-D or /bye to leave.")
    child.expect_exact(PROMPT)
    command(child, "/help", "begin and end a message of several lines")
    command(child, "/show", "DCA logit factor")
    command(child, "/stats", "No answer yet.")
    command(child, "/set temperature 0.2", "temperature = 0.2")
    command(child, "/set temperature 0", "temperature = 0.0")
    command(child, "/set top_p 7", "Error: top_p must be in (0, 1], got 7.0")
    command(child, "/wat", "Unknown command /wat: type /? for help.")

    child.sendline("What is the main result?")
    reused, first_computed = stats_after(child)
    assert reused == 0 and first_computed > 500  # the document is read once, here

    child.sendline('"""')  # a follow-up over several lines: the document and the first turn are reused
    child.expect_exact("... ")
    child.sendline("Tell me")
    child.expect_exact("... ")
    child.sendline('more."""')
    reused, computed = stats_after(child)
    assert reused > first_computed - 20 and computed < 200

    command(child, "/clear", "Conversation cleared; the document stays loaded.")
    child.sendline("What is the main result?")
    reused, computed = stats_after(child)
    assert reused >= first_computed - 30 and computed < 30  # rolled back to the document, no re-prefill

    command(child, "/set max_tokens 3000", "max_tokens = 3000")
    child.sendline("Go on, at length.")
    child.expect_exact("Go on, at length.\r\n")
    child.expect(r"\S")  # the answer is streaming
    child.sendintr()
    child.expect_exact("(interrupted)")
    reused, _ = stats_after(child)
    assert reused > first_computed - 30
    command(child, "/set max_tokens 4", "max_tokens = 4")
    child.sendline("Still there?")
    reused, _ = stats_after(child)  # the session goes on, its cache intact
    assert reused > first_computed - 30

    markdown = setup["tmp"] / "chat.md"
    command(child, f"/save {markdown}", "Transcript saved to")
    command(child, f"/doc {setup['other']}", "document other.txt")
    child.send("half a line")
    child.expect_exact("half a line")  # as a person would: Ctrl-C once the line is on the screen
    child.sendintr()  # (sent sooner, the terminal can drop the unread text with the interrupt)
    child.expect_exact("(Ctrl-D or /bye to leave)")
    child.expect_exact(PROMPT)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "Aborted" not in child.before and "Traceback" not in child.before

    text = markdown.read_text()
    assert text.startswith("# chunkqa chat") and "## Question\n\nTell me\nmore." in text
    assert "*conversation cleared*" in text and "Go on, at length.\n\n## Answer" in text
    assert "*(interrupted)*" in text
    history = (setup["tmp"] / "state" / "chunkqa" / "history").read_text()
    assert "What is the main result?" in history and "/clear" in history


def test_piped_document_questions_from_the_terminal_answers_only_on_stdout(setup):
    answers = setup["tmp"] / "answers.txt"
    python = shlex.join([sys.executable, "-c", CODE, *chat_args(setup, "-")])
    script = f"cat {shlex.quote(str(setup['doc']))} | {python} > {shlex.quote(str(answers))}"
    child = pexpect.spawn(
        "bash", ["-c", script], env=setup["env"], encoding="utf-8", timeout=120, dimensions=(50, 250)
    )
    child.expect_exact("document stdin")
    child.expect_exact(PROMPT)
    child.sendline("First question?")
    assert stats_after(child)[0] == 0
    child.sendline("Second question?")
    assert stats_after(child)[0] > 500
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    lines = answers.read_text().splitlines()
    assert len(lines) == 2 and all(line.strip() for line in lines)
    assert not any(mark in answers.read_text() for mark in (PROMPT, "context tokens", "model ", "DCA"))


def _no_terminal(setup, args, stdin):
    return subprocess.run(
        [sys.executable, "-c", CODE, *args],
        env=setup["env"],
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,  # no controlling terminal: /dev/tty cannot be opened
        **stdin,
    )


def test_no_terminal_is_a_usage_error_pointing_to_ask(setup):
    result = _no_terminal(setup, chat_args(setup, str(setup["doc"])), {"stdin": subprocess.DEVNULL})
    assert result.returncode == 2 and result.stdout == ""
    assert "needs a terminal" in result.stderr and "chunkqa ask" in result.stderr
    piped = _no_terminal(setup, chat_args(setup, "-"), {"input": DOC})
    assert piped.returncode == 2 and "needs a terminal" in piped.stderr


def test_questions_on_a_pipe_are_refused_with_a_hint(setup):
    result = _no_terminal(setup, chat_args(setup, str(setup["doc"])), {"input": "What?\n"})
    assert result.returncode == 2
    assert "standard input is a pipe" in result.stderr and "chunkqa chat -" in result.stderr
