"""Read a safetensors file straight onto a device: parallel positional reads through a reusable host ring.

A document-cache entry for a long document is gigabytes (4 GiB for a Llama-3-8B-sized model at 32k
tokens). One thread reading it manages about 5 GiB/s; several threads reading disjoint ranges of the
page cache at once go several times faster, and a GPU takes the bytes faster still. So the file's data
is cut into slices; reader threads `preadv` each slice at its absolute file offset into a slot of a
ring of host buffers (pinned, on CUDA), and the calling thread copies the slices out in file order
(on a side stream, on CUDA), a slot being refilled only once its copy is done.

This module owns that pipeline (`stream_into`) and the loader on top (`load_tensors`), which places
the tensors by the file's own header, checked first: known dtypes, shapes that match their byte
ranges, and ranges that tile the data exactly. The ring it reads through is chunkqa.cache.hostring's
(`HostRing`: reusable across loads, since pinning memory is slow).
Nothing prints.
"""

from __future__ import annotations

import json
import os
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkqa.cache.hostring import SLOT_BYTES, HostRing, PendingRing, default_slots, default_threads

__all__ = ["HostRing", "PendingRing", "load_tensors", "stream_into", "tensor_specs"]

SLICE_BYTES = SLOT_BYTES
MAX_HEADER = 100 * 2**20
THREAD_PREFIX = "chunkqa-kvstream"
TRUNCATED = "the file is shorter than its header says (truncated)"
# safetensors dtype code -> (torch dtype name, bytes per element)
DTYPES = {
    "BF16": ("bfloat16", 2),
    "F16": ("float16", 2),
    "F32": ("float32", 4),
    "F64": ("float64", 8),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "U8": ("uint8", 1),
}


def load_tensors(
    path: Path,
    device: Any,
    slice_bytes: int | None = None,
    *,
    staging: HostRing | None = None,
    threads: int | None = None,
) -> tuple[dict, dict[str, Any]]:
    """(the header's __metadata__, {name: tensor on device}); ValueError when the file is malformed.

    On CUDA the data goes through `staging` (a pinned HostRing kept by the caller), or through a ring
    made for this load. Each tensor gets its own device memory, so a caller that moves them elsewhere
    one by one (into a KV cache) frees them one by one too.
    """
    import torch

    with Path(path).open("rb", buffering=0) as fh:
        (length,) = struct.unpack("<Q", _read_exactly(fh, 8))
        if length > MAX_HEADER:
            raise ValueError("header too large")
        header = json.loads(_read_exactly(fh, length))
        size = os.fstat(fh.fileno()).st_size - 8 - length
        specs = sorted(tensor_specs(header, size).items(), key=lambda item: item[1][2])  # file order
        raw = [torch.empty(end - begin, dtype=torch.uint8, device=device) for _, (_, _, begin, end) in specs]
        stream_into(fh, raw, slice_bytes, ring=staging, threads=threads, offset=8 + length)
    tensors = {
        name: data.view(getattr(torch, DTYPES[code][0])).view(shape)
        for (name, (code, shape, _, _)), data in zip(specs, raw, strict=True)
    }
    return header.get("__metadata__") or {}, tensors


def tensor_specs(header: dict, size: int) -> dict[str, tuple[str, list[int], int, int]]:
    """name -> (dtype code, shape, begin, end) from a safetensors header, checked against `size` bytes."""
    specs = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        code, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
        if code not in DTYPES:
            raise ValueError(f"tensor {name}: unsupported dtype {code}")
        count = 1
        for dim in shape:
            count *= int(dim)
        item = DTYPES[code][1]
        if end - begin != count * item or begin % item:
            raise ValueError(f"tensor {name}: byte range {begin}..{end} does not fit {code} {shape}")
        specs[name] = (code, shape, int(begin), int(end))
    edge = 0
    for _, _, begin, end in sorted(specs.values(), key=lambda spec: spec[2]):
        if begin != edge:
            raise ValueError(f"tensor data has a gap or an overlap at byte {begin}")
        edge = end
    if edge != size:
        raise ValueError(f"the header describes {edge} bytes of data, the file holds {size}")
    return specs


