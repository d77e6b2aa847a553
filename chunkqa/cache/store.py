"""The document cache: a document prefix's KV cache kept on disk, keyed by everything that shapes it.

An entry is one safetensors file, `<key>.safetensors`, in the cache directory (format and checks in
`chunkqa.cache.entry`; the key, a sha256 over model, dtype, DCA settings, template, tokenizer, versions
and the prefix token ids, in `chunkqa.cache.key`): any change gives another entry. A bad entry is
deleted and reported, never used. Last use is the file's mtime, touched on every load; past the
size limit the least recently used entries go first. `DocCache` is a session's prefix store: the
session calls `fetch` before computing a prefix and `keep` after, and the cache answers through the
session's own `load_prefix` and `snapshot_prefix`. Nothing here prints: what happened comes back as
`CacheEvent`s.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkqa.cache.entry import (
    SUFFIX,
    CorruptEntry,
    Entry,
    clear_entries,
    computed_event,
    entry_path,
    evict,
    list_entries,
    make_header,
    read_entry,
    to_host,
    write_entry,
)
from chunkqa.cache.key import entry_key, key_fields, model_fingerprint, tokenizer_fingerprint
from chunkqa.errors import UsageError

__all__ = ["CacheEvent", "CacheOptions", "DocCache", "Entry", "clear_entries", "list_entries", "parse_size"]

DEFAULT_MIN_TOKENS = 2048  # shorter prefixes prefill in about a second: not worth the disk
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30})
_UNITS.update({"t": 2**40, "tib": 2**40})


@dataclass(frozen=True)
class CacheOptions:
    """Where the cache lives, how large it may grow, and the shortest prefix worth storing."""

    directory: Path
    max_bytes: int
    min_tokens: int = DEFAULT_MIN_TOKENS


@dataclass(frozen=True)
class CacheEvent:
    """Something the cache did: hit, miss, saved, corrupt (deleted, to be rebuilt), failed, evicted."""

    kind: str
    message: str
    path: Path | None = None


def _on_cuda(device: Any) -> bool:
    return getattr(device, "type", str(device)) == "cuda"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "chunkqa" / "kv"


def parse_size(text: str | int) -> int:
    """'20GiB', '500MB', '0' (no saving) or a byte count -> bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return max(text, 0)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match and _UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise UsageError(f"cannot read the cache size {text!r}", hint="write it like 20GiB, 500MB or 0 (off)")
    return int(float(match.group(1)) * unit)


