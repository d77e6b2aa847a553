"""apply_dca: give one model instance Dual Chunk Attention; the returned handle undoes it.

Only the instance changes: each attention module gets an instance-level `forward`, the base model
gets a forward pre-hook, and sliding-window settings on the model's own config are switched off
(DCA needs every key). transformers' classes and module globals are never touched.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from chunkqa.cachearg import pick_cache
from chunkqa.dca.adapters import find_parts, project_qkv
from chunkqa.dca.attention import dca_attention, rotate
from chunkqa.dca.config import DCAConfig, resolve_config
from chunkqa.dca.kernels import Kernel, select_kernel
from chunkqa.dca.masked import masked_dca_attention, plan_masks
from chunkqa.dca.positions import key_positions
from chunkqa.errors import PaddedBatchError, UsageError

_MARK = "_chunkqa_dca"
MASKED_QUERIES = 64  # at most this many new queries take the fused masked pass ...
MASKED_BYTES = 256 * 2**20  # ... and only while its float32 scores fit in this


class _State:
    """What the patched modules of one model share: settings, RoPE tables, kernels, logit factors."""

    def __init__(self, config: DCAConfig, rotary: nn.Module, kernel: str) -> None:
        self.config = config
        self.rotary = rotary
        self.kernel_name = kernel
        self.prompt_length: int | None = None
        self._tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._kernels: dict[tuple[torch.device, torch.dtype, int], tuple[str, Kernel]] = {}
        self._factors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._shared: dict[tuple, Any] = {}  # built by the first layer of a forward, used by all

    def shared(self, key: tuple, build: Callable[[], Any]) -> Any:
        """What every layer of this forward needs alike (RoPE tables, masks): built once per forward."""
        if key not in self._shared:
            self._shared[key] = build()
        return self._shared[key]

    def new_forward(self) -> None:
        self._shared.clear()

    def table(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [c + 1, D] from the model's own rotary embedding (so its RoPE scaling applies)."""
        key = (device, dtype)
        if key not in self._tables:
            positions = torch.arange(self.config.chunk_size + 1, device=device)[None]  # [1, c + 1]
            cos, sin = self.rotary(torch.ones(1, device=device, dtype=dtype), positions)
            self._tables[key] = (cos[0], sin[0])
        return self._tables[key]

    def kernel(self, device: torch.device, dtype: torch.dtype, head_dim: int) -> tuple[str, Kernel]:
        key = (device, dtype, head_dim)
        if key not in self._kernels:
            self._kernels[key] = select_kernel(self.kernel_name, device, dtype, head_dim)
        return self._kernels[key]

    def logit_factor(self, cache: Any, past: int, new: int) -> float:
        """Fixed per sequence: set when its prompt is prefilled (or stated), reused while decoding."""
        stated = self.prompt_length
        if cache is None:
            return self.config.logit_factor(stated or past + new)
        if stated is not None or past == 0 or cache not in self._factors:
            self._factors[cache] = self.config.logit_factor(stated or past + new)
        return self._factors[cache]


class DCAHandle:
    """The patch on one model: its resolved settings, and `remove()` to undo it."""

    def __init__(self, model: nn.Module, state: _State, undo: list[Callable[[], None]]) -> None:
        self._model = model
        self._state = state
        self._undo = undo

    @property
    def config(self) -> DCAConfig:
        return self._state.config

    @property
    def active(self) -> bool:
        return bool(self._undo)

    def kernel_name(self, device: torch.device | str, dtype: torch.dtype, head_dim: int) -> str:
        """The attention kernel DCA uses for this device, dtype and head size."""
        return self._state.kernel(torch.device(device), dtype, head_dim)[0]

    @property
    def stated_length(self) -> int | None:
        """The prompt length stated by `prompt_length` right now (None outside it)."""
        return self._state.prompt_length

    def logit_factor(self, prompt_length: int) -> float:
        """The factor on attention logits for a prompt of this many tokens."""
        return self._state.config.logit_factor(prompt_length)

    @contextmanager
    def prompt_length(self, length: int) -> Iterator[None]:
        """State the full prompt length while feeding it in pieces, so the logit scale uses it."""
        if length <= 0:
            raise UsageError(f"prompt length must be positive, got {length}")
        previous, self._state.prompt_length = self._state.prompt_length, length
        try:
            yield
        finally:
            self._state.prompt_length = previous

    def remove(self) -> None:
        """Restore the model exactly as it was before apply_dca."""
        while self._undo:
            self._undo.pop()()

    def __repr__(self) -> str:
        return f"DCAHandle({self.config}, active={self.active})"


