"""chunkqa.methods.ropescale: the config transformers then scales RoPE from, checked against the formulas.

The rotary embedding is built by transformers from the scaled config; its cos/sin are compared with the
closed forms of each scaling (computed here in float64), so a wrong config key cannot pass.
"""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import P, load_tiny, tokens
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from chunkqa.errors import UsageError
from chunkqa.methods.ropescale import RopeScaling, apply_rope, parse_rope, scaled_config
from chunkqa.methods.spec import MethodSpec, resolve_method

THETA = 10000.0
D = 16  # head size of the config below


def config() -> LlamaConfig:
    return LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=P, rope_theta=THETA)


def angles(scaled: LlamaConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rotary = LlamaRotaryEmbedding(scaled)
    cos, sin = rotary(torch.ones(1, dtype=torch.float64), positions[None])
    return cos[0].double(), sin[0].double()


def closed_form(inv_freq: torch.Tensor, positions: torch.Tensor, factor: float = 1.0):
    angle = positions[:, None].double() * inv_freq[None].double()  # [n, D/2]
    angle = torch.cat((angle, angle), dim=-1)
    return factor * angle.cos(), factor * angle.sin()


def test_parse():
    assert parse_rope("YaRN:4") == RopeScaling("yarn", 4.0) and str(parse_rope("linear:2")) == "linear:2"
    assert parse_rope(None) is None and parse_rope("") is None and parse_rope("none") is None
    for bad in ("yarn", "yarn:x", "cubic:2", "linear:1", "linear:0.5"):
        with pytest.raises(UsageError):
            parse_rope(bad)


def test_linear_divides_positions_and_stretches_the_window():
    scaled = scaled_config(config(), RopeScaling("linear", 4.0))
    assert scaled.max_position_embeddings == 4 * P and scaled.rope_parameters["rope_type"] == "linear"
    positions = torch.arange(0, 300, 7)
    inv = 1.0 / THETA ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    for got, want in zip(angles(scaled, positions), closed_form(inv, positions / 4.0), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_ntk_raises_the_base():
    scaled = scaled_config(config(), RopeScaling("ntk", 4.0))
    base = THETA * 4.0 ** (D / (D - 2))
    assert scaled.rope_parameters == {"rope_type": "default", "rope_theta": pytest.approx(base)}
    positions = torch.arange(0, 300, 7)
    inv = 1.0 / base ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    for got, want in zip(angles(scaled, positions), closed_form(inv, positions), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_yarn_keeps_high_frequencies_stretches_low_ones_and_scales_attention():
    f = 8.0
    scaled = scaled_config(config(), RopeScaling("yarn", f))
    assert scaled.rope_parameters["original_max_position_embeddings"] == P
    rotary = LlamaRotaryEmbedding(scaled)
    plain = 1.0 / THETA ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    ratio = plain / rotary.inv_freq.double()
    assert ratio[0] == pytest.approx(1.0) and ratio[-1] == pytest.approx(f)  # fastest kept, slowest / f
    assert torch.all(ratio[1:] >= ratio[:-1] - 1e-5)  # a ramp between them (inv_freq is float32)
    assert rotary.attention_scaling == pytest.approx(0.1 * math.log(f) + 1)


def test_dynamic_keeps_the_window_and_a_model_scaling_is_not_replaced():
    assert scaled_config(config(), RopeScaling("dynamic", 2.0)).max_position_embeddings == P
    llama3 = LlamaConfig(
        rope_parameters={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
    )
    with pytest.raises(UsageError, match="already scales its RoPE"):
        scaled_config(llama3, RopeScaling("yarn", 2.0))


def test_the_original_config_is_not_changed():
    original = config()
    scaled_config(original, RopeScaling("linear", 2.0))
    assert original.max_position_embeddings == P and original.rope_parameters.get("rope_type") == "default"


@pytest.mark.parametrize(
    ("method", "rope", "message"),
    [
        ("rope", None, "needs a `rope` scaling"),
        ("none", "yarn:2", "runs the model as it is"),
        ("selfextend", "yarn:2", "does not compose"),
        ("dca", "dynamic:2", "does nothing under DCA"),
    ],
)
def test_which_methods_compose_with_which_scalings(method, rope, message):
    with pytest.raises(UsageError, match=message):
        MethodSpec(method, rope=rope)


def test_dca_on_a_stretched_window_uses_longer_chunks():
    scaled = scaled_config(config(), RopeScaling("yarn", 4.0))
    dca = resolve_method(MethodSpec("dca", rope="yarn:4"), scaled)
    assert (dca.pretraining_length, dca.chunk_size, dca.local_window) == (4 * P, 3 * P, P // 2)


def test_apply_rope_equals_loading_with_the_scaled_config_and_undoes(tiny_paths):
    model = load_tiny(tiny_paths["llama"], torch.float64)
    ids = tokens(100, seed=3)
    with torch.no_grad():
        before = model(ids).logits
        undo = apply_rope(model, RopeScaling("yarn", 4.0))
        patched = model(ids).logits
        undo()
        after = model(ids).logits
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(
        tiny_paths["llama"], config=scaled_config(model.config, RopeScaling("yarn", 4.0)), dtype=torch.float64
    )
    with torch.no_grad():
        torch.testing.assert_close(patched, loaded(ids).logits, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert not torch.allclose(patched, before)
