"""How fast does a document-cache entry come back from disk onto the device?

A cached `ask` starts by reading its prefix's KV cache from the on-disk entry (chunkqa.cache.entry:
safetensors, checked tensor by tensor). This times that load (`read_entry`, file in the page cache)
against baselines measured in the same run on the same file, each into host buffers allocated (and
touched) beforehand: the bare single-thread read of the file's bytes; on a GPU that read into pinned
memory plus one host-to-device copy (what the old two-buffer loader was bounded by); and the floor, the
same read done by N threads at once (each its own range, preadv) plus the copy. On a GPU the loader
reads through the session's pinned ring (made once, as DocCache does; its one-off pinning is a row of
its own) and through a ring made per load; on the CPU, read_entry maps the file (no copy at all), and
the threaded pipeline is timed on its own with host tensors (stream_into, direct=False).
vs_baseline is relative to the floor.

    python benchmarks/kv_load.py                  # CPU: 4 layers, 4 KV heads, d 64, 8k tokens, fp32
    python benchmarks/kv_load.py --device cuda    # GPU: Llama-3-8B shape, 32k tokens, bf16 (4 GiB)
    python benchmarks/kv_load.py --device cuda --threads 8 --slice-mib 32 --slots 16
    python benchmarks/kv_load.py --device cuda --sweep    # and the rings of SWEEP
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, print_table, sync, time_call, write_results

from chunkqa.cache.entry import entry_path, make_header, read_entry, write_entry
from chunkqa.cache.stream import SLICE_BYTES, HostRing, default_threads, stream_into

PRESETS = {"cpu": (4, 4, 64, 8192, torch.float32), "cuda": (32, 8, 128, 32768, torch.bfloat16)}
FLOOR = "floor: {threads}-thread read{pinned} + H2D"
SWEEP = [(16, 8, 32), (16, 32, 32), (16, 16, 20), (8, 32, 16), (4, 64, 8)]  # threads, slot MiB, slots


def make_entry(directory: Path, layers: int, heads: int, dim: int, tokens: int, dtype, device) -> tuple:
    fields = {"prefix": {"tokens": tokens}, "dtype": str(dtype).removeprefix("torch.")}
    kv = [
        tuple(torch.randn(1, heads, tokens, dim, device=device).to(dtype) for _ in range(2))
        for _ in range(layers)
    ]
    header = make_header("bench", fields, kv, {"model": "random", "documents": []})
    return write_entry(directory, "bench", header, kv), fields


def reader(path: Path, buffer: torch.Tensor, threads: int = 1):
    """A function reading the whole file into `buffer` (allocated beforehand): `threads` ranges at once."""
    view, size = memoryview(buffer.numpy()), path.stat().st_size
    step = -(-size // (4 * threads)) if threads > 1 else size  # a few ranges per thread, for balance

    def read_range(fd: int, lo: int) -> None:
        hi = min(size, lo + step)
        while lo < hi:
            lo += os.preadv(fd, [view[lo:hi]], lo)

    def read() -> torch.Tensor:
        fd = os.open(path, os.O_RDONLY)
        try:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda lo: read_range(fd, lo), range(0, size, step)))
        finally:
            os.close(fd)
        return buffer

    return read


def host_buffer(nbytes: int, pinned: bool) -> torch.Tensor:
    return torch.zeros(nbytes, dtype=torch.uint8, pin_memory=pinned)  # zeros: every page touched


def loader_cases(path: Path, fields: dict, layers: int, device, configs: list[tuple]) -> tuple[dict, dict]:
    """chunkqa's loader, (timed cases, one-off rows): one case per ring (threads, slot MiB, slots).

    On a GPU read_entry through a ring made once (its pinning is a one-off row), and through a ring
    made per load; on the CPU read_entry (a mapping) and the pipeline into host tensors.
    """
    cuda = device.type == "cuda"
    cases: dict = (
        {}
        if cuda
        else {"read_entry (chunkqa, mmap)": partial(read_entry, path, "bench", fields, layers, device)}
    )
    once = {}
    outs = [torch.empty(part, dtype=torch.uint8) for part in split(path.stat().st_size, 2 * layers)]
    for threads, slice_mib, slots in configs:
        start = time.perf_counter()
        ring = HostRing(slice_mib * 2**20, slots, pinned=cuda, threads=threads)
        seconds = time.perf_counter() - start
        shape = f"{ring.threads} threads, {slice_mib} MiB x {ring.slots}"
        if cuda:
            once[f"HostRing: pin {ring.nbytes / 2**20:.0f} MiB ({shape})"] = seconds
            cases[f"read_entry (chunkqa, session ring: {shape})"] = partial(
                read_entry, path, "bench", fields, layers, device, ring
            )
        else:
            cases[f"kvstream pipeline ({shape}, host ring)"] = partial(stream_file, path, outs, ring)
    if cuda:
        cases["read_entry (chunkqa, a ring per load)"] = partial(
            read_entry, path, "bench", fields, layers, device
        )
    return cases, once


def split(size: int, parts: int) -> list[int]:
    return [size // parts + (i < size % parts) for i in range(parts)]


def stream_file(path: Path, outs: list[torch.Tensor], ring: HostRing) -> None:
    with path.open("rb", buffering=0) as fh:
        stream_into(fh, outs, direct=False, ring=ring, offset=0)


def baseline_cases(path: Path, device, threads: int) -> dict:
    """The bare reads (one thread, and `threads` at once: the floor), plus the H2D copy on a GPU."""
    cuda = device.type == "cuda"
    buffer = host_buffer(path.stat().st_size, pinned=cuda)
    one, many = reader(path, buffer), reader(path, buffer, threads)
    cases = {"baseline: read bytes (1 thread)": one}
    if cuda:
        cases["baseline: read pinned + H2D (1 thread)"] = lambda: one().to(device, non_blocking=True)
        cases[FLOOR.format(threads=threads, pinned=" pinned")] = lambda: many().to(device, non_blocking=True)
    else:
        cases[FLOOR.format(threads=threads, pinned="").removesuffix(" + H2D")] = many
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="reader threads (default: min(16, CPUs))")
    parser.add_argument("--slice-mib", type=int, default=SLICE_BYTES // 2**20, help="ring slot size")
    parser.add_argument("--slots", type=int, default=None, help="ring slots (default: 1.25 per thread)")
    parser.add_argument("--sweep", action="store_true", help="also time the loader with the rings of SWEEP")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON lines")
    args = parser.parse_args()
    configs = [(args.threads, args.slice_mib, args.slots)] + (SWEEP if args.sweep else [])
    device = torch.device(args.device)
    layers, heads, dim, tokens, dtype = PRESETS[device.type]
    with tempfile.TemporaryDirectory() as tmp:
        path, fields = make_entry(Path(tmp), layers, heads, dim, tokens, dtype, device)
        assert path == entry_path(Path(tmp), "bench")
        gib = path.stat().st_size / 2**30
        cases, once = loader_cases(path, fields, layers, device, configs)
        cases.update(baseline_cases(path, device, args.threads or default_threads()))
        rows = [row(name, gib, seconds) for name, seconds in once.items()]
        for name, fn in cases.items():
            rows.append(row(name, gib, time_call(fn, device, repeats=args.repeats)))
        sync(device)
    env = environment(device)
    shape = f"{layers} layers x {heads} KV heads x d {dim}, {tokens:,} tokens, {str(dtype)[6:]}"
    base = rows[-1]["ms"]  # the floor
    for line in rows:
        line["vs_baseline"] = line["ms"] / base
    path = write_results("kv_load", [{**env, "shape": shape, **line} for line in rows], args.out)
    print(
        f"# KV entry load ({env['device']}, torch {env['torch']}, {shape}; median of {args.repeats}; {path})"
    )
    print_table(rows, ["case", "entry_gib", "ms", "gib_s", "vs_baseline"])


def row(name: str, gib: float, seconds: float) -> dict:
    return {"case": name, "entry_gib": round(gib, 3), "ms": seconds * 1e3, "gib_s": gib / seconds}


if __name__ == "__main__":
    main()
