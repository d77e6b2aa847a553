"""The issue's claims on chunkqa's bundled tiny model (P = 256), through the real CLI.

With DCA, perplexity at 4x P is far below that without DCA; pass keys at 8x P are found with DCA on
a fixed set of seeds; the eval commands write their table, JSON lines and heatmap with it.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from chunkqa.cli.app import app
from chunkqa.engine.hub import BUNDLED
from chunkqa.evals.data import default_data_dir

pytestmark = pytest.mark.skipif(
    not (BUNDLED["tiny"] / "model.safetensors").exists(),
    reason="the bundled tiny model is not in this checkout",
)
PDF = BUNDLED["tiny"].parents[2] / "sample_pdfs" / "arxiv-2309.00071v2-yarn.pdf"


@pytest.fixture(autouse=True)
def one_thread():
    """DCA runs many small ops: on a busy 2-core machine torch's 2 threads made these tests 6x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def records(*args: str) -> list[dict]:
    result = CliRunner().invoke(app, [*args, "-m", "tiny", "--json"])
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def text_args() -> list[str]:
    """The shortest validation book when the books are here, else a paper shipped in the repository."""
    book = default_data_dir() / "2376.txt"
    return ["--data", str(book if book.is_file() else PDF)]


def test_perplexity_at_4x_is_far_lower_with_dca():
    found = records(
        "eval",
        "ppl",
        "--lengths",
        "1x,4x",
        "--windows",
        "3",
        "--compare",
        "--logit-scale",
        "auto",
        *text_args(),
    )
    ppl = {(r["setting"], r["length"]): r["value"] for r in found}
    assert ppl["DCA auto", 1024] < ppl["no DCA", 1024] / 3
    assert ppl["DCA auto", 1024] < 1.3 * ppl["DCA auto", 256]  # near its 1x value


def test_pass_keys_at_8x_are_found_with_dca():
    (found,) = records(
        "eval", "passkey", "--lengths", "8x", "--trials", "5", "--seed", "0", "--logit-scale", "auto"
    )
    assert found["length"] == 2048 and found["setting"] == "DCA auto"
    assert found["correct"] == 5, found["misses"]


def test_selftest_passes():
    result = CliRunner().invoke(app, ["selftest", "-m", "tiny", "--lengths", "8x", "--trials", "3"])
    assert result.exit_code == 0, result.stderr
    assert "(active)" in result.stdout and "(intact)" in result.stdout
    assert result.stdout.splitlines()[-1].endswith("3/3    pass")


def test_needle_table_json_lines_and_heatmap(tmp_path):
    png, jsonl = tmp_path / "needle.png", tmp_path / "needle.jsonl"
    result = CliRunner().invoke(
        app,
        ["eval", "needle", "-m", "tiny", "--lengths", "2x", "--depths", "0.5", "--trials", "2", "--compare",
         "--logit-scale", "auto", "--plot", str(png), "--jsonl", str(jsonl), *text_args()],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[:3] == ["no DCA", "depth  512", "50%     0%"]
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(r["setting"], r["depth"], r["length"]) for r in lines] == [
        ("no DCA", 0.5, 512),
        ("DCA auto", 0.5, 512),
    ]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
