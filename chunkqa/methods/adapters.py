"""Architecture adapters: which Hugging Face models DCA patches, and how to find their parts.

All supported families share one attention layout (q/k/v/o projections, RoPE from the model's
`rotary_emb`, optional per-head q/k RMSNorm before RoPE as in Qwen3), so an adapter is a few lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from chunkqa.errors import UnsupportedModelError

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe")
_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class ModelParts:
    """The modules DCA touches in one model."""

    model_type: str
    text_config: Any
    decoder: nn.Module  # the base model whose forward builds masks and position embeddings
    rotary: nn.Module  # the model's own rotary embedding: cos/sin for DCA positions come from it
    attentions: tuple[nn.Module, ...]


def check_architecture(config: Any) -> str:
    """The model type of a config, or UnsupportedModelError naming the supported ones."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    model_type = getattr(text_config, "model_type", None)
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"DCA does not support the {model_type or type(config).__name__!r} architecture",
            hint=f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}; run without DCA (--no-dca) for others",
        )
    return model_type


def find_decoder(model: nn.Module) -> nn.Module:
    """The base model whose forward computes RoPE (its `rotary_emb`) for every layer."""
    decoder = getattr(model, "base_model", model)
    if getattr(decoder, "rotary_emb", None) is None:
        raise UnsupportedModelError(
            f"this {type(model).__name__} has no rotary embedding on its base model",
            hint="this transformers version may lay the model out differently; please report it",
        )
    return decoder


def find_parts(model: nn.Module) -> ModelParts:
    """Locate the decoder, rotary embedding and attention modules, or say why this model is not supported."""
    model_type = check_architecture(getattr(model, "config", None))
    text_config = model.config.get_text_config()
    decoder = getattr(model, "base_model", model)
    rotary = getattr(decoder, "rotary_emb", None)
    attentions = tuple(
        m for m in model.modules() if all(hasattr(m, p) for p in _PARTS) and hasattr(m, "layer_idx")
    )
    if rotary is None or len(attentions) != text_config.num_hidden_layers:
        raise UnsupportedModelError(
            f"this {model_type} model does not have the layout DCA expects "
            f"(rotary_emb on the base model and {text_config.num_hidden_layers} attention modules)",
            hint="this transformers version may lay the model out differently; please report it",
        )
    return ModelParts(model_type, text_config, decoder, rotary, attentions)


def project_qkv(module: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """hidden [B, n, hidden] -> q [B, H, n, D], k and v [B, Hkv, n, D], before RoPE."""
    shape = (*hidden.shape[:-1], -1, module.head_dim)  # [B, n, heads, D]
    q = module.q_proj(hidden).view(shape)
    k = module.k_proj(hidden).view(shape)
    v = module.v_proj(hidden).view(shape)
    if hasattr(module, "q_norm"):  # Qwen3: RMSNorm on each head before RoPE
        q, k = module.q_norm(q), module.k_norm(k)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
