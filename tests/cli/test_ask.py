"""`chunkqa ask` and `chunkqa inspect` through the real CLI, stdout and stderr checked apart.

Most cases run in-process with Typer's runner; the ones about the process itself (entry point,
exit codes of usage errors, pipes, signals, import cost) run `python -m chunkqa` in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from childproc import default_sigint
from pypdf import PdfWriter
from typer.testing import CliRunner

from chunkqa.cli.app import app
from chunkqa.documents import document_from_bytes, load_document

ROOT = Path(__file__).resolve().parents[2]
PDF = ROOT / "sample_pdfs" / "arxiv-2309.00071v2-yarn.pdf"
LONG_TEXT = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 30


@pytest.fixture
def doc(tmp_path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text(LONG_TEXT)
    return path


def ask(*args: str, input: str | None = None):
    result = CliRunner().invoke(app, ["ask", *args], input=input)
    return result.exit_code, result.stdout, result.stderr


def cli(*args: str, input: bytes | None = None, env: dict | None = None, timeout: int = 300):
    proc = subprocess.run(
        [sys.executable, "-m", "chunkqa", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_answer_on_stdout_everything_else_on_stderr(cli_models, doc):
    code, out, err = ask(
        str(doc), "What is it about?", "-m", str(cli_models["llama"]), "--max-new-tokens", "6"
    )
    assert code == 0
    assert out.endswith("\n") and out.strip() and "context tokens" not in out and "DCA" not in out
    lines = err.splitlines()
    assert lines[0].startswith(f"model {cli_models['llama']} (llama, float32, cpu)")
    assert lines[1].startswith(f"document notes.txt ({load_document(doc).chars:,} chars) · ")
    assert lines[2].startswith("DCA on · P 64 · chunk size 48 · local window 8 · L/P ")
    assert "context tokens" in lines[3] and "TTFT" in lines[3] and "peak RSS" in lines[3]
    assert "\x1b[" not in out + err  # plain text when not on a terminal


def test_stdin_document(cli_models):
    code, out, err = ask(
        "-", "Summarise", "-m", str(cli_models["qwen2"]), "--max-new-tokens", "4", input=LONG_TEXT
    )
    assert code == 0 and out.strip()
    assert (
        f"document stdin ({document_from_bytes(LONG_TEXT.encode()).chars:,} chars)" in err and "DCA on" in err
    )


def test_json_schema(cli_models, doc):
    code, out, err = ask(
        str(doc),
        "Who?",
        "-m",
        str(cli_models["qwen2"]),
        "--max-new-tokens",
        "5",
        "--json",
        "--logit-scale",
        "auto",
    )
    assert code == 0
    record = json.loads(out)
    assert out.count("\n") == 1
    assert set(record) == {
        "question",
        "answer",
        "stop_reason",
        "model",
        "document",
        "method",
        "tokens",
        "timings",
        "memory",
    }
    assert record["question"] == "Who?" and isinstance(record["answer"], str)
    assert record["model"]["architecture"] == "qwen2" and record["model"]["dtype"] == "float32"
    assert record["model"]["source"] == str(cli_models["qwen2"])
    source = record["document"]["sources"][0]
    assert source["sha256"] == hashlib.sha256(doc.read_bytes()).hexdigest() and source["kind"] == "text"
    assert record["document"]["tokens"] > 64
    assert record["method"]["name"] == "dca" and record["method"]["pretraining_length"] == 64
    assert (
        record["method"]["settings"]["chunk_size"] == 48 and record["method"]["settings"]["local_window"] == 8
    )
    assert record["method"]["logit_factor"] > 1.0 and record["method"]["extension"] > 1
    assert record["tokens"]["generated_tokens"] <= 5
    assert record["timings"]["ttft_seconds"] > 0 and record["memory"]["peak"]["cpu"]["rss"] > 0
    assert "answer" not in err


def test_several_questions_one_prefill(cli_models, doc):
    args = [
        str(doc),
        "-q",
        "first?",
        "-q",
        "second?",
        "-m",
        str(cli_models["qwen2"]),
        "--max-new-tokens",
        "3",
    ]
    code, out, _ = ask(*args, "--json")
    first, second = (json.loads(line) for line in out.splitlines())
    assert code == 0 and first["question"] == "first?" and second["question"] == "second?"
    assert first["tokens"]["reused_tokens"] == 0
    assert second["tokens"]["reused_tokens"] > first["document"]["tokens"]


def test_quiet_prints_only_the_answer(cli_models, doc):
    code, out, err = ask(str(doc), "Who?", "-m", str(cli_models["llama"]), "--max-new-tokens", "3", "--quiet")
    assert code == 0 and out.strip() and err == ""


def test_no_dca_says_so_and_warns(cli_models, doc):
    code, _, err = ask(
        str(doc),
        "Who?",
        "-m",
        str(cli_models["llama"]),
        "--max-new-tokens",
        "2",
        "--no-dca",
        "--max-context",
        "100000",
    )
    assert code == 0 and "DCA off (the model as it is) · P 64" in err
    assert "Warning: the context is longer than the model's pretraining length" in err


def test_pdf_document_with_pages(cli_models):
    code, out, err = ask(str(PDF), "Main result?", "-m", str(cli_models["llama"]), "--max-new-tokens", "2")
    assert code == 0 and out.strip()
    assert "document arxiv-2309.00071v2-yarn.pdf (18 pages · " in err


def test_over_budget_exits_3_unless_truncated(cli_models, doc):
    model = ["-m", str(cli_models["llama"]), "--max-new-tokens", "10"]
    code, out, err = ask(str(doc), "Who?", *model, "--max-context", "200")
    assert code == 3 and out == ""
    assert err.startswith("Error: the prompt needs ") and "but the limit is 200" in err and "Hint:" in err
    code, out, err = ask(str(doc), "Who?", *model, "--max-context", "200", "--truncate", "middle")
    assert code == 0 and "cut by --truncate" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dtype", "float8"], "unknown --dtype 'float8'"),
        (["--logit-scale", "lots"], "--logit-scale must be"),
        (["--local-window", "48"], "--local-window (48) must be smaller than --chunk-size (48)"),
        (["--chunk-size", "65"], "must not exceed the pretraining length"),
        (["--chunk-size", "-3"], "--chunk-size must be a positive whole number"),
        (["--color", "purple"], "--color must be one of"),
        (["--truncate", "left", "--max-context", "100"], "unknown --truncate policy"),
        (["--temperature", "-1"], "--temperature must be >= 0"),
    ],
)
def test_usage_errors_exit_2(cli_models, doc, args, message):
    code, out, err = ask(str(doc), "Who?", "-m", str(cli_models["llama"]), *args)
    assert code == 2 and out == ""
    assert err.startswith("Error: ") and message in err and len(err.splitlines()) <= 2


def test_document_errors(tmp_path, cli_models):
    model = ["-m", str(cli_models["llama"])]
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    blank_pdf = tmp_path / "scan.pdf"
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.write(blank_pdf)
    locked = tmp_path / "locked.pdf"
    writer = PdfWriter(clone_from=PDF)
    writer.encrypt("secret", algorithm="RC4-128")
    writer.write(locked)
    cases = [
        (tmp_path / "missing.pdf", 2, "no such file"),
        (tmp_path, 2, "is a directory"),  # a path naming the wrong kind of thing: the command must change
        (empty, 1, "is empty"),
        (binary, 1, "does not look like text or PDF"),
        (blank_pdf, 1, "has no text layer"),
        (locked, 1, "encrypted"),
    ]
    for path, expected, message in cases:
        code, out, err = ask(str(path), "Who?", *model)
        assert (code, out) == (expected, ""), path
        assert err.startswith("Error: ") and message in err and "Hint: " in err, err
        assert "Traceback" not in err
    code, out, err = ask(str(locked), "Who?", *model, "--password", "secret", "--max-new-tokens", "1")
    assert code == 0 and "18 pages" in err


def test_model_errors(tmp_path, doc):
    code, _, err = ask(str(doc), "Who?", "-m", str(tmp_path / "nowhere"))
    assert code == 2 and "Error: no such model directory" in err  # exit 2, as for a missing document
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "pytorch_model.bin").write_bytes(b"x")
    code, _, err = ask(str(doc), "Who?", "-m", str(tmp_path / "weights"))
    assert code == 2 and "has no config.json (it holds pytorch_model.bin)" in err
    assert "chunkqa reads a model folder as save_pretrained writes it" in err
    code, _, err = ask(str(doc), "Who?", "-m", "nobody/not-cached-model")
    assert code == 1 and "offline, and it is not in the Hugging Face cache" in err


def test_unsupported_architecture(tmp_path, doc, cli_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config

    path = tmp_path / "gpt2"
    tok = AutoTokenizer.from_pretrained(cli_models["llama"])
    AutoModelForCausalLM.from_config(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok))
    ).save_pretrained(path)
    tok.save_pretrained(path)
    code, _, err = ask(str(doc), "Who?", "-m", str(path))
    assert code == 1 and "DCA does not support the 'gpt2' architecture" in err and "--no-dca" in err
    code, out, _ = ask(
        str(doc), "Who?", "-m", str(path), "--no-dca", "--max-new-tokens", "2", "--max-context", "2000"
    )
    assert code == 0 and out.strip()


def test_settings_precedence(tmp_path, monkeypatch, cli_models, doc):
    config = tmp_path / "config.toml"
    config.write_text(f'model = "{cli_models["qwen2"]}"\nmax_new_tokens = 2\n')
    monkeypatch.setenv("CHUNKQA_CONFIG", str(config))
    _, _, err = ask(str(doc), "Who?")
    assert err.startswith(f"model {cli_models['qwen2']} ")  # config file
    monkeypatch.setenv("CHUNKQA_MODEL", str(cli_models["llama"]))
    _, _, err = ask(str(doc), "Who?")
    assert err.startswith(f"model {cli_models['llama']} ")  # environment beats the config file
    _, _, err = ask(str(doc), "Who?", "-m", str(cli_models["qwen2"]))
    assert err.startswith(f"model {cli_models['qwen2']} ")  # the flag beats both


def test_inspect_loads_no_weights(cli_models, doc):
    result = CliRunner().invoke(app, ["inspect", str(doc), "-m", str(cli_models["llama"]), "--json"])
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert (
        record["fits"] is True
        and record["pretraining_length"] == 64
        and record["method"]["settings"]["chunk_size"] == 48
    )
    assert record["tokens"]["document"] > 64 and record["memory"]["kv_cache"] > 0
    result = CliRunner().invoke(
        app, ["inspect", str(PDF), "-m", str(cli_models["llama"]), "--max-context", "500"]
    )
    assert result.exit_code == 3 and "does NOT fit" in result.stdout and "18 pages" in result.stdout


def test_inspect_counts_the_prefill_piece_in_the_estimate(cli_models, doc):
    def memory(*flags: str) -> dict:
        args = ["inspect", str(doc), "-m", str(cli_models["llama"]), "--json", *flags]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)["memory"]

    default, small = memory(), memory("--prefill-chunk", "16")
    assert (default["prefill_piece"], small["prefill_piece"]) == (4096, 16)  # the CPU's default piece
    assert small["activations"] < default["activations"] and small["kv_cache"] == default["kv_cache"]
    text = CliRunner().invoke(
        app, ["inspect", str(doc), "-m", str(cli_models["llama"]), "--prefill-chunk", "16"]
    )
    assert "prefill in pieces of 16 tokens" in text.stdout


# ---- the process itself ----------------------------------------------------------------------


def test_help_and_file_errors_do_not_import_torch(tmp_path):
    probe = (
        "import sys, atexit; "
        "atexit.register(lambda: sys.stderr.write('TORCH=%s' % ('torch' in sys.modules)));"
        "from chunkqa.cli.app import main; sys.argv = ['chunkqa'] + sys.argv[1:]; main()"
    )
    for args in (["--help"], ["ask", "--help"], ["ask", str(tmp_path / "missing.txt"), "q?"], ["ask", "x"]):
        proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=ROOT)
        assert "TORCH=False" in proc.stderr, (args, proc.stderr)


def test_usage_errors_from_the_entry_point():
    code, out, err = cli("ask", "--no-such-flag", "a", "b")
    assert (
        code == 2
        and out == ""
        and err.startswith("Error: No such option: --no-such-flag")
        and err.endswith("\nHint: see `chunkqa ask --help`\n")
        and len(err.splitlines()) == 2
    )
    code, _, err = cli("ask", "only-one-arg")
    assert code == 2 and err.startswith("Error: give at least one document and a question")
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("chunkqa ")
    code, out, _ = cli("--help")
    assert code == 0 and "Exit codes:" in out and "130 interrupted" in out


def test_stdin_pipe_and_head(cli_models, doc):
    code, out, err = cli(
        "ask", "-", "Who?", "-m", str(cli_models["llama"]), "--max-new-tokens", "3", input=LONG_TEXT.encode()
    )
    assert code == 0 and out.strip() and "document stdin" in err
    shell = (
        f"{sys.executable} -m chunkqa ask {doc} 'Who?' -m {cli_models['llama']} --max-new-tokens 400 "
        '| head -c 1; echo " rc=${PIPESTATUS[0]}"'
    )
    proc = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.stdout.endswith(" rc=0\n") and "Traceback" not in proc.stderr and "Error" not in proc.stderr


def test_interrupt_exits_130(cli_models, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text(LONG_TEXT * 40)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chunkqa",
            "ask",
            str(big),
            "Who?",
            "-m",
            str(cli_models["llama"]),
            "--prefill-chunk",
            "64",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.time() + 120
    banner = ""
    while "DCA on" not in banner and time.time() < deadline:
        banner += proc.stderr.readline()
    proc.send_signal(signal.SIGINT)  # the weights are loading, or the document being prefilled
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Error: interrupted" in err and "Traceback" not in err


INTERRUPT_IN_STRING_EXEC = """
import chunkqa.documents

def load_document(*args, **kwargs):  # as if Ctrl-C landed inside code a library runs from a string
    exec("raise KeyboardInterrupt", {})

chunkqa.documents.load_document = load_document
"""


def test_interrupt_inside_string_exec_still_exits_130(doc, tmp_path):
    """Under `python -m`, CPython turns such an interrupt into death by SIGINT (-2) unless it is forgotten."""
    (tmp_path / "sitecustomize.py").write_text(INTERRUPT_IN_STRING_EXEC)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        [sys.executable, "-m", "chunkqa", "inspect", str(doc)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "Error: interrupted" and proc.stdout == ""


def test_several_documents_in_one_question(cli_models, doc, tmp_path):
    other = tmp_path / "other.md"
    other.write_text("# Notes\n\nA second document about the age of foolishness. " * 5)
    code, out, err = ask(
        str(doc),
        str(other),
        "How do they differ?",
        "-m",
        str(cli_models["llama"]),
        "--json",
        "--max-new-tokens",
        "2",
        "--no-cache",
    )
    assert code == 0
    record = json.loads(out)
    assert [s["name"] for s in record["document"]["sources"]] == ["notes.txt", "other.md"]
    assert "document notes.txt (" in err and ", other.md (" in err
