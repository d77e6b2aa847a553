"""Host staging buffers for streaming files onto a GPU: a ring of (pinned) slots, made once, reused.

Pinning host memory is slow (about 0.65 s/GiB on an H200 host), so a ring is made once per
document cache and reused by every load through it, and `PendingRing` makes one in a background
thread (started before the weights load, it is ready by the time a cached prefix is read).
"""

from __future__ import annotations

import os
import threading
from typing import Any

MAX_THREADS = 16
SLOT_BYTES = 16 * 2**20


def default_threads() -> int:
    """Reader threads for one load: the CPUs this process may use, at most MAX_THREADS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cpus))


def default_slots(threads: int) -> int:
    return max(2, threads + threads // 4)


class HostRing:
    """Host staging for `stream_into`: `slots` buffers of `slot_bytes`, made once and reused by many loads.

    Pinned for CUDA (pinning costs about 0.65 s/GiB on an H200 host, hence the reuse), plain memory
    for the CPU pipeline. `threads` is how many readers a load through it uses unless told otherwise
    (default: the CPUs, at most MAX_THREADS), and `slots` to 1.25 per reader (the best of the rings
    tried on an H200 host: 16 readers, 16 MiB x 20, 146 ms for 4 GiB). One load uses a
    ring at a time (`lock`); when a load returns, no read into it and no copy out of it is running.
    """

    def __init__(
        self,
        slot_bytes: int = SLOT_BYTES,
        slots: int | None = None,
        pinned: bool = True,
        threads: int | None = None,
    ) -> None:
        import torch

        self.threads = threads or default_threads()
        slots = slots or default_slots(self.threads)
        if slot_bytes < 1 or slots < 2:
            raise ValueError(
                f"a host ring needs at least 2 slots of 1 byte or more, not {slots} x {slot_bytes}"
            )
        self.slot_bytes, self.slots, self.pinned = slot_bytes, slots, pinned
        # one allocation per slot: the pinned allocator rounds each request up to a power of two
        self.tensors = [torch.empty(slot_bytes, dtype=torch.uint8, pin_memory=pinned) for _ in range(slots)]
        self.views = [memoryview(tensor.numpy()) for tensor in self.tensors]
        self.lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self.slot_bytes * self.slots


class PendingRing:
    """A HostRing being made in a background thread; `result()` waits for it (and re-raises its error).

    The thread is not a daemon: an interpreter exiting meanwhile waits for the pinning to end rather
    than stopping it halfway through a CUDA call.
    """

    def __init__(self, **ring: Any) -> None:
        """`ring`: HostRing's arguments."""
        self._ring: HostRing | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._make, kwargs=ring, name="chunkqa-hostring")
        self._thread.start()

    def _make(self, **ring: Any) -> None:
        try:
            self._ring = HostRing(**ring)
        except BaseException as exc:  # handed to the thread that waits for the ring
            self._error = exc

    def result(self) -> HostRing:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._ring is not None
        return self._ring
