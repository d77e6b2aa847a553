"""Tensor parallelism (`--tp`, DeepSpeed AutoTP): two CPU processes over gloo give the same answer.

Runs where DeepSpeed is installed (CI installs it); on a multi-GPU machine the same commands use NCCL.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 25
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed not installed"
)


def chunkqa(args: list[str], launcher: list[str] | None = None, stdin: str | None = None, ext_dir=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if ext_dir is not None:  # where a JIT-compiled DeepSpeed op would land (none should)
        env["TORCH_EXTENSIONS_DIR"] = str(ext_dir)
    proc = subprocess.run(
        [sys.executable, *(launcher or []), "-m", "chunkqa", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    return proc.returncode, proc.stdout, proc.stderr


TORCHRUN = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]  # a free port


@pytest.fixture
def doc(tmp_path) -> Path:
    path = tmp_path / "doc.txt"
    path.write_text(DOC)
    return path


@needs_deepspeed
def test_two_ranks_answer_like_one(cli_models, doc, tmp_path):
    args = ["ask", str(doc), "What?", "-m", str(cli_models["llama"]), "--json", "--max-new-tokens", "8"]
    code, out, err = chunkqa([*args, "--no-cache"])
    assert code == 0, err
    single = json.loads(out)
    extensions = tmp_path / "torch-extensions"
    code, out, err = chunkqa([*args, "--tp", "2"], launcher=TORCHRUN, ext_dir=extensions)
    assert code == 0, err
    assert len(out.splitlines()) == 1  # rank 0 alone answers; DeepSpeed's notes went to stderr
    sharded = json.loads(out)
    assert sharded["answer"] == single["answer"]
    assert sharded["tokens"] == single["tokens"]
    assert err.count("DCA on · P 64") == 1  # one banner
    # DeepSpeed's CPU shared-memory op is not compiled: chunkqa never uses it (see tp._no_cpu_shm_op)
    assert "built successfully" not in err and not extensions.exists()


@needs_deepspeed
def test_each_rank_holds_its_share_of_the_heads_and_computes_the_same_logits(cli_models):
    """Sharding really happens: each of 2 ranks holds half of every projection's heads (q, k, v by
    rows, o by columns), and DCA and SelfExtend on the shards give one process's logits."""
    worker = ROOT / "tests" / "tp_worker.py"
    proc = subprocess.run(
        [sys.executable, *TORCHRUN, str(worker), str(cli_models["llama"]), "2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}",
        },
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    full = record["full"]
    assert len(record["ranks"]) == 2
    for shapes in record["ranks"]:
        for name in ("q_proj", "k_proj", "v_proj"):
            assert shapes[name] == [full[name][0] // 2, full[name][1]], (name, shapes, full)
        assert shapes["o_proj"] == [full["o_proj"][0], full["o_proj"][1] // 2]
    for method, errors in record["errors"].items():
        assert errors["prefill"] < 1e-5 and errors["decode"] < 1e-5, (method, errors)


@needs_deepspeed
def test_stdin_is_read_by_rank_0_and_shared(cli_models):
    args = [
        "ask",
        "-",
        "What?",
        "-m",
        str(cli_models["llama"]),
        "--tp",
        "2",
        "--max-new-tokens",
        "3",
        "--quiet",
    ]
    code, out, err = chunkqa(args, launcher=TORCHRUN, stdin=DOC)
    assert code == 0, err
    assert out.strip()


@needs_deepspeed
def test_an_input_error_stops_every_rank(cli_models, tmp_path):
    args = ["ask", str(tmp_path / "missing.txt"), "What?", "-m", str(cli_models["llama"]), "--tp", "2"]
    code, out, err = chunkqa(args, launcher=TORCHRUN)
    assert code != 0 and out == "" and "Error: no such file" in err


def test_tp_without_a_launcher_is_a_usage_error(doc):
    code, out, err = chunkqa(["ask", str(doc), "What?", "--tp", "2"])
    assert code == 2 and out == ""
    assert "--tp 2 needs 2 processes" in err and "torchrun --nproc-per-node 2" in err