def apply_dca(
    model: nn.Module,
    pretraining_length: int | None = None,
    chunk_size: int | None = None,
    local_window: int | None = None,
    logit_scale: str | float = "auto",
    kernel: str = "auto",
) -> DCAHandle:
    """Patch this model instance with Dual Chunk Attention and return the handle that undoes it."""
    if getattr(model, _MARK, None) is not None:
        raise UsageError(
            "this model already has DCA applied", hint="call handle.remove() before applying it again"
        )
    parts = find_parts(model)
    config = resolve_config(parts.text_config, pretraining_length, chunk_size, local_window, logit_scale)
    state = _State(config, parts.rotary, kernel)
    undo: list[Callable[[], None]] = []
    undo.append(_switch_off_sliding_window(parts.text_config))
    for module in parts.attentions:
        undo.append(_set_instance_attr(module, "forward", functools.partial(_dca_forward, module, state)))
    hook = parts.decoder.register_forward_pre_hook(functools.partial(_check_inputs, state), with_kwargs=True)
    undo.append(hook.remove)
    handle = DCAHandle(model, state, undo)
    undo.append(_set_instance_attr(model, _MARK, handle))
    return handle


def _dca_forward(
    module: nn.Module,
    state: _State,
    hidden_states: torch.Tensor,
    position_embeddings=None,
    attention_mask=None,
    past_key_values=None,
    cache=None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The attention forward of a DCA-patched module (the model's mask and absolute RoPE are unused).

    The KV cache arrives as `past_key_values` (transformers < 5.24) or `cache` (5.24 and newer).
    """
    cfg = state.config
    past_key_values = pick_cache(cache, past_key_values)
    q, k, v = project_qkv(module, hidden_states)  # [B, H, n, D], [B, Hkv, n, D] x2
    batch, _, new, _ = q.shape
    past = past_key_values.get_seq_length(module.layer_idx) if past_key_values is not None else 0
    cos, sin = state.table(q.device, q.dtype)  # [c + 1, D]
    scale = module.scaling * state.logit_factor(past_key_values, past, new)
    positions = getattr(past_key_values, "positions", None)
    if positions is not None:  # a step being captured in a CUDA graph: positions are a tensor
        layer = past_key_values.layers[module.layer_idx]
        key = ("graph", layer.capacity, q.dtype, q.device)
        krot, plan = state.shared(key, lambda: _graph_plan(positions, layer.capacity, q, cfg, cos, sin))
        k, v = layer.write_at(rotate(k, *krot), v, positions)
        out = masked_dca_attention(q, k, v, positions, cos, sin, cfg.chunk_len, cfg.chunk_size, scale, plan)
    else:
        krot = state.shared(
            ("keys", past, new, q.dtype, q.device), lambda: _key_tables(past, new, cfg.chunk_len, cos, sin)
        )
        k, v = _cached(module, past_key_values, rotate(k, *krot), v, past)
        if use_masked(q, k):
            key = ("plan", past, new, k.shape[2], q.dtype, q.device)
            q_pos, plan = state.shared(key, lambda: _eager_plan(past, q, k, cfg, cos, sin))
            out = masked_dca_attention(q, k, v, q_pos, cos, sin, cfg.chunk_len, cfg.chunk_size, scale, plan)
        else:
            _, kernel = state.kernel(q.device, q.dtype, q.shape[-1])
            out = dca_attention(q, k, v, past, cos, sin, cfg.chunk_len, cfg.chunk_size, scale, kernel)
    out = out.transpose(1, 2).reshape(batch, new, -1)  # [B, n, H*D]
    return module.o_proj(out), None


def _key_tables(past: int, new: int, chunk_len: int, cos: torch.Tensor, sin: torch.Tensor):
    """cos, sin [n, D] at the new keys' DCA positions (i mod s): keys are cached rotated like that."""
    kpos = key_positions(past, new, chunk_len, cos.device)
    return cos[kpos], sin[kpos]


def _eager_plan(past: int, q: torch.Tensor, k: torch.Tensor, cfg: DCAConfig, cos, sin):
    q_pos = torch.arange(past, past + q.shape[2], device=q.device)
    return q_pos, plan_masks(q_pos, k.shape[2], q.shape[1], cos, sin, cfg.chunk_len, cfg.chunk_size)


def _graph_plan(positions: torch.Tensor, capacity: int, q: torch.Tensor, cfg: DCAConfig, cos, sin):
    kpos = positions % cfg.chunk_len
    plan = plan_masks(positions, capacity, q.shape[1], cos, sin, cfg.chunk_len, cfg.chunk_size)
    return (cos[kpos], sin[kpos]), plan


def _cached(module: nn.Module, cache: Any, k: torch.Tensor, v: torch.Tensor, past: int):
    """All keys and values so far, the new ones appended to the cache (if any)."""
    if cache is None:
        return k, v
    new = k.shape[2]
    k, v = cache.update(k, v, module.layer_idx)
    if k.shape[2] != past + new:
        raise UsageError(
            f"DCA needs a cache that keeps every key; {type(cache).__name__} returned "
            f"{k.shape[2]} of {past + new}",
            hint="use chunkqa.kvcache.GrowingCache (a Session's) or transformers' DynamicCache",
        )
    return k, v


def use_masked(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Few queries over the keys on a GPU: one fused masked pass beats a kernel call per key range.

    (On a GPU the kernel path is bound by launches, and cuDNN re-plans at every new cache length; on
    the CPU its fused flash kernel is faster than forming three scores per key.)
    """
    batch, heads, new, _ = q.shape
    small = new <= MASKED_QUERIES and batch * heads * new * 3 * 4 * k.shape[2] <= MASKED_BYTES
    return small and q.device.type == "cuda"


def _check_inputs(state: _State, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Start a forward: refuse padded batches; hand transformers a placeholder 4D mask so it builds no
    L x T mask (DCA computes its own causal structure, so the patched attention never reads it), and
    forget what the layers of the last forward shared.
    """
    state.new_forward()
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and not bool(mask.all()):
        raise PaddedBatchError(
            "DCA got a padded batch: its positions come from the cache length, so padding would be attended",
            hint="run sequences one at a time, or batch sequences of equal length without padding",
        )
    ref = kwargs.get("input_ids", args[0] if args else None)
    ref = kwargs.get("inputs_embeds") if ref is None else ref
    device = ref.device if isinstance(ref, torch.Tensor) else None
    placeholder = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=device)
    if len(args) > 1:
        args = (args[0], placeholder, *args[2:])
    else:
        kwargs["attention_mask"] = placeholder
    return args, kwargs


def _switch_off_sliding_window(config: Any) -> Callable[[], None]:
    """DCA attends to every key: sliding windows (Mistral v0.1, Qwen options) must not drop cache entries."""
    saved = {
        name: getattr(config, name) for name in ("sliding_window", "layer_types") if hasattr(config, name)
    }
    if saved.get("sliding_window") is not None:
        config.sliding_window = None
    if saved.get("layer_types"):
        config.layer_types = ["full_attention" if "sliding" in t else t for t in saved["layer_types"]]

    def restore() -> None:
        for name, value in saved.items():
            setattr(config, name, value)

    return restore


def _set_instance_attr(obj: Any, name: str, value: Any) -> Callable[[], None]:
    """Set an attribute on the instance; the returned function restores what the instance had."""
    had = name in obj.__dict__
    old = obj.__dict__.get(name)
    object.__setattr__(obj, name, value)

    def restore() -> None:
        if had:
            object.__setattr__(obj, name, old)
        else:
            obj.__dict__.pop(name, None)

    return restore
