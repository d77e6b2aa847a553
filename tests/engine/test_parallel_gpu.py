"""Tensor parallelism on CUDA GPUs (DeepSpeed AutoTP over NCCL), marked `gpu`: run on the device machine.

With two or more GPUs the model is sharded over two ranks; with one, DeepSpeed still initialises NCCL
and wraps the model (tp_size 1), so its GPU path runs. The CPU path (gloo, 2 ranks) is test_tp.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed not installed"),
]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def ranks() -> int:
    return 2 if torch.cuda.device_count() >= 2 else 1


def test_sharded_dca_matches_one_gpu(cli_models):
    world = ranks()
    worker = ROOT / "tests" / "tp_worker.py"
    proc = subprocess.run(
        [*TORCHRUN, "--nproc-per-node", str(world), str(worker), str(cli_models["llama"]), str(world)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    print("tp", record)
    assert record["world"] == world
    for method, errors in record["errors"].items():  # dca and selfextend
        assert errors["prefill"] < 1e-4 and errors["decode"] < 1e-4, method


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cli_answers_alike_on_two_gpus(cli_models, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("It was the best of times, it was the worst of times. " * 40)
    args = ["-m", "chunkqa", "ask", str(doc), "What?", "-m", str(cli_models["llama"]), "--json"]
    args += ["--max-new-tokens", "8", "--dtype", "float32", "--no-cache"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    one = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr[-4000:]
    two = subprocess.run(
        [*TORCHRUN, "--nproc-per-node", "2", *args, "--tp", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert two.returncode == 0, two.stderr[-4000:]
    assert json.loads(two.stdout)["tokens"] == json.loads(one.stdout)["tokens"]
