"""Needle in a haystack: book text of about L prompt tokens with one "special magic number" sentence.

Trial i of a run with seed S draws from random.Random(S + i): a city, a 7-digit number, a text
and a start character in it (moved to the next paragraph start); the same draws are used at every
depth and length, so cells differ only in where the needle sits and how much text surrounds it.
The haystack is the text from that start (wrapping around to its beginning when needed), cut to
the document budget in tokens: L minus the tokens of chunkqa's prompt around the document (the
same PromptBuilder `chunkqa ask` uses) minus the needle. The needle goes in at the sentence start
nearest to depth x the haystack's characters (0: before the first sentence, 1: after the last).
Correct when the answer contains the number (commas ignored).
"""

from __future__ import annotations

import bisect
import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chunkqa.errors import UsageError
from chunkqa.evals.data import Text

NEEDLE = "The special magic number for {city} is {number}."
QUESTION = "What is the special magic number for {city}?"
NUMBER_RANGE = (1_000_000, 9_999_999)
MAX_NEW_TOKENS = 32
MIN_HAYSTACK = 8  # tokens of book text at least
MISSES_KEPT = 5  # wrong answers kept in a record
CITIES = (
    "Amsterdam", "Athens", "Bangkok", "Barcelona", "Berlin", "Bogota", "Boston", "Budapest", "Cairo",
    "Chicago", "Denver", "Dublin", "Hanoi", "Helsinki", "Istanbul", "Jakarta", "Karachi", "Lagos",
    "Lima", "Lisbon", "London", "Madrid", "Manila", "Melbourne", "Montreal", "Nairobi", "Oslo",
    "Paris", "Prague", "Rome", "Seoul", "Stockholm", "Sydney", "Tokyo", "Toronto", "Vienna", "Warsaw",
)  # fmt: skip
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*\s+")


@dataclass(frozen=True)
class NeedleTrial:
    """One question: the needle, the document ids with it inside, and where it landed."""

    seed: int
    city: str
    number: int
    depth: float  # asked for
    position: float  # where the needle starts, as a fraction of the haystack's characters
    document_ids: tuple[int, ...]
    prompt_tokens: int  # document plus chunkqa's framing

    @property
    def question(self) -> str:
        return QUESTION.format(city=self.city)


def sentence_starts(text: str) -> list[int]:
    """Character offsets where a sentence may be inserted: 0, after each sentence end, len(text)."""
    return sorted({0, *(m.end() for m in _SENTENCE_END.finditer(text)), len(text)})


def insert_needle(text: str, needle: str, depth: float) -> tuple[str, int]:
    """(text with the needle at the sentence start nearest depth * len(text), the needle's offset)."""
    starts = sentence_starts(text)
    target = depth * len(text)
    i = bisect.bisect_left(starts, target)
    near = min(starts[max(0, i - 1) : i + 1], key=lambda s: (abs(s - target), s))
    if near >= len(text):
        head = text.rstrip()
        return f"{head} {needle}" if head else needle, len(head) + 1 if head else 0
    return f"{text[:near]}{needle} {text[near:]}", near


def paragraph_start(text: str, start: int) -> int:
    """The first paragraph start at or after `start` (or `start` when none follows)."""
    found = text.find("\n\n", start)
    if found < 0:
        return start
    while found < len(text) and text[found] == "\n":
        found += 1
    return found % len(text)


def cyclic_slice(text: str, start: int, chars: int) -> str:
    """`chars` characters of text from `start`, wrapping to its beginning after a blank line."""
    out, pos = [], start
    while sum(map(len, out)) < chars:
        out.append(text[pos:])
        out.append("\n\n")
        pos = 0
    return "".join(out)[:chars]


def draw(texts: Sequence[Text], seed: int) -> tuple[str, int, int, int]:
    """(city, number, index of the text, start character) of trial `seed`."""
    rng = random.Random(seed)
    city = rng.choice(CITIES)
    number = rng.randint(*NUMBER_RANGE)
    index = rng.randrange(len(texts))
    text = texts[index].text
    return city, number, index, paragraph_start(text, rng.randrange(len(text)))


