"""chunkqa.cache.store and chunkqa.cache.entry: keys, exact restores under DCA, corrupt entries, eviction."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
from types import SimpleNamespace

import pytest
import torch
from tiny_models import load_with_method

from chunkqa.cache.entry import (
    CorruptEntry,
    clear_entries,
    entry_path,
    evict,
    list_entries,
    read_entry,
    write_entry,
)
from chunkqa.cache.key import entry_key, key_fields, model_fingerprint, tokenizer_fingerprint
from chunkqa.cache.store import CacheOptions, DocCache, parse_size
from chunkqa.engine.hub import Source
from chunkqa.engine.loading import ModelSpec, load_tokenizer, resolve_model
from chunkqa.engine.results import GenerationConfig
from chunkqa.errors import UsageError
from chunkqa.methods.dca.config import DCAConfig
from chunkqa.prompt import PromptBuilder
from chunkqa.session import Session

DOC = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 12
QUESTION = "What is the main result?"
GREEDY = GenerationConfig.greedy(12)


@pytest.fixture(scope="module")
def loaded(cli_models):
    return load_with_method(cli_models["qwen2"], logit_scale="auto")  # a factor that follows the length


def new_session(loaded, doc: str = DOC, system: str | None = None, store=None) -> Session:
    builder = PromptBuilder(loaded.tokenizer, system=system)
    return Session(loaded, builder, builder.encode_document(doc), piece=64, store=store)


def cached(loaded, directory, max_bytes: int = 2**30, min_tokens: int = 0, **kwargs):
    label = {"model": "tiny-qwen2", "documents": ["doc.txt"]}
    cache = DocCache(CacheOptions(directory, max_bytes, min_tokens), label).prepare(loaded.device)
    return new_session(loaded, store=cache, **kwargs), cache


def tokens_of(session: Session, question: str = QUESTION) -> list[int]:
    return [s.token for s in session.ask(question, GREEDY) if s.stats is None and s.token >= 0]


def prefix_len(session: Session) -> int:
    return len(session.prompt(QUESTION, history=False).prefix)


def only_entry(directory):
    (path,) = [e.path for e in list_entries(directory)]
    return path


@pytest.fixture(scope="module")
def reference(loaded):
    return tokens_of(new_session(loaded))


@pytest.fixture(scope="module")
def pristine(loaded, tmp_path_factory):
    """A sound entry for DOC, and one for DOC under another system prompt (a different key)."""
    directory = tmp_path_factory.mktemp("pristine")
    for system in (None, "Answer in one word."):
        session, cache = cached(loaded, directory / (system or "default").replace(" ", "-"), system=system)
        tokens_of(session)
        cache.wait()
    return only_entry(directory / "default"), only_entry(directory / "Answer-in-one-word.")


def scaled_rope(loaded):
    """The same loaded model, its config's RoPE scaled (as `--rope yarn:2` loads it)."""
    from chunkqa.methods.ropescale import RopeScaling, scaled_config

    model = SimpleNamespace(config=scaled_config(loaded.model.config, RopeScaling("yarn", 2.0)))
    return dataclasses.replace(loaded, model=model)


# ---- sizes ----------------------------------------------------------------------------------------------
def test_parse_size():
    assert parse_size("20GiB") == 20 * 2**30 and parse_size("500MB") == 500 * 10**6
    assert parse_size("1.5g") == int(1.5 * 2**30) and parse_size("0") == 0 and parse_size(4096) == 4096
    for bad in ("lots", "-1GB", "10 parsecs"):
        with pytest.raises(UsageError):
            parse_size(bad)


# ---- exactness ------------------------------------------------------------------------------------------
def test_restored_prefix_is_bitwise_the_computed_one_and_answers_are_exact(loaded, reference, tmp_path):
    first_session, first_cache = cached(loaded, tmp_path)
    first = tokens_of(first_session)
    events = first_cache.wait()
    assert first_cache.status == "saved" and [e.kind for e in events] == ["saved"]
    n = prefix_len(first_session)
    assert loaded.handle.logit_factor(n) > 1.01  # DCA's logit scale is active at this length

    second_session, second_cache = cached(loaded, tmp_path)
    second = tokens_of(second_session)
    stats = second_session.last_stats
    assert second_cache.status == "hit" and [e.kind for e in second_cache.events()] == ["hit"]
    assert (
        stats.reused_tokens == n and stats.prefill_tokens == len(second_session.prompt(QUESTION, False)) - n
    )
    assert first == second == reference
    for computed, restored in zip(first_session.cache.layers, second_session.cache.layers, strict=True):
        assert torch.equal(computed.keys[..., :n, :], restored.keys[..., :n, :])
        assert torch.equal(computed.values[..., :n, :], restored.values[..., :n, :])


