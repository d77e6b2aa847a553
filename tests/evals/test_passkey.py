"""The pass-key protocol: prompt text, filler calibration, seeded trials and the scoring rule."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from chunkqa.errors import UsageError
from chunkqa.evals.passkey import (
    GARBAGE,
    calibrate,
    garbage,
    largest_fitting,
    make_trial,
    make_trials,
    passkey_prompt,
    score,
    split_filler,
)


@pytest.fixture(scope="module")
def tokenizer(cli_models):
    return AutoTokenizer.from_pretrained(cli_models["llama"])  # adds <s> (id 0) in front


def test_prompt_is_the_chunkllama_text_joined_by_newlines():
    assert passkey_prompt(4242, 20, 5) == (
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
        "I will quiz you about the important information there.\n"
        "The grass is green. \n"
        "The pass key is 4242. Remember it. 4242 is the pass key.\n"
        "The g\n"
        "What is the pass key? The pass key is"
    )


def test_garbage_repeats_the_paragraph_and_cuts_it():
    assert garbage(0) == ""
    assert garbage(len(GARBAGE) + 4) == GARBAGE + " The"
    assert len(garbage(1000)) == 1000


def test_filler_split_by_depth():
    assert split_filler(100, 0.0) == (0, 100)
    assert split_filler(100, 0.254) == (25, 75)
    assert split_filler(100, 1.0) == (100, 0)


def test_largest_fitting_finds_the_last_n_under_the_target():
    assert largest_fitting(lambda n: 2 * n, target=21, high=100) == 10
    assert largest_fitting(lambda n: n, target=500, high=100) == 100


def test_calibrated_prompt_is_about_l_tokens(tokenizer):
    filler = calibrate(tokenizer, 400)
    lengths = [len(t.ids) for t in make_trials(tokenizer, 400, 6, seed=3)]
    assert all(abs(n - 400) <= 4 for n in lengths), lengths
    assert calibrate(tokenizer, 800) > filler


def test_too_short_for_the_prompt_is_a_usage_error(tokenizer):
    with pytest.raises(UsageError, match="too short for the pass-key prompt"):
        calibrate(tokenizer, 40)


def test_trial_i_draws_key_then_depth_from_its_own_seed(tokenizer):
    trial = make_trial(tokenizer, 300, seed=7)
    rng = random.Random(7)
    assert (trial.key, trial.depth) == (rng.randint(1, 50000), rng.random())
    before, after = split_filler(300, trial.depth)
    text = passkey_prompt(trial.key, before, after)
    assert trial.ids == (0, *tokenizer(text, add_special_tokens=False)["input_ids"])
    assert trial.answer_ids == tuple(tokenizer(f" {trial.key}", add_special_tokens=False)["input_ids"])
    assert trial.max_new_tokens == len(trial.answer_ids) + 2
    assert [t.seed for t in make_trials(tokenizer, 300, 3, seed=7)] == [7, 8, 9]


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
    ("generated", "correct", "exact"),
    [
        (" 12345.", True, True),  # the key's own tokens, then a full stop
        (" 12345", True, True),
        ("12345 is", True, False),  # no leading space: other tokens, same digits
        (" 123456", False, False),  # the digits go on: a different number
        (" 1234.", False, False),
        (" the key", False, False),
    ],
)
def test_score_rule(tokenizer, generated, correct, exact):
    trial = make_trial(tokenizer, 100, seed=0)
    trial = type(trial)(0, 12345, 0.5, trial.ids, tuple(encode(tokenizer, " 12345")))
    assert score(tokenizer, trial, encode(tokenizer, generated)) == (correct, exact)
