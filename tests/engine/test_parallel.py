"""Tensor parallelism (`--tp`, DeepSpeed AutoTP): two CPU processes over gloo give the same answer.

Runs where DeepSpeed is installed (CI installs it); on a multi-GPU machine the same commands use NCCL.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
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
    args += ["--dtype", "float32"]  # as on the CPU, also where this runs on GPUs (scripts/gpu_tp.sh)
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
    assert code != 0 and out == "" and err.count("Error: no such file") == 1  # rank 0 says it, once
    chat = ["chat", str(tmp_path / "doc.txt"), "-m", str(cli_models["llama"]), "--tp", "2"]
    code, out, err = chunkqa(chat, launcher=TORCHRUN, stdin="")  # no terminal: every rank stops
    assert code != 0 and out == "" and err.count("Error: chunkqa chat") == 1


def test_tp_without_a_launcher_is_a_usage_error(doc):
    code, out, err = chunkqa(["ask", str(doc), "What?", "--tp", "2"])
    assert code == 2 and out == ""
    assert "--tp 2 needs 2 processes" in err and "torchrun --nproc-per-node 2" in err


SEED_SCRIPT = """
from chunkqa.engine.parallel import init_parallel, leave_parallel, same_seed
from chunkqa.engine.results import GenerationConfig

parallel = init_parallel(2)
drawn = same_seed(GenerationConfig(temperature=1.0), parallel).seed
given = same_seed(GenerationConfig(temperature=1.0, seed=5), parallel).seed
print(f"rank {parallel.rank} drawn {drawn} given {given}", flush=True)
leave_parallel(parallel)
"""


@needs_deepspeed
def test_the_ranks_sample_with_one_seed(tmp_path):
    """Unseeded generators on each rank could pick different tokens from the same logits."""
    script = tmp_path / "seed.py"
    script.write_text(SEED_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, *TORCHRUN, str(script)], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = {
        rank: (drawn, given)
        for rank, drawn, given in re.findall(r"rank (\d) drawn (\d+) given (\d+)", proc.stdout)
    }
    assert set(found) == {"0", "1"} and found["0"] == found["1"]  # rank 0 drew it, rank 1 received it
    assert found["0"][1] == "5"  # a seed the user gave is kept


def chat_transcript(model: Path, doc: Path, other: Path, launcher: list[str], tmp_path: Path) -> list[str]:
    """A chat in a terminal (pexpect): a greedy answer, a sampled one, /clear, /doc, /bye. What the
    terminal showed for each question, from the question's echo to its stats line."""
    pexpect = pytest.importorskip("pexpect")
    tp = ["--tp", "2"] if launcher else []
    args = [*launcher, "-m", "chunkqa", "chat", str(doc), "-m", str(model), "--max-new-tokens", "6", *tp]
    args += ["--dtype", "float32"]  # as on the CPU, also where this runs on GPUs (scripts/gpu_tp.sh)
    env = {**os.environ, "TERM": "dumb", "NO_COLOR": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env |= {"XDG_STATE_HOME": str(tmp_path / "state"), "CHUNKQA_CACHE_DIR": str(tmp_path / "kv")}
    child = pexpect.spawn(
        sys.executable, args, env=env, encoding="utf-8", timeout=240, dimensions=(50, 250), cwd=ROOT
    )
    shown = []

    def say(line: str, reply: str) -> None:
        child.sendline(line)
        child.expect_exact(reply)
        shown.append(child.before)
        child.expect_exact(">>> ")

    child.expect_exact(">>> ")
    say("What is it?", "context tokens")
    say("/set temperature 0.9", "temperature = 0.9")
    say("And then?", "context tokens")  # sampled, without a seed
    say("/clear", "Conversation cleared")
    say(f"/doc {other}", "document other.txt")
    say("/set temperature 0", "temperature = 0.0")
    say("What is the pass key?", "context tokens")
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "Traceback" not in "".join(shown) + child.before
    return shown


@needs_deepspeed
def test_chat_on_two_ranks_answers_like_one_process(cli_models, doc, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("The pass key is 12345. Remember it. " * 20)
    model = cli_models["qwen2"]
    alone = chat_transcript(model, doc, other, [], tmp_path / "one")
    sharded = chat_transcript(model, doc, other, TORCHRUN, tmp_path / "two")
    assert sharded[0] == alone[0] and "What is it?" in alone[0]  # the greedy answer, token for token
    assert sharded[-1] == alone[-1]  # greedy again, on the other document
    assert sharded[2].startswith("And then?")  # sampled on both ranks without a seed: no hang, no error
