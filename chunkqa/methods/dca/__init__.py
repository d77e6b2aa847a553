"""Dual Chunk Attention for Hugging Face causal LMs: settings, positions, kernels, the instance patch."""

from chunkqa.methods.dca.config import DCAConfig, resolve_config
from chunkqa.methods.dca.patch import DCAHandle, apply_dca

__all__ = ["DCAConfig", "DCAHandle", "apply_dca", "resolve_config"]
