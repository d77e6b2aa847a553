#!/usr/bin/env python3
"""Evaluate chunkqa's tiny model with and without Dual Chunk Attention.

Measures, per length (256 ... 4096 tokens) and per mode (no DCA, DCA with logit scale 1.0, DCA
with the "auto" scale):
  ppl     perplexity of validation-book windows ([BOS] + L-1 tokens, mean NLL over all tokens)
  qa      pass key in validation-book text, chunkqa's base-model QA format; correct when greedy
          decoding gives exactly " The pass key is KEY." then EOS
  cl      the ChunkLlama pass-key protocol (garbage text); correct when the greedy continuation of
          "The pass key is" is exactly the tokens of " KEY"
  needle  "The special magic number for CITY is NNNNNNN." in validation-book text, QA format;
          correct when the generated answer contains the number
and answers the demo documents in examples/ exactly as `chunkqa ask` would prompt.

qa and cl are scored by teacher forcing: greedy decoding yields the target exactly when the
argmax at every target position is the target token, which one forward pass checks (the DCA
logit scale is fixed by the prompt length, as during generation). needle runs model.generate.

    python scripts/tiny_check.py --model chunkqa/assets/tiny --trials 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_tiny import (
    HELDOUT_CITIES,
    KEY_LINE,
    NEEDLE,
    NEEDLE_QUESTION,
    PASSKEY_ANSWER,
    PASSKEY_QUESTION,
    QA_SUFFIX,
    SINGLE_CITIES,
    cl_prompt,
    read_splits,
)

# 50 cities for the needle test: 42 names that training asked about and 8 that no training sample
# contains.
EVAL_CITIES = tuple(SINGLE_CITIES[:42]) + HELDOUT_CITIES
MODES = {"none": None, "dca1": 1.0, "dcaauto": "auto"}


def load(path: str, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    tok = AutoTokenizer.from_pretrained(path)
    return model, tok


class Haystack:
    """Validation-book text (never used in training), cut to a number of tokens."""

    def __init__(self, tok, data_dir: Path, prepared: Path) -> None:
        self.tok = tok
        self.books: list[str] = []
        if (data_dir / "SPLITS.md").exists():
            for name in read_splits(data_dir)["validation"]:
                self.books.append((data_dir / name).read_text(encoding="utf-8"))
        else:  # on the GPU machine: decode the prepared validation tokens, book by book
            ids = np.load(prepared / "val_ids.npy")
            off = np.load(prepared / "val_offsets.npy")
            for i in range(len(off) - 1):
                self.books.append(tok.decode(ids[off[i] : off[i + 1]].tolist()))
        self.ids = [tok(b, add_special_tokens=False).input_ids for b in self.books]

    def text(self, n_tokens: int, rng: random.Random) -> str:
        """About n_tokens tokens of one book, starting at a paragraph, ending at a whole token."""
        b = rng.randrange(len(self.books))
        book = self.books[b]
        start = rng.randint(0, len(book) - 40 * n_tokens - 1)
        para = book.find("\n\n", start)
        start = para + 2 if para >= 0 else start
        ids = self.tok(book[start : start + 8 * n_tokens + 100], add_special_tokens=False).input_ids
        return self.tok.decode(ids[:n_tokens]).rstrip("\ufffd")

    def windows(self, length: int, count: int, seed: int) -> list[list[int]]:
        rng = random.Random(seed)
        out = []
        for _ in range(count):
            b = rng.randrange(len(self.ids))
            s = rng.randint(0, len(self.ids[b]) - length)
            out.append(self.ids[b][s : s + length - 1])
        return out


def insert_at_depth(text: str, line: str, depth: float) -> str:
    """Put `line` after the first sentence end at or after `depth` of the text (else at the end)."""
    pos = int(len(text) * depth)
    for i in range(pos, len(text) - 1):
        if text[i] in ".!?" and text[i + 1] in " \n":
            return text[: i + 1] + " " + line + text[i + 1 :]
    return text.rstrip() + " " + line


def qa_ids(tok, document: str, question: str) -> list[int]:
    """chunkqa's base-model prompt: [BOS] + ids(document) + ids(suffix), pieces tokenized apart."""
    doc = tok(document, add_special_tokens=False).input_ids
    suffix = tok(QA_SUFFIX.format(question=question), add_special_tokens=False).input_ids
    return [tok.bos_token_id, *doc, *suffix]


