"""An independent float64 reference for DCA, written from the formulas in the DCA issue.

O(L^2), explicit per-pair relative positions; shares no code with chunkqa.methods.dca. For query i and key
j <= i with s = c - w: key position j mod s; query position i mod s (same chunk),
min(i mod s + s, c) (previous chunk) or c (older chunks); one softmax over all keys.
"""

from __future__ import annotations

import torch


def dca_position_matrix(length: int, chunk_size: int, local_window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(query_pos, key_pos), each [L, L]: the RoPE positions used for every (query i, key j) pair."""
    s = chunk_size - local_window
    i = torch.arange(length)[:, None].expand(length, length)
    j = torch.arange(length)[None, :].expand(length, length)
    qi, kj = i // s, j // s
    own = i % s
    query_pos = torch.where(
        qi == kj, own, torch.where(qi == kj + 1, torch.clamp(own + s, max=chunk_size), chunk_size)
    )
    key_pos = j % s
    causal = j <= i
    distance = (query_pos - key_pos)[causal]
    assert int(distance.max()) <= chunk_size, "a relative distance exceeds the chunk size"
    assert int(distance.min()) >= 0, "a key sits after its query"
    return query_pos, key_pos


def rope_angles(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Angles [..., D/2] for positions [...] and inverse frequencies [D/2]."""
    return positions[..., None].double() * inv_freq.double()


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on pairs (x[d], x[d + D/2]) by the given angle cos/sin of shape [..., D/2]."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


def reference_dca(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    chunk_size: int,
    local_window: int,
    scale: float,
    cos_sin,
) -> torch.Tensor:
    """DCA attention of all L queries over all L keys (no cache), in float64.

    q [B, H, L, D]; k, v [B, Hkv, L, D], none rotated. `cos_sin(positions)` returns the half-size
    cos and sin [..., D/2] for integer positions [...]. Returns [B, H, L, D] float64.
    """
    q, k, v = q.double(), k.double(), v.double()
    heads, length = q.shape[1], q.shape[2]
    groups = heads // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    query_pos, key_pos = dca_position_matrix(length, chunk_size, local_window)
    kcos, ksin = cos_sin(key_pos[0])  # [L, D/2]
    k_rot = rotate_pairs(k, kcos, ksin)  # [B, H, L, D]
    out = torch.empty_like(q)
    for i in range(length):
        qcos, qsin = cos_sin(query_pos[i, : i + 1])  # [i+1, D/2]: one query position per key
        q_rot = rotate_pairs(q[:, :, i : i + 1, :], qcos, qsin)  # [B, H, i+1, D]
        scores = (q_rot * k_rot[:, :, : i + 1]).sum(-1) * scale  # [B, H, i+1]
        weights = torch.softmax(scores, dim=-1)  # [B, H, i+1]
        out[:, :, i] = (weights[..., None] * v[:, :, : i + 1]).sum(-2)  # [B, H, D]
    return out


def reference_dca_last(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    chunk_size: int,
    local_window: int,
    scale: float,
    cos_sin,
) -> torch.Tensor:
    """DCA of the last query alone (position L - 1) over all L keys, in float64: O(L) memory.

    q [B, H, 1, D]; k, v [B, Hkv, L, D], none rotated. The same formulas as `reference_dca`, for the
    one row a decode step computes. Returns [B, H, 1, D] float64.
    """
    q, k, v = q.double(), k.double(), v.double()
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    s = chunk_size - local_window
    length = k.shape[2]
    i, j = length - 1, torch.arange(length)
    own = i % s
    query_pos = torch.where(
        j // s == i // s, own, torch.where(j // s + 1 == i // s, min(own + s, chunk_size), chunk_size)
    )
    kcos, ksin = cos_sin(j % s)
    qcos, qsin = cos_sin(query_pos)  # [L, D/2]: one query position per key
    scores = (rotate_pairs(q, qcos, qsin) * rotate_pairs(k, kcos, ksin)).sum(-1) * scale  # [B, H, L]
    weights = torch.softmax(scores, dim=-1)
    return (weights[..., None] * v).sum(-2)[:, :, None]


def plain_rope(inv_freq: torch.Tensor, scaling: float = 1.0):
    """cos_sin for plain RoPE with these inverse frequencies (times an attention scaling)."""

    def cos_sin(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = rope_angles(positions, inv_freq)
        return angles.cos() * scaling, angles.sin() * scaling

    return cos_sin


def model_rope(rotary: torch.nn.Module):
    """cos_sin read from a model's own rotary embedding (so its scaling applies), at any positions."""

    def cos_sin(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probe = torch.ones(1, dtype=torch.float64)
        cos, sin = rotary(probe, positions.reshape(1, -1))  # [1, n, D] in the half-split layout
        half = cos.shape[-1] // 2
        shape = (*positions.shape, half)
        return cos[0, :, :half].double().reshape(shape), sin[0, :, :half].double().reshape(shape)

    return cos_sin


def reference_attention_forward(module, rotary, chunk_size: int, local_window: int, logit_factor: float):
    """A forward for one HF attention module computing DCA with `reference_dca` (no cache)."""
    cos_sin = model_rope(rotary)

    def forward(hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        shape = (*hidden_states.shape[:-1], -1, module.head_dim)
        q = module.q_proj(hidden_states).view(shape)
        k = module.k_proj(hidden_states).view(shape)
        v = module.v_proj(hidden_states).view(shape)
        if hasattr(module, "q_norm"):
            q, k = module.q_norm(q), module.k_norm(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out = reference_dca(q, k, v, chunk_size, local_window, module.scaling * logit_factor, cos_sin)
        out = out.to(hidden_states.dtype).transpose(1, 2).reshape(*hidden_states.shape[:-1], -1)
        return module.o_proj(out), None

    return forward


def attention_modules(model):
    return [m for m in model.modules() if hasattr(m, "q_proj") and hasattr(m, "layer_idx")]


@torch.no_grad()
def reference_logits(model, ids, chunk_size: int, local_window: int, factor: float) -> torch.Tensor:
    """Logits with every attention module replaced by the float64 reference (no cache)."""
    rotary = model.base_model.rotary_emb
    modules = attention_modules(model)
    for module in modules:
        module.forward = reference_attention_forward(module, rotary, chunk_size, local_window, factor)
    try:
        return model(ids, use_cache=False).logits
    finally:
        for module in modules:
            del module.forward
