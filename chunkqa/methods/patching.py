"""The instance patching every context-extension method shares; the handle that undoes it.

A method gives each attention module of one model an instance-level `forward` and the base model a
forward pre-hook; sliding windows on the model's own config are switched off (these methods attend
to every key). transformers' classes and module globals are never touched, and `PatchHandle.remove`
restores the instance exactly. What the patched layers of one forward share (RoPE tables, masks) is
built once per forward by the first layer (`PatchState.shared`).

The contract with a KV cache is duck-typed: a cache with `get_seq_length(layer)` and `update(k, v,
layer)` (transformers' caches) works; a cache that also sets `positions` (a tensor of the new
tokens' absolute positions) asks for a fixed-shape step that a CUDA graph can capture, and must then
offer `layers[i].capacity` and `layers[i].write_at(k, v, positions)` (see `CapturableLayer`); its
`span`, when set, bounds the keys such a step attends to (`step_span`).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import nn

from chunkqa.errors import PaddedBatchError, UsageError
from chunkqa.methods.adapters import ModelParts, find_parts
from chunkqa.methods.kernels import Kernel, select_kernel

MARK = "_chunkqa_method"  # the instance attribute holding the handle of the method applied

Undo = Callable[[], None]
AttentionForward = Callable[..., tuple[torch.Tensor, None]]


class CapturableLayer(Protocol):
    """One layer of a cache that supports capturable steps (chunkqa.engine.kvcache.GrowingLayer)."""

    @property
    def capacity(self) -> int: ...

    def write_at(
        self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def step_span(cache: Any, layer: CapturableLayer) -> int:
    """Keys a capturable step attends to: the cache's `span` (a bound on the filled length, so the
    step's cost follows the length, not the reserved capacity), else the layer's whole capacity."""
    span = getattr(cache, "span", None)
    return layer.capacity if span is None else min(span, layer.capacity)


def pick_cache(cache: Any, past_key_values: Any) -> Any:
    """The KV cache, whichever keyword the caller used (transformers 5.24 renamed it to `cache`)."""
    return cache if cache is not None else past_key_values


class PatchState:
    """What the patched modules of one model share: RoPE tables, kernels, the stated prompt length."""

    def __init__(self, rotary: nn.Module, table_length: int, kernel: str = "auto") -> None:
        self.rotary = rotary
        self.table_length = table_length  # positions 0 .. table_length - 1 get RoPE tables
        self.kernel_name = kernel
        self.prompt_length: int | None = None  # stated while a long prompt is fed in pieces
        self._tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._kernels: dict[tuple[torch.device, torch.dtype, int], tuple[str, Kernel]] = {}
        self._shared: dict[tuple, Any] = {}  # built by the first layer of a forward, used by all
        self._factors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def shared(self, key: tuple, build: Callable[[], Any]) -> Any:
        """What every layer of this forward needs alike (RoPE tables, masks): built once per forward."""
        if key not in self._shared:
            self._shared[key] = build()
        return self._shared[key]

    def new_forward(self) -> None:
        self._shared.clear()

    def table(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [table_length, D] from the model's own rotary embedding (its RoPE scaling applies)."""
        key = (device, dtype)
        if key not in self._tables:
            positions = torch.arange(self.table_length, device=device)[None]  # [1, T]
            cos, sin = self.rotary(torch.ones(1, device=device, dtype=dtype), positions)
            self._tables[key] = (cos[0], sin[0])
        return self._tables[key]

    def kernel(self, device: torch.device, dtype: torch.dtype, head_dim: int) -> tuple[str, Kernel]:
        key = (device, dtype, head_dim)
        if key not in self._kernels:
            self._kernels[key] = select_kernel(self.kernel_name, device, dtype, head_dim)
        return self._kernels[key]

    def fixed_per_sequence(self, cache: Any, past: int, new: int, factor: Callable[[int], float]) -> float:
        """A number set when a sequence's prompt is prefilled (or stated) and kept while it decodes."""
        stated = self.prompt_length
        if cache is None:
            return factor(stated or past + new)
        if stated is not None or past == 0 or cache not in self._factors:
            self._factors[cache] = factor(stated or past + new)
        return self._factors[cache]