# ---- a session's link to the cache ---------------------------------------------------------------------
class DocCache:
    """Loads a session's document prefix from disk before prefill, saves it right after it is computed.

    Saving snapshots the prefix (a GPU prefix is copied to the CPU first) and writes the file in a
    background thread while the answer is generated; `wait()` joins it and returns what happened.
    Loads onto a GPU read through one pinned host ring, kept for the cache's life and pinned in a
    background thread from `prepare` (or `attach`) on, when entries exist (pinning takes about 0.2 s).
    """

    def __init__(self, options: CacheOptions, label: dict[str, Any] | None = None) -> None:
        self.options = options
        self.label = label or {}  # model and document names, shown by `chunkqa cache list`
        self.status = "off"  # the last outcome: hit, miss, saved, short, corrupt
        self.refresh = False  # skip the next load and overwrite the entry (chat's /reset)
        self._events: list[CacheEvent] = []
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._go = threading.Event()  # the writer starts its work once set (after the first token)
        self._tokenizers: dict[int, str] = {}  # id(tokenizer) -> its fingerprint
        self._fingerprints: dict[int, threading.Thread] = {}  # fingerprints being computed (prepare)
        self._staging: Any = None  # hostring.PendingRing: the pinned host ring of loads onto a GPU
        self._hashing: threading.Thread | None = None  # a GGUF file's sha256, started by prepare

    def prepare(self, device: Any, tokenizer: Any = None, wait: bool = False, source: Any = None) -> DocCache:
        """Get ready for a lookup: fingerprint `tokenizer` (and a GGUF `source`'s file) for the entry
        key and, on CUDA with entries on disk, pin the host ring a load goes through.

        Both take a while (tens of milliseconds for a 128k vocabulary, a few hundred for the ring):
        call this before the weights load, so they happen meanwhile, in background threads, instead
        of in the first question's time. `wait`: return once they are done.
        """
        known = self._tokenizers.keys() | self._fingerprints.keys()
        if tokenizer is not None and id(tokenizer) not in known:
            self._fingerprints[id(tokenizer)] = _start(self._fingerprint, tokenizer)
        if source is not None and source.file is not None:  # hashed meanwhile; remembered for the key
            self._hashing = _start(model_fingerprint, source)
        directory = self.options.directory
        if _on_cuda(device) and directory.is_dir() and any(directory.glob(f"*{SUFFIX}")):
            ring = self._staging_ring()
            if wait:
                ring.result()
        if wait and tokenizer is not None:
            self._fingerprint_of(tokenizer)
        return self

    def first_token_out(self) -> None:
        """The answer has begun: a pending save may start its work now."""
        self._go.set()

    def fetch(self, session: Any, prompt: Any) -> None:
        """Before the prefix is computed: load it into the session, if a sound entry exists."""
        if not self._wanted(prompt) or self._consume_refresh():
            return
        key, fields = self._key(session, prompt)
        path = entry_path(self.options.directory, key)
        if not path.is_file():
            self.status = "miss"
            return
        layers = session.loaded.config.num_hidden_layers
        device = session.loaded.device
        staging = self._staging_ring().result() if _on_cuda(device) else None
        try:
            tensors = read_entry(path, key, fields, layers, device, staging)
        except CorruptEntry as exc:
            path.unlink(missing_ok=True)
            self.status = "corrupt"
            self._event(
                "corrupt", f"document cache entry {path.name[:12]}… rejected, rebuilding it: {exc}", path
            )
            return
        session.load_prefix(prompt.prefix, tensors)
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for eviction
        self.status = "hit"
        self._event("hit", f"document cache: reused the document's {len(prompt.prefix):,} tokens", path)

    def keep(self, session: Any, prompt: Any) -> None:
        """After the prefix was computed: hand it to a background writer.

        The answer does not wait: the writer starts once the first token is out (so copying and
        writing gigabytes does not compete with the question's own prefill), copies the tensors off
        the GPU on its own stream (the cache never overwrites the positions it copies, so they stay
        as they are) and writes the file.
        """
        if not self._wanted(prompt) or self.options.max_bytes <= 0:
            return
        layers = session.snapshot_prefix()
        if any(k is None or k.shape[-2] != len(prompt.prefix) for k, _ in layers):
            self._event("skipped", "document cache: this model's cache does not keep every key; not saved")
            return
        size = sum(k.nbytes + v.nbytes for k, v in layers)
        if size > self.options.max_bytes:
            self._event(
                "skipped", f"document cache: the prefix ({size / 2**20:,.0f} MiB) exceeds the cache size"
            )
            return
        key, fields = self._key(session, prompt)
        computed = computed_event(session.loaded.device)
        self.wait_writer()
        self._go.clear()
        self._writer = threading.Thread(
            target=self._write, args=(key, fields, layers, computed), name="chunkqa-doccache"
        )
        self._writer.start()
        self.status = "saved"

    def events(self) -> list[CacheEvent]:
        """What happened since the last call (hits, rejected entries, finished saves)."""
        with self._lock:
            events, self._events = self._events, []
        return events

    def wait_writer(self) -> None:
        if self._writer is not None:
            self._go.set()  # a writer still waiting for the first token starts now
            self._writer.join()
            self._writer = None

    def wait(self) -> list[CacheEvent]:
        """Finish any pending save; then the events."""
        self.wait_writer()
        return self.events()

    def _write(self, key: str, fields: dict, layers: list[tuple[Any, Any]], computed: Any) -> None:
        self._go.wait()
        try:
            layers = to_host(layers, computed)
            header = make_header(key, fields, layers, self.label)
            path = write_entry(self.options.directory, key, header, layers)
            removed = evict(self.options.directory, self.options.max_bytes, keep=path)
        except Exception as exc:  # a background thread must not die with a traceback on stderr
            self._event("failed", f"document cache: could not save ({type(exc).__name__}: {exc})")
            return
        self._event("saved", f"document cache: saved the document's {header['tokens']:,} tokens", path)
        if removed:
            self._event("evicted", f"document cache: removed {len(removed)} least recently used entries")

    def _wanted(self, prompt: Any) -> bool:
        if len(prompt.prefix) < self.options.min_tokens:
            self.status = "short"
            return False
        return True

    def _consume_refresh(self) -> bool:
        refresh, self.refresh = self.refresh, False
        return refresh

    def _key(self, session: Any, prompt: Any) -> tuple[str, dict[str, Any]]:
        if self._hashing is not None:
            self._hashing.join()  # its result waits in key.file_sha256's memory
        tokenizer = session.builder.tokenizer
        fields = key_fields(session.loaded, session.builder, prompt.prefix, self._fingerprint_of(tokenizer))
        return entry_key(fields), fields

    def _fingerprint_of(self, tokenizer: Any) -> str:
        pending = self._fingerprints.pop(id(tokenizer), None)
        if pending is not None:
            pending.join()  # started by prepare
        if id(tokenizer) not in self._tokenizers:
            self._fingerprint(tokenizer)
        return self._tokenizers[id(tokenizer)]

    def _fingerprint(self, tokenizer: Any) -> None:
        self._tokenizers[id(tokenizer)] = tokenizer_fingerprint(tokenizer)

    def _staging_ring(self) -> Any:
        """The ring's PendingRing, started on first use; result() joins the thread making it."""
        if self._staging is None:
            from chunkqa.cache.hostring import PendingRing

            self._staging = PendingRing()
        return self._staging

    def _event(self, kind: str, message: str, path: Path | None = None) -> None:
        with self._lock:
            self._events.append(CacheEvent(kind, message, path))


def _start(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name="chunkqa-doccache-prepare", daemon=True)
    thread.start()
    return thread