def test_follow_up_and_cached_question_agree_with_a_fresh_session(loaded, tmp_path):
    session, cache = cached(loaded, tmp_path)
    tokens_of(session)
    cache.wait()
    follow_up = tokens_of(session, "Who wrote it?")  # reuses the in-memory prefix
    restored_session, _ = cached(loaded, tmp_path)
    assert (
        tokens_of(restored_session, "Who wrote it?")
        == follow_up
        == tokens_of(new_session(loaded), "Who wrote it?")
    )


def test_load_touches_last_use(loaded, pristine, tmp_path):
    path = tmp_path / pristine[0].name
    shutil.copy(pristine[0], path)
    os.utime(path, (1_000_000, 1_000_000))
    session, cache = cached(loaded, tmp_path)
    tokens_of(session)
    assert cache.status == "hit" and path.stat().st_mtime > 1_000_000


# ---- the key --------------------------------------------------------------------------------------------
def test_key_changes_with_everything_that_shapes_the_prefix(loaded, cli_models, tmp_path):
    session = new_session(loaded)
    prefix = session.prompt(QUESTION, history=False).prefix
    tok = tokenizer_fingerprint(loaded.tokenizer)
    base = entry_key(key_fields(loaded, session.builder, prefix, tok))
    assert base == entry_key(key_fields(loaded, session.builder, prefix, tok))  # deterministic

    def with_dca(config):
        handle = SimpleNamespace(config=config, kernel_name=loaded.handle.kernel_name)
        return dataclasses.replace(loaded, handle=handle)

    p, c, w = (
        loaded.handle.config.pretraining_length,
        loaded.handle.config.chunk_size,
        loaded.handle.config.local_window,
    )
    variants = {
        "dtype": (
            dataclasses.replace(loaded, info=dataclasses.replace(loaded.info, dtype=torch.bfloat16)),
            session.builder,
            prefix,
            tok,
        ),
        "revision": (dataclasses.replace(loaded, revision="abc123"), session.builder, prefix, tok),
        "logit scale": (with_dca(DCAConfig(p, c, w, 1.0)), session.builder, prefix, tok),
        "chunk size": (with_dca(DCAConfig(p, c - 8, w)), session.builder, prefix, tok),
        "dca off": (dataclasses.replace(loaded, handle=None), session.builder, prefix, tok),
        "rope scaling": (scaled_rope(loaded), session.builder, prefix, tok),
        "template": (loaded, PromptBuilder(loaded.tokenizer, template="summary"), prefix, tok),
        "system": (loaded, PromptBuilder(loaded.tokenizer, system="Be brief."), prefix, tok),
        "tokenizer": (loaded, session.builder, prefix, "another-tokenizer"),
        "prefix": (loaded, session.builder, (*prefix[:-1], prefix[-1] + 1), tok),
    }
    keys = {name: entry_key(key_fields(*args)) for name, args in variants.items()}
    assert base not in keys.values() and len(set(keys.values())) == len(keys)


def test_tokenizer_and_model_fingerprints(cli_models, tmp_path):
    qwen = load_tokenizer(resolve_model(ModelSpec(str(cli_models["qwen2"]))))
    again = load_tokenizer(resolve_model(ModelSpec(str(cli_models["qwen2"]))))
    llama = load_tokenizer(resolve_model(ModelSpec(str(cli_models["llama"]))))
    assert tokenizer_fingerprint(qwen) == tokenizer_fingerprint(again) != tokenizer_fingerprint(llama)
    copy = shutil.copytree(cli_models["qwen2"], tmp_path / "model")
    before = model_fingerprint(Source(str(copy)))
    os.utime(copy / "config.json", ns=(1, 1))
    assert before is not None and model_fingerprint(Source(str(copy))) != before
    assert model_fingerprint(Source("org/some-hub-model")) is None


