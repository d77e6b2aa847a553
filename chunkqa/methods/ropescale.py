"""RoPE scaling without a patch: a model config whose `rope_parameters` ask transformers for it.

transformers implements the scalings (its ROPE_INIT_FUNCTIONS); chunkqa only writes the config the
weights are then loaded with. Written `kind:factor`, e.g. `yarn:4`:
  linear:f    position interpolation (Chen et al. 2023): positions divided by f.
  ntk:f       NTK-aware scaling, static: the RoPE base multiplied by f ** (d / (d - 2)) (d: the rotated
              head size), so the lowest frequency spans f times more positions; transformers' default
              RoPE with another base.
  dynamic:f   transformers' dynamic NTK: the base grows with the sequence once it passes the window.
              Each forward sees its own length, so a prompt read in pieces and then decoded uses several
              bases; chunkqa reads prompts in pieces, so expect it to differ from one full pass.
  yarn:f      YaRN (Peng et al. 2023): per-frequency interpolation and an attention factor
              0.1 ln(f) + 1 on cos and sin.
linear, ntk and yarn stretch the window to f·P, so the config's max_position_embeddings becomes f·P
and DCA on top of them (chunkqa's `dca` with `rope`) uses chunks of that longer window. dynamic keeps
P: its scaling starts only past P, which DCA never reaches, so DCA with dynamic is refused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from chunkqa.errors import UsageError

KINDS = ("linear", "ntk", "dynamic", "yarn")
HINT = "write it as kind:factor, e.g. yarn:4 (kinds: linear, ntk, dynamic, yarn; factor > 1)"


@dataclass(frozen=True)
class RopeScaling:
    """A RoPE scaling asked for: its kind and factor."""

    kind: str
    factor: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"unknown `rope` scaling {self.kind!r}", hint=HINT)
        if not self.factor > 1:
            raise UsageError(f"the `rope` factor must be above 1, got {self.factor:g}", hint=HINT)

    @property
    def stretches_window(self) -> bool:
        """Whether the scaled model's window is f·P (all but dynamic, which scales only past P)."""
        return self.kind != "dynamic"

    def __str__(self) -> str:
        return f"{self.kind}:{self.factor:g}"


def parse_rope(text: str | RopeScaling | None) -> RopeScaling | None:
    """`kind:factor` (e.g. "yarn:4") as a RopeScaling; None or "" for none."""
    if text is None or isinstance(text, RopeScaling):
        return text
    text = text.strip().lower()
    if not text or text == "none":
        return None
    kind, _, factor = text.partition(":")
    try:
        value = float(factor)
    except ValueError:
        raise UsageError(f"cannot read the `rope` scaling {text!r}", hint=HINT) from None
    return RopeScaling(kind, value)


def scaled_config(config: Any, scaling: RopeScaling) -> Any:
    """A copy of a model config whose RoPE is scaled; the original is not changed."""
    config = copy.deepcopy(config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    params = dict(getattr(text, "rope_parameters", None) or {})
    if params.get("rope_type", "default") != "default":
        raise UsageError(
            f"this model already scales its RoPE ({params['rope_type']}): `rope` {scaling} would "
            "replace that",
            hint="use the model's own scaling (no `rope`), or a model without one",
        )
    window = int(text.max_position_embeddings)
    theta = float(params.get("rope_theta", getattr(text, "rope_theta", 10000.0)))
    if scaling.kind == "ntk":
        rotated = rotated_dim(text)
        params = {
            **params,
            "rope_type": "default",
            "rope_theta": theta * scaling.factor ** (rotated / (rotated - 2)),
        }
    else:
        params = {**params, "rope_type": scaling.kind, "factor": scaling.factor, "rope_theta": theta}
        if scaling.kind == "yarn":
            params["original_max_position_embeddings"] = window
    text.rope_parameters = params
    if scaling.stretches_window:
        text.max_position_embeddings = int(window * scaling.factor)
    return config


def rotated_dim(text_config: Any) -> int:
    """How many dimensions of a head RoPE rotates (all of them unless a partial rotary factor says less)."""
    head = (
        getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    )
    share = (getattr(text_config, "rope_parameters", None) or {}).get("partial_rotary_factor", 1.0)
    return int(head * share)


def apply_rope(model: Any, scaling: RopeScaling) -> Any:
    """Give one loaded model a scaled RoPE: its rotary embedding is rebuilt, by its own class, from a
    scaled copy of its config (what loading with that config would have built). Returns the undo.

    For runs that switch scalings on one loaded model (chunkqa eval); chunkqa ask and chat load the
    weights with the scaled config instead. Apply it before a method that reads the rotary (DCA).
    """
    from chunkqa.methods.adapters import find_decoder
    from chunkqa.methods.patching import set_instance_attr

    decoder = find_decoder(model)
    rotary = decoder.rotary_emb
    scaled = scaled_config(model.config, scaling)
    text = scaled.get_text_config() if hasattr(scaled, "get_text_config") else scaled
    device = next((b.device for b in rotary.buffers()), None)
    fresh = type(rotary)(config=text)
    if device is not None:
        fresh = fresh.to(device)
    return set_instance_attr(decoder, "rotary_emb", fresh)
