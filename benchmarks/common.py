"""Shared by the benchmark scripts: environment facts, timing, JSON-lines results, a plain table."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def environment(device: torch.device) -> dict[str, Any]:
    """What a result depends on: device name, torch/transformers versions, git sha, date."""
    import transformers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
    return {
        "device": name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "git_sha": _git_sha(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _git_sha() -> str:
    """HEAD's short sha; $CHUNKQA_GIT_SHA where the tree travelled without .git (the GPU machine)."""
    if os.environ.get("CHUNKQA_GIT_SHA"):
        return os.environ["CHUNKQA_GIT_SHA"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds, after warm-up, with the device synchronised around each call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def write_results(name: str, rows: list[dict[str, Any]], out_dir: Path | None = None) -> Path:
    """Append rows as JSON lines to results/<name>.jsonl (or out_dir)."""
    directory = out_dir or RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.jsonl"
    with path.open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain aligned table of the given columns."""
    cells = [[_fmt(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(c[i]) for c in cells)) for i, col in enumerate(columns)]
    print("  ".join(col.rjust(w) for col, w in zip(columns, widths, strict=True)))
    for line in cells:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "-" if value is None else str(value)


def kernel_profile(fn: Callable[[], Any], device: torch.device, calls: int = 3, top: int = 12) -> list[dict]:
    """Where fn's time goes: the `top` operators (CPU) or GPU kernels (CUDA) by time, per call of fn.

    torch.profiler over `calls` calls after one warm-up; each row has the name (cut to 60
    characters), launches per call, ms per call and share of the total; a last row sums the rest.
    """
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        sync(device)
    events = prof.key_averages()
    if device.type == "cuda":  # GPU kernels only (the aten ops that launch them carry the same time)
        kernel = torch.autograd.DeviceType.CUDA
        timed = [
            (e.key, e.count, e.self_device_time_total)
            for e in events
            if e.device_type == kernel and not e.key.startswith("Activity Buffer")  # profiler overhead
        ]
    else:  # leaf operators by their own CPU time
        timed = [(e.key, e.count, e.self_cpu_time_total) for e in events]
    timed = sorted((t for t in timed if t[2] > 0), key=lambda t: -t[2])
    total = sum(t[2] for t in timed) or 1
    rows = [
        {"op": name[:60], "per_call": count / calls, "ms": us / calls / 1e3, "share": us / total}
        for name, count, us in timed[:top]
    ]
    rest = timed[top:]
    rows.append(
        {
            "op": f"({len(rest)} others)",
            "per_call": sum(t[1] for t in rest) / calls,
            "ms": sum(t[2] for t in rest) / calls / 1e3,
            "share": sum(t[2] for t in rest) / total,
        }
    )
    rows.append({"op": "total", "per_call": None, "ms": total / calls / 1e3, "share": 1.0})
    return rows
