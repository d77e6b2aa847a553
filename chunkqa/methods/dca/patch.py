"""apply_dca: give one model instance Dual Chunk Attention; the returned handle undoes it.

The instance patching is shared with the other methods (chunkqa.methods.patching); this module
holds DCA's attention forward: keys rotated once at their in-chunk position and cached so, queries
by the kernel path (long prefills) or the fused masked pass (a few queries on a GPU, and every
CUDA-graph step); one new token on a GPU with triton installed takes the flash-decoding kernel
(chunkqa.methods.dca.decode_triton) instead of the masked pass.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import nn

from chunkqa.methods.adapters import find_parts, project_qkv
from chunkqa.methods.dca.attention import dca_attention
from chunkqa.methods.dca.config import DEFAULT_LOGIT_SCALE, DCAConfig, resolve_config
from chunkqa.methods.dca.masked import masked_dca_attention, plan_masks
from chunkqa.methods.dca.positions import key_positions
from chunkqa.methods.patching import (
    CapturableLayer,
    PatchHandle,
    PatchState,
    cached,
    patch_attention,
    pick_cache,
    step_span,
)
from chunkqa.methods.rope import rotate

MASKED_QUERIES = 64  # at most this many new queries take the fused masked pass ...
MASKED_BYTES = 256 * 2**20  # ... and only while its float32 scores fit in this
TRITON_DECODE = True  # one new token on a GPU: the Triton flash-decoding kernel, where triton is installed


class DCAHandle(PatchHandle):
    """The DCA patch on one model: its resolved settings, and `remove()` to undo it."""

    method = "DCA"

    def __init__(self, state: PatchState, config: DCAConfig, undo: list) -> None:
        super().__init__(state, undo)
        self.config = config

    def logit_factor(self, prompt_length: int) -> float:
        """The factor on attention logits for a prompt of this many tokens."""
        return self.config.logit_factor(prompt_length)

    def __repr__(self) -> str:
        return f"DCAHandle({self.config}, active={self.active})"


def apply_dca(
    model: nn.Module,
    pretraining_length: int | None = None,
    chunk_size: int | None = None,
    local_window: int | None = None,
    logit_scale: str | float = DEFAULT_LOGIT_SCALE,
    kernel: str = "auto",
    *,
    config: DCAConfig | None = None,
) -> DCAHandle:
    """Patch this model instance with Dual Chunk Attention and return the handle that undoes it.

    `config`: settings already resolved (chunkqa's plan passes them); else they are resolved from
    the model's config and the given overrides.
    """
    parts = find_parts(model)
    if config is None:
        config = resolve_config(parts.text_config, pretraining_length, chunk_size, local_window, logit_scale)
    state = PatchState(parts.rotary, config.chunk_size + 1, kernel)
    return patch_attention(
        model,
        state,
        functools.partial(_dca_forward, cfg=config),
        lambda undo: DCAHandle(state, config, undo),
        parts,
    )


def _dca_forward(
    module: nn.Module,
    state: PatchState,
    hidden_states: torch.Tensor,
    position_embeddings=None,
    attention_mask=None,
    past_key_values=None,
    cache=None,
    *,
    cfg: DCAConfig,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The attention forward of a DCA-patched module (the model's mask and absolute RoPE are unused).

    The KV cache arrives as `past_key_values` (transformers < 5.24) or `cache` (5.24 and newer).
    """
    past_key_values = pick_cache(cache, past_key_values)
    q, k, v = project_qkv(module, hidden_states)  # [B, H, n, D], [B, Hkv, n, D] x2
    batch, _, new, _ = q.shape
    past = past_key_values.get_seq_length(module.layer_idx) if past_key_values is not None else 0
    cos, sin = state.table(q.device, q.dtype)  # [c + 1, D]
    scale = module.scaling * state.fixed_per_sequence(past_key_values, past, new, cfg.logit_factor)
    positions = getattr(past_key_values, "positions", None)
    if positions is not None:  # a step being captured in a CUDA graph: positions are a tensor
        layer: CapturableLayer = past_key_values.layers[module.layer_idx]
        span = step_span(past_key_values, layer)
        key = ("graph", span, q.dtype, q.device)
        krot, plan = state.shared(key, lambda: _graph_plan(positions, span, q, cfg, cos, sin))
        k, v = layer.write_at(rotate(k, *krot), v, positions)
        k, v = k[:, :, :span], v[:, :, :span]
        out = _few_queries(q, k, v, positions, cos, sin, cfg, scale, plan)
    else:
        krot = state.shared(
            ("keys", past, new, q.dtype, q.device), lambda: _key_tables(past, new, cfg.chunk_len, cos, sin)
        )
        k, v = cached(module, past_key_values, rotate(k, *krot), v, past, "DCA")
        if use_masked(q, k):
            key = ("plan", past, new, k.shape[2], q.dtype, q.device)
            q_pos, plan = state.shared(key, lambda: _eager_plan(past, q, k, cfg, cos, sin))
            out = _few_queries(q, k, v, q_pos, cos, sin, cfg, scale, plan)
        else:
            _, kernel = state.kernel(q.device, q.dtype, q.shape[-1])
            out = dca_attention(q, k, v, past, cos, sin, cfg.chunk_len, cfg.chunk_size, scale, kernel)
    out = out.transpose(1, 2).reshape(batch, new, -1)  # [B, n, H*D]
    return module.o_proj(out), None


def _few_queries(q, k, v, q_pos, cos, sin, cfg: DCAConfig, scale: float, plan) -> torch.Tensor:
    """The fused masked pass, or for one new token on a GPU the flash-decoding kernel when it loads."""
    decode = _triton_decode() if TRITON_DECODE and q.is_cuda and q.shape[2] == 1 else None
    if decode is None:
        return masked_dca_attention(q, k, v, q_pos, cos, sin, cfg.chunk_len, cfg.chunk_size, scale, plan)
    qv = rotate(q[:, :, :, None, :], plan.cos, plan.sin)[:, :, 0]  # [B, H, 3, D]: the three rotations
    return decode(qv, k, v, q_pos, cfg.chunk_len, scale)


@functools.cache
def _triton_decode():
    """chunkqa.methods.dca.decode_triton's kernel, or None where triton is not installed (or where
    CHUNKQA_TRITON_DECODE=0 turns it off: the fused masked pass then decodes, as before)."""
    if os.environ.get("CHUNKQA_TRITON_DECODE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        from chunkqa.methods.dca.decode_triton import triton_dca_decode
    except ImportError:
        return None
    return triton_dca_decode


def _key_tables(past: int, new: int, chunk_len: int, cos: torch.Tensor, sin: torch.Tensor):
    """cos, sin [n, D] at the new keys' DCA positions (i mod s): keys are cached rotated like that."""
    kpos = key_positions(past, new, chunk_len, cos.device)
    return cos[kpos], sin[kpos]


def _eager_plan(past: int, q: torch.Tensor, k: torch.Tensor, cfg: DCAConfig, cos, sin):
    q_pos = torch.arange(past, past + q.shape[2], device=q.device)
    return q_pos, plan_masks(q_pos, k.shape[2], q.shape[1], cos, sin, cfg.chunk_len, cfg.chunk_size)


def _graph_plan(positions: torch.Tensor, span: int, q: torch.Tensor, cfg: DCAConfig, cos, sin):
    kpos = positions % cfg.chunk_len
    plan = plan_masks(positions, span, q.shape[1], cos, sin, cfg.chunk_len, cfg.chunk_size)
    return (cos[kpos], sin[kpos]), plan


def use_masked(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Few queries over the keys on a GPU: one fused masked pass beats a kernel call per key range.

    (On a GPU the kernel path is bound by launches, and cuDNN re-plans at every new cache length; on
    the CPU its fused flash kernel is faster than forming three scores per key.)
    """
    batch, heads, new, _ = q.shape
    small = new <= MASKED_QUERIES and batch * heads * new * 3 * 4 * k.shape[2] <= MASKED_BYTES
    return small and q.device.type == "cuda"
