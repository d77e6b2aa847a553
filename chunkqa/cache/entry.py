"""Document-cache entries on disk: one safetensors file per prefix KV cache, and the directory of them.

Tensors `k.<layer>` and `v.<layer>` are [1, kv_heads, tokens, head_dim], exactly as the DynamicCache
held them (with DCA, keys already rotated at their chunk positions). The header metadata holds, under
"chunkqa", a JSON record: format, key, the key's fields, token count, dtype, shapes, per-tensor
checksums, created time, and the model and document names shown by `chunkqa cache list`.
Written to a temporary file and renamed into place; read back only after every check passes.
The directory functions list entries (reading only headers, without torch), evict the least
recently used (file mtime) past a size limit, and clear them. No pickle anywhere; nothing prints.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 1
SUFFIX = ".safetensors"
TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Entry:
    """One file in the cache directory, as `chunkqa cache list` shows it."""

    path: Path
    size: int
    last_used: float
    tokens: int | None = None
    model: str | None = None
    documents: tuple[str, ...] = ()
    created: str | None = None


class CorruptEntry(Exception):
    """An entry that must not be used; the message says why."""


def entry_path(directory: Path, key: str) -> Path:
    return directory / f"{key}{SUFFIX}"


def checksum(tensor: Any) -> int:
    """Wrapping int64 sum of the tensor's raw bytes, on its device: catches flipped bits and zeroed pages."""
    import torch

    flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    try:
        words = flat.view(torch.int64)
    except RuntimeError:  # byte count not a multiple of 8, or an unaligned view
        words = flat
    return int(words.sum(dtype=torch.int64))


def computed_event(device: Any) -> Any:
    """A CUDA event after the work queued so far on `device` (None on the CPU): the prefix is ready."""
    import torch

    if getattr(device, "type", "cpu") != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event


def to_host(layers: Sequence[tuple[Any, Any]], computed: Any) -> list[tuple[Any, Any]]:
    """CPU copies of GPU tensors, made on a side stream once `computed` has passed (CPU tensors as they are).

    Runs in the writer thread: the copy overlaps the answer being generated on the main stream.
    """
    import torch

    if computed is None:
        return list(layers)
    device = layers[0][0].device
    stream = torch.cuda.Stream(device)
    stream.wait_event(computed)
    with torch.cuda.stream(stream):
        host = [(k.to("cpu"), v.to("cpu")) for k, v in layers]
    stream.synchronize()
    return host


def write_entry(directory: Path, key: str, header: dict[str, Any], layers: Sequence[tuple[Any, Any]]) -> Path:
    """Write tensors and header to a temporary file, then rename it into place (atomic)."""
    from safetensors.torch import save_file

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # entries encode the documents: private
    tensors = {}
    for i, (k, v) in enumerate(layers):
        tensors[f"k.{i}"], tensors[f"v.{i}"] = k.contiguous(), v.contiguous()
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=SUFFIX, dir=directory)
    os.close(fd)
    temp = Path(name)
    try:
        save_file(tensors, temp, metadata={"chunkqa": json.dumps(header)})
        os.replace(temp, entry_path(directory, key))
    finally:
        temp.unlink(missing_ok=True)
    return entry_path(directory, key)


def make_header(key: str, fields: dict[str, Any], layers: Sequence[tuple[Any, Any]], label: dict) -> dict:
    return {
        "format": FORMAT,
        "key": key,
        "fields": fields,
        "tokens": fields["prefix"]["tokens"],
        "layers": len(layers),
        "dtype": fields["dtype"],
        "shapes": [[list(k.shape), list(v.shape)] for k, v in layers],
        "checksums": [[checksum(k), checksum(v)] for k, v in layers],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **label,
    }


