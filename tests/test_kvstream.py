"""chunkqa.kvstream: a safetensors file read onto a device in overlapped slices, its header checked.

The CUDA path (pinned buffers, side stream) is marked `gpu`; on the CPU the same slicing loop runs
with direct=False, so the bookkeeping across slice and tensor boundaries is tested everywhere.
"""

from __future__ import annotations

import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from chunkqa.kvfile import CorruptEntry, make_header, read_entry, write_entry
from chunkqa.kvstream import load_tensors, stream_into, tensor_specs


def sample(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "k.0": torch.randn(1, 2, 37, 8, generator=gen).to(torch.bfloat16),
        "v.0": torch.randn(1, 2, 37, 8, generator=gen),
        "k.1": torch.randn(1, 2, 37, 8, generator=gen).double(),
        "v.1": torch.randint(0, 100, (5, 3), generator=gen),
    }


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file(sample(), str(path), metadata={"note": "hello"})
    return path


def test_load_matches_safetensors(saved):
    metadata, tensors = load_tensors(saved, "cpu")
    expected = load_file(str(saved))
    assert metadata == {"note": "hello"} and set(tensors) == set(expected)
    for name, tensor in expected.items():
        assert tensors[name].dtype == tensor.dtype and torch.equal(tensors[name], tensor)


@pytest.mark.parametrize("slice_bytes", [1, 7, 100, 1000, 10**6])
def test_sliced_reads_fill_every_tensor_in_order(saved, slice_bytes):
    """The double-buffered loop (as on a GPU) gives the same bytes as one read, across boundaries."""
    data = saved.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    body = data[8 + length :]
    sizes = [3, 0, 250, len(body) - 253]
    outs = [torch.full((n,), 7, dtype=torch.uint8) for n in sizes]  # poisoned
    with saved.open("rb") as fh:
        fh.seek(8 + length)
        stream_into(fh, outs, slice_bytes, direct=False)
    assert bytes(torch.cat(outs).numpy()) == body


def test_a_truncated_file_is_refused(saved):
    saved.write_bytes(saved.read_bytes()[:-5])
    with pytest.raises(ValueError, match="describes"):
        load_tensors(saved, "cpu")


def header_of(**tensors) -> dict:
    return {name: {"dtype": d, "shape": s, "data_offsets": o} for name, (d, s, o) in tensors.items()}


@pytest.mark.parametrize(
    ("header", "size", "message"),
    [
        (header_of(a=("F32", [2], [0, 8]), b=("F32", [2], [4, 12])), 12, "gap or an overlap"),
        (header_of(a=("F32", [2], [0, 8])), 16, "describes 8 bytes"),
        (header_of(a=("F32", [3], [0, 8])), 8, "does not fit"),
        (header_of(a=("U8", [1], [0, 1]), b=("F32", [1], [1, 5])), 5, "does not fit"),  # misaligned
        (header_of(a=("F8_E4M3", [2], [0, 2])), 2, "unsupported dtype"),
    ],
)
def test_bad_headers_are_refused(header, size, message):
    with pytest.raises(ValueError, match=message):
        tensor_specs({"__metadata__": {}, **header}, size)


def write_kv(directory, layers: int = 2, device: str = "cpu"):
    kv = [
        (torch.randn(1, 2, 40, 8, device=device), torch.randn(1, 2, 40, 8, device=device))
        for _ in range(layers)
    ]
    fields = {"prefix": {"tokens": 40}, "dtype": "float32"}
    path = write_entry(directory, "abc", make_header("abc", fields, kv, {"model": "m"}), kv)
    return path, fields, kv


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
def test_cuda_stream_loads_an_entry_exactly(tmp_path):
    path, fields, kv = write_kv(tmp_path, layers=3, device="cuda")
    _, tensors = load_tensors(path, torch.device("cuda"), slice_bytes=4096)  # many slices per tensor
    assert all(t.device.type == "cuda" for t in tensors.values())
    loaded = read_entry(path, "abc", fields, 3, torch.device("cuda"))
    for (k, v), (k2, v2) in zip(kv, loaded, strict=True):
        assert torch.equal(k, k2) and torch.equal(v, v2)


@pytest.mark.gpu
@gpu
def test_cuda_stream_detects_a_flipped_byte(tmp_path):
    path, fields, _ = write_kv(tmp_path, device="cuda")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptEntry, match="checksum"):
        read_entry(path, "abc", fields, 2, torch.device("cuda"))
