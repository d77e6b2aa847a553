"""The README stays true: its commands, files and option list match the code and CI."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from chunkqa.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_ask_option_is_documented():
    ask = get_command(app).commands["ask"]
    options = {
        opt for p in ask.params if not getattr(p, "hidden", False) for opt in p.opts if opt.startswith("--")
    }
    missing = sorted(opt for opt in options if f"`{opt}`" not in README and f"{opt}`" not in README)
    assert not missing, f"README misses {missing}"


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    block = README.split("## Quick start", 1)[1].split("## Using it", 1)[0]
    commands = re.findall(r"```sh\n(.+?)\n```", block)
    assert len(commands) == 2
    setup, tests = commands
    assert (
        "pip install torch==2.13.0 -e '.[dev]'" in setup and "chunkqa ask examples/passkey-demo.txt" in setup
    )
    test_command = tests.split("&&")[-1].strip()
    assert test_command == "python -m pytest -q"
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_files_the_readme_names_exist():
    for path in (
        "examples/passkey-demo.txt",
        "sample_pdfs/LICENSES.md",
        "prompts/system.txt",
        "prompts/qa.txt",
        "prompts/summary.txt",
        "prompts/base.txt",
        "benchmarks/dca_attention.py",
    ):
        assert (ROOT / path).exists(), path


def test_the_environment_twins_are_as_the_readme_says():
    """Every ask option has a CHUNKQA_* twin named after it, but the per-run ones the README names."""
    ask = get_command(app).commands["ask"]
    without = {"--question", "--json", "--quiet", "--debug", "--no-dca", "--help"}
    for param in ask.params:
        flag = next((o for o in param.opts if o.startswith("--")), None)
        if flag is None or getattr(param, "hidden", False):
            continue
        if flag in without:
            assert not param.envvar, flag
        else:
            assert param.envvar, f"{flag} has no environment twin"
    for flag in without - {"--help"}:
        assert f"`{flag}`" in README or "`-q`" in README


def test_every_config_key_is_listed():
    from chunkqa.cli.settings import DEFAULTS

    section = README.split("The config file takes these keys", 1)[1].split("A bad", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", section)) == set(DEFAULTS)