def cut_to_tokens(tokenizer: Any, text: str, tokens: int) -> str | None:
    """The longest start of text that is its first `tokens` tokens; None when text has fewer."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError):  # slow tokenizers have no offsets
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return tokenizer.decode(ids[:tokens]).rstrip("\ufffd") if len(ids) > tokens else None
    offsets = encoded["offset_mapping"]
    return text[: offsets[tokens - 1][1]] if len(offsets) > tokens else None


def haystack(tokenizer: Any, text: str, start: int, tokens: int) -> str:
    """Text from `start` cut to its first `tokens` tokens."""
    chars = 8 * tokens + 64
    while (hay := cut_to_tokens(tokenizer, cyclic_slice(text, start, chars), tokens)) is None:
        chars *= 2
    return hay


def make_trial(builder: Any, texts: Sequence[Text], length: int, depth: float, seed: int) -> NeedleTrial:
    """A needle prompt of about `length` tokens in all, as chunkqa would send it."""
    from chunkqa.prompt import Turn

    city, number, index, start = draw(texts, seed)
    needle = NEEDLE.format(city=city, number=number)
    before, after = builder.frame([Turn(QUESTION.format(city=city))])
    fixed = len(before) + len(after) + len(builder.encode(" " + needle + " "))
    budget = length - fixed
    if budget < MIN_HAYSTACK:
        raise UsageError(
            f"{length:,} tokens is too short for a needle prompt (the prompt around the document and "
            f"the needle take {fixed:,} tokens)",
            hint=f"use --lengths of at least {fixed + MIN_HAYSTACK:,}",
        )
    hay = haystack(builder.tokenizer, texts[index].text, start, budget)
    document, offset = insert_needle(hay, needle, depth)
    ids = tuple(builder.encode_document(document))
    position = offset / max(1, len(hay))
    return NeedleTrial(seed, city, number, depth, position, ids, len(before) + len(ids) + len(after))


def is_correct(answer: str, number: int) -> bool:
    return str(number) in answer.replace(",", "")


@dataclass(frozen=True)
class NeedleEval:
    """`chunkqa eval needle`: one cell per (length, depth); trial i uses seed + i in every cell."""

    texts: tuple[Text, ...]
    depths: tuple[float, ...]
    trials: int
    seed: int
    label: str  # where the texts come from, for the banner
    piece: int | None = None  # prefill tokens per forward call; None: the device's default
    kind: str = "needle"

    @property
    def describe(self) -> str:
        seeds = f"seeds {self.seed}..{self.seed + self.trials - 1}"
        return f"needle · {self.trials} trials per cell, {seeds}, from {self.label}"

    def cells(self, loaded: Any, lengths: Sequence[int]) -> list[Any]:
        from chunkqa.evals.runner import Cell

        builder = prompt_builder(loaded.tokenizer)
        out = []
        for length in lengths:
            for depth in self.depths:
                items = tuple(
                    make_trial(builder, self.texts, length, depth, self.seed + i) for i in range(self.trials)
                )
                out.append(Cell(length, items, sum(t.prompt_tokens for t in items), depth))
        return out

    def score_cell(self, run: Any, cell: Any, tick: Any) -> dict[str, Any]:
        """Accuracy of one (length, depth) cell, each question asked through a chunkqa Session."""
        from chunkqa.engine.results import GenerationConfig
        from chunkqa.session import Session

        builder = prompt_builder(run.tokenizer)
        correct, misses = 0, []
        for trial in cell.items:
            session = Session(run, builder, trial.document_ids, piece=self.piece)
            answer, _ = session.answer(trial.question, GenerationConfig.greedy(MAX_NEW_TOKENS))
            ok = is_correct(answer, trial.number)
            correct += ok
            if not ok and len(misses) < MISSES_KEPT:
                misses.append(
                    {"seed": trial.seed, "city": trial.city, "number": trial.number, "output": answer}
                )
            tick(trial.prompt_tokens)
        n = len(cell.items)
        return {
            "metric": "accuracy",
            "depth": cell.depth,
            "value": correct / n,
            "n": n,
            "seed": cell.items[0].seed,
            "seeds": [cell.items[0].seed, cell.items[-1].seed],
            "correct": correct,
            "mean_tokens": round(sum(t.prompt_tokens for t in cell.items) / n, 1),
            "mean_position": round(sum(t.position for t in cell.items) / n, 3),
            "misses": misses,
        }

    @staticmethod
    def summary(record: dict[str, Any]) -> str:
        from chunkqa.evals.passkey import accuracy_summary

        return accuracy_summary(record)


@functools.cache
def prompt_builder(tokenizer: Any) -> Any:
    """The builder `chunkqa ask` uses for this tokenizer: default template and system prompt."""
    from chunkqa.prompt import PromptBuilder

    return PromptBuilder(tokenizer)
