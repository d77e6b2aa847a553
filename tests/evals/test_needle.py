"""Needle in a haystack: where the needle goes, how the haystack is cut, what counts as correct."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from chunkqa.errors import UsageError
from chunkqa.evals.data import Text
from chunkqa.evals.needle import (
    NEEDLE,
    cut_to_tokens,
    cyclic_slice,
    draw,
    insert_needle,
    is_correct,
    make_trial,
    paragraph_start,
    sentence_starts,
)
from chunkqa.prompt import PromptBuilder, Turn

TEXT = "One a. Two b! Three c? Four d."  # sentence starts at 0, 7, 14, 23 and the end, 30


def test_sentence_starts():
    assert sentence_starts(TEXT) == [0, 7, 14, 23, 30]
    assert sentence_starts('He said "Go." Then left.') == [0, 14, 24]


@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        (0.0, "N. One a. Two b! Three c? Four d."),
        (0.2, "One a. N. Two b! Three c? Four d."),  # 6 chars: nearest start is 7
        (0.5, "One a. Two b! N. Three c? Four d."),  # 15 chars: nearest start is 14
        (0.7, "One a. Two b! Three c? N. Four d."),  # 21 chars: nearest start is 23
        (1.0, "One a. Two b! Three c? Four d. N."),
    ],
)
def test_needle_goes_to_the_sentence_start_nearest_the_depth(depth, expected):
    text, offset = insert_needle(TEXT, "N.", depth)
    assert text == expected
    assert text[offset : offset + 2] == "N."


def test_paragraph_start_and_cyclic_slice():
    text = "ab\n\ncd\n\n\nef"
    assert paragraph_start(text, 1) == 4
    assert paragraph_start(text, 5) == 9
    assert paragraph_start(text, 10) == 10  # no paragraph follows: stay
    assert cyclic_slice("abcdef", 4, 10) == "ef\n\nabcdef"[:10]


def test_draws_are_seeded():
    texts = [Text("a", "x. " * 50), Text("b", "y. " * 50)]
    assert draw(texts, 3) == draw(texts, 3)
    assert len({draw(texts, s) for s in range(10)}) > 1


@pytest.fixture(scope="module")
def builder(cli_models):
    return PromptBuilder(AutoTokenizer.from_pretrained(cli_models["llama"]))  # base: plain template


def test_cut_to_tokens_keeps_exactly_the_first_tokens(builder):
    text = "It was the best of times, it was the worst of times. " * 4
    cut = cut_to_tokens(builder.tokenizer, text, 9)
    assert builder.encode(cut) == builder.encode(text)[:9]
    assert cut_to_tokens(builder.tokenizer, "short", 50) is None


BOOK = ("It was the best of times. It was the worst of times. It was the age of wisdom.\n\n" * 40).strip()


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_trial_is_about_l_tokens_with_the_needle_at_its_depth(builder, depth):
    trial = make_trial(builder, [Text("book", BOOK)], 500, depth, seed=1)
    document = builder.tokenizer.decode(trial.document_ids)
    needle = NEEDLE.format(city=trial.city, number=trial.number)
    assert document.count(needle) == 1
    assert abs(document.index(needle) / len(document) - depth) < 0.1
    assert abs(trial.position - depth) < 0.1
    before, after = builder.frame([Turn(trial.question)])
    assert trial.prompt_tokens == len(before) + len(trial.document_ids) + len(after)
    assert abs(trial.prompt_tokens - 500) <= 3
    assert trial.question == f"What is the special magic number for {trial.city}?"


def test_same_seed_same_needle_at_every_depth(builder):
    first = make_trial(builder, [Text("book", BOOK)], 400, 0.0, seed=5)
    last = make_trial(builder, [Text("book", BOOK)], 400, 1.0, seed=5)
    assert (first.city, first.number) == (last.city, last.number)
    assert first.document_ids != last.document_ids


def test_too_short_for_a_needle_prompt(builder):
    with pytest.raises(UsageError, match="too short for a needle prompt"):
        make_trial(builder, [Text("book", BOOK)], 30, 0.5, seed=0)


def test_correct_when_the_answer_contains_the_number():
    assert is_correct(" The special magic number for Oslo is 1234567.", 1234567)
    assert is_correct("It is 1,234,567", 1234567)
    assert not is_correct("123456", 1234567)