def read_entry(
    path: Path, key: str, fields: dict[str, Any], layers: int, device: Any, staging: Any = None
) -> list[tuple]:
    """Load and check an entry's tensors onto `device`; CorruptEntry if anything is off.

    On a GPU the file is streamed onto the device by parallel reads overlapped with the copies
    (chunkqa.cache.stream), through `staging` (a pinned hostring.HostRing) when given; on the CPU
    safetensors maps it, which costs no copy at all.
    """
    from safetensors import SafetensorError, safe_open

    try:
        if getattr(device, "type", str(device)) == "cuda":
            from chunkqa.cache.stream import load_tensors

            metadata, tensors = load_tensors(path, device, staging=staging)
            return _checked(metadata, set(tensors), tensors.__getitem__, key, fields, layers)
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
            return _checked(metadata, set(handle.keys()), handle.get_tensor, key, fields, layers)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise CorruptEntry(f"unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None


def _checked(metadata: dict, names: set[str], get: Any, key: str, fields: dict, layers: int) -> list[tuple]:
    header = _check_header(json.loads(metadata["chunkqa"]), key, fields, layers)
    expected = {f"{kind}.{i}" for i in range(layers) for kind in "kv"}
    if names != expected:
        raise CorruptEntry(f"tensors {sorted(names ^ expected)[:4]} missing or unexpected")
    return [_checked_pair(get, header, i) for i in range(layers)]


def _check_header(header: dict, key: str, fields: dict[str, Any], layers: int) -> dict:
    for name, want in (("format", FORMAT), ("key", key), ("fields", fields), ("layers", layers)):
        if header.get(name) != want:
            raise CorruptEntry(f"its metadata does not match ({name})")
    if header.get("tokens") != fields["prefix"]["tokens"] or len(header.get("shapes", [])) != layers:
        raise CorruptEntry("its metadata is inconsistent (tokens or shapes)")
    return header


def _checked_pair(get: Any, header: dict, i: int) -> tuple[Any, Any]:
    pair = (get(f"k.{i}"), get(f"v.{i}"))
    for tensor, shape, expected_sum in zip(pair, header["shapes"][i], header["checksums"][i], strict=True):
        if list(tensor.shape) != shape or tensor.shape[-2] != header["tokens"]:
            raise CorruptEntry(f"layer {i} has shape {list(tensor.shape)}, expected {shape}")
        if str(tensor.dtype).removeprefix("torch.") != header["dtype"]:
            raise CorruptEntry(f"layer {i} has dtype {tensor.dtype}, expected {header['dtype']}")
        if checksum(tensor) != expected_sum:
            raise CorruptEntry(f"layer {i} fails its checksum (the file is damaged)")
    return pair


def read_header(path: Path) -> dict[str, Any]:
    """The chunkqa record from a safetensors header, read without torch (for listing)."""
    with path.open("rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        if size > 100 * 2**20:
            raise ValueError("header too large")
        return json.loads(json.loads(fh.read(size))["__metadata__"]["chunkqa"])


# ---- the directory ----------------------------------------------------------------
def list_entries(directory: Path) -> list[Entry]:
    """Every entry, oldest use first; unreadable ones come back with tokens=None."""
    entries = []
    for path in directory.glob(f"*{SUFFIX}") if directory.is_dir() else ():
        if path.name.startswith(TEMP_PREFIX):
            continue
        try:
            stat = path.stat()
        except OSError:
            continue  # removed meanwhile
        try:
            h = read_header(path)
            info = (h["tokens"], h.get("model"), tuple(h.get("documents", ())), h.get("created"))
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            info = (None, None, (), None)
        entries.append(Entry(path, stat.st_size, stat.st_mtime, *info))
    return sorted(entries, key=lambda e: e.last_used)


def evict(directory: Path, max_bytes: int, keep: Path | None = None) -> list[Entry]:
    """Delete least recently used entries until the total fits max_bytes (never `keep`), and stale temps."""
    _remove_stale_temps(directory)
    entries = list_entries(directory)
    total = sum(e.size for e in entries)
    removed = []
    for entry in entries:
        if total <= max_bytes:
            break
        if entry.path == keep:
            continue
        entry.path.unlink(missing_ok=True)
        total -= entry.size
        removed.append(entry)
    return removed


def clear_entries(directory: Path) -> list[Entry]:
    """Delete every entry (and leftover temporary files); returns what was removed."""
    entries = list_entries(directory)
    for entry in entries:
        entry.path.unlink(missing_ok=True)
    _remove_stale_temps(directory, age=0)
    return entries


def _remove_stale_temps(directory: Path, age: float = 3600) -> None:
    """Temporary files of writes that never finished (a killed process)."""
    now = time.time()
    for path in directory.glob(f"{TEMP_PREFIX}*") if directory.is_dir() else ():
        try:
            if now - path.stat().st_mtime >= age:
                path.unlink()
        except OSError:
            pass
