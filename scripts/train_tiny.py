#!/usr/bin/env python3
"""Train chunkqa's tiny demo model from scratch: tokenizer, data mix, Llama model, export.

The model is a small Llama (RoPE, max_position_embeddings = P = 256) that reads book text and
answers retrieval questions (pass key, "special magic number") about documents of at most P
tokens. With Dual Chunk Attention (chunkqa.apply_dca) it reads documents 8x and 16x longer.

Stages (each seeded and reproducible):
  prepare  CPU. Train a byte-level BPE tokenizer on the TRAIN books only (SPLITS.md), tokenize the
           train books (and the validation books, used only to report validation loss), and write
           everything to --data (default .carry/tiny).
  train    GPU (CPU works, slowly). Train the model on a mix of 256-token book windows and
           synthetic retrieval samples built on the fly from train-book text; export to --out.
  all      prepare, then train.

    python scripts/train_tiny.py --stage prepare
    python scripts/train_tiny.py --stage train --data .carry/tiny --out chunkqa/assets/tiny --minutes 8

--steps fixes the number of optimizer steps (reproducible); without it, the step count is
estimated from the measured speed so that training fits in --minutes. Either way the script prints
the step count it used, so a run can be repeated exactly with --steps.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------------
# Prompt formats (shared with scripts/tiny_check.py; they must match what chunkqa sends)
# --------------------------------------------------------------------------------------------------

PRETRAIN_LEN = 256  # P: the model's max_position_embeddings and training window
BOS, EOS, PAD = "<s>", "</s>", "<pad>"

KEY_LINE = "The pass key is {key}. Remember it. {key} is the pass key."
PASSKEY_QUESTION = "What is the pass key?"
QA_SUFFIX = "\n\nQuestion: {question}\nAnswer:"  # chunkqa's base-model format after the document
PASSKEY_ANSWER = " The pass key is {key}."

# The ChunkLlama / landmark-attention pass-key protocol (raw text, no template).
CL_TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
CL_GARBAGE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
CL_FINAL = "What is the pass key? The pass key is"

NEEDLE = "The special magic number for {city} is {number}."
NEEDLE_QUESTION = "What is the special magic number for {city}?"
NEEDLE_ANSWER = " The special magic number for {city} is {number}."

# City names for the needle samples, exactly as the run that made the shipped weights used them:
# one run-on entry of 84 names joined by spaces (a list-parsing slip in that run, kept so that the
# recipe reproduces the weights: to the model it is one very long name), then 45 single names.
_RUN_ON_CITIES = (
    "Paris London Tokyo Berlin Madrid Rome Vienna Prague Lisbon Dublin Oslo Stockholm Helsinki "
    "Copenhagen Warsaw Budapest Athens Cairo Nairobi Lagos Accra Dakar Casablanca Tunis Algiers "
    "Istanbul Ankara Tehran Baghdad Riyadh Dubai Doha Karachi Lahore Delhi Mumbai Kolkata Chennai "
    "Dhaka Kathmandu Colombo Bangkok Hanoi Manila Jakarta Singapore Seoul Beijing Shanghai "
    "Shenzhen Taipei Osaka Kyoto Sydney Melbourne Auckland Wellington Perth Brisbane Toronto "
    "Montreal Vancouver Chicago Boston Houston Dallas Denver Phoenix Seattle Portland Atlanta "
    "Miami Detroit Philadelphia Baltimore Havana Kingston Bogota Lima Quito Caracas Santiago "
    "Buenos Aires"
)
SINGLE_CITIES = [
    "Montevideo",
    "Asuncion",
    "La Paz",
    "Mexico City",
    "Guadalajara",
    "Monterrey",
    "San Francisco",
    "Los Angeles",
    "New York",
    "New Orleans",
    "Cape Town",
    "Addis Ababa",
    "Kuala Lumpur",
    "Hong Kong",
    "Rio de Janeiro",
    "Sao Paulo",
    "Tel Aviv",
    "Abu Dhabi",
    "Minsk",
    "Riga",
    "Vilnius",
    "Tallinn",
    "Zagreb",
    "Belgrade",
    "Sofia",
    "Bucharest",
    "Edinburgh",
    "Glasgow",
    "Manchester",
    "Liverpool",
    "Amsterdam",
    "Brussels",
    "Zurich",
    "Munich",
    "Hamburg",
    "Milan",
    "Naples",
    "Venice",
    "Florence",
    "Barcelona",
    "Seville",
    "Valencia",
    "Marseille",
    "Lyon",
    "Krakow",
]
TRAIN_CITIES = (_RUN_ON_CITIES, *SINGLE_CITIES)
# Names that no training sample contains, for tiny_check.py: does retrieval carry over to them?
HELDOUT_CITIES = ("Reykjavik", "Geneva", "Kyiv", "Lusaka", "Harare", "Tbilisi", "Yerevan", "Almaty")


def cl_garbage(chars: int) -> str:
    """The first `chars` characters of the endlessly repeated garbage text (ChunkLlama's cut)."""
    reps = chars // (len(CL_GARBAGE) + 1) + 2
    return " ".join([CL_GARBAGE] * reps)[:chars]


def cl_prompt(prefix_chars: int, suffix_chars: int, key: int) -> str:
    """The ChunkLlama pass-key prompt: task, garbage, key line, garbage, question, joined by newlines."""
    lines = [CL_TASK, cl_garbage(prefix_chars), KEY_LINE.format(key=key), cl_garbage(suffix_chars), CL_FINAL]
    return "\n".join(lines)


def random_key(rng: random.Random) -> int:
    """Keys as in ChunkLlama (1..50000) half the time, five-digit keys (10000..99999) otherwise."""
    return rng.randint(1, 50000) if rng.random() < 0.5 else rng.randint(10000, 99999)


# --------------------------------------------------------------------------------------------------
# Data: splits and tokenizer
# --------------------------------------------------------------------------------------------------


def read_splits(data_dir: Path) -> dict[str, list[str]]:
    """Book files of each split, read from SPLITS.md ('## validation', '## train' sections)."""
    splits: dict[str, list[str]] = {}
    current = None
    for line in (data_dir / "SPLITS.md").read_text(encoding="utf-8").splitlines():
        head = re.match(r"^##\s+(\w+)", line)
        if head:
            current = head.group(1).lower()
            splits[current] = []
            continue
        item = re.match(r"^-\s+(\S+\.txt)\s", line)
        if item and current:
            splits[current].append(item.group(1))
    train, val = splits.get("train", []), splits.get("validation", [])
    if len(train) != 45 or len(val) != 5 or set(train) & set(val):
        raise SystemExit(
            f"unexpected splits in {data_dir}/SPLITS.md: {len(train)} train, {len(val)} validation"
        )
    return {"train": train, "validation": val}


def build_tokenizer(train_texts: list[str], vocab_size: int):
    """Byte-level BPE with every digit its own token; BOS added by the post-processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS],  # ids 0, 1, 2
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(train_texts, trainer=trainer, length=len(train_texts))
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)]
    )
    return tok


def save_hf_tokenizer(tok, directory: Path) -> None:
    """Save as a transformers tokenizer (tokenizer.json + tokenizer_config.json)."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=1 << 20
    )
    hf.save_pretrained(str(directory))
    cfg_path = directory / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # known to every transformers 5.x
    cfg["add_bos_token"] = True
    cfg["add_eos_token"] = False
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def stage_prepare(args) -> None:
    from tokenizers import Tokenizer

    data_dir, work = Path(args.data_dir), Path(args.data)
    splits = read_splits(data_dir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train_texts = [(data_dir / f).read_text(encoding="utf-8") for f in splits["train"]]
    val_texts = [(data_dir / f).read_text(encoding="utf-8") for f in splits["validation"]]
    print(
        f"[prepare] {len(train_texts)} train books ({sum(map(len, train_texts)):,} chars), "
        f"{len(val_texts)} validation books",
        flush=True,
    )
    tok = build_tokenizer(train_texts, args.vocab_size)
    tok_dir = work / "tokenizer"
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    tok_dir.mkdir()
    save_hf_tokenizer(tok, tok_dir)
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    print(f"[prepare] tokenizer: vocab {tok.get_vocab_size()} ({time.time() - t0:.0f}s)", flush=True)

    def encode_books(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encs = tok.encode_batch(texts, add_special_tokens=False)
        lengths = [len(e.ids) for e in encs]
        ids = np.concatenate([np.asarray(e.ids, dtype=np.uint16) for e in encs])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return ids, offsets

    train_ids, train_off = encode_books(train_texts)
    val_ids, val_off = encode_books(val_texts)
    np.save(work / "train_ids.npy", train_ids)
    np.save(work / "train_offsets.npy", train_off)
    np.save(work / "val_ids.npy", val_ids)
    np.save(work / "val_offsets.npy", val_off)
    meta = {
        "train_books": splits["train"],
        "validation_books": splits["validation"],
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "chars_per_token": round(sum(map(len, train_texts)) / len(train_ids), 3),
        "vocab_size": tok.get_vocab_size(),
        "seed": args.seed,
    }
    (work / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(
        f"[prepare] train {len(train_ids):,} tokens, validation {len(val_ids):,} tokens, "
        f"{meta['chars_per_token']} chars/token -> {work} ({time.time() - t0:.0f}s)",
        flush=True,
    )
    check_composition(work)


# --------------------------------------------------------------------------------------------------
# Training samples
# --------------------------------------------------------------------------------------------------


class SampleMaker:
    """Builds training rows: book windows and synthetic retrieval samples of at most P tokens.

    A row is (ids, first_target): the loss covers predictions of ids[first_target:] (first_target
    = 1 for book windows: every token after BOS; the answer's first token for retrieval samples).
    Synthetic documents are real text (book text decoded from train tokens, with lines inserted)
    tokenized whole, exactly as chunkqa tokenizes a document.
    """

    def __init__(self, work: Path, rng: random.Random, split: str = "train") -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(work / "tokenizer" / "tokenizer.json"))
        self.ids = np.load(work / f"{'train' if split == 'train' else 'val'}_ids.npy", mmap_mode="r")
        self.offsets = np.load(work / f"{'train' if split == 'train' else 'val'}_offsets.npy")
        lengths = np.diff(self.offsets)
        self.book_p = lengths / lengths.sum()
        self.rng = rng
        self.np_rng = np.random.default_rng(rng.getrandbits(63))
        self.bos, self.eos = self.tok.token_to_id(BOS), self.tok.token_to_id(EOS)
        self.qa_pass_suffix = self.enc(QA_SUFFIX.format(question=PASSKEY_QUESTION))
        garbage = self.enc(cl_garbage(20000))
        self.cl_chars_per_token = 20000 / len(garbage)

    def enc(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def book_tokens(self, count: int) -> np.ndarray:
        """`count` consecutive tokens from a random place in a random book (weighted by length)."""
        book = int(self.np_rng.choice(len(self.book_p), p=self.book_p))
        lo, hi = int(self.offsets[book]), int(self.offsets[book + 1])
        start = self.rng.randint(lo, max(lo, hi - count))
        return np.asarray(self.ids[start : start + count], dtype=np.int64)

    def lm(self) -> tuple[list[int], int]:
        return [self.bos, *self.book_tokens(PRETRAIN_LEN - 1).tolist()], 1

    def _text(self, ids) -> str:
        return self.tok.decode(list(map(int, ids))).strip("\ufffd")  # drop cut multi-byte chars

    def _total_length(self) -> int:
        """Sample lengths: mostly the full window, otherwise uniform, so every distance occurs."""
        return PRETRAIN_LEN if self.rng.random() < 0.6 else self.rng.randint(48, PRETRAIN_LEN)

    def document(self, budget: int, inserts: list[str]) -> list[int] | None:
        """Token ids of book text of about `budget` tokens with `inserts` placed at random depths."""
        insert_ids = sum(len(self.enc(" " + s)) for s in inserts)
        filler = budget - insert_ids - 2 * len(inserts) - 2
        if filler < 0:
            return None
        tokens = self.book_tokens(filler)
        cuts = sorted(self.rng.randint(0, filler) for _ in inserts)
        pieces, prev = [], 0
        order = list(inserts)
        self.rng.shuffle(order)
        for cut, line in zip(cuts, order, strict=True):
            pieces.append(self._text(tokens[prev:cut]))
            pieces.append(line)
            prev = cut
        pieces.append(self._text(tokens[prev:]))
        text = ""
        for piece in pieces:
            if not piece:
                continue
            if text:
                r = self.rng.random()
                sep = " " if r < 0.4 else "\n" if r < 0.7 else "\n\n"
                if text[-1].isspace() or piece[0].isspace():
                    sep = ""
                text += sep
            text += piece
        ids = self.enc(text)
        if len(ids) > budget:  # trim from the front (the document starts anywhere anyway)
            ids = ids[len(ids) - budget :]
        return ids

    def _qa(self, inserts: list[str], suffix: list[int], answer: list[int], must: str):
        total = self._total_length()
        budget = total - 1 - len(suffix) - len(answer)
        doc = self.document(budget, inserts)
        if doc is None or must not in self.tok.decode(doc):
            return None
        ids = [self.bos, *doc, *suffix, *answer]
        return ids, len(ids) - len(answer)

    def passkey(self):
        """Book text with the pass-key line at a random depth, chunkqa's QA format, answer + EOS."""
        key = random_key(self.rng)
        inserts = [KEY_LINE.format(key=key)]
        if self.rng.random() < 0.3:  # a distractor number that is not the pass key
            city = self.rng.choice(TRAIN_CITIES)
            inserts.append(NEEDLE.format(city=city, number=self.rng.randint(1000000, 9999999)))
        answer = [*self.enc(PASSKEY_ANSWER.format(key=key)), self.eos]
        return self._qa(inserts, self.qa_pass_suffix, answer, inserts[0])

    def needle(self):
        """Book text with 1-4 'special magic number' sentences; the question asks for one city."""
        cities = self.rng.sample(TRAIN_CITIES, self.rng.choice((1, 1, 2, 3, 4)))
        numbers = [self.rng.randint(1000000, 9999999) for _ in cities]
        inserts = [NEEDLE.format(city=c, number=n) for c, n in zip(cities, numbers, strict=True)]
        if self.rng.random() < 0.2:
            inserts.append(KEY_LINE.format(key=random_key(self.rng)))
        city, number = cities[0], numbers[0]
        suffix = self.enc(QA_SUFFIX.format(question=NEEDLE_QUESTION.format(city=city)))
        answer = [*self.enc(NEEDLE_ANSWER.format(city=city, number=number)), self.eos]
        return self._qa(inserts, suffix, answer, inserts[0])

    def chunkllama(self):
        """The ChunkLlama prompt with garbage lengths so the whole sample fits; target ' KEY.'"""
        key = random_key(self.rng)
        total = self._total_length()
        target = self.enc(f" {key}.")
        fixed = len(self.enc(cl_prompt(0, 0, key))) + 1 + len(target)
        chars = int((total - fixed - 4) * self.cl_chars_per_token)
        for _ in range(6):
            if chars < 0:
                return None
            pre = self.rng.randint(0, chars)
            prompt = self.enc(cl_prompt(pre, chars - pre, key))
            ids = [self.bos, *prompt, *target]
            if len(ids) <= total:
                return ids, len(ids) - len(target)
            chars -= int((len(ids) - total + 2) * self.cl_chars_per_token)
        return None

    def sample(self, kind: str) -> tuple[list[int], int]:
        make = {"lm": self.lm, "passkey": self.passkey, "needle": self.needle, "chunkllama": self.chunkllama}[
            kind
        ]
        while True:
            row = make()
            if row is not None and len(row[0]) <= PRETRAIN_LEN:
                return row


# Shares of the rows of every batch. Book windows are kept to a small share: the 45 train books
# are only ~9M tokens, and a larger share repeats them so often that the model memorises them.
MIX = {"lm": 0.15, "passkey": 0.3, "chunkllama": 0.2, "needle": 0.35}


def batch_kinds(batch: int) -> list[str]:
    """The kinds of the rows of every batch (fixed counts, so every batch has the same mix)."""
    kinds: list[str] = []
    for kind, share in MIX.items():
        kinds += [kind] * round(share * batch)
    kinds = kinds[:batch]
    kinds += ["lm"] * (batch - len(kinds))
    return kinds


def make_batch(maker: SampleMaker, kinds: list[str], pad: int = 0):
    """input ids [B, P], labels [B, P] (-100 where no loss), and whether each row is a book window."""
    inputs = np.full((len(kinds), PRETRAIN_LEN), pad, dtype=np.int64)
    labels = np.full((len(kinds), PRETRAIN_LEN), -100, dtype=np.int64)
    for row, kind in enumerate(kinds):
        ids, first = maker.sample(kind)
        inputs[row, : len(ids)] = ids
        labels[row, first - 1 : len(ids) - 1] = ids[first:]
    is_lm = np.array([k == "lm" for k in kinds])
    return inputs, labels, is_lm


def check_composition(work: Path, count: int = 200) -> None:
    """Print a few samples and check synthetic rows fit and keep their answers (prepare stage)."""
    maker = SampleMaker(work, random.Random(1234))
    for kind in ("passkey", "needle", "chunkllama"):
        lengths = []
        for _ in range(count):
            ids, first = maker.sample(kind)
            lengths.append(len(ids))
        print(
            f"[prepare] {kind}: {count} samples, length min {min(lengths)} mean {np.mean(lengths):.0f} "
            f"max {max(lengths)}",
            flush=True,
        )
        ids, first = maker.sample(kind)
        text = maker.tok.decode(ids[1:first])
        print(
            f"[prepare] example {kind} ({len(ids)} tokens), last 300 chars of the prompt:\n"
            f"{text[-300:]!r}\n  target: {maker.tok.decode(ids[first:])!r}",
            flush=True,
        )


def batches(work: Path, seed: int, batch: int, worker: int = 0, workers: int = 1):
    """Endless batches for one data worker (worker w makes batches w, w + workers, ...)."""
    maker = SampleMaker(work, random.Random(seed * 1000003 + worker))
    kinds = batch_kinds(batch)
    while True:
        yield make_batch(maker, kinds)


def data_loader(work: Path, seed: int, batch: int, workers: int):
    """Batches from `workers` processes in a fixed round-robin order (so a run is reproducible)."""
    import torch

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            wid, n = (info.id, info.num_workers) if info else (0, 1)
            for inputs, labels, is_lm in batches(work, seed, batch, wid, n):
                yield torch.from_numpy(inputs), torch.from_numpy(labels), torch.from_numpy(is_lm)

    if workers <= 0:
        return iter(Stream())
    return iter(
        torch.utils.data.DataLoader(
            Stream(),
            batch_size=None,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            prefetch_factor=4,
            persistent_workers=True,
        )
    )


# --------------------------------------------------------------------------------------------------
# Model, training, export
# --------------------------------------------------------------------------------------------------

SIZES = {
    # hidden, layers, heads, kv heads, intermediate
    "base": (256, 8, 8, 4, 768),
    "smoke": (64, 2, 4, 2, 128),
}


def model_config(size: str, vocab_size: int):
    from transformers import LlamaConfig

    hidden, layers, heads, kv_heads, inter = SIZES[size]
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=PRETRAIN_LEN,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        initializer_range=0.02,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attention_bias=False,
        mlp_bias=False,
    )


def add_residual_dropout(model, p: float) -> None:
    """Training-only dropout on each attention and MLP output (forward hooks: no new weights, and
    nothing of it is saved; in eval mode the hooks do nothing)."""
    import torch.nn.functional as F

    def drop(module, inputs, output):
        if isinstance(output, tuple):
            return (F.dropout(output[0], p, module.training), *output[1:])
        return F.dropout(output, p, module.training)

    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(drop)
        layer.mlp.register_forward_hook(drop)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Warmup, constant, then linear decay to 5% over the last 25% of the steps (WSD)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_start = int(total * 0.75)
    if step < decay_start:
        return peak
    frac = min(1.0, (step - decay_start) / max(1, total - decay_start))
    return peak * (1.0 - 0.95 * frac)


def export(model, work: Path, out: Path, info: dict) -> None:
    """Save weights as bf16 safetensors, config, generation config and tokenizer to `out`."""
    import torch
    from transformers import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json"):
        if (out / name).exists():
            (out / name).unlink()
    state = {k: v.detach().to("cpu", torch.bfloat16) for k, v in model.state_dict().items()}
    model_cpu = type(model)(model.config)
    model_cpu.load_state_dict({k: v.float() for k, v in state.items()})
    model_cpu.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(
        bos_token_id=1, eos_token_id=2, pad_token_id=0, do_sample=False, max_new_tokens=32
    ).save_pretrained(str(out))
    for f in (work / "tokenizer").iterdir():
        shutil.copy(f, out / f.name)
    (out / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"[export] -> {out}: {sorted(p.name for p in out.iterdir())}", flush=True)


def evaluate(model, val_batch, ret_batch, device, autocast) -> dict:
    """Validation-book loss and held-out synthetic retrieval accuracy (whole answers, greedy)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    out = {}
    with torch.no_grad(), autocast():
        inputs, labels = (t.to(device) for t in val_batch)
        logits = model(input_ids=inputs).logits.float()
        out["val_loss"] = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).item()
        inputs, labels, kinds = ret_batch
        logits = model(input_ids=inputs.to(device)).logits
        labels = labels.to(device)
        ok = ((logits.argmax(-1) == labels) | (labels == -100)).all(-1).cpu()
        for kind in sorted(set(kinds)):
            sel = torch.tensor([k == kind for k in kinds])
            out[f"acc_{kind}"] = round(ok[sel].float().mean().item(), 3)
    model.train()
    return out


def fixed_eval_batches(work: Path, seed: int, rows: int = 64):
    """A fixed validation-book batch (loss) and a fixed synthetic batch from a separate seed."""
    import torch

    val = np.load(work / "val_ids.npy", mmap_mode="r")
    rng = np.random.default_rng(seed + 77)
    starts = rng.integers(0, len(val) - PRETRAIN_LEN, size=rows)
    inputs = np.stack([np.concatenate([[1], val[s : s + PRETRAIN_LEN - 1]]) for s in starts]).astype(np.int64)
    labels = np.full_like(inputs, -100)
    labels[:, :-1] = inputs[:, 1:]
    maker = SampleMaker(work, random.Random(seed + 991))
    kinds = ["passkey"] * rows + ["chunkllama"] * rows + ["needle"] * rows
    rin, rlab, _ = make_batch(maker, kinds)
    return (torch.from_numpy(inputs), torch.from_numpy(labels)), (
        torch.from_numpy(rin),
        torch.from_numpy(rlab),
        kinds,
    )


def stage_train(args) -> None:
    import torch
    import torch.nn.functional as F
    from transformers import LlamaForCausalLM

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start_time = time.time()
    budget_s = args.minutes * 60.0
    work, out = Path(args.data), Path(args.out)
    meta = json.loads((work / "meta.json").read_text())
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    config = model_config(args.size, meta["vocab_size"])
    model = LlamaForCausalLM(config).to(device)
    if args.dropout > 0:
        add_residual_dropout(model, args.dropout)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"[train] device {device}, torch {torch.__version__}, model {args.size}: {n_params:,} parameters, "
        f"batch {args.batch} x {PRETRAIN_LEN}, mix {MIX}",
        flush=True,
    )

    def autocast():
        if cuda and args.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
        **({"fused": True} if cuda else {}),
    )
    workers = args.workers if args.workers >= 0 else max(1, min(14, (os.cpu_count() or 2) - 2))
    print(f"[train] {workers} data workers (the data stream depends on this number)", flush=True)
    loader = data_loader(work, args.seed, args.batch, workers)
    val_batch, ret_batch = fixed_eval_batches(work, args.seed)

    step_fn_model = model
    if args.compile and cuda:
        try:
            step_fn_model = torch.compile(model)
        except Exception as exc:
            print(f"[train] torch.compile unavailable ({exc!r}); eager", flush=True)
            step_fn_model = model

    def train_step(m, inputs, labels, is_lm, lr):
        for group in opt.param_groups:
            group["lr"] = lr
        with autocast():
            logits = m(input_ids=inputs).logits
        losses = F.cross_entropy(
            logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="none"
        ).view(labels.shape)
        valid = labels != -100
        lm_mask = valid & is_lm[:, None]
        ret_mask = valid & ~is_lm[:, None]
        loss_lm = (losses * lm_mask).sum() / lm_mask.sum().clamp(min=1)
        loss_ret = (losses * ret_mask).sum() / ret_mask.sum().clamp(min=1)
        loss = loss_lm + args.ret_weight * loss_ret
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss_lm.detach(), loss_ret.detach(), gnorm.detach()

    total_steps = args.steps or 10**9
    info = {
        "command": " ".join(sys.argv),
        "seed": args.seed,
        "size": args.size,
        "parameters": n_params,
        "batch": args.batch,
        "workers": workers,
        "lr": args.lr,
        "dropout": args.dropout,
        "weight_decay": args.weight_decay,
        "mix": MIX,
        "train_tokens_available": meta["train_tokens"],
    }
    step, tokens, t_mark, tok_mark = 0, 0, None, 0
    hist_lm, hist_ret = [], []
    train_started = time.time()
    try:
        while step < total_steps:
            inputs, labels, is_lm = (t.to(device, non_blocking=True) for t in next(loader))
            lr = lr_at(step, total_steps, args.lr, args.warmup)  # total is 10**9 until estimated
            try:
                loss_lm, loss_ret, gnorm = train_step(step_fn_model, inputs, labels, is_lm, lr)
            except Exception as exc:
                if step_fn_model is model:
                    raise
                print(
                    f"[train] compiled step failed ({type(exc).__name__}: {str(exc)[:300]}); eager",
                    flush=True,
                )
                step_fn_model = model
                loss_lm, loss_ret, gnorm = train_step(model, inputs, labels, is_lm, lr)
            step += 1
            tokens += int(inputs.numel())
            if step == 20:
                if cuda:
                    torch.cuda.synchronize()
                t_mark, tok_mark = time.time(), tokens
            if args.steps is None and step == args.estimate_at:
                if cuda:
                    torch.cuda.synchronize()
                per_step = (time.time() - t_mark) / (step - 20)
                left = budget_s - (time.time() - start_time) - args.reserve_s
                total_steps = step + max(1, int(left / per_step))
                print(
                    f"[train] {per_step * 1000:.1f} ms/step -> total steps {total_steps} "
                    f"(repeat with --steps {total_steps})",
                    flush=True,
                )
            if step % args.log_every == 0 or step == total_steps:
                hist_lm.append(loss_lm.item())
                hist_ret.append(loss_ret.item())
                el = time.time() - train_started
                rate = (tokens - tok_mark) / (time.time() - t_mark) if t_mark else 0.0
                print(
                    f"[train] step {step}/{total_steps if total_steps < 10**9 else '?'} lr {lr:.2e} "
                    f"loss_lm {hist_lm[-1]:.3f} loss_ret {hist_ret[-1]:.3f} gnorm {gnorm.item():.2f} "
                    f"tok/s {rate:,.0f} elapsed {el:.0f}s",
                    flush=True,
                )
            if step % args.eval_every == 0 or step == total_steps:
                print(
                    f"[eval] step {step}: {evaluate(model, val_batch, ret_batch, device, autocast)}",
                    flush=True,
                )
            if time.time() - start_time > budget_s - args.reserve_s / 2:
                print(f"[train] time budget reached at step {step}", flush=True)
                break
    finally:
        elapsed = time.time() - train_started
        final = evaluate(model, val_batch, ret_batch, device, autocast) if step else {}
        info.update(
            {
                "steps": step,
                "planned_steps": total_steps if total_steps < 10**9 else None,
                "tokens": tokens,
                "train_seconds": round(elapsed, 1),
                "device": torch.cuda.get_device_name() if cuda else "cpu",
                "final_train_loss_lm": hist_lm[-1] if hist_lm else None,
                "final_train_loss_ret": hist_ret[-1] if hist_ret else None,
                "final_eval": final,
            }
        )
        print(
            f"[train] done: {step} steps, {tokens:,} tokens in {elapsed:.0f}s; final eval {final}", flush=True
        )
        export(model, work, out, info)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stage", choices=("prepare", "train", "all"), default="all")
    parser.add_argument(
        "--data-dir", default="/work/shared/data/gutenberg", help="the books (with SPLITS.md)"
    )
    parser.add_argument("--data", default=".carry/tiny", help="prepared data folder (written by prepare)")
    parser.add_argument("--out", default="chunkqa/assets/tiny", help="export folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--minutes", type=float, default=8.0, help="time budget of the train stage")
    parser.add_argument("--steps", type=int, default=None, help="fixed number of steps (else from --minutes)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--dropout", type=float, default=0.1, help="training-only residual dropout")
    parser.add_argument("--ret-weight", type=float, default=1.0, help="weight of the retrieval-answer loss")
    parser.add_argument("--workers", type=int, default=-1, help="data worker processes (-1: auto)")
    parser.add_argument("--estimate-at", type=int, default=120, help="step at which speed is measured")
    parser.add_argument("--reserve-s", type=float, default=25.0, help="seconds kept for eval and export")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    args = parser.parse_args(argv)
    if args.stage in ("prepare", "all"):
        stage_prepare(args)
    if args.stage in ("train", "all"):
        stage_train(args)


if __name__ == "__main__":
    main()
