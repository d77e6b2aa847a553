"""The method choice through the CLI: ask, inspect and eval know the method and its settings."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chunkqa.cli.app import app

TEXT = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 30


@pytest.fixture
def doc(tmp_path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text(TEXT)
    return path


@pytest.fixture
def short(tmp_path) -> Path:
    """About 170 tokens: within SelfExtend's longest sequence (208) and the stretched windows below."""
    path = tmp_path / "short.txt"
    path.write_text(TEXT[: len(TEXT) // 6])
    return path


def chunkqa(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def ask_json(model, doc, *flags: str) -> dict:
    code, out, err = chunkqa(
        "ask", str(doc), "Who?", "-m", str(model), "--json", "--max-new-tokens", "3", *flags
    )
    assert code == 0, err
    return json.loads(out)


def test_selfextend_in_the_banner_and_the_record(cli_models, doc, short):
    record = ask_json(
        cli_models["llama"], short, "--method", "selfextend", "--group-size", "4", "--window", "16"
    )
    method = record["method"]
    assert method["name"] == "selfextend" and method["pretraining_length"] == 64
    assert method["settings"] == {
        "method": "selfextend", "pretraining_length": 64, "group_size": 4, "window": 16, "max_length": 208,
    }  # fmt: skip
    code, out, _ = chunkqa("inspect", str(doc), "-m", str(cli_models["llama"]), "--method", "selfextend")
    assert code == 0 and "SelfExtend · P 64 · group size" in out


def test_selfextend_defaults_follow_the_prompt_and_its_cache_is_counted_larger(cli_models, doc):
    def inspect(*flags):
        _, out, _ = chunkqa("inspect", str(doc), "-m", str(cli_models["llama"]), "--json", *flags)
        return json.loads(out)

    se, dca = inspect("--method", "selfextend"), inspect()
    settings = se["method"]["settings"]
    assert settings["max_length"] >= se["tokens"]["total"]  # G chosen so that the prompt fits
    assert se["memory"]["kv_cache"] * 2 == dca["memory"]["kv_cache"] * 3  # keys kept twice: 3 tensors, not 2
    assert se["tokens"]["limit"] == settings["max_length"]  # its longest sequence is the default limit


def test_rope_alone_and_under_dca(cli_models, doc, short):
    rope = ask_json(cli_models["llama"], short, "--method", "rope", "--rope", "linear:4")["method"]
    assert (rope["name"], rope["settings"], rope["rope"]) == ("rope", None, "linear:4")
    assert rope["pretraining_length"] == 256  # the stretched window: 4 x 64
    under = ask_json(cli_models["llama"], doc, "--rope", "yarn:2")["method"]
    assert (under["name"], under["rope"], under["pretraining_length"]) == ("dca", "yarn:2", 128)
    assert (under["settings"]["chunk_size"], under["settings"]["local_window"]) == (96, 16)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--group-size", "4"], "--group-size is a setting of selfextend, not of dca"),
        (
            ["--method", "selfextend", "--chunk-size", "20"],
            "--chunk-size is a setting of dca, not of selfextend",
        ),
        (["--method", "selfextend", "--rope", "yarn:2"], "--rope is a setting of"),
        (["--rope", "dynamic:2"], "does nothing under DCA"),
        (["--method", "rope"], "the method rope needs a --rope scaling"),
        (["--method", "magic"], "unknown --method 'magic'"),
        (["--no-dca", "--method", "dca"], "--no-dca and --method dca contradict each other"),
        (["--rope", "cubic:2"], "unknown --rope scaling 'cubic'"),
    ],
)
def test_settings_of_another_method_are_refused(cli_models, doc, flags, message):
    code, out, err = chunkqa("ask", str(doc), "Who?", "-m", str(cli_models["llama"]), *flags)
    assert code == 2 and out == "" and message in err, err


def test_the_config_file_and_environment_choose_the_method(cli_models, doc, clean_env, monkeypatch):
    clean_env.config.parent.mkdir(parents=True)
    clean_env.config.write_text('method = "selfextend"\nwindow = 16\nchunk_size = 40\n')  # chunk_size: DCA's
    assert ask_json(cli_models["llama"], doc)["method"]["settings"]["window"] == 16
    monkeypatch.setenv("CHUNKQA_METHOD", "dca")  # the environment beats the file; its chunk_size applies now
    assert ask_json(cli_models["llama"], doc)["method"]["settings"]["chunk_size"] == 40


def test_eval_runs_several_methods_in_one_table(cli_models, tmp_path):
    code, out, err = chunkqa(
        "eval", "ppl", "-m", str(cli_models["llama"]), "--data", str(_book(tmp_path)), "--lengths", "1x,2x",
        "--windows", "1", "--setting", "none", "--setting", "dca", "--setting", "selfextend,window=16",
        "--setting", "rope,rope=linear:2", "--json",
    )  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["setting"], r["length"]) for r in records][::2] == [
        ("none", 64), ("dca", 64), ("selfextend,window=16", 64), ("rope,rope=linear:2", 64)
    ]  # fmt: skip
    by = {r["setting"]: r for r in records if r["length"] == 128}
    assert by["selfextend,window=16"]["method_settings"]["window"] == 16
    assert by["rope,rope=linear:2"]["rope"] == "linear:2" and by["none"]["method_settings"] is None
    assert len({by[s]["value"] for s in by}) == 4  # four ways of running the same windows


def _book(tmp_path: Path) -> Path:
    """Varied words: on repeated text, a tiny random model's scores barely depend on positions at all."""
    words = [
        "best",
        "times",
        "age",
        "wisdom",
        "folly",
        "belief",
        "season",
        "light",
        "darkness",
        "spring",
        "hope",
        "winter",
        "despair",
    ]
    rng = random.Random(0)
    path = tmp_path / "book.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(600)))
    return path
