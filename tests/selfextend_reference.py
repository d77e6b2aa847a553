"""An independent float64 reference for SelfExtend, written from the formulas in the SelfExtend issue.

O(L^2), explicit per-pair positions; shares no code with chunkqa.methods.selfextend. For query i and
key j <= i: if i - j < W, ordinary RoPE at i (query) and j (key); otherwise the query at
floor(i/G) + W - floor(W/G) and the key at floor(j/G). One softmax over all keys.
"""

from __future__ import annotations

import torch


def selfextend_position_matrix(
    length: int, group_size: int, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(query_pos, key_pos), each [L, L]: the RoPE positions used for every (query i, key j) pair."""
    i = torch.arange(length)[:, None].expand(length, length)
    j = torch.arange(length)[None, :].expand(length, length)
    near = (i - j) < window
    query_pos = torch.where(
        near, i, torch.div(i, group_size, rounding_mode="floor") + window - window // group_size
    )
    key_pos = torch.where(near, j, torch.div(j, group_size, rounding_mode="floor"))
    causal = j <= i
    distance = (query_pos - key_pos)[causal]
    assert int(distance.min()) >= 0, "a key sits after its query"
    return query_pos, key_pos


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on pairs (x[d], x[d + D/2]) by angles given as cos/sin [..., D/2]."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


def reference_selfextend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group_size: int, window: int, scale: float, cos_sin
) -> torch.Tensor:
    """SelfExtend attention of all L queries over all L keys (no cache), in float64.

    q [B, H, L, D]; k, v [B, Hkv, L, D], none rotated. `cos_sin(positions)` returns the half-size
    cos and sin [..., D/2] for integer positions [...]. Returns [B, H, L, D] float64.
    """
    q, k, v = q.double(), k.double(), v.double()
    heads, length = q.shape[1], q.shape[2]
    groups = heads // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    query_pos, key_pos = selfextend_position_matrix(length, group_size, window)
    out = torch.empty_like(q)
    for i in range(length):
        qcos, qsin = cos_sin(query_pos[i, : i + 1])  # [i+1, D/2]: one query position per key
        kcos, ksin = cos_sin(key_pos[i, : i + 1])  # [i+1, D/2]
        q_rot = rotate_pairs(q[:, :, i : i + 1, :], qcos, qsin)  # [B, H, i+1, D]
        k_rot = rotate_pairs(k[:, :, : i + 1], kcos, ksin)  # [B, H, i+1, D]
        scores = (q_rot * k_rot).sum(-1) * scale  # [B, H, i+1]
        weights = torch.softmax(scores, dim=-1)
        out[:, :, i] = (weights[..., None] * v[:, :, : i + 1]).sum(-2)  # [B, H, D]
    return out


def plain_rope(inv_freq: torch.Tensor):
    """cos_sin for plain RoPE with these inverse frequencies, in float64."""

    def cos_sin(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions[..., None].double() * inv_freq.double()
        return angles.cos(), angles.sin()

    return cos_sin


def model_rope(rotary: torch.nn.Module):
    """cos_sin of a model's RoPE at any position, as the model computes it for short sequences.

    Angles in float32 from the model's original inverse frequencies, times its attention scaling,
    exactly as transformers' rotary embeddings do (a length-adaptive RoPE, such as dynamic NTK, keeps
    its original frequencies: SelfExtend's relative positions stay inside the pretraining window).
    """

    def cos_sin(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions[..., None].float() * rotary.original_inv_freq.float().cpu()
        scaling = rotary.attention_scaling
        return (angles.cos() * scaling).double(), (angles.sin() * scaling).double()

    return cos_sin


def reference_attention_forward(module, rotary, group_size: int, window: int):
    """A forward for one HF attention module computing SelfExtend with `reference_selfextend` (no cache)."""
    cos_sin = model_rope(rotary)

    def forward(hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        shape = (*hidden_states.shape[:-1], -1, module.head_dim)
        q = module.q_proj(hidden_states).view(shape)
        k = module.k_proj(hidden_states).view(shape)
        v = module.v_proj(hidden_states).view(shape)
        if hasattr(module, "q_norm"):
            q, k = module.q_norm(q), module.k_norm(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out = reference_selfextend(q, k, v, group_size, window, module.scaling, cos_sin)
        out = out.to(hidden_states.dtype).transpose(1, 2).reshape(*hidden_states.shape[:-1], -1)
        return module.o_proj(out), None

    return forward


def attention_modules(model):
    return [m for m in model.modules() if hasattr(m, "q_proj") and hasattr(m, "layer_idx")]


@torch.no_grad()
def reference_logits(model, ids, group_size: int, window: int) -> torch.Tensor:
    """Logits with every attention module replaced by the float64 reference (no cache)."""
    rotary = model.base_model.rotary_emb
    modules = attention_modules(model)
    for module in modules:
        module.forward = reference_attention_forward(module, rotary, group_size, window)
    try:
        return model(ids, use_cache=False).logits
    finally:
        for module in modules:
            del module.forward
