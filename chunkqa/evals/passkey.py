"""The pass-key retrieval protocol of ChunkLlama / landmark attention: prompts, calibration, scoring.

A prompt is the task sentence, filler, the key line, filler, and the question, in one of three
layouts (a small model's retrieval depends on layout, so they are reported apart):
  lines      five lines joined by "\\n"; filler is the garbage paragraph repeated and cut to a number
             of characters (mid-sentence): chunkqa's original layout;
  sentences  the classic layout (landmark attention, LongLM): everything joined by spaces, filler in
             whole garbage sentences;
  prose      as `sentences`, but the filler is real book text (the validation books), cut at sentence
             ends, so the key sits among ordinary prose.
The filler's total size is calibrated per target length L with the model's tokenizer so that a
prompt (depth 0.5, a five-digit key) has at most L tokens. Trial i of a run with seed S draws from
random.Random(S + i): the key (uniform in 1..50000), then the depth (uniform in [0, 1)), which puts
round(depth * filler) units of filler before the key line and the rest after it.
The model sees [BOS if its tokenizer adds one] + the prompt's ids without special tokens.

Scoring: greedy decoding of len(ids(" " + key)) + 2 tokens. A trial is correct when the generated
tokens start with ids(" " + key) (exact token match) or the decoded text, after leading spaces,
starts with the key's digits; either way the run of digits must end there ("123456" is not "12345").
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chunkqa.errors import UsageError
from chunkqa.evals.data import bos_ids, encode

TASK = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
GARBAGE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"
KEY_RANGE = (1, 50000)
CALIBRATION_KEY = 25000  # five digits, like most keys
EXTRA_TOKENS = 2  # generated past the key's length, to see whether the digits stop
MISSES_KEPT = 5  # wrong answers kept in a record


LAYOUTS = ("lines", "sentences", "prose")
GARBAGE_SENTENCES = tuple(s.strip() + "." for s in GARBAGE.split(".") if s.strip())


def garbage(chars: int) -> str:
    """The first `chars` characters of the garbage paragraph repeated without end."""
    copies = chars // (len(GARBAGE) + 1) + 1
    return " ".join([GARBAGE] * copies)[:chars]


@dataclass(frozen=True)
class Layout:
    """How a pass-key prompt is laid out; filler is measured in `unit`s (characters or sentences)."""

    name: str
    sentences: tuple[str, ...] = GARBAGE_SENTENCES  # the filler's sentences, cycled (prose: a book's)

    def filler(self, units: int, start: int = 0) -> str:
        if self.name == "lines":
            return garbage(units)
        count = len(self.sentences)
        return " ".join(self.sentences[(start + i) % count] for i in range(units))

    def prompt(self, key: int, before: int, after: int) -> str:
        parts = (TASK, self.filler(before), KEY_LINE.format(key=key), self.filler(after, before), QUESTION)
        return ("\n" if self.name == "lines" else " ").join(p for p in parts if p)


def passkey_prompt(key: int, prefix_chars: int, suffix_chars: int) -> str:
    """The `lines` layout (the original)."""
    return Layout("lines").prompt(key, prefix_chars, suffix_chars)


def prose_sentences(text: str, limit: int = 20000) -> tuple[str, ...]:
    """The first `limit` sentences of a text, each on one line of its own (white space folded)."""
    flat = " ".join(text.split())
    found = re.findall(r"[^.!?]+[.!?]+[\"')\u201d\u2019]?", flat)
    return tuple(s.strip() for s in found[:limit] if len(s.strip()) > 1)


def make_layout(name: str, texts: Sequence[Any] = ()) -> Layout:
    if name not in LAYOUTS:
        raise UsageError(f"unknown pass-key layout {name!r}", hint=f"use {', '.join(LAYOUTS)}")
    if name == "prose":
        sentences = tuple(s for text in texts for s in prose_sentences(text.text))
        if not sentences:
            raise UsageError("the prose layout needs texts (the validation books, or --data)")
        return Layout(name, sentences)
    return Layout(name)


def split_filler(filler: int, depth: float) -> tuple[int, int]:
    before = round(depth * filler)
    return before, filler - before


@dataclass(frozen=True)
class PasskeyTrial:
    """One prompt: its seed, key and depth, the ids fed to the model and the ids of the answer."""

    seed: int
    key: int
    depth: float
    ids: tuple[int, ...]
    answer_ids: tuple[int, ...]

    @property
    def max_new_tokens(self) -> int:
        return len(self.answer_ids) + EXTRA_TOKENS


def largest_fitting(count: Callable[[int], int], target: int, high: int) -> int:
    """The largest n in [0, high] with count(n) <= target, for a count that grows with n."""
    low = 0
    while low < high:
        middle = (low + high + 1) // 2
        if count(middle) <= target:
            low = middle
        else:
            high = middle - 1
    return low


def calibrate(tokenizer: Any, length: int, layout: Layout | None = None) -> int:
    """Units of filler so that a prompt of the protocol has at most `length` tokens."""
    bos = bos_ids(tokenizer)
    layout = layout or Layout("lines")

    def count(filler: int) -> int:
        before, after = split_filler(filler, 0.5)
        return len(bos) + len(encode(tokenizer, layout.prompt(CALIBRATION_KEY, before, after)))

    bare = count(0)
    if bare >= length:
        raise UsageError(
            f"{length:,} tokens is too short for the pass-key prompt ({bare} tokens without filler)",
            hint="use longer --lengths",
        )
    return largest_fitting(count, length, 16 * length)


def make_trial(tokenizer: Any, filler: int, seed: int, layout: Layout | None = None) -> PasskeyTrial:
    rng = random.Random(seed)
    key = rng.randint(*KEY_RANGE)
    depth = rng.random()
    before, after = split_filler(filler, depth)
    prompt = (layout or Layout("lines")).prompt(key, before, after)
    ids = (*bos_ids(tokenizer), *encode(tokenizer, prompt))
    return PasskeyTrial(seed, key, depth, ids, tuple(encode(tokenizer, f" {key}")))


def make_trials(
    tokenizer: Any, length: int, trials: int, seed: int, layout: Layout | None = None
) -> list[PasskeyTrial]:
    """Trials seed, seed + 1, ... at one target length (the same for every setting)."""
    filler = calibrate(tokenizer, length, layout)
    return [make_trial(tokenizer, filler, seed + i, layout) for i in range(trials)]


def _digits_stop(text: str, key: int) -> bool:
    match = re.match(r"\s*(\d+)", text)
    return bool(match) and match.group(1) == str(key)


def score(tokenizer: Any, trial: PasskeyTrial, generated: Sequence[int]) -> tuple[bool, bool]:
    """(correct, exact token match) for the tokens generated after a trial's prompt."""
    text = tokenizer.decode(list(generated), skip_special_tokens=True)
    digits = _digits_stop(text, trial.key)
    answer = list(trial.answer_ids)
    rest = tokenizer.decode(list(generated[len(answer) :]), skip_special_tokens=True)
    exact = list(generated[: len(answer)]) == answer and not rest[:1].isdigit()
    return exact or digits, exact


