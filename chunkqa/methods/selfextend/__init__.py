"""SelfExtend for Hugging Face causal LMs: settings, positions, kernels, the instance patch."""

from chunkqa.methods.selfextend.config import SelfExtendConfig, resolve_config
from chunkqa.methods.selfextend.patch import SelfExtendHandle, apply_selfextend

__all__ = ["SelfExtendConfig", "SelfExtendHandle", "apply_selfextend", "resolve_config"]
