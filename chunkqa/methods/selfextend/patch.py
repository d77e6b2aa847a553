"""apply_selfextend: give one model instance SelfExtend attention; the returned handle undoes it.

The instance patching is shared with the other methods (chunkqa.methods.patching); this module holds
SelfExtend's attention forward. Each new key is rotated at its neighbor and grouped positions and
cached as [B, Hkv, L, 2D] (values stay [B, Hkv, L, D]): neither rotation depends on the query, so
the cache is never rotated again and a cached document prefix is reused exactly. Queries go through
the kernel path (long prefills) or the fused masked pass (a few queries, and every CUDA-graph step).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import nn

from chunkqa.methods.adapters import find_parts, project_qkv
from chunkqa.methods.dca.config import default_settings
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
from chunkqa.methods.selfextend.attention import selfextend_attention
from chunkqa.methods.selfextend.config import SelfExtendConfig, resolve_config
from chunkqa.methods.selfextend.masked import MaskPlan, masked_selfextend_attention, plan_masks
from chunkqa.methods.selfextend.positions import (
    RopeTables,
    gather,
    key_positions,
    query_positions,
    table_length,
)

MASKED_QUERIES = 64  # at most this many new queries take the fused masked pass ...
MASKED_BYTES = 256 * 2**20  # ... and only while its float32 scores fit in this


class SelfExtendHandle(PatchHandle):
    """The SelfExtend patch on one model: its resolved settings, and `remove()` to undo it."""

    method = "SelfExtend"

    def __init__(self, state: PatchState, config: SelfExtendConfig, undo: list) -> None:
        super().__init__(state, undo)
        self.config = config

    def __repr__(self) -> str:
        return f"SelfExtendHandle({self.config}, active={self.active})"


class SelfExtendState(PatchState):
    """PatchState with RoPE tables that grow with the sequence (neighbor positions are absolute)."""

    def __init__(self, rotary: nn.Module, config: SelfExtendConfig, kernel: str) -> None:
        super().__init__(rotary, config.window + 1, kernel)  # (PatchState's fixed table: unused)
        self.tables = RopeTables(rotary)


class StepTables(NamedTuple):
    """What every layer of one forward shares: RoPE at the new tokens' positions, and the masks."""

    keys: tuple[torch.Tensor, torch.Tensor]  # cos, sin [n, 2, D] at (j, j // G)
    queries: tuple[torch.Tensor, torch.Tensor]  # cos, sin [n, 2, D] at (i, i // G + W - W // G)
    q_pos: torch.Tensor  # [n] absolute positions
    plan: MaskPlan | None  # the masked pass's masks, when it runs


def apply_selfextend(
    model: nn.Module,
    group_size: int | None = None,
    window: int | None = None,
    pretraining_length: int | None = None,
    target_length: int | None = None,
    kernel: str = "auto",
    *,
    config: SelfExtendConfig | None = None,
) -> SelfExtendHandle:
    """Patch this model instance with SelfExtend and return the handle that undoes it.

    P defaults to the model's pretraining length (max_position_embeddings, or the original length of
    a Qwen dual-chunk config); G and W not given follow
    chunkqa.methods.selfextend.config.defaults (for `target_length` tokens, when given).
    `config`: settings already resolved (chunkqa's plan passes them).
    """
    parts = find_parts(model)
    if config is None:
        length = pretraining_length
        if length is None:  # P as DCA reads it
            length = default_settings(parts.text_config)[0]
        config = resolve_config(length, group_size, window, target_length)
    state = SelfExtendState(parts.rotary, config, kernel)
    return patch_attention(
        model,
        state,
        functools.partial(_selfextend_forward, cfg=config),
        lambda undo: SelfExtendHandle(state, config, undo),
        parts,
    )