def cells(
    tokenizer: Any, lengths: Sequence[int], trials: int, seed: int, layouts: Sequence[Layout] = ()
) -> list[Any]:
    """One cell per layout and length; the same trials for every setting."""
    from chunkqa.evals.runner import Cell

    out = []
    for layout in layouts or (Layout("lines"),):
        for length in lengths:
            items = make_trials(tokenizer, length, trials, seed, layout)
            out.append(Cell(length, tuple(items), sum(len(t.ids) for t in items), variant=layout.name))
    return out


def score_cell(run: Any, cell: Any, tick: Callable[[int], None], piece: int | None = None) -> dict[str, Any]:
    """Accuracy at one length under the setting `run` carries; a few misses are kept for reading."""
    from chunkqa.evals.runner import greedy

    correct = exact = 0
    misses = []
    for trial in cell.items:
        generated = greedy(run, trial.ids, trial.max_new_tokens, piece)
        ok, token_exact = score(run.tokenizer, trial, generated)
        correct, exact = correct + ok, exact + token_exact
        if not ok and len(misses) < MISSES_KEPT:
            output = run.tokenizer.decode(generated, skip_special_tokens=True)
            misses.append(
                {"seed": trial.seed, "key": trial.key, "depth": round(trial.depth, 3), "output": output}
            )
        tick(len(trial.ids))
    n = len(cell.items)
    return {
        "metric": "accuracy",
        "value": correct / n,
        "n": n,
        "seed": cell.items[0].seed,
        "seeds": [cell.items[0].seed, cell.items[-1].seed],
        "correct": correct,
        "token_exact": exact,
        "mean_tokens": round(sum(len(t.ids) for t in cell.items) / n, 1),
        "misses": misses,
    }


def accuracy_summary(record: dict[str, Any]) -> str:
    depth = f"depth {100 * record['depth']:g}% · " if record.get("depth") is not None else ""
    return f"{depth}accuracy {record['correct']}/{record['n']} ({record['mean_tokens']:g} tokens on average)"


@dataclass(frozen=True)
class PasskeyEval:
    """`chunkqa eval passkey`: `trials` prompts per length, seeds seed, seed + 1, ..."""

    trials: int
    seed: int
    layouts: tuple[Layout, ...] = (Layout("lines"),)
    piece: int | None = None  # prefill tokens per forward call; None: the device's default
    kind: str = "passkey"

    @property
    def describe(self) -> str:
        seeds = f"seeds {self.seed}..{self.seed + self.trials - 1}"
        layouts = ", ".join(layout.name for layout in self.layouts)
        return f"pass key · {self.trials} trials per length and layout ({layouts}), {seeds}"

    def cells(self, loaded: Any, lengths: Sequence[int]) -> list[Any]:
        return cells(loaded.tokenizer, lengths, self.trials, self.seed, self.layouts)

    @staticmethod
    def score_cell(
        run: Any, cell: Any, tick: Callable[[int], None], piece: int | None = None
    ) -> dict[str, Any]:
        return score_cell(run, cell, tick)

    summary = staticmethod(accuracy_summary)
