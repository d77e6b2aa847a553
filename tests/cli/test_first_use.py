"""What a new user tripped over (the polish issue), one test per row: each failed on the code before it.

Rows about documents (encrypted PDFs, legacy encodings, HTML) are tested in tests/documents.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from chunkqa.cli.app import app, tidy_help

ROOT = Path(__file__).resolve().parents[2]
TEXT = "The committee met on Tuesday and agreed on the budget. " * 40


@pytest.fixture
def doc(tmp_path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text(TEXT)
    return path


def chunkqa(*args: str, input: str | None = None):
    result = CliRunner().invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--prefill-chunk", "0"], "--prefill-chunk must be at least 1, got 0"),
        (["--max-context", "0"], "--max-context must be at least 1, got 0"),
        (["--truncate", "bogus"], "unknown --truncate policy 'bogus'"),
        (["--device", "tpu"], "unknown --device 'tpu'"),
        (["--chunk-size", "0"], "--chunk-size must be a positive whole number"),
    ],
)
def test_bad_values_are_usage_errors_before_torch_or_any_document(tmp_path, flags, message):
    """Exit 2 at once: no torch imported, and the (missing) document never read."""
    code = (
        "import sys\nfrom chunkqa.cli import main\n"
        f"sys.argv = ['chunkqa', 'ask', '{tmp_path / 'never-read.pdf'}', 'Why?', *{flags!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n"
        "    print(exc.code, 'torch' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"Error: {message}" or lines[0].startswith(f"Error: {message}"), proc.stderr
    assert lines[-1] == "2 False" and proc.stdout == ""


def test_a_missing_file_in_the_question_place_is_named(doc, tmp_path):
    code, out, err = chunkqa("ask", str(doc), str(tmp_path / "typo.txt"), "-m", "tiny")
    assert code == 2 and out == ""
    assert "looks like a document, not a question (it names no file that exists)" in err
    code, out, _ = chunkqa("ask", str(doc), "What is notes.txt about?", "-m", "tiny", "--max-new-tokens", "1")
    assert code == 0  # a question that merely mentions a file is a question


def test_inspect_prints_its_report_on_stdout(doc):
    code, out, err = chunkqa("inspect", str(doc), "-m", "tiny")
    assert code == 0 and "document notes.txt: text" in out and "limit " in out and err == ""


def test_several_questions_come_labelled(doc):
    code, out, _ = chunkqa(
        "ask", str(doc), "-q", "When?", "-q", "What?", "-m", "tiny", "--max-new-tokens", "3"
    )
    assert code == 0 and out.startswith("Q: When?\nA: ") and "\n\nQ: What?\nA: " in out


def test_answers_have_no_leading_white_space(doc):
    code, out, _ = chunkqa("ask", str(doc), "When?", "-m", "tiny", "--max-new-tokens", "4", "--no-cache")
    assert code == 0 and out.strip() and out == out.lstrip()
    code, out, _ = chunkqa("ask", str(doc), "When?", "-m", "tiny", "--max-new-tokens", "4", "--json")
    answer = json.loads(out)["answer"]
    assert answer and answer == answer.lstrip()


def test_a_model_needing_its_own_code_names_the_flag(doc, tmp_path):
    model = tmp_path / "custom"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "thing", "auto_map": {"AutoConfig": "c.C"}}))
    (model / "c.py").write_text("class C: pass\n")
    code, _, err = chunkqa("ask", str(doc), "Why?", "-m", str(model))
    assert code == 1 and "needs to run code of its own" in err and "--trust-remote-code" in err


def test_a_too_small_pretraining_length_names_the_flags(doc):
    code, _, err = chunkqa("ask", str(doc), "Why?", "-m", "tiny", "--pretraining-length", "7")
    assert code == 2 and "--pretraining-length 7 is too small for DCA" in err
    assert "--chunk-size and --local-window" in err and "local_window" not in err


def test_no_room_for_the_answer_is_the_cause_named(doc):
    flags = ["--no-dca", "--truncate", "end", "--max-new-tokens", "300"]
    code, _, err = chunkqa("ask", str(doc), "Why?", "-m", "tiny", *flags)
    assert code == 3 and "no room is left for the document" in err
    assert "--max-new-tokens" in err and "cut with --truncate" not in err


def test_start_up_time_is_in_the_first_stats_line(doc):
    code, _, err = chunkqa("ask", str(doc), "-q", "A?", "-q", "B?", "-m", "tiny", "--max-new-tokens", "2")
    stats = [line for line in err.splitlines() if "context tokens" in line]
    assert code == 0 and len(stats) == 2 and "start-up " in stats[0] and "start-up" not in stats[1]


def test_cache_messages_come_before_the_answer_and_name_no_path(doc, clean_env):
    from chunkqa.cli.ask import stream_answer
    from chunkqa.cli.console import Console

    order = []

    class Session:
        def ask(self, question, config, history, on_progress):
            order.append("prefill")
            yield SimpleNamespace(text="Yes", stats=None)
            order.append("answer shown")
            yield SimpleNamespace(text="", stats="done")

    console = Console("never", stdout=io.StringIO(), stderr=io.StringIO())
    stream_answer(Session(), "Q?", None, console, echo=True, on_first=lambda: order.append("cache message"))
    assert order == ["prefill", "cache message", "answer shown"]
    args = ["ask", str(doc), "Why?", "-m", "tiny", "--max-new-tokens", "2", "--cache-min-tokens", "0"]
    chunkqa(*args)
    code, _, err = chunkqa(*args)
    line = next(line for line in err.splitlines() if line.startswith("document cache:"))
    assert code == 0 and line.startswith("document cache: reused the document's") and "/" not in line


def test_a_spinner_shows_on_a_terminal_only():
    from chunkqa.cli.console import Console

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    with Console("always", stderr=tty).status("loading the model"):
        pass
    assert "loading the model" in tty.getvalue()
    piped = io.StringIO()
    with Console("auto", stderr=piped).status("loading the model"):
        pass
    assert piped.getvalue() == ""


def test_inspect_without_the_model_still_describes_the_documents(doc):
    code, out, err = chunkqa("inspect", str(doc), "-m", "nobody/not-cached-model")
    assert code == 1 and out.startswith(f"document notes.txt: text, {len(TEXT):,} characters")
    assert "no token counts or memory estimate without the model" in err and "-m (tiny, smollm2" in err


def test_help_is_written_for_people():
    command = tidy_help(get_command(app))
    for name in ("ask", "chat", "inspect"):
        text = CliRunner().invoke(app, [name, "--help"]).stdout
        for leak in ("{DOCUMENT", "}...", "<bool>", "<list[str]>", "<int", "[x>=", "<str>"):
            assert leak not in text, (name, leak)
        assert not re.search(r"\w \.(\s|$)", text), name  # no stray space before a period
    assert (
        "Usage: chunkqa ask [OPTIONS] DOCUMENT... QUESTION" in CliRunner().invoke(app, ["ask", "-h"]).stdout
    )
    assert "Print only the answer" in CliRunner().invoke(app, ["ask", "--help"]).stdout
    for args in (["eval", "ppl", "--help"], ["selftest", "--help"]):
        text = CliRunner().invoke(app, args).stdout
        assert "Print only the answer" not in text and "Print only the result" in text
    assert command is not None


def test_environment_twins_are_honoured(doc, monkeypatch):
    monkeypatch.setenv("CHUNKQA_TRUNCATE", "middle")
    code, _, err = chunkqa(
        "ask", str(doc), "Why?", "-m", "tiny", "--max-context", "200", "--max-new-tokens", "2"
    )
    assert code == 0 and "cut by --truncate" in err
    monkeypatch.setenv("CHUNKQA_METHOD", "none")
    code, _, err = chunkqa("inspect", str(doc), "-m", "tiny", "--max-context", "5000")
    assert "DCA off (the model as it is)" in err + chunkqa("inspect", str(doc), "-m", "tiny")[1]


def test_models_lists_what_m_accepts(clean_env):
    code, out, _ = chunkqa("models")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["NAME", "KIND", "ARCHITECTURE"]
    assert any(line.startswith("tiny") and " 256 " in line for line in out.splitlines())
    assert any(line.startswith("smollm2") for line in out.splitlines())  # installed, or how to install it
    code, out, _ = chunkqa("models", "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert {"name", "kind", "architecture", "pretraining_length", "size", "path"} <= set(records[0])


def test_show_right_after_clear_counts_only_the_document():
    from chunkqa.chat import ChatEngine

    engine = ChatEngine.__new__(ChatEngine)
    engine.session = SimpleNamespace(
        turns=[],
        cache_ids=list(range(120)),
        prompt=lambda q, history: SimpleNamespace(prefix=list(range(90))),
    )
    assert engine.context_used == 90  # the two cleared turns (30 tokens) are still cached, but not in use
    engine.session.turns = ["a turn"]
    assert engine.context_used == 120
