"""How much of the time to first token does reusing a document's KV cache save?

Time to first token (TTFT) of the first question about a document (its whole prefix computed: the
baseline, measured in the same run), of a follow-up question in the same session (the prefix reused
in memory), and of a cached `ask`: a fresh Session whose prefix comes from the on-disk document
cache, the load from disk counted in its TTFT (once with the file in the page cache, once after
evicting it with posix_fadvise). Also shown: the first question with cache saving on (the snapshot
it adds; the file is written in the background). Random weights: the work is measured, not answers.
Target: a follow-up or cached question's TTFT under 5 % of the first one's.

    python benchmarks/ttft_cache.py                 # CPU: Llama, 4 layers, hidden 512, P 2048, 8k tokens
    python benchmarks/ttft_cache.py --device cuda   # GPU: Llama-3-8B shape, bf16, P 8192, 32k tokens
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, print_table, sync, write_results

from chunkqa.cache import CacheOptions, DocCache, clear_entries, list_entries
from chunkqa.engine.loading import LoadedModel
from chunkqa.engine.results import GenerationConfig
from chunkqa.methods.dca import apply_dca
from chunkqa.prompt import PromptBuilder
from chunkqa.session import Session

PRESETS = {  # layers, hidden, heads, kv heads, MLP, vocab, P, document tokens
    "cpu": (4, 512, 8, 4, 1536, 32000, 2048, 8192),
    "cuda": (32, 4096, 32, 8, 14336, 128256, 8192, 32768),
}
FIRST, FOLLOW_UP = "What is the main result of the paper?", "And how was it measured?"
ONE_TOKEN = GenerationConfig(max_new_tokens=1)


NAMES = ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab", "pretraining_length", "tokens")


def fill_preset(args, device: torch.device) -> tuple[str, ...]:
    """Set every shape argument left unset to the device's preset; return their names."""
    for name, value in zip(NAMES, PRESETS["cuda" if device.type == "cuda" else "cpu"], strict=True):
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    return NAMES


def build_model(args, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """A random Llama made directly on the device in its dtype (nothing saved), with DCA applied."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.pretraining_length,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    handle = apply_dca(model, pretraining_length=args.pretraining_length)
    name = f"random-llama-{args.layers}x{args.hidden}"
    return LoadedModel.wrap(model, word_tokenizer(args.vocab), handle=handle, name=name, device=device)


def word_tokenizer(vocab: int):
    """A word-level tokenizer with `vocab` entries, so every sampled id decodes."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<s>": 0, "</s>": 1, "<unk>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def new_session(loaded: LoadedModel, document: list[int], cache_dir: Path | None) -> tuple[Session, DocCache]:
    builder = PromptBuilder(loaded.tokenizer, template="base", system="", chat=False)
    cache = None
    if cache_dir is not None:
        # as `chunkqa ask` does before loading the weights (pinning its host ring and fingerprinting
        # the tokenizer meanwhile): the weights are already here, so wait for that instead of
        # counting it as the question's time
        cache = DocCache(CacheOptions(cache_dir, 2**40, 0), {"model": loaded.spec.name})
        cache.prepare(loaded.device, loaded.tokenizer, wait=True)
    return Session(loaded, builder, document, store=cache), cache


def ttft(session: Session, question: str, history: bool = False):
    for _ in session.ask(question, ONE_TOKEN, history=history):
        pass
    return session.last_stats


def evict_from_page_cache(directory: Path) -> None:
    for entry in list_entries(directory):
        fd = os.open(entry.path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(loaded: LoadedModel, document: list[int], cache_dir: Path, repeats: int) -> dict[str, list]:
    """Stats per case, `repeats` each; a fresh session for every first or cached question."""
    runs: dict[str, list] = {
        "first": [],
        "follow-up": [],
        "first + save": [],
        "cached": [],
        "cached cold": [],
    }
    for _ in range(repeats):
        session, _ = new_session(loaded, document, None)
        runs["first"].append(ttft(session, FIRST, history=True))
        runs["follow-up"].append(ttft(session, FOLLOW_UP, history=True))
        del session
        clear_entries(cache_dir)  # so that this first question computes and saves
        session, cache = new_session(loaded, document, cache_dir)
        runs["first + save"].append(ttft(session, FIRST))
        events = cache.wait()
        assert [e.kind for e in events] == ["saved"], events
        del session
        for case in ("cached", "cached cold"):
            if case == "cached cold":
                evict_from_page_cache(cache_dir)
            session, cache = new_session(loaded, document, cache_dir)
            runs[case].append(ttft(session, FIRST))
            assert cache.status == "hit", cache.events()
            del session
    return runs


def rows_of(runs: dict[str, list], cache_dir: Path, prefix: int) -> list[dict]:
    first = statistics.median(s.ttft_seconds for s in runs["first"])
    entry_mib = sum(e.size for e in list_entries(cache_dir)) / 2**20
    labels = {
        "first": "first question (baseline)",
        "follow-up": "follow-up, same session",
        "cached": "cached ask, file in page cache",
        "cached cold": "cached ask, file evicted first",
        "first + save": "first question, saving on",
    }
    rows = []
    for case, stats in runs.items():
        seconds = statistics.median(s.ttft_seconds for s in stats)
        ratio = seconds / first
        target = case in ("follow-up", "cached", "cached cold")
        rows.append(
            {
                "case": labels[case],
                "prefix_tokens": prefix,
                "reused": stats[-1].reused_tokens,
                "computed": stats[-1].prefill_tokens,
                "ttft_ms": seconds * 1e3,
                "vs_first": ratio,
                "under_5pct": ("yes" if ratio < 0.05 else "NO") if target else "-",
                "entry_mib": entry_mib if case.startswith("cached") else None,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    for name in (
        "layers",
        "hidden",
        "heads",
        "kv-heads",
        "intermediate",
        "vocab",
        "pretraining-length",
        "tokens",
    ):
        parser.add_argument(f"--{name}", type=int, default=None, help="override the device's preset")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: its own)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where entries go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON lines (default results/)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = fill_preset(args, device)
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    )

    loaded = build_model(args, device, dtype)
    generator = torch.Generator().manual_seed(0)
    document = torch.randint(3, args.vocab, (args.tokens,), generator=generator).tolist()
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="chunkqa-ttft-"))
    try:
        ttft(new_session(loaded, document[:512], None)[0], FIRST)  # warm-up: kernels, allocator
        sync(device)
        runs = measure(loaded, document, cache_dir, args.repeats)
        prefix = len(new_session(loaded, document, None)[0].prompt(FIRST, history=False).prefix)
        rows = rows_of(runs, cache_dir, prefix)
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    shape = {k: getattr(args, k) for k in names}
    env = {
        **environment(device),
        "dtype": str(dtype).removeprefix("torch."),
        **shape,
        "repeats": args.repeats,
    }
    path = write_results("ttft_cache", [{**env, **row} for row in rows], args.out)
    print(
        f"# TTFT with the document cache  ({env['device']}, torch {env['torch']}, {env['dtype']}, "
        f"Llama {args.layers} layers x {args.hidden}, {args.heads}q/{args.kv_heads}kv heads, "
        f"P={args.pretraining_length}, {args.tokens:,}-token document, median of {args.repeats}; "
        f"results appended to {path})"
    )
    columns = [
        "case",
        "prefix_tokens",
        "reused",
        "computed",
        "ttft_ms",
        "vs_first",
        "under_5pct",
        "entry_mib",
    ]
    print_table(rows, columns)


if __name__ == "__main__":
    main()
