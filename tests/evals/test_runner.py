"""The evaluation loop: one load, DCA applied and removed per setting, greedy decoding, records."""

from __future__ import annotations

import math

import pytest
import torch

from chunkqa.engine.loading import ModelSpec
from chunkqa.errors import DCAConfigError
from chunkqa.evals.grid import make_settings
from chunkqa.evals.runner import Cell, applied, greedy, load_once, run_cells, total_tokens
from chunkqa.methods.spec import MethodSpec

SETTINGS = make_settings("dca", compare=True, scales_text="1,auto")  # no DCA, DCA scale=1.0, DCA auto


@pytest.fixture(scope="module")
def loaded(cli_models):
    return load_once(ModelSpec(str(cli_models["llama"]), device="cpu"), MethodSpec(), SETTINGS)


def patched(model) -> bool:
    return any("forward" in m.__dict__ for m in model.modules() if hasattr(m, "q_proj"))


def test_loaded_once_without_dca(loaded):
    assert loaded.handle is None and not patched(loaded.model)


def test_bad_dca_settings_fail_before_the_weights_load(cli_models, monkeypatch):
    import chunkqa.engine.loading

    monkeypatch.setattr(chunkqa.engine.loading, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(DCAConfigError, match="chunk_size"):
        load_once(ModelSpec(str(cli_models["llama"])), MethodSpec(chunk_size=100), SETTINGS)


def test_each_setting_applies_dca_and_removes_it(loaded):
    with applied(loaded, MethodSpec(), SETTINGS[1]) as run:
        assert patched(run.model) and run.handle.config.logit_scale == 1.0
        assert loaded.handle is None  # the shared object is not changed
    assert not patched(loaded.model)
    with applied(loaded, MethodSpec(), SETTINGS[0]) as run:
        assert run.handle is None and not patched(run.model)


def test_greedy_matches_transformers_generate(loaded):
    ids = list(range(5, 60))
    expected = loaded.model.generate(
        torch.tensor([ids]), max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None
    )[0, len(ids) :].tolist()
    assert greedy(loaded, ids, 6)[: len(expected)] == expected


def test_run_cells_scores_every_cell_under_every_setting(loaded):
    cells = [Cell(64, ("a",), 64), Cell(128, ("b", "c"), 256)]
    seen, ticks = [], []

    def scorer(run, cell, tick):
        seen.append((run.handle is not None, cell.length))
        tick(cell.tokens)
        return {"metric": "ppl", "value": 1.5, "n": len(cell.items), "seed": None}

    records = list(run_cells(loaded, MethodSpec(), SETTINGS, cells, scorer, "ppl", ticks.append))
    assert seen == [(False, 64), (False, 128), (True, 64), (True, 128), (True, 64), (True, 128)]
    assert sum(ticks) == total_tokens(cells, SETTINGS) == 3 * 320
    first, last = records[0], records[-1]
    assert first["setting"] == "no DCA" and first["method_settings"] is None
    assert last["setting"] == "DCA auto" and last["method_settings"]["logit_scale"] == "auto"
    assert last["method_settings"]["logit_factor"] == pytest.approx((0.05 * math.log(2) + 1) ** 2)
    assert {
        "eval",
        "model",
        "setting",
        "length",
        "extension",
        "metric",
        "value",
        "n",
        "seed",
        "versions",
    } <= set(last)
    assert (last["length"], last["extension"], last["pretraining_length"]) == (128, 2.0, 64)
    assert all(isinstance(r["seconds"], float) and r["seconds"] >= 0 for r in records)
    assert not patched(loaded.model)
