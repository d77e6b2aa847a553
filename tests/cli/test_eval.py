"""`chunkqa eval ppl|passkey|needle` and `chunkqa selftest` through the real CLI, stdout and stderr apart.

Tiny random models (P = 64) cannot find pass keys or needles: these tests check what the commands
print and write, not what a model scores. Usage errors also run as a subprocess through `main()`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from chunkqa.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
TEXT = "It was the best of times, it was the worst of times. It was the age of wisdom, and of folly.\n\n" * 30
RECORD_KEYS = {
    "eval",
    "model",
    "setting",
    "method",
    "method_settings",
    "rope",
    "pretraining_length",
    "length",
    "metric",
    "value",
    "n",
    "seed",
}


@pytest.fixture(autouse=True)
def one_thread():
    """DCA runs many small ops: on a busy 2-core machine torch's 2 threads made these tests 6x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def text(tmp_path) -> str:
    path = tmp_path / "book.txt"
    path.write_text(TEXT)
    return str(path)


def chunkqa(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_ppl_prints_a_table_on_stdout_and_progress_on_stderr(cli_models, text):
    code, out, err = chunkqa(
        "eval",
        "ppl",
        "-m",
        str(cli_models["llama"]),
        "--data",
        text,
        "--lengths",
        "1x,128",
        "--windows",
        "2",
        "--compare",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["length", "x", "P", "no", "DCA", "DCA", "scale=1.0"]
    assert [line.split()[:2] for line in lines[1:]] == [["64", "1"], ["128", "2"]]
    assert all(float(v) > 1 for line in lines[1:] for v in line.split()[2:])
    assert "model " in err and "perplexity · 2 windows per length from book.txt" in err
    assert "no DCA · 128 tokens · ppl" in err and "model" not in out


def test_ppl_json_lines_on_stdout_and_in_a_file(cli_models, text, tmp_path):
    jsonl = tmp_path / "runs.jsonl"
    jsonl.write_text('{"earlier": true}\n')
    code, out, err = chunkqa(
        "eval",
        "ppl",
        "-m",
        str(cli_models["llama"]),
        "--data",
        text,
        "--lengths",
        "64,100",
        "--windows",
        "2",
        "--logit-scale",
        "1,auto:0.1",
        "--json",
        "--jsonl",
        str(jsonl),
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["setting"], r["length"]) for r in records] == [
        ("DCA scale=1.0", 64),
        ("DCA scale=1.0", 100),
        ("DCA auto:0.1", 64),
        ("DCA auto:0.1", 100),
    ]
    for record in records:
        assert set(record) >= RECORD_KEYS
        assert (record["eval"], record["metric"], record["n"], record["seed"]) == ("ppl", "ppl", 2, None)
        assert record["method_settings"]["chunk_size"] == 48 and record["predictions"] == 2 * (
            record["length"] - 1
        )
    assert jsonl.read_text().splitlines() == ['{"earlier": true}', *out.splitlines()]  # appended


def test_passkey_compares_settings_in_one_table(cli_models):
    code, out, err = chunkqa(
        "eval",
        "passkey",
        "-m",
        str(cli_models["llama"]),
        "--lengths",
        "300,400",
        "--trials",
        "2",
        "--compare",
        "--logit-scale",
        "1,auto",
        "--seed",
        "7",
    )
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split("  ")[-3:] == ["no DCA", "DCA scale=1.0", "DCA auto"]
    assert [row.split()[0] for row in rows] == ["300", "400"]
    assert all(row.endswith("%") for row in rows)
    assert "pass key · 2 trials per length and layout (lines), seeds 7..8" in err


def test_passkey_json_records(cli_models):
    code, out, _ = chunkqa(
        "eval", "passkey", "-m", str(cli_models["llama"]), "--lengths", "300", "--trials", "3", "--json"
    )
    assert code == 0
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert set(record) >= RECORD_KEYS
    assert (record["eval"], record["metric"], record["seeds"], record["setting"]) == (
        "passkey",
        "accuracy",
        [0, 2],
        "DCA scale=1.0",
    )
    assert record["correct"] == round(record["value"] * 3) and abs(record["mean_tokens"] - 300) < 5


def test_needle_table_and_heatmap(cli_models, text, tmp_path):
    png = tmp_path / "heat.png"
    code, out, err = chunkqa(
        "eval",
        "needle",
        "-m",
        str(cli_models["qwen2"]),
        "--data",
        text,
        "--lengths",
        "600,400",
        "--depths",
        "1,0",
        "--trials",
        "1",
        "--compare",
        "--plot",
        str(png),
    )
    assert code == 0, err
    blocks = out.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["no DCA", "DCA scale=1.0"]
    assert blocks[1].splitlines()[1].split() == ["depth", "400", "600"]
    assert [line.split()[0] for line in blocks[1].splitlines()[2:]] == ["0%", "100%"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert f"heatmap written to {png}" in err


def test_quiet_leaves_stderr_empty(cli_models):
    code, out, err = chunkqa(
        "eval", "passkey", "-m", str(cli_models["llama"]), "--lengths", "300", "--trials", "1", "--quiet"
    )
    assert code == 0 and err == ""
    assert out.startswith("length")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "ppl", "--lengths", "1k,abc"], "Error: bad length 'abc' in --lengths"),
        (
            ["eval", "passkey", "--lengths", "1"],
            "Error: length '1' must be a whole number of at least 2 tokens",
        ),
        (["eval", "needle", "--depths", "2"], "Error: depth '2' is outside 0..1"),
        (["eval", "passkey", "--trials", "0"], "Error: --trials must be at least 1, got 0"),
    ],
)
def test_bad_options_exit_2_with_one_error_line(args, message):
    proc = subprocess.run(
        [sys.executable, "-c", "from chunkqa.cli.app import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(message), proc.stderr


def test_jsonl_in_a_missing_folder_fails_before_loading(tmp_path):
    code, out, err = chunkqa(
        "eval", "passkey", "-m", "no/such-model", "--jsonl", str(tmp_path / "x" / "r.jsonl")
    )
    assert code == 2 and out == ""
    assert err.startswith("Error: cannot write")


def test_selftest_fails_on_a_random_model(cli_models):
    code, out, err = chunkqa("selftest", "-m", str(cli_models["llama"]), "--lengths", "300", "--trials", "2")
    assert code == 1
    assert out.splitlines()[0].startswith("patch check on 64 tokens") and "(active)" in out
    row = out.splitlines()[-1].split()
    assert (row[0], row[1], row[3:]) == ("300", "4.688", ["0/2", "FAIL"])
    assert "Error: selftest failed: pass-key accuracy 0/2 at 300 tokens" in err
    assert "Hint:" in err


def test_eval_without_a_command_shows_help():
    """Through the real entry point: the group's help on stdout, exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "chunkqa", "eval"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0 and "ppl" in proc.stdout and "needle" in proc.stdout and proc.stderr == ""
