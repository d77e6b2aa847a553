"""Perplexity windows (how they are cut) and the NLL of a window fed in pieces."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import load_tiny

from chunkqa import apply_dca
from chunkqa.errors import UsageError
from chunkqa.evals.ppl import PplScore, cut_windows, perplexity, pick_evenly, piece_size, slots, window_nll


def test_slots_are_non_overlapping_spans_from_each_texts_start():
    assert slots([10, 3, 7], 3) == [(0, 0), (0, 3), (0, 6), (1, 0), (2, 0), (2, 3)]


def test_pick_evenly_spreads_over_all_slots():
    assert pick_evenly(10, 4) == [1, 3, 6, 8]  # floor((i + 0.5) * 10 / 4)
    assert pick_evenly(3, 5) == [0, 1, 2]  # fewer slots than asked: all of them


def test_windows_have_exactly_l_ids_with_bos_first():
    texts = [("a", list(range(100, 120))), ("b", list(range(200, 209)))]  # 20 and 9 tokens
    windows = cut_windows(texts, length=5, count=3, bos=[1])
    # 4 text tokens per window: slots a@0,4,8,12,16 and b@0,4 (7 in all); picks 1, 3, 5
    assert [(w.source, w.offset) for w in windows] == [("a", 4), ("a", 12), ("b", 0)]
    assert windows[0].ids == (1, 104, 105, 106, 107)
    assert windows[2].ids == (1, 200, 201, 202, 203)
    assert all(len(w.ids) == 5 for w in windows)


def test_windows_without_bos_take_l_text_tokens():
    windows = cut_windows([("a", list(range(12)))], length=4, count=5, bos=[])
    assert [w.ids for w in windows] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)]


def test_no_text_long_enough_is_a_usage_error():
    with pytest.raises(UsageError, match="no text is long enough for a window of 64 tokens"):
        cut_windows([("a", list(range(30)))], length=64, count=2, bos=[1])


def test_piece_size_bounds_the_logits():
    assert piece_size(128_256) == 523  # 2**26 floats / vocab
    assert piece_size(100) == 4096
    assert piece_size(10**9) == 16


def test_perplexity_is_exp_of_mean_nll_over_predictions():
    score = PplScore(nll=6.0, predictions=3, windows=1)
    assert score.ppl == pytest.approx(math.exp(2.0))


@pytest.fixture
def llama(tiny_paths):
    return load_tiny(tiny_paths["llama"], torch.float64)


def full_nll(model, ids) -> float:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return float(torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum"))


def test_window_fed_in_pieces_scores_like_one_pass(llama):
    ids = torch.randint(3, 90, (101,), generator=torch.Generator().manual_seed(0)).tolist()
    assert window_nll(llama, None, ids, piece=7) == pytest.approx(full_nll(llama, ids), rel=1e-9)
    assert window_nll(llama, None, ids, piece=200) == pytest.approx(full_nll(llama, ids), rel=1e-9)


def test_window_under_dca_keeps_the_logit_scale_of_the_whole_window(llama):
    ids = torch.randint(3, 90, (150,), generator=torch.Generator().manual_seed(1)).tolist()
    handle = apply_dca(llama)  # auto logit scale: factor > 1 at 150 > P = 64 tokens
    try:
        expected = full_nll(llama, ids)  # one pass: the factor of 150 tokens
        assert window_nll(llama, handle, ids, piece=16) == pytest.approx(expected, rel=1e-9)
    finally:
        handle.remove()
    assert full_nll(llama, ids) != pytest.approx(expected, rel=1e-6)  # DCA did change the scores


def test_perplexity_sums_over_windows(llama):
    windows = cut_windows([("t", list(range(5, 45)))], length=10, count=3, bos=[1])
    seen = []
    score = perplexity(llama, None, windows, piece=4, on_window=seen.append)
    expected = sum(full_nll(llama, list(w.ids)) for w in windows)
    assert (score.windows, score.predictions) == (3, 27)
    assert score.ppl == pytest.approx(math.exp(expected / 27), rel=1e-9)
    assert seen == windows