# ---- bad entries ----------------------------------------------------------------------------------------
def _truncate(path, other):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_bit(path, other):
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x10  # inside the last tensor's data
    path.write_bytes(bytes(data))


def _rewrite_metadata(path, other):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
        header = json.loads(f.metadata()["chunkqa"])
    header["fields"]["dtype"] = "bfloat16"
    save_file(tensors, path, metadata={"chunkqa": json.dumps(header)})


def _zero_a_tensor_keep_metadata(path, other):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
        metadata = f.metadata()
    tensors["v.1"] = torch.zeros_like(tensors["v.1"])
    save_file(tensors, path, metadata=metadata)


def _wrong_key(path, other):
    shutil.copy(other, path)  # a sound entry, but for another prompt


def _garbage(path, other):
    path.write_bytes(b"not a safetensors file at all")


@pytest.mark.parametrize(
    "damage", [_truncate, _flip_bit, _rewrite_metadata, _zero_a_tensor_keep_metadata, _wrong_key, _garbage]
)
def test_bad_entries_are_reported_rebuilt_and_never_used(loaded, reference, pristine, tmp_path, damage):
    path = tmp_path / pristine[0].name
    shutil.copy(pristine[0], path)
    damage(path, pristine[1])
    session, cache = cached(loaded, tmp_path)
    assert tokens_of(session) == reference
    assert session.last_stats.reused_tokens == 0  # recomputed, not loaded
    assert cache.status == "saved"
    events = cache.wait()
    assert [e.kind for e in events] == ["corrupt", "saved"] and "rejected" in events[0].message
    fresh, fresh_cache = cached(loaded, tmp_path)  # the rebuilt entry is sound
    assert tokens_of(fresh) == reference and fresh_cache.status == "hit"


def test_read_entry_refuses_a_mismatched_layer_count(loaded, pristine):
    session = new_session(loaded)
    cache = DocCache(CacheOptions(pristine[0].parent, 2**30, 0))
    key, fields = cache._key(session, session.prompt(QUESTION, history=False))
    assert pristine[0].name.startswith(key)
    read_entry(pristine[0], key, fields, 2, "cpu")  # sound
    with pytest.raises(CorruptEntry, match="layers"):
        read_entry(pristine[0], key, fields, 3, "cpu")


# ---- thresholds, limits, interrupts ----------------------------------------------------------------------
def test_short_prefixes_and_oversized_entries_are_not_written(loaded, tmp_path):
    session, cache = cached(loaded, tmp_path, min_tokens=10**6)
    tokens_of(session)
    assert cache.status == "short" and cache.wait() == [] and list_entries(tmp_path) == []
    session, cache = cached(loaded, tmp_path, max_bytes=1000)
    tokens_of(session)
    assert [e.kind for e in cache.wait()] == ["skipped"] and list_entries(tmp_path) == []


