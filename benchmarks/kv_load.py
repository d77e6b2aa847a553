"""How fast does a document-cache entry come back from disk onto the device?

A cached `ask` starts by reading its prefix's KV cache from the on-disk entry (chunkqa.kvfile:
safetensors, checked tensor by tensor). This times that load (`read_entry`, file in the page cache)
against baselines measured in the same run on the same file: the bare read of the file's bytes into
a host buffer allocated beforehand, and on a GPU the read into a pinned buffer plus one host-to-device
copy (what a loader streaming the file could hope for). The gap says what a faster loader could
still win. On the CPU, read_entry maps the file (no copy), so it can beat the read.

    python benchmarks/kv_load.py                  # CPU: 4 layers, 4 KV heads, d 64, 8k tokens, fp32
    python benchmarks/kv_load.py --device cuda    # GPU: Llama-3-8B shape, 32k tokens, bf16 (4 GiB)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, print_table, sync, time_call, write_results

from chunkqa.kvfile import entry_path, make_header, read_entry, write_entry

PRESETS = {"cpu": (4, 4, 64, 8192, torch.float32), "cuda": (32, 8, 128, 32768, torch.bfloat16)}


def make_entry(directory: Path, layers: int, heads: int, dim: int, tokens: int, dtype, device) -> tuple:
    fields = {"prefix": {"tokens": tokens}, "dtype": str(dtype).removeprefix("torch.")}
    kv = [
        tuple(torch.randn(1, heads, tokens, dim, device=device).to(dtype) for _ in range(2))
        for _ in range(layers)
    ]
    header = make_header("bench", fields, kv, {"model": "random", "documents": []})
    return write_entry(directory, "bench", header, kv), fields


def reader(path: Path, pinned: bool):
    """A function reading the whole file into one host buffer allocated (and touched) beforehand."""
    buffer = torch.zeros(path.stat().st_size, dtype=torch.uint8, pin_memory=pinned)
    view = memoryview(buffer.numpy())

    def read() -> torch.Tensor:
        with path.open("rb", buffering=0) as fh:
            fh.readinto(view)
        return buffer

    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON lines")
    args = parser.parse_args()
    device = torch.device(args.device)
    layers, heads, dim, tokens, dtype = PRESETS[device.type]
    with tempfile.TemporaryDirectory() as tmp:
        path, fields = make_entry(Path(tmp), layers, heads, dim, tokens, dtype, device)
        assert path == entry_path(Path(tmp), "bench")
        gib = path.stat().st_size / 2**30
        cases = {"read_entry (chunkqa)": lambda: read_entry(path, "bench", fields, layers, device)}
        cases["baseline: read bytes"] = reader(path, pinned=False)
        if device.type == "cuda":
            read_pinned = reader(path, pinned=True)
            cases["baseline: read pinned + H2D"] = lambda: read_pinned().to(device, non_blocking=True)
        rows = []
        for name, fn in cases.items():
            seconds = time_call(fn, device, repeats=args.repeats)
            rows.append(
                {"case": name, "entry_gib": round(gib, 3), "ms": seconds * 1e3, "gib_s": gib / seconds}
            )
        sync(device)
    env = environment(device)
    shape = f"{layers} layers x {heads} KV heads x d {dim}, {tokens:,} tokens, {str(dtype)[6:]}"
    base = rows[-1]["ms"]
    for row in rows:
        row["vs_baseline"] = row["ms"] / base
    path = write_results("kv_load", [{**env, "shape": shape, **row} for row in rows], args.out)
    print(
        f"# KV entry load ({env['device']}, torch {env['torch']}, {shape}; median of {args.repeats}; {path})"
    )
    print_table(rows, ["case", "entry_gib", "ms", "gib_s", "vs_baseline"])


if __name__ == "__main__":
    main()
