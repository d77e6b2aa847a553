"""chunkqa.methods.selfextend.config: validation, the longest sequence, defaults from a target length."""

from __future__ import annotations

import pytest

from chunkqa.errors import SelfExtendConfigError, UsageError
from chunkqa.methods.selfextend.config import SelfExtendConfig, defaults, resolve_config


def largest_relative_position(length: int, group_size: int, window: int) -> int:
    """By brute force over every (query, key) pair of a sequence, from the SelfExtend formulas."""
    best = 0
    for i in range(length):
        for j in range(i + 1):
            if i - j < window:
                best = max(best, i - j)
            else:
                best = max(best, i // group_size + window - window // group_size - j // group_size)
    return best


@pytest.mark.parametrize(
    ("p", "g", "w"), [(64, 4, 16), (64, 3, 16), (64, 1, 8), (32, 5, 7), (16, 2, 15), (20, 8, 3)]
)
def test_max_length_is_the_longest_sequence_below_p(p, g, w):
    cfg = SelfExtendConfig(p, g, w)
    assert largest_relative_position(cfg.max_length, g, w) <= p - 1
    assert largest_relative_position(cfg.max_length + 1, g, w) == p  # one more token reaches P
    assert cfg.largest_position(cfg.max_length) == largest_relative_position(cfg.max_length, g, w)
    if w % g == 0:  # the paper's and the README's formula
        assert cfg.max_length == (p - w) * g + w


def test_max_length_of_the_reference_settings():
    assert SelfExtendConfig(4096, 8, 1024).max_length == 25_600  # Llama-2, the paper's "25k"
    assert SelfExtendConfig(4096, 5, 1024).max_length == 16_380  # the README's G=5: 16,380, not 16,384


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 64}, "`window` .* smaller than the pretraining length"),
        ({"window": 100}, "`window` .* smaller than the pretraining length"),
        ({"window": 0}, "`window` must be a positive integer"),
        ({"group_size": 0}, "`group_size` must be a positive integer"),
        ({"group_size": -2}, "`group_size` must be a positive integer"),
        ({"group_size": 2.0}, "`group_size` must be a positive integer"),
        ({"group_size": True}, "`group_size` must be a positive integer"),
        ({"pretraining_length": 0}, "`pretraining_length` must be a positive integer"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, message):
    settings = {"pretraining_length": 64, "group_size": 4, "window": 16, **kwargs}
    with pytest.raises(SelfExtendConfigError, match=message) as info:
        SelfExtendConfig(**settings)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_defaults_without_a_target_are_the_reference_code_defaults():
    assert defaults(4096) == (8, 1024)  # Llama.py: group_size_1=8, group_size_2=1024
    assert defaults(2048) == (8, 512)  # Phi.py's W
    assert defaults(64) == (8, 16)
    assert defaults(4096, window=512) == (8, 512)


@pytest.mark.parametrize("p", [64, 4096, 8192, 32768])
@pytest.mark.parametrize("share", [0.1, 0.45, 0.9, 1.0, 1.5, 4, 6.25, 16, 100])
def test_defaults_follow_the_rule_of_thumb(p, share):
    """The smallest G with W + (N - W) / G <= P / 2, and a max_length that reaches N."""
    n = max(1, int(p * share))
    g, w = defaults(p, n)
    assert w == p // 4
    cfg = SelfExtendConfig(p, g, w)
    assert cfg.max_length >= n
    assert w + (n - w) / g <= p / 2 or (g == 1 and n <= p // 2)
    if g > 1:  # one group less breaks the rule
        assert w + (n - w) / (g - 1) > p / 2


def test_defaults_examples():
    assert defaults(4096, 16_384) == (15, 1024)  # the maintainer: G > 8 for 16k on Llama-2, not 5
    assert defaults(4096, 32_768) == (31, 1024)  # example.py: W=1024, G=32 for ~32k
    assert defaults(4096, 1000) == (1, 1024)  # within the window: the model as it is


def test_defaults_with_a_wide_window_fall_back_to_the_hard_limit():
    g, w = defaults(64, 300, window=40)  # W > P / 2: the rule cannot hold
    assert w == 40 and SelfExtendConfig(64, g, w).max_length >= 300
    assert SelfExtendConfig(64, g - 1, w).max_length < 300


def test_defaults_refuse_a_bad_target():
    with pytest.raises(SelfExtendConfigError, match="target_length"):
        defaults(64, 0)


def test_resolve_config_overrides():
    assert resolve_config(4096) == SelfExtendConfig(4096, 8, 1024)
    assert resolve_config(4096, group_size=4) == SelfExtendConfig(4096, 4, 1024)
    assert resolve_config(4096, window=512, target_length=16_384) == SelfExtendConfig(4096, 11, 512)
    assert resolve_config(4096, group_size=2, window=100, target_length=10**6).group_size == 2
    with pytest.raises(SelfExtendConfigError):
        resolve_config(4096, window=4096)
    with pytest.raises(SelfExtendConfigError, match="pretraining_length"):
        resolve_config(None)  # type: ignore[arg-type]


def test_config_is_frozen_and_described():
    cfg = SelfExtendConfig(64, 4, 16)
    with pytest.raises(AttributeError):
        cfg.group_size = 2  # type: ignore[misc]
    assert cfg.describe() == {
        "method": "selfextend",
        "pretraining_length": 64,
        "group_size": 4,
        "window": 16,
        "max_length": 208,
    }
