"""chunkqa.cache.stream: a safetensors file read onto a device by parallel slices, its header checked.

The CUDA path (pinned ring, side stream, events) is marked `gpu`; on the CPU the same pipeline runs
with direct=False (reader threads, a plain host ring, plain copies), so the bookkeeping across slice
and tensor boundaries, ring reuse, short reads and errors in readers are tested everywhere.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import numpy
import pytest
import torch
from safetensors.torch import load_file, save_file

from chunkqa.cache import hostring
from chunkqa.cache import stream as kvstream
from chunkqa.cache.entry import CorruptEntry, make_header, read_entry, write_entry
from chunkqa.cache.store import CacheOptions, DocCache
from chunkqa.cache.stream import HostRing, PendingRing, load_tensors, plan_slices, stream_into, tensor_specs


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


def body_of(path: Path) -> tuple[int, bytes]:
    """(the data's file offset, the data) of a safetensors file."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return 8 + length, data[8 + length :]


def poisoned(sizes: list[int]) -> list[torch.Tensor]:
    return [torch.full((n,), 7, dtype=torch.uint8) for n in sizes]


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(kvstream.THREAD_PREFIX)]


@pytest.mark.parametrize("slice_bytes", [1, 7, 100, 1000, 10**6])
@pytest.mark.parametrize("threads", [1, 3, 8])
def test_sliced_reads_fill_every_tensor_in_order(saved, slice_bytes, threads):
    """The threaded pipeline (as on a GPU) gives the same bytes as one read, across boundaries."""
    start, body = body_of(saved)
    outs = poisoned([3, 0, 250, len(body) - 253])
    with saved.open("rb") as fh:
        fh.seek(start)
        stream_into(fh, outs, slice_bytes, direct=False, threads=threads)
        assert fh.tell() == start + len(body)  # left after the bytes read, like a read
    assert bytes(torch.cat(outs).numpy()) == body
    assert not reader_threads()


@pytest.mark.parametrize(("step", "sizes"), [(4, [3, 0, 5, 9]), (5, [5, 5]), (100, [1, 2]), (2, [0])])
def test_slices_tile_the_bytes_and_span_tensors(step, sizes):
    slices = plan_slices(sizes, 1000, step)
    assert [s.at for s in slices] == list(range(1000, 1000 + sum(sizes), step))
    placed = [(index, at + k) for s in slices for index, at, _, n in s.pieces for k in range(n)]
    assert placed == [(index, k) for index, size in enumerate(sizes) for k in range(size)]
    for s in slices:
        assert s.size == sum(n for *_, n in s.pieces) <= step
        assert [lo for _, _, lo, _ in s.pieces] == [
            sum(n for *_, n in s.pieces[:j]) for j in range(len(s.pieces))
        ]


