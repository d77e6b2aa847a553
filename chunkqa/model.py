"""Model loading: resolve a model name, load config, tokenizer and weights, pick device and dtype, apply DCA.

Hub ids load from the local Hugging Face cache first and only then from the network, so an offline
machine gets a clear one-line error at once instead of minutes of retries.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chunkqa.errors import ModelLoadError, UsageError

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-1.7B-Instruct"  # Apache-2.0, Llama architecture, 8k native window
BUNDLED = {"tiny": Path(__file__).parent / "assets" / "tiny"}  # chunkqa's own tiny long-context demo model
DTYPES = ("auto", "float32", "bfloat16", "float16")
HUB_HOST = ("huggingface.co", 443)


@dataclass(frozen=True)
class ModelSpec:
    """What to load: a hub id, a local directory or a bundled alias, and how."""

    name: str = DEFAULT_MODEL
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise UsageError(f"unknown dtype {self.dtype!r}", hint=f"choose one of {', '.join(DTYPES)}")


@dataclass(frozen=True)
class DCAOptions:
    """DCA settings as the user gave them (None: the model's defaults); enabled=False skips DCA."""

    enabled: bool = True
    pretraining_length: int | None = None
    chunk_size: int | None = None
    local_window: int | None = None
    logit_scale: str | float = "auto"
    kernel: str = "auto"


@dataclass
class LoadedModel:
    """A model ready to answer: weights on their device, tokenizer, and the DCA handle (if applied)."""

    spec: ModelSpec
    source: str  # the local path or hub id that was loaded
    model: Any
    tokenizer: Any
    handle: Any  # DCAHandle | None
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    revision: str | None = None  # the commit of a hub model, when known
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Any:
        return self.model.config.get_text_config()

    @property
    def pretraining_length(self) -> int:
        return (
            self.handle.config.pretraining_length if self.handle else int(self.config.max_position_embeddings)
        )

    def close(self) -> None:
        """Undo DCA (if applied); the model object stays usable without it."""
        if self.handle is not None:
            self.handle.remove()


def resolve_source(name: str) -> str:
    """A bundled alias, an existing local directory, or a hub id (checked for plausibility)."""
    if name in BUNDLED:
        path = BUNDLED[name]
        if not (path / "config.json").exists():
            raise ModelLoadError(f"the bundled model {name!r} is missing from this install ({path})")
        return str(path)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ModelLoadError(
            f"{name} is a file, not a model directory", hint="pass the folder holding config.json"
        )
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep == "\\"
    if looks_like_path:
        raise ModelLoadError(
            f"no such model directory: {name}", hint="check the path, or pass a hub id like org/model"
        )
    return name


def _quiet_hub_logs() -> None:
    for name in ("huggingface_hub", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_pretrained(loader: Any, source: str, spec: ModelSpec, what: str, **kwargs: Any) -> Any:
    """loader.from_pretrained from the local cache first, then the hub; failures become ModelLoadError."""
    _quiet_hub_logs()
    common = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code, **kwargs}
    if Path(source).is_dir():
        return _call(loader, source, what, common, local=True)
    try:
        return loader.from_pretrained(source, local_files_only=True, **common)
    except (OSError, ValueError):
        pass  # not in the cache yet
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if offline or not _hub_reachable():
        raise ModelLoadError(
            f"cannot download {what} for {source!r}: offline, and it is not in the Hugging Face cache",
            hint="connect once to download it (it is cached then), or pass a local directory with -m ./path",
        )
    return _call(loader, source, what, common, local=False)


def _call(loader: Any, source: str, what: str, kwargs: dict, local: bool) -> Any:
    from huggingface_hub import errors as hub_errors

    try:
        return loader.from_pretrained(source, **kwargs)
    except hub_errors.GatedRepoError:
        raise ModelLoadError(
            f"{source!r} is a gated model",
            hint="accept its license on huggingface.co and run `hf auth login`",
        ) from None
    except (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError):
        raise ModelLoadError(
            f"no model {source!r} (revision {kwargs.get('revision') or 'main'}) on the Hugging Face hub",
            hint="check the spelling; a local directory works too",
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "directory" if local else "hub model"
        raise ModelLoadError(f"cannot load {what} from {where} {source!r}: {first}") from None


def load_config(spec: ModelSpec) -> Any:
    """The model's config (no weights)."""
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig, resolve_source(spec.name), spec, "the config")


def load_tokenizer(spec: ModelSpec) -> Any:
    """The model's tokenizer (no weights)."""
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, resolve_source(spec.name), spec, "the tokenizer")


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
        raise UsageError(
            "--device cuda asked for, but this machine has no usable CUDA GPU", hint="use --device cpu"
        )
    return device


def pick_dtype(name: str, device: Any) -> Any:
    """'auto' -> bfloat16 on a GPU that supports it (else float16), float32 on the CPU."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def check_dca(config: Any, dca: DCAOptions) -> Any:
    """Validate DCA settings and architecture against a config, before any weights load. None if disabled."""
    from chunkqa.dca.adapters import check_architecture
    from chunkqa.dca.config import resolve_config

    if not dca.enabled:
        return None
    check_architecture(config)
    return resolve_config(config, dca.pretraining_length, dca.chunk_size, dca.local_window, dca.logit_scale)


def load_model(
    spec: ModelSpec, dca: DCAOptions | None = None, tokenizer: Any = None, parallel: Any = None
) -> LoadedModel:
    """Load weights and tokenizer onto the chosen device, then apply DCA unless disabled.

    Settings, architecture, device and dtype are checked before the weights load. With `parallel`
    (chunkqa.tp.Parallel) the model is sharded over the tensor-parallel group before DCA is applied.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from chunkqa.dca import apply_dca

    dca = dca or DCAOptions()
    source = resolve_source(spec.name)
    device = pick_device(spec.device)
    if parallel is not None:
        from chunkqa.tp import device_for

        device = device_for(parallel, device)
    dtype = pick_dtype(spec.dtype, device)
    config = _from_pretrained(AutoConfig, source, spec, "the config")
    check_dca(config, dca)
    tokenizer = tokenizer or _from_pretrained(AutoTokenizer, source, spec, "the tokenizer")
    model = _from_pretrained(AutoModelForCausalLM, source, spec, "the weights", dtype=dtype).eval()
    if parallel is not None and parallel.world > 1:
        from chunkqa.tp import shard

        model = shard(model, parallel, dtype)
    else:
        model = model.to(device)
    handle = None
    if dca.enabled:
        handle = apply_dca(
            model, dca.pretraining_length, dca.chunk_size, dca.local_window, dca.logit_scale, dca.kernel
        )
    revision = getattr(model.config, "_commit_hash", None) or spec.revision
    return LoadedModel(spec, source, model, tokenizer, handle, device, dtype, revision)
