"""The document cache from the command line: cached `ask` runs, --no-cache, `chunkqa cache list|clear`."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from typer.testing import CliRunner

from chunkqa.cache.entry import list_entries, write_entry
from chunkqa.cli.app import app

DOC = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 12


@pytest.fixture
def setup(tmp_path, cli_models):
    doc = tmp_path / "doc.txt"
    doc.write_text(DOC)
    env = {
        "CHUNKQA_CACHE_DIR": str(tmp_path / "kv"),
        "CHUNKQA_CACHE_MIN_TOKENS": None,
        "CHUNKQA_CACHE_SIZE": None,
        "NO_COLOR": "1",
    }
    return {
        "tmp": tmp_path,
        "doc": str(doc),
        "model": str(cli_models["qwen2"]),
        "env": env,
        "kv": tmp_path / "kv",
    }


def invoke(setup, *args: str, **env: str):
    return CliRunner().invoke(app, list(args), env={**setup["env"], **env})


def ask_json(setup, *extra: str, **env: str) -> tuple[list[dict], str]:
    args = ["ask", setup["doc"], "-q", "What is the main result?", "-q", "Who wrote it?"]
    result = invoke(setup, *args, "-m", setup["model"], "--max-new-tokens", "10", "--json", *extra, **env)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def answers(records: list[dict]) -> list[tuple[str, int]]:
    return [(r["answer"], r["tokens"]["generated_tokens"]) for r in records]


def test_a_cached_ask_gives_the_same_answers_as_an_uncached_one(setup):
    first, err = ask_json(setup, "--cache-min-tokens", "0")
    assert "document cache: saved" in err
    prefix = first[1]["tokens"]["reused_tokens"]  # the second question reused the prefix in memory
    assert first[0]["tokens"]["reused_tokens"] == 0 and prefix > 500

    second, err = ask_json(setup, "--cache-min-tokens", "0")
    assert "document cache: reused the document's" in err
    assert second[0]["tokens"]["reused_tokens"] >= prefix - 20  # the whole prefix, from disk
    assert second[0]["tokens"]["prefill_tokens"] < 40
    uncached, _ = ask_json(setup, "--no-cache")
    assert uncached[0]["tokens"]["reused_tokens"] == 0
    assert answers(first) == answers(second) == answers(uncached)
    assert len(list_entries(setup["kv"])) == 1


def test_a_damaged_entry_is_reported_and_rebuilt(setup):
    first, _ = ask_json(setup, CHUNKQA_CACHE_MIN_TOKENS="0")
    (entry,) = list_entries(setup["kv"])
    data = bytearray(entry.path.read_bytes())
    data[-64] ^= 0x01
    entry.path.write_bytes(bytes(data))
    again, err = ask_json(setup, CHUNKQA_CACHE_MIN_TOKENS="0")
    assert "Warning: document cache entry" in err and "checksum" in err
    assert again[0]["tokens"]["reused_tokens"] == 0 and answers(again) == answers(first)
    third, err = ask_json(setup, CHUNKQA_CACHE_MIN_TOKENS="0")
    assert (
        "document cache: reused" in err
        and third[0]["tokens"]["reused_tokens"] > 500
        and answers(third) == answers(first)
    )


def test_short_documents_are_not_cached_by_default(setup):
    records, err = ask_json(setup)  # about 700 prefix tokens, under the 2048 default
    assert records[0]["tokens"]["reused_tokens"] == 0 and "document cache" not in err
    assert list_entries(setup["kv"]) == []


def test_cache_list_and_clear(setup):
    ask_json(setup, "--cache-min-tokens", "0")
    listing = invoke(setup, "cache", "list")
    assert listing.exit_code == 0
    header, row = listing.stdout.splitlines()
    assert header.split() == ["LAST", "USED", "SIZE", "TOKENS", "MODEL", "DOCUMENTS"]
    assert row.endswith("doc.txt") and setup["model"] in row
    assert "1 cached document," in listing.stderr and str(setup["kv"]) in listing.stderr
    (record,) = [json.loads(line) for line in invoke(setup, "cache", "list", "--json").stdout.splitlines()]
    assert record["documents"] == ["doc.txt"] and record["tokens"] > 500 and record["readable"]

    refused = invoke(setup, "cache", "clear")  # no terminal to confirm on
    assert refused.exit_code == 2 and "--yes" in refused.stderr and len(list_entries(setup["kv"])) == 1
    cleared = invoke(setup, "cache", "clear", "--yes")
    assert cleared.exit_code == 0 and "Removed 1 cached document" in cleared.stderr
    empty = invoke(setup, "cache", "list", "--cache-dir", str(setup["kv"]))
    assert empty.stdout == "" and "0 cached documents" in empty.stderr


def test_bad_cache_settings_are_usage_errors(setup):
    args = ["ask", setup["doc"], "What?", "-m", setup["model"]]
    assert invoke(setup, *args, "--cache-min-tokens", "-1").exit_code == 2
    bad_size = invoke(setup, *args, CHUNKQA_CACHE_SIZE="lots")
    assert bad_size.exit_code == 2 and "cannot read the cache size 'lots'" in bad_size.stderr


def test_cache_clear_asks_on_a_terminal(setup):
    pexpect = pytest.importorskip("pexpect")
    tensor = torch.zeros(1, 1, 4, 4)
    write_entry(
        setup["kv"], "a" * 64, {"tokens": 4, "model": "m", "documents": ["d"]}, [(tensor, tensor + 1)]
    )
    env = {k: v for k, v in {**os.environ, **setup["env"]}.items() if v is not None}
    code = "from chunkqa.cli.app import main; main()"
    for reply, expected, left in (("n", "Nothing removed.", 1), ("y", "Removed 1 cached document", 0)):
        child = pexpect.spawn(
            sys.executable, ["-c", code, "cache", "clear"], env=env, encoding="utf-8", timeout=60
        )
        child.expect_exact("[y/N] ")
        child.sendline(reply)
        child.expect_exact(expected)
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0 and len(list_entries(setup["kv"])) == left