def stream_into(
    source: Any,
    outs: list[Any],
    slice_bytes: int | None = None,
    direct: bool | None = None,
    *,
    ring: HostRing | None = None,
    threads: int | None = None,
    offset: int | None = None,
) -> None:
    """Fill the 1-D uint8 tensors `outs`, in order, with a file's bytes from `offset` (default: its position).

    `source` is a file object or a descriptor; it is left positioned after the bytes read. Host
    tensors are read into directly (`direct`, the default off CUDA). Otherwise `threads` readers
    (default: the ring's) fill the slots of `ring` (made for this call when None; pinned on CUDA)
    with slices of `slice_bytes` (at most, and by default, the slot size), which may span tensors,
    and this thread copies them out in order: on CUDA on a side stream that first waits for the
    current stream, and the current stream waits for the copies before this returns. ValueError on
    a truncated file; an error in a reader is raised here once every reader has stopped.
    """
    fd = source if isinstance(source, int) else source.fileno()
    start = offset if offset is not None else _position(source)
    device = _device_of(outs)
    cuda = device is not None and device.type == "cuda"
    if direct if direct is not None else not cuda:
        if cuda:
            raise ValueError("direct reads fill host tensors; a CUDA load goes through a host ring")
        _read_direct(fd, outs, start)
    else:
        _read_through_ring(fd, outs, start, device, slice_bytes, ring, threads)
    _seek(source, start + sum(out.numel() for out in outs))


def _read_through_ring(
    fd: int,
    outs: list[Any],
    start: int,
    device: Any,
    slice_bytes: int | None,
    ring: HostRing | None,
    threads: int | None,
) -> None:
    """The pipeline's setup: the ring (one for this load unless given), the slices, the side stream."""
    import torch

    sizes = [out.numel() for out in outs]
    cuda = device is not None and device.type == "cuda"
    if not sum(sizes):
        return
    if ring is None:
        ring = _ring_for(sum(sizes), slice_bytes or SLICE_BYTES, threads or default_threads(), pinned=cuda)
    threads = threads or ring.threads
    step = min(slice_bytes or ring.slot_bytes, ring.slot_bytes)
    if step < 1:
        raise ValueError(f"slices of {step} bytes")
    if cuda and not ring.pinned:
        raise ValueError("a CUDA load needs a pinned host ring")
    stream = torch.cuda.Stream(device) if cuda else None
    with ring.lock:
        _pipeline(fd, outs, plan_slices(sizes, start, step), ring, threads, stream)


@dataclass(frozen=True)
class Slice:
    """`size` bytes at file offset `at`; `pieces`: (out index, offset in it, offset in the slot, bytes)."""

    at: int
    size: int
    pieces: tuple[tuple[int, int, int, int], ...]


def plan_slices(sizes: list[int], start: int, step: int) -> list[Slice]:
    """Cut the bytes of tensors of `sizes` bytes, read from file offset `start` on, into slices of `step`."""
    slices: list[Slice] = []
    pieces: list[tuple[int, int, int, int]] = []
    filled = 0
    for index, size in enumerate(sizes):
        done = 0
        while done < size:
            n = min(size - done, step - filled)
            pieces.append((index, done, filled, n))
            done, filled = done + n, filled + n
            if filled == step:
                slices.append(Slice(start + len(slices) * step, filled, tuple(pieces)))
                pieces, filled = [], 0
    if filled:
        slices.append(Slice(start + len(slices) * step, filled, tuple(pieces)))
    return slices


