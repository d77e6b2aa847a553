"""Lengths, depths and DCA settings as the eval commands parse them."""

from __future__ import annotations

import pytest

from chunkqa.errors import UsageError
from chunkqa.evals.grid import (
    Length,
    make_settings,
    parse_depths,
    parse_lengths,
    parse_setting,
    resolve_lengths,
)
from chunkqa.methods.spec import MethodSpec


def test_lengths_accept_tokens_kibi_and_multiples_of_p():
    lengths = parse_lengths("256, 1k,1.5k,2x,0.5x")
    assert lengths == (
        Length(tokens=256),
        Length(tokens=1024),
        Length(tokens=1536),
        Length(times_p=2.0),
        Length(times_p=0.5),
    )
    assert resolve_lengths(lengths, 256) == [128, 256, 512, 1024, 1536]  # sorted, 512 from 2x


def test_resolved_lengths_drop_repeats():
    assert resolve_lengths(parse_lengths("1x,256,4k,4096"), 256) == [256, 4096]


@pytest.mark.parametrize("text", ["", "abc", "1k5", "-5", "1", "0.5", "0x", "2,,4", "1e3", "0.1k"])
def test_bad_lengths_are_usage_errors(text):
    with pytest.raises(UsageError) as info:
        parse_lengths(text)
    assert info.value.exit_code == 2
    assert "1x,2x" in info.value.hint


def test_depths_are_sorted_fractions_and_percentages():
    assert parse_depths("1,0,50%,0.25") == [0.0, 0.25, 0.5, 1.0]


@pytest.mark.parametrize("text", ["1.5", "-0.1", "x", "nan", "150%"])
def test_bad_depths_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_depths(text)


def test_compare_puts_no_dca_first_then_one_setting_per_scale():
    settings = make_settings("dca", compare=True, scales_text="1,auto,auto:0.1,auto:0.05")
    assert [s.label for s in settings] == ["no DCA", "DCA scale=1.0", "DCA auto", "DCA auto:0.1"]
    assert settings[1].spec(MethodSpec()) == MethodSpec(logit_scale=1.0)
    assert settings[0].spec(MethodSpec(chunk_size=40)) == MethodSpec("none")


def test_no_dca_runs_only_without_dca():
    assert [s.spec(MethodSpec()).name for s in make_settings("none", True, "1,auto")] == ["none"]


def test_bad_logit_scale_in_the_list_is_a_usage_error():
    with pytest.raises(UsageError):
        make_settings("dca", compare=False, scales_text="auto,-1")


def test_settings_name_a_method_and_its_changes():
    texts = ["dca", "dca,logit_scale=1", "selfextend,group_size=8,window=2048", "rope,rope=yarn:4", "none"]
    settings = make_settings("dca", compare=True, scales_text=None, methods=texts)
    assert [s.label for s in settings] == texts  # --compare adds nothing: "none" is there
    base = MethodSpec(chunk_size=40, logit_scale=2.0, pretraining_length=128)
    specs = [s.spec(base) for s in settings]
    assert specs[0] == base and specs[1] == MethodSpec(chunk_size=40, logit_scale=1, pretraining_length=128)
    assert specs[2] == MethodSpec("selfextend", group_size=8, window=2048, pretraining_length=128)
    assert str(specs[3].rope) == "yarn:4" and specs[3].name == "rope"
    assert [s.label for s in make_settings("dca", True, None, ["dca"])] == ["no DCA", "dca"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("magic", "unknown method 'magic'"),
        ("selfextend,chunk_size=8", "settings of selfextend: pretraining_length, group_size, window"),
        ("dca,logit_scale", "cannot read 'logit_scale'"),
    ],
)
def test_bad_settings_are_usage_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_setting(text)