def test_interrupt_inside_the_prefix_prefill_trims_every_layer(loaded, reference, tmp_path):
    session, cache = cached(loaded, tmp_path)
    calls = []

    def stop(module, args):
        calls.append(1)
        if len(calls) == 3:  # layer 1 of the third piece: layer 0 has already stored it
            raise KeyboardInterrupt

    hook = loaded.model.model.layers[1].register_forward_pre_hook(stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            tokens_of(session)
    finally:
        hook.remove()
    assert len(session.cache_ids) == 128
    assert all(layer.get_seq_length() == 128 for layer in session.cache.layers)
    assert cache.wait() == [] and list_entries(tmp_path) == []  # a partial prefix is never saved
    assert tokens_of(session) == reference


# ---- the directory --------------------------------------------------------------------------------------
def _fake_entry(directory, name: str, tokens: int, mtime: float):
    header = {"tokens": tokens, "model": f"model-{name}", "documents": [f"{name}.txt"]}
    k, v = torch.zeros(1, 1, tokens, 4), torch.ones(1, 1, tokens, 4)
    path = write_entry(directory, name * 64, header, [(k, v)])
    os.utime(path, (mtime, mtime))
    return path


def test_eviction_goes_least_recently_used_first(tmp_path):
    old = _fake_entry(tmp_path, "a", 100, 1000)
    middle = _fake_entry(tmp_path, "b", 100, 2000)
    new = _fake_entry(tmp_path, "c", 100, 3000)
    size = old.stat().st_size
    assert [e.path for e in list_entries(tmp_path)] == [old, middle, new]
    assert [e.path for e in evict(tmp_path, 2 * size)] == [old]
    assert [e.path for e in evict(tmp_path, size, keep=middle)] == [new]
    assert [e.path for e in list_entries(tmp_path)] == [middle]


def test_saving_evicts_older_entries_past_the_limit(loaded, pristine, tmp_path):
    stale = _fake_entry(tmp_path, "d", 4000, 1000)
    limit = pristine[0].stat().st_size + stale.stat().st_size // 2
    session, cache = cached(loaded, tmp_path, max_bytes=limit)
    tokens_of(session)
    assert [e.kind for e in cache.wait()] == ["saved", "evicted"]
    assert [e.path.name for e in list_entries(tmp_path)] == [pristine[0].name]


def test_list_and_clear(pristine, tmp_path):
    shutil.copy(pristine[0], tmp_path / pristine[0].name)
    (tmp_path / ("f" * 64 + ".safetensors")).write_bytes(b"junk")
    (tmp_path / ".tmp-leftover.safetensors").write_bytes(b"partial")
    entries = {e.path.name: e for e in list_entries(tmp_path)}
    good, junk = entries[pristine[0].name], entries["f" * 64 + ".safetensors"]
    assert (good.model, good.documents) == ("tiny-qwen2", ("doc.txt",)) and good.tokens > 500
    assert good.size == pristine[0].stat().st_size and junk.tokens is None
    assert len(clear_entries(tmp_path)) == 2 and list(tmp_path.iterdir()) == []


def test_entry_paths_are_named_by_key(tmp_path):
    assert entry_path(tmp_path, "ab" * 32).name == "ab" * 32 + ".safetensors"


def test_the_save_waits_for_the_first_token(loaded, tmp_path, monkeypatch):
    """Copying and writing the prefix must not compete with computing the first token."""
    import chunkqa.cache.store as doccache

    order = []
    real_to_host = doccache.to_host
    monkeypatch.setattr(doccache, "to_host", lambda *a: order.append("copy") or real_to_host(*a))
    session, cache = cached(loaded, tmp_path)
    release = cache.first_token_out
    cache.first_token_out = lambda: (order.append("first token"), release())
    assert tokens_of(session)
    assert cache.wait()[-1].kind == "saved"
    assert order[0] == "first token" and order.count("copy") == 1


def test_a_pending_save_finishes_when_the_answer_is_abandoned(loaded, tmp_path):
    """No first token (the caller stops before reading one): waiting for the save must not hang."""
    session, cache = cached(loaded, tmp_path)
    cache.first_token_out = lambda: None  # as if the answer never got to its first token
    steps = session.ask(QUESTION, GREEDY)
    with pytest.raises(StopIteration):
        while True:  # run the prefill (the save is queued there), then stop without the hook firing
            step = next(steps)
            if step.stats is None:
                steps.close()
                raise StopIteration
    assert [e.kind for e in cache.wait()] == ["saved"]


def test_prepare_fingerprints_the_tokenizer_in_the_background(cli_models, tmp_path, monkeypatch):
    """`ask` prepares the cache before the weights load: the key's slowest part is done meanwhile."""
    from chunkqa.cache import store as doccache

    loaded = load_with_method(cli_models["qwen2"])
    threads = []
    real = doccache.tokenizer_fingerprint

    def counting(tokenizer):
        threads.append(threading.current_thread().name)
        return real(tokenizer)

    monkeypatch.setattr(doccache, "tokenizer_fingerprint", counting)
    cache = DocCache(CacheOptions(tmp_path, 2**30, 0)).prepare(loaded.device, loaded.tokenizer)
    cache.prepare(loaded.device, loaded.tokenizer, wait=True)  # a second prepare starts nothing more
    builder = PromptBuilder(loaded.tokenizer)
    session = Session(loaded, builder, builder.encode_document(DOC), store=cache)
    session.answer("What?", GenerationConfig(max_new_tokens=2))
    assert threads == ["chunkqa-doccache-prepare"]  # once, off the main thread
    assert [event.kind for event in cache.wait()] == ["saved"]
    prefix = session.prompt("What?", False).prefix
    key = entry_key(key_fields(loaded, builder, prefix, real(loaded.tokenizer)))
    assert entry_path(tmp_path, key).is_file()  # the entry is under the key of the real fingerprint