def _pipeline(
    fd: int, outs: list[Any], slices: list[Slice], ring: HostRing, threads: int, stream: Any
) -> None:
    """Read slice i into slot i % slots and copy it out, in order.

    Once slice i's copy is queued, the slot of slice i - 1 takes slice i - 1 + slots as soon as its
    own copy has finished (so the main thread rarely waits for a copy, and readers rarely for a slot).
    """
    import torch

    if stream is not None:
        stream.wait_stream(torch.cuda.current_stream(stream.device))  # outs may reuse memory still in use
    copied: list[Any] = [None] * ring.slots  # per slot: an event after its last copy (CUDA)
    futures: dict[int, Future] = {}
    pool = ThreadPoolExecutor(min(threads, ring.slots, len(slices)), thread_name_prefix=THREAD_PREFIX)
    try:
        for i in range(min(ring.slots, len(slices))):
            futures[i] = _submit(pool, fd, ring.views[i], slices[i])
        for i, piece in enumerate(slices):
            futures.pop(i).result()
            copied[i % ring.slots] = _copy_out(outs, ring.tensors[i % ring.slots], piece, stream)
            refill = i - 1 + ring.slots
            if i >= 1 and refill < len(slices):
                slot = refill % ring.slots  # the slot of slice i - 1
                if copied[slot] is not None:
                    copied[slot].synchronize()
                futures[refill] = _submit(pool, fd, ring.views[slot], slices[refill])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # no reader touches the ring after this
        if stream is not None:
            stream.synchronize()  # nor any copy
            torch.cuda.current_stream(stream.device).wait_stream(stream)


def _submit(pool: ThreadPoolExecutor, fd: int, slot: memoryview, piece: Slice) -> Future:
    return pool.submit(_read_at, fd, slot[: piece.size], piece.at)


def _copy_out(outs: list[Any], slot: Any, piece: Slice, stream: Any) -> Any:
    """Copy a slice from its slot into its tensors; on CUDA on `stream`, returning an event after them."""
    if stream is None:
        for index, at, lo, n in piece.pieces:
            outs[index][at : at + n].copy_(slot[lo : lo + n])
        return None
    import torch

    with torch.cuda.stream(stream):
        for index, at, lo, n in piece.pieces:
            outs[index][at : at + n].copy_(slot[lo : lo + n], non_blocking=True)
    event = torch.cuda.Event()
    event.record(stream)
    return event


def _ring_for(total: int, slice_bytes: int, threads: int, pinned: bool) -> HostRing:
    """A ring for one load of `total` bytes: no larger than the load needs."""
    step = min(slice_bytes, total)
    return HostRing(step, max(2, min(default_slots(threads), -(-total // step))), pinned, threads)


def _read_direct(fd: int, outs: list[Any], start: int) -> None:
    for out in outs:
        _read_at(fd, memoryview(out.numpy()), start)
        start += out.numel()


def _read_at(fd: int, view: memoryview, offset: int) -> None:
    """Fill `view` with the file's bytes from `offset`, however short the reads come back."""
    done = 0
    while done < len(view):
        n = _pread_into(fd, view[done:], offset + done)
        if not n:
            raise ValueError(TRUNCATED)
        done += n


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    """One positional read into `view` (it releases the GIL, and no file position is shared)."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)  # where there is no preadv: one more copy
    view[: len(data)] = data
    return len(data)


def _device_of(outs: list[Any]) -> Any:
    """The one device of `outs` (None when there are none); ValueError unless they are 1-D uint8 on one."""
    import torch

    if any(out.dtype != torch.uint8 or out.dim() != 1 or not out.is_contiguous() for out in outs):
        raise ValueError("stream_into fills contiguous 1-D uint8 tensors")
    devices = {out.device for out in outs}
    if len(devices) > 1:
        raise ValueError(f"the tensors to fill are on several devices: {sorted(map(str, devices))}")
    return next(iter(devices), None)


def _position(source: Any) -> int:
    return os.lseek(source, 0, os.SEEK_CUR) if isinstance(source, int) else source.tell()


def _seek(source: Any, position: int) -> None:
    if isinstance(source, int):
        os.lseek(source, position, os.SEEK_SET)
    else:
        source.seek(position)


def _read_exactly(fh: Any, n: int) -> bytes:
    data = bytearray(n)
    done = 0
    while done < n:
        got = fh.readinto(memoryview(data)[done:])
        if not got:
            raise ValueError(TRUNCATED)
        done += got
    return bytes(data)