def _selfextend_forward(
    module: nn.Module,
    state: SelfExtendState,
    hidden_states: torch.Tensor,
    position_embeddings=None,
    attention_mask=None,
    past_key_values=None,
    cache=None,
    *,
    cfg: SelfExtendConfig,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The attention forward of a SelfExtend-patched module (the model's mask and RoPE are unused).

    The KV cache arrives as `past_key_values` (transformers < 5.24) or `cache` (5.24 and newer).
    """
    past_key_values = pick_cache(cache, past_key_values)
    q, k, v = project_qkv(module, hidden_states)  # [B, H, n, D], [B, Hkv, n, D] x2
    batch, _, new, _ = q.shape
    past = past_key_values.get_seq_length(module.layer_idx) if past_key_values is not None else 0
    positions = getattr(past_key_values, "positions", None)
    if positions is not None:  # a step being captured in a CUDA graph: positions are a tensor
        layer: CapturableLayer = past_key_values.layers[module.layer_idx]
        span = step_span(past_key_values, layer)
        key = ("graph", span, q.dtype, q.device)
        step = state.shared(key, lambda: _step(state, cfg, positions, q, span, span))
        k, v = layer.write_at(_rotate_keys(k, step), v, positions)
        k, v = k[:, :, :span], v[:, :, :span]
        out = masked_selfextend_attention(
            _rotate_queries(q, step), k, v, positions, cfg.window, module.scaling, step.plan
        )
    else:
        masked = use_masked(q, past + new)
        key = ("eager", past, new, masked, q.dtype, q.device)
        pos = torch.arange(past, past + new, device=q.device)
        step = state.shared(key, lambda: _step(state, cfg, pos, q, past + new, past + new if masked else 0))
        k, v = cached(module, past_key_values, _rotate_keys(k, step), v, past, "SelfExtend")
        q2 = _rotate_queries(q, step)
        if masked:
            out = masked_selfextend_attention(q2, k, v, step.q_pos, cfg.window, module.scaling, step.plan)
        else:
            _, kernel = state.kernel(q.device, q.dtype, q.shape[-1])
            out = selfextend_attention(q2, k, v, past, cfg.window, module.scaling, kernel)
    out = out.transpose(1, 2).reshape(batch, new, -1)  # [B, n, H*D]
    return module.o_proj(out), None


def _step(
    state: SelfExtendState, cfg: SelfExtendConfig, pos: torch.Tensor, q: torch.Tensor, end: int, keys: int
) -> StepTables:
    """RoPE at positions pos [n] (tokens up to end - 1), and masks over `keys` keys (0: none)."""
    table = state.tables.get(q.device, q.dtype, table_length(end, cfg.window))
    plan = plan_masks(pos, 0, keys, cfg.window, q.shape[1]) if keys else None
    kpos = key_positions(pos, cfg.group_size)  # [n, 2]
    qpos = query_positions(pos, cfg.group_size, cfg.window)  # [n, 2]
    return StepTables(gather(table, kpos), gather(table, qpos), pos, plan)


def _rotate_keys(k: torch.Tensor, step: StepTables) -> torch.Tensor:
    """k [B, Hkv, n, D] -> [B, Hkv, n, 2D]: [rotated at j | rotated at j // G]."""
    both = rotate(k[:, :, :, None, :], *step.keys)  # [B, Hkv, n, 2, D]
    return both.flatten(-2)  # [B, Hkv, n, 2D]


def _rotate_queries(q: torch.Tensor, step: StepTables) -> torch.Tensor:
    """q [B, H, n, D] -> [B, H, n, 2, D]: rotated at i and at i // G + W - W // G."""
    return rotate(q[:, :, :, None, :], *step.queries)


def use_masked(q: torch.Tensor, keys: int) -> bool:
    """Few queries over the keys on a GPU: one fused masked pass beats a kernel call per key range.

    (On the CPU the kernel path is faster: for one query at 7.5k keys, 30 layers of SmolLM2's shape
    take 125 ms by two flash calls per layer against 248 ms by the masked pass.)
    """
    batch, heads, new, _ = q.shape
    small = new <= MASKED_QUERIES and batch * heads * new * 2 * 4 * keys <= MASKED_BYTES
    return small and q.device.type == "cuda"