class PatchHandle:
    """One method's patch on one model: `remove()` undoes it; `prompt_length` states a prompt's length."""

    method = "none"

    def __init__(self, state: PatchState, undo: list[Undo]) -> None:
        self._state = state
        self._undo = undo

    @property
    def active(self) -> bool:
        return bool(self._undo)

    def kernel_name(self, device: torch.device | str, dtype: torch.dtype, head_dim: int) -> str:
        """The attention kernel this patch uses for this device, dtype and head size."""
        return self._state.kernel(torch.device(device), dtype, head_dim)[0]

    @property
    def stated_length(self) -> int | None:
        """The prompt length stated by `prompt_length` right now (None outside it)."""
        return self._state.prompt_length

    def logit_factor(self, prompt_length: int) -> float:
        """The factor on attention logits for a prompt of this many tokens (1: none)."""
        return 1.0

    @contextmanager
    def prompt_length(self, length: int) -> Iterator[None]:
        """State the full prompt length while feeding it in pieces (length-dependent settings use it)."""
        if length <= 0:
            raise UsageError(f"prompt length must be positive, got {length}")
        previous, self._state.prompt_length = self._state.prompt_length, length
        try:
            yield
        finally:
            self._state.prompt_length = previous

    def remove(self) -> None:
        """Restore the model exactly as it was before the patch."""
        while self._undo:
            self._undo.pop()()


def patch_attention(
    model: nn.Module,
    state: PatchState,
    forward: AttentionForward,
    make_handle: Callable[[list[Undo]], PatchHandle],
    parts: ModelParts | None = None,
) -> PatchHandle:
    """Give every attention module `forward(module, state, hidden_states, ...)`; return the handle."""
    current = getattr(model, MARK, None)
    if current is not None:
        raise UsageError(
            f"this model already has {current.method} applied",
            hint="call handle.remove() before applying a method again",
        )
    parts = parts or find_parts(model)
    undo: list[Undo] = [switch_off_sliding_window(parts.text_config)]
    for module in parts.attentions:
        undo.append(set_instance_attr(module, "forward", functools.partial(forward, module, state)))
    hook = parts.decoder.register_forward_pre_hook(
        functools.partial(_start_forward, state, model), with_kwargs=True
    )
    undo.append(hook.remove)
    handle = make_handle(undo)
    undo.append(set_instance_attr(model, MARK, handle))
    return handle


def applied_method(model: nn.Module) -> PatchHandle | None:
    """The handle of the method patched into this model, if any."""
    return getattr(model, MARK, None)


def _start_forward(state: PatchState, model: nn.Module, module: nn.Module, args: tuple, kwargs: dict):
    """Start a forward: refuse padded batches; hand transformers a placeholder 4D mask so it builds no
    L x T mask (the patched attention computes its own causal structure and never reads it), and
    forget what the layers of the last forward shared.
    """
    state.new_forward()
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and not bool(mask.all()):
        method = getattr(getattr(model, MARK, None), "method", "the patch")
        raise PaddedBatchError(
            f"{method} got a padded batch: its positions come from the cache length, so padding "
            "would be attended",
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


def cached(module: nn.Module, cache: Any, k: torch.Tensor, v: torch.Tensor, past: int, method: str):
    """All keys and values so far, the new ones appended to the cache (if any)."""
    if cache is None:
        return k, v
    new = k.shape[2]
    k, v = cache.update(k, v, module.layer_idx)
    if k.shape[2] != past + new:
        raise UsageError(
            f"{method} needs a cache that keeps every key; {type(cache).__name__} returned "
            f"{k.shape[2]} of {past + new}",
            hint="use a Session's cache (chunkqa's GrowingCache) or transformers' DynamicCache",
        )
    return k, v


def switch_off_sliding_window(config: Any) -> Undo:
    """Every key is attended: sliding windows (Mistral v0.1, Qwen options) must not drop cache entries."""
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


def set_instance_attr(obj: Any, name: str, value: Any) -> Undo:
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
