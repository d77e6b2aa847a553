"""RoPE as the patched attentions apply it: the half-split layout transformers uses. Torch only."""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] on the last dim (the half-split RoPE layout transformers uses)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE: x [B, H, n, D]; cos, sin [n, D] or [D] for one shared position."""
    return x * cos + rotate_half(x) * sin