def test_one_ring_serves_many_loads_and_slice_sizes(saved, tmp_path):
    """The ring is reused: stale bytes from an earlier load never leak into a later one."""
    other = tmp_path / "other.safetensors"
    save_file(sample(seed=1), str(other))
    ring = HostRing(slot_bytes=512, slots=3, pinned=False)
    for path, slice_bytes, threads in [(saved, None, 4), (other, 100, 2), (saved, 511, 3), (other, 10**6, 8)]:
        start, body = body_of(path)
        outs = poisoned([len(body) // 3, len(body) - len(body) // 3])
        fd = os.open(path, os.O_RDONLY)
        try:
            stream_into(fd, outs, slice_bytes, direct=False, ring=ring, threads=threads, offset=start)
            assert os.lseek(fd, 0, os.SEEK_CUR) == start + len(body)
        finally:
            os.close(fd)
        assert bytes(torch.cat(outs).numpy()) == body
    assert not ring.lock.locked() and not reader_threads()


@pytest.mark.parametrize("direct", [True, False])
def test_short_reads_are_completed(saved, monkeypatch, direct):
    """preadv may return fewer bytes than asked: every read loops until its view is full."""
    real, calls = os.preadv, []

    def stingy(fd, buffers, offset):
        calls.append(offset)
        return real(fd, [buffers[0][: max(1, len(buffers[0]) // 3)]], offset)

    monkeypatch.setattr(os, "preadv", stingy)
    start, body = body_of(saved)
    outs = poisoned([100, len(body) - 100])
    with saved.open("rb") as fh:
        stream_into(fh, outs, 1000, direct=direct, threads=4, offset=start)
    assert bytes(torch.cat(outs).numpy()) == body
    assert len(calls) > len(body) // 1000 + 2  # reads really came back short


@pytest.mark.parametrize("direct", [True, False])
def test_a_file_shorter_than_the_tensors_raises_and_stops_every_reader(saved, direct):
    start, body = body_of(saved)
    ring = HostRing(slot_bytes=64, slots=6, pinned=False)
    outs = poisoned([len(body), 5000])  # more than the file holds
    with saved.open("rb") as fh, pytest.raises(ValueError, match="truncated"):
        stream_into(fh, outs, direct=direct, ring=ring, threads=4, offset=start)
    assert not reader_threads() and not ring.lock.locked()
    outs = poisoned([len(body)])  # the ring still works
    with saved.open("rb") as fh:
        stream_into(fh, outs, direct=False, ring=ring, threads=4, offset=start)
    assert bytes(outs[0].numpy()) == body


def test_an_error_in_a_reader_reaches_the_caller(saved, monkeypatch):
    """A reader failing mid-file (an I/O error): raised here, after every other reader has stopped."""
    real = os.preadv
    start, body = body_of(saved)
    bad = start + 40 * 64

    def failing(fd, buffers, offset):
        if offset == bad:
            raise OSError(5, "Input/output error")
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", failing)
    with saved.open("rb") as fh, pytest.raises(OSError, match="Input/output"):
        stream_into(fh, poisoned([len(body)]), 64, direct=False, threads=4, offset=start)
    assert not reader_threads()


def test_a_slot_is_refilled_only_once_its_copy_has_finished(saved, monkeypatch):
    """The CUDA bookkeeping with stand-in events: no read may land in a slot whose copy is pending."""
    ring = HostRing(slot_bytes=64, slots=3, pinned=False, threads=3)
    starts = sorted(t.data_ptr() for t in ring.tensors)
    pending: dict[int, Copied] = {}  # slot address -> the event after its latest copy
    real_copy, real_read, reads = kvstream._copy_out, os.preadv, []

    def copy_out(outs, slot, piece, stream):
        real_copy(outs, slot, piece, None)
        pending[slot.data_ptr()] = Copied()
        return pending[slot.data_ptr()]

    def preadv(fd, buffers, offset):
        address = numpy.frombuffer(buffers[0], dtype=numpy.uint8).ctypes.data
        slot = max(start for start in starts if start <= address)
        reads.append(slot not in pending or pending[slot].done)
        return real_read(fd, buffers, offset)

    monkeypatch.setattr(kvstream, "_copy_out", copy_out)
    monkeypatch.setattr(os, "preadv", preadv)
    start, body = body_of(saved)
    outs = poisoned([len(body)])
    with saved.open("rb") as fh:
        stream_into(fh, outs, direct=False, ring=ring, offset=start)
    assert bytes(outs[0].numpy()) == body
    assert len(reads) == -(-len(body) // 64) and all(reads)


class Copied:
    """Stands in for a CUDA event after a slot's copy: done once waited for."""

    def __init__(self) -> None:
        self.done = False

    def synchronize(self) -> None:
        self.done = True


def test_a_load_uses_the_rings_reader_threads_unless_told(saved, monkeypatch):
    real, readers = os.preadv, set()

    def noted(fd, buffers, offset):
        readers.add(threading.current_thread().name)
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", noted)
    start, body = body_of(saved)
    ring = HostRing(slot_bytes=16, slots=12, pinned=False, threads=3)
    for threads, most in ((None, 3), (1, 1)):
        readers.clear()
        with saved.open("rb") as fh:
            stream_into(fh, poisoned([len(body)]), direct=False, ring=ring, threads=threads, offset=start)
        assert 1 <= len(readers) <= most and all(name.startswith(kvstream.THREAD_PREFIX) for name in readers)


def test_the_tensors_to_fill_must_be_flat_bytes(saved):
    with saved.open("rb") as fh, pytest.raises(ValueError, match="1-D uint8"):
        stream_into(fh, [torch.zeros(4)], direct=False)
    with pytest.raises(ValueError, match="at least 2 slots"):
        HostRing(slot_bytes=16, slots=1, pinned=False)


def test_a_ring_made_in_the_background(saved):
    pending = PendingRing(slot_bytes=256, slots=4, pinned=False)
    ring = pending.result()
    assert (ring.slots, ring.slot_bytes, ring.nbytes) == (4, 256, 1024) and pending.result() is ring
    start, body = body_of(saved)
    outs = poisoned([len(body)])
    with saved.open("rb") as fh:
        stream_into(fh, outs, direct=False, ring=ring, offset=start)
    assert bytes(outs[0].numpy()) == body
    with pytest.raises(ValueError, match="at least 2 slots"):
        PendingRing(slot_bytes=0, pinned=False).result()  # the thread's error, raised by result()


def test_load_tensors_with_a_ring_on_the_cpu_reads_directly(saved):
    ring = HostRing(slot_bytes=64, slots=2, pinned=False)
    _, tensors = load_tensors(saved, "cpu", staging=ring, threads=2)
    for name, tensor in load_file(str(saved)).items():
        assert torch.equal(tensors[name], tensor)


def test_a_truncated_file_is_refused(saved):
    saved.write_bytes(saved.read_bytes()[:-5])
    with pytest.raises(ValueError, match="describes"):
        load_tensors(saved, "cpu")


@pytest.mark.parametrize(
    ("device", "entries", "started"), [("cuda", 1, True), ("cuda", 0, False), ("cpu", 1, False)]
)
def test_the_doc_cache_pins_its_ring_early_only_for_gpu_loads(
    tmp_path, monkeypatch, device, entries, started
):
    made = []
    monkeypatch.setattr(hostring, "PendingRing", lambda: made.append("ring") or "pending")
    for i in range(entries):
        (tmp_path / f"e{i}.safetensors").write_bytes(b"")
    cache = DocCache(CacheOptions(tmp_path, 2**30)).prepare(torch.device(device))
    assert made == (["ring"] if started else [])
    if started:
        assert cache._staging_ring() == "pending" and made == ["ring"]  # made once, kept


def test_prepare_starts_the_ring_before_any_session_and_can_wait(tmp_path, monkeypatch):
    """`ask` and `chat` prepare the cache before the weights load, so the pinning overlaps it."""
    waited = []

    class Pending:
        def result(self):
            waited.append(True)
            return "ring"

    monkeypatch.setattr(hostring, "PendingRing", Pending)
    (tmp_path / "e.safetensors").write_bytes(b"")
    cache = DocCache(CacheOptions(tmp_path, 2**30)).prepare(torch.device("cuda"))
    assert isinstance(cache._staging, Pending) and waited == []
    cache.prepare(torch.device("cuda"), wait=True)
    assert waited == [True]
    first = cache._staging
    cache.prepare(torch.device("cuda"))
    assert cache._staging is first  # a second prepare pins nothing more


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
@pytest.mark.parametrize(
    ("slot_bytes", "slots", "threads"), [(4096, 2, 1), (1000, 5, 4), (3 * 2**20, 32, 16)]
)
def test_cuda_loads_through_one_pinned_ring_exactly(tmp_path, slot_bytes, slots, threads):
    """One pinned ring over several loads; slices (1000 bytes: odd, unaligned) span tensors."""
    ring = HostRing(slot_bytes=slot_bytes, slots=slots)
    assert ring.tensors[0].is_pinned()
    for seed in range(3):
        path = tmp_path / f"{seed}.safetensors"
        save_file(sample(seed), str(path))
        save_file(
            {"big": torch.randn(3, 2**20, generator=torch.Generator().manual_seed(seed))}, str(tmp_path / "b")
        )
        for source in (path, tmp_path / "b"):
            _, tensors = load_tensors(source, torch.device("cuda"), staging=ring, threads=threads)
            expected = load_file(str(source))
            assert set(tensors) == set(expected)
            for name, tensor in expected.items():  # compared on the current stream, without a sync first
                assert tensors[name].device.type == "cuda" and torch.equal(tensors[name].cpu(), tensor)
    assert not ring.lock.locked() and not reader_threads()


@pytest.mark.gpu
@gpu
def test_cuda_truncated_stream_raises_and_the_ring_survives(saved):
    start, body = body_of(saved)
    ring = HostRing(slot_bytes=256, slots=4)
    with saved.open("rb") as fh, pytest.raises(ValueError, match="truncated"):
        stream_into(
            fh, [torch.empty(len(body) + 999, dtype=torch.uint8, device="cuda")], ring=ring, offset=start
        )
    assert not reader_threads() and not ring.lock.locked()
    out = torch.empty(len(body), dtype=torch.uint8, device="cuda")
    with saved.open("rb") as fh:
        stream_into(fh, [out], ring=ring, threads=3, offset=start)
    assert bytes(out.cpu().numpy()) == body
    with saved.open("rb") as fh, pytest.raises(ValueError, match="pinned"):
        stream_into(fh, [out], ring=HostRing(slot_bytes=256, slots=2, pinned=False), offset=start)
    with saved.open("rb") as fh, pytest.raises(ValueError, match="direct"):
        stream_into(fh, [out], direct=True, offset=start)


@pytest.mark.gpu
@gpu
def test_a_background_ring_is_pinned(saved):
    ring = PendingRing(slot_bytes=2**20, slots=4).result()
    assert all(t.is_pinned() for t in ring.tensors)


@pytest.mark.gpu
@gpu
def test_cuda_stream_detects_a_flipped_byte(tmp_path):
    path, fields, _ = write_kv(tmp_path, device="cuda")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptEntry, match="checksum"):
        read_entry(path, "abc", fields, 2, torch.device("cuda"))