@contextlib.contextmanager
def dca_mode(model, mode: str):
    scale = MODES[mode]
    if scale is None:
        yield None
        return
    from chunkqa import apply_dca

    handle = apply_dca(model, logit_scale=scale)
    try:
        yield handle
    finally:
        handle.remove()


def forced_correct(model, handle, prompt: list[int], target: list[int], device: str) -> bool:
    """Whether greedy decoding after `prompt` produces exactly `target` (one teacher-forced pass)."""
    ids = torch.tensor([prompt + target], device=device)
    ctx = handle.prompt_length(len(prompt)) if handle is not None else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        logits = model(input_ids=ids, logits_to_keep=len(target) + 1).logits[0, :-1]
    return bool((logits.argmax(-1).cpu() == torch.tensor(target)).all())


def generate(model, tok, prompt: list[int], device: str, max_new_tokens: int = 32) -> str:
    ids = torch.tensor([prompt], device=device)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    return tok.decode(out[0, len(prompt) :], skip_special_tokens=False)


def ppl(model, handle, windows: list[list[int]], bos: int, device: str) -> float:
    nll, count = 0.0, 0
    for w in windows:
        ids = torch.tensor([[bos, *w]], device=device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
        nll += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    return math.exp(nll / count)


def qa_trial(tok, hay: Haystack, length: int, rng: random.Random, depth: float):
    key = rng.randint(1, 50000) if rng.random() < 0.5 else rng.randint(10000, 99999)
    line = KEY_LINE.format(key=key)
    suffix_len = len(qa_ids(tok, "", PASSKEY_QUESTION)) - 1
    filler = length - 1 - suffix_len - len(tok(" " + line, add_special_tokens=False).input_ids)
    doc = insert_at_depth(hay.text(filler, rng), line, depth)
    prompt = qa_ids(tok, doc, PASSKEY_QUESTION)
    target = [*tok(PASSKEY_ANSWER.format(key=key), add_special_tokens=False).input_ids, tok.eos_token_id]
    return prompt, target


def cl_trial(tok, length: int, rng: random.Random, depth: float, chars_per_token: float):
    key = rng.randint(1, 50000)
    fixed = len(tok(cl_prompt(0, 0, key)).input_ids)
    chars = int((length - fixed) * chars_per_token)
    for _ in range(8):  # adjust the garbage so the prompt has `length` tokens (within a few)
        prompt = tok(cl_prompt(int(chars * depth), chars - int(chars * depth), key)).input_ids
        if abs(len(prompt) - length) <= 2:
            break
        chars -= int((len(prompt) - length) * chars_per_token)
    target = tok(f" {key}", add_special_tokens=False).input_ids
    return prompt, target


def needle_trial(tok, hay: Haystack, length: int, rng: random.Random, depth: float):
    city = rng.choice(EVAL_CITIES)
    number = rng.randint(1000000, 9999999)
    line = NEEDLE.format(city=city, number=number)
    question = NEEDLE_QUESTION.format(city=city)
    suffix_len = len(qa_ids(tok, "", question)) - 1
    filler = length - 1 - suffix_len - len(tok(" " + line, add_special_tokens=False).input_ids)
    doc = insert_at_depth(hay.text(filler, rng), line, depth)
    return qa_ids(tok, doc, question), str(number), city


def run_demo(model, tok, path: Path, key: str, device: str) -> dict:
    document = path.read_text(encoding="utf-8")
    prompt = qa_ids(tok, document, PASSKEY_QUESTION)
    out = {"file": str(path), "prompt_tokens": len(prompt)}
    for mode in MODES:
        with dca_mode(model, mode):
            answer = generate(model, tok, prompt, device)
        out[mode] = answer
        out[f"{mode}_correct"] = answer == PASSKEY_ANSWER.format(key=key) + tok.eos_token
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="chunkqa/assets/tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default="/work/shared/data/gutenberg")
    p.add_argument("--prepared", default=".carry/tiny", help="prepared data (used when --data-dir is absent)")
    p.add_argument("--lengths", default="256,512,1024,2048,4096")
    p.add_argument("--modes", default="none,dca1,dcaauto")
    p.add_argument("--tasks", default="ppl,qa,cl,needle,demo")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--ppl-windows", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    model, tok = load(args.model, args.device)
    assert tok("x").input_ids[0] == tok.bos_token_id and tok.eos_token_id is not None
    tasks, modes = args.tasks.split(","), args.modes.split(",")
    lengths = [int(x) for x in args.lengths.split(",")]
    hay = Haystack(tok, Path(args.data_dir), Path(args.prepared))
    garbage = cl_prompt(5000, 0, 1)
    cpt = len(garbage) / len(tok(garbage).input_ids)
    results: dict = {"model": args.model, "trials": args.trials, "table": {}}
    print(f"model {args.model}: {sum(x.numel() for x in model.parameters()):,} parameters", file=sys.stderr)
    for mode in modes:
        with dca_mode(model, mode) as handle:
            for length in lengths:
                row = {}
                if "ppl" in tasks:
                    wins = hay.windows(length, args.ppl_windows, args.seed + length)
                    row["ppl"] = round(ppl(model, handle, wins, tok.bos_token_id, args.device), 2)
                n = args.trials
                depths = [(t + 0.5) / n for t in range(n)]
                if "qa" in tasks:
                    rng = random.Random(args.seed * 7919 + length)
                    ok = [
                        forced_correct(model, handle, *qa_trial(tok, hay, length, rng, d), args.device)
                        for d in depths
                    ]
                    row["qa"] = sum(ok) / n
                if "cl" in tasks:
                    rng = random.Random(args.seed * 7919 + length + 1)
                    ok = [
                        forced_correct(model, handle, *cl_trial(tok, length, rng, d, cpt), args.device)
                        for d in depths
                    ]
                    row["cl"] = sum(ok) / n
                if "needle" in tasks:
                    rng = random.Random(args.seed * 7919 + length + 2)
                    hits, held = [], []
                    for d in depths:
                        prompt, number, city = needle_trial(tok, hay, length, rng, d)
                        hit = number in generate(model, tok, prompt, args.device)
                        hits.append(hit)
                        if city in HELDOUT_CITIES:
                            held.append(hit)
                    row["needle"] = sum(hits) / n
                    row["needle_heldout_city"] = f"{sum(held)}/{len(held)}"
                results["table"].setdefault(mode, {})[length] = row
                print(f"{mode:8s} L={length:5d} {row}  ({time.time() - t0:.0f}s)", flush=True)
    if "demo" in tasks:
        root = Path(__file__).resolve().parents[1] / "examples"
        for name, key in (("passkey-demo.txt", "71432"), ("passkey-demo-16x.txt", "38095")):
            if (root / name).exists():
                demo = run_demo(model, tok, root / name, key, args.device)
                results.setdefault("demo", []).append(demo)
                print(f"demo {demo}", flush=True)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def print_table(results: dict) -> None:
    table = results["table"]
    metrics = sorted(
        {m for rows in table.values() for r in rows.values() for m in r if m != "needle_heldout_city"}
    )
    lengths = sorted({length for rows in table.values() for length in rows})
    print("\n| metric | mode | " + " | ".join(str(x) for x in lengths) + " |")
    print("|---|---|" + "---|" * len(lengths))
    for metric in metrics:
        for mode, rows in table.items():
            cells = []
            for length in lengths:
                v = rows.get(length, {}).get(metric)
                cells.append("" if v is None else (f"{v:.2f}" if metric == "ppl" else f"{v:.0%}"))
            print(f"| {metric} | {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
