"""benchmarks/tp.py: two CPU ranks over gloo really shard the model and write one row per length;
one process (no launcher, no DeepSpeed) gives the unsharded baseline in the same format."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from tp import SHAPES, make_config, sum_weights

from chunkqa.budget import kv_bytes_per_token

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "tp.py"

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
SMALL = ["--shape", "tiny", "--lengths", "300,600", "--piece", "128", "--steps", "3"]  # P is 256
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed not installed"
)


def run_tp(out: Path, launcher: list[str], ext_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """Run the script on the CPU; the rows it wrote and its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": str(ext_dir)}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, *launcher, str(SCRIPT), *SMALL, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in (out / "tp.jsonl").read_text().splitlines()]
    return rows, proc.stdout


def check_rows(rows: list[dict[str, Any]], world: int) -> None:
    """One row per length, with positive times and every rank's figures."""
    assert [row["length"] for row in rows] == [300, 600]
    for row in rows:
        assert row["world"] == world and row["shape"] == "tiny" and row["method"] == "dca"
        assert row["prefill_s"] > 0 and row["decode_ms"] > 0 and row["decode"] == "eager"
        assert row["peak_gib"] is None and row["graph_ms"] is None  # the CPU has neither
        assert [r["rank"] for r in row["ranks"]] == list(range(world))
        assert row["prefill_s"] == max(r["prefill_s"] for r in row["ranks"])
        assert row["decode_ms"] == max(r["decode_ms"] for r in row["ranks"])


@needs_deepspeed
def test_two_gloo_ranks_shard_the_heads_and_write_one_row_per_length(tmp_path):
    extensions = tmp_path / "torch-extensions"
    rows, stdout = run_tp(tmp_path / "out", TORCHRUN, extensions)
    check_rows(rows, world=2)
    for row in rows:
        assert row["backend"] == "gloo"
        # each rank holds half of every layer's heads (q, k, v by rows, o by columns)
        for rank in row["ranks"]:
            assert rank["q_heads"] * 2 == row["heads"] and rank["kv_heads"] * 2 == row["kv_heads"]
            assert rank["q_out"] * 2 == row["hidden"] and rank["o_in"] * 2 == row["hidden"]
            assert rank["weights_gib"] < 0.6 * row["model_gib"]  # only the embedding is replicated
        assert len({rank["last_token"] for rank in row["ranks"]}) == 1  # one model's logits on both
        kv_share = row["kv_gib"] / 2
        assert row["floor_gib"] == pytest.approx(max(r["weights_gib"] for r in row["ranks"]) + kv_share)
    assert stdout.count("prefill_tok_s") == 1  # rank 0 alone prints the table
    assert not extensions.exists()  # DeepSpeed's CPU shared-memory op was not compiled


def test_one_process_runs_unsharded_without_a_launcher(tmp_path):
    rows, stdout = run_tp(tmp_path / "out", [], tmp_path / "torch-extensions")
    check_rows(rows, world=1)
    for row in rows:
        assert row["backend"] is None
        (rank,) = row["ranks"]
        assert (rank["q_heads"], rank["kv_heads"]) == (row["heads"], row["kv_heads"])
        assert rank["weights_gib"] == pytest.approx(row["model_gib"])
    assert "decode_ms" in stdout


def test_the_70b_shape_is_llama3_70b_and_layers_override_it():
    config = make_config(SHAPES["llama3-70b"])
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (80, 8192, 28672)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (64, 8, 128256)
    assert 70.5e9 < sum_weights(config, torch.bfloat16) / 2 < 70.7e9  # Llama-3-70B's 70.6B parameters
    assert kv_bytes_per_token(config, 2) == 80 * 8 * 128 * 2 * 2  # 320 KiB a token in bf16
    assert make_config(SHAPES["llama3-70b"], layers=40).num_hidden_layers == 40
