"""Model loading: what to load (`ModelSpec`), its facts resolved once (`ModelInfo`), the loaded model.

`resolve_model` reads the config and picks device and dtype, without weights (planning uses it);
`load_model` loads tokenizer and weights for those facts and applies the planned method's resolved
settings. Nothing is resolved twice: the plan hands its ModelInfo and method settings down.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from typing import Any

from chunkqa.engine.hub import Source, from_pretrained, resolve_source
from chunkqa.errors import UsageError

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-1.7B-Instruct"  # Apache-2.0, Llama architecture, 8k native window
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class ModelSpec:
    """What to load: a hub id, a local directory, a .gguf file or an alias (tiny, smollm2), and how."""

    name: str = DEFAULT_MODEL
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    gguf_file: str | None = None  # a GGUF file inside the folder or hub repo `name`

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise UsageError(f"unknown `dtype` {self.dtype!r}", hint=f"choose one of {', '.join(DTYPES)}")
        if not DEVICE.fullmatch(self.device):
            raise UsageError(f"unknown `device` {self.device!r}", hint="use auto, cpu, cuda, cuda:N or mps")

    def pretrained_kwargs(self) -> dict[str, Any]:
        return {"revision": self.revision, "trust_remote_code": self.trust_remote_code}


@dataclass(frozen=True)
class ModelInfo:
    """A model's facts before its weights load: where it is, its config, device and dtype."""

    spec: ModelSpec
    source: Source  # the local folder or hub id to load, and its GGUF file if it is one
    config: Any  # the full config (multimodal models: text part via .get_text_config())
    device: Any  # torch.device
    dtype: Any  # torch.dtype

    @property
    def text_config(self) -> Any:
        return self.config.get_text_config()

    @property
    def dtype_bytes(self) -> int:
        return self.dtype.itemsize

    def with_config(self, config: Any) -> ModelInfo:
        """The same model with another config (a scaled RoPE), which its weights then load with."""
        return replace(self, config=config)


@dataclass
class LoadedModel:
    """A model ready to answer: weights on their device, tokenizer, and the method's handle (if any)."""

    info: ModelInfo
    model: Any
    tokenizer: Any
    handle: Any  # a chunkqa.methods patch handle, or None
    device: Any  # torch.device (under tensor parallelism: this rank's)
    revision: str | None = None  # the commit of a hub model, when known
    generation_defaults: dict[str, Any] = field(default_factory=dict)  # from its generation_config

    @property
    def spec(self) -> ModelSpec:
        return self.info.spec

    @property
    def source(self) -> Source:
        return self.info.source

    @property
    def dtype(self) -> Any:
        return self.info.dtype

    @property
    def config(self) -> Any:
        return self.model.config.get_text_config()

    @property
    def pretraining_length(self) -> int:
        from chunkqa.methods.spec import pretraining_length

        config = getattr(self.handle, "config", None)
        return config.pretraining_length if config is not None else pretraining_length(self.config)

    @classmethod
    def wrap(cls, model: Any, tokenizer: Any, *, handle: Any = None, name: str = "model", device: Any = None):
        """A model already in memory (a Hugging Face model, patched or not), as chunkqa's LoadedModel."""
        device = device if device is not None else model.device
        spec = ModelSpec(name, dtype=str(model.dtype).removeprefix("torch."), device=str(device))
        info = ModelInfo(spec, Source(name), model.config, device, model.dtype)
        return cls(info, model, tokenizer, handle, device)

    def close(self) -> None:
        """Undo the method (if applied); the model object stays usable without it."""
        if self.handle is not None:
            self.handle.remove()


def load_config(spec: ModelSpec) -> Any:
    """The model's config (no weights)."""
    from transformers import AutoConfig

    source = resolve_source(spec.name, spec.gguf_file)
    return from_pretrained(AutoConfig, source, "the config", **spec.pretrained_kwargs())


def load_tokenizer(info: ModelInfo) -> Any:
    """The model's tokenizer (no weights)."""
    from transformers import AutoTokenizer

    return from_pretrained(AutoTokenizer, info.source, "the tokenizer", **info.spec.pretrained_kwargs())


def resolve_model(spec: ModelSpec) -> ModelInfo:
    """Config, device and dtype for a spec: read once, before any weights load."""
    device = pick_device(spec.device)
    return ModelInfo(
        spec, resolve_source(spec.name), load_config(spec), device, pick_dtype(spec.dtype, device)
    )


def pick_device(name: str) -> Any:
    """'auto' -> the first CUDA GPU if there is one, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}", hint="use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device cuda asked for, but this machine has no usable CUDA GPU", hint="use cpu")
    return device


def pick_dtype(name: str, device: Any) -> Any:
    """'auto' -> bfloat16 on a GPU that supports it (else float16), float32 on the CPU."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model(
    info: ModelInfo, *, method: Any = None, kernel: str = "auto", tokenizer: Any = None, parallel: Any = None
) -> LoadedModel:
    """Load weights (and the tokenizer, unless given) for `info`, then apply the resolved `method`.

    With `parallel` (chunkqa.engine.parallel.Parallel) the model is sharded over the tensor-parallel
    group before the method is applied, on this rank's own device.
    """
    from transformers import AutoModelForCausalLM

    from chunkqa.engine.results import model_generation_defaults
    from chunkqa.methods.spec import apply_method

    device = info.device
    if parallel is not None:
        from chunkqa.engine.parallel import device_for

        device = device_for(parallel, device)
    tokenizer = tokenizer or load_tokenizer(info)
    config = copy.deepcopy(info.config)  # the method patches the model's own config, not the plan's
    kwargs = {**info.spec.pretrained_kwargs(), "config": config, "dtype": info.dtype}
    model = from_pretrained(AutoModelForCausalLM, info.source, "the weights", **kwargs).eval()
    _forget_quantization(model)
    if parallel is not None and parallel.world > 1:
        from chunkqa.engine.parallel import shard

        model = shard(model, parallel, info.dtype)
    else:
        model = model.to(device)
    handle = apply_method(model, method, kernel=kernel)
    revision = getattr(model.config, "_commit_hash", None) or info.spec.revision
    defaults = model_generation_defaults(getattr(model, "generation_config", None))
    return LoadedModel(info, model, tokenizer, handle, device, revision, defaults)


def _forget_quantization(model: Any) -> None:
    """A GGUF checkpoint arrives dequantized but still marked quantized: clear the mark, so the model
    is a plain model of its dtype (it can be saved, and nothing treats its weights as packed)."""
    quantizer = getattr(model, "hf_quantizer", None)
    method = str(getattr(getattr(quantizer, "quantization_config", None), "quant_method", ""))
    if "gguf" in method.lower():
        quantizer.remove_quantization_config(model)
