"""Read a safetensors file straight onto a device, the disk read overlapped with the copy to a GPU.

A document-cache entry for a long document is gigabytes (4 GiB for a Llama-3-8B-sized model at 32k
tokens). Reading it tensor by tensor into ordinary memory and copying each to the GPU costs the sum
of both. Here the file's data is read in slices into two pinned host buffers in turn; while one
slice is copied to the device on a side stream, the next is read. The tensors are placed by the
file's own header, which is checked first: known dtypes, shapes that match their byte ranges, and
ranges that tile the data exactly. Nothing prints.
"""

from __future__ import annotations

import json
import os
import struct
from contextlib import nullcontext
from pathlib import Path
from typing import Any

SLICE_BYTES = 64 * 2**20
MAX_HEADER = 100 * 2**20
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


def load_tensors(path: Path, device: Any, slice_bytes: int = SLICE_BYTES) -> tuple[dict, dict[str, Any]]:
    """(the header's __metadata__, {name: tensor on device}); ValueError when the file is malformed.

    Each tensor gets its own device memory, so a caller that moves them elsewhere one by one (into
    a KV cache) frees them one by one too.
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
        stream_into(fh, raw, slice_bytes)
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


def stream_into(fh: Any, outs: list[Any], slice_bytes: int = SLICE_BYTES, direct: bool | None = None) -> None:
    """Fill the uint8 tensors `outs`, in order, with the next bytes of fh.

    Host memory is read into directly (`direct`, the default off CUDA). Otherwise slices go through
    two host buffers (pinned, on CUDA) in turn and are copied on a side stream, the next slice read
    while the last one travels; the current stream waits for the copies before the tensors are used.
    """
    import torch

    cuda = bool(outs) and outs[0].device.type == "cuda"
    if direct if direct is not None else not cuda:
        for out in outs:
            _read_into(fh, memoryview(out.numpy()))
        return
    stream = torch.cuda.Stream(outs[0].device) if cuda else None
    buffers = [torch.empty(slice_bytes, dtype=torch.uint8, pin_memory=cuda) for _ in range(2)]
    copied: list[Any] = [None, None]  # per buffer: an event after its last copy to the device
    turn = 0
    for out in outs:
        for offset in range(0, out.numel(), slice_bytes):
            n = min(slice_bytes, out.numel() - offset)
            if copied[turn] is not None:
                copied[turn].synchronize()  # the buffer's previous slice has left it
            _read_into(fh, memoryview(buffers[turn].numpy())[:n])
            with torch.cuda.stream(stream) if cuda else nullcontext():
                out[offset : offset + n].copy_(buffers[turn][:n], non_blocking=cuda)
                if cuda:
                    copied[turn] = torch.cuda.Event()
                    copied[turn].record(stream)
            turn = 1 - turn
    if cuda:
        stream.synchronize()
        torch.cuda.current_stream(outs[0].device).wait_stream(stream)


def _read_into(fh: Any, view: memoryview) -> None:
    done = 0
    while done < len(view):
        n = fh.readinto(view[done:])
        if not n:
            raise ValueError("the file is shorter than its header says (truncated)")
        done += n


def _read_exactly(fh: Any, n: int) -> bytes:
    data = bytearray(n)
    _read_into(fh, memoryview(data))
    return bytes(data)
