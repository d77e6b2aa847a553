"""`chunkqa selftest` internals: default lengths, the patch check (never a silent pass), the verdict."""

from __future__ import annotations

import pytest

import chunkqa.methods.dca.patch
from chunkqa.engine.loading import ModelSpec
from chunkqa.evals.grid import Setting
from chunkqa.evals.runner import load_once
from chunkqa.evals.selftest import PatchCheck, default_lengths, failures, patch_check, verdict
from chunkqa.methods.spec import MethodSpec

AUTO = Setting("dca", name="DCA auto")


def test_default_lengths_are_2p_4p_8p_capped():
    assert default_lengths(256) == [512, 1024, 2048]
    assert default_lengths(8192) == [16384, 32768]  # 8P = 64k is capped at 32k
    assert default_lengths(32768) == [32768]


@pytest.fixture(scope="module")
def loaded(cli_models):
    return load_once(ModelSpec(str(cli_models["llama"]), device="cpu"), MethodSpec(), [AUTO])


def test_patch_check_passes_for_the_real_patch(loaded):
    check = patch_check(loaded, MethodSpec(), AUTO)
    assert check.tokens == 48 + 16  # c + 16 for P = 64
    assert check.within is not None and check.within < 1e-5
    assert check.active and check.intact
    assert "active" in check.describe() and "intact" in check.describe()


def test_patch_that_changes_nothing_is_caught(loaded, monkeypatch):
    real = chunkqa.methods.dca.patch.apply_dca

    def inert(model, *args, **kwargs):
        handle = real(model, *args, **kwargs)
        for module in model.modules():
            module.__dict__.pop("forward", None)  # the attention modules run unpatched
        model.base_model._forward_pre_hooks.clear()  # and get their usual causal mask
        return handle

    monkeypatch.setattr(chunkqa.methods.dca.patch, "apply_dca", inert)
    check = patch_check(loaded, MethodSpec(), AUTO)
    assert (check.within, check.beyond) == (0.0, 0.0)
    assert not check.active and check.intact
    assert "not active" in failures([], check)[0]


def test_patch_that_breaks_plain_attention_is_caught(loaded, monkeypatch):
    real = chunkqa.methods.dca.patch.key_positions
    monkeypatch.setattr(
        chunkqa.methods.dca.patch, "key_positions", lambda *a: real(*a) + 1
    )  # keys one step off
    check = patch_check(loaded, MethodSpec(), AUTO)
    assert not check.intact and check.active
    (reason,) = failures([], check)
    assert reason == "DCA changed the output inside one chunk, where it must equal plain attention"


def test_constant_logit_scale_skips_the_inside_check(loaded):
    check = patch_check(loaded, MethodSpec(), Setting("dca", (("logit_scale", 2.0),)))
    assert check.within is None and check.intact and check.active


def accuracy(length, correct, n=5):
    return {"length": length, "value": correct / n, "correct": correct, "n": n}


def test_verdict_passes_only_at_80_percent_everywhere():
    good = PatchCheck(64, 1e-7, 1e-2, 1e-3)
    assert verdict([accuracy(512, 4), accuracy(256, 5)], good, "5.23.0") is None
    error = verdict([accuracy(512, 3), accuracy(256, 5)], good, "5.23.0")
    assert str(error) == "selftest failed: pass-key accuracy 3/5 at 512 tokens"
    assert error.exit_code == 1 and "eval passkey --compare" in error.hint


def test_verdict_blames_the_patch_when_its_check_fails():
    error = verdict([accuracy(512, 5)], PatchCheck(64, 1e-7, 0.0, 1e-3), "5.99.0")
    assert "not active" in str(error)
    assert "transformers 5.99.0" in error.hint
