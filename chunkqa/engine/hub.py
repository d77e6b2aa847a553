"""Where a model comes from: a bundled alias, a local directory or a hub id; loading it offline first.

Hub ids load from the local Hugging Face cache first and only then from the network, so an offline
machine gets a clear one-line error at once instead of minutes of retries.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from chunkqa.errors import ModelLoadError

BUNDLED = {"tiny": Path(__file__).resolve().parent.parent / "assets" / "tiny"}  # chunkqa's demo model
HUB_HOST = ("huggingface.co", 443)


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


def from_pretrained(loader: Any, source: str, what: str, **kwargs: Any) -> Any:
    """loader.from_pretrained from the local cache first, then the hub; failures become ModelLoadError."""
    quiet_hub_logs()
    if Path(source).is_dir():
        return _call(loader, source, what, kwargs, local=True)
    try:
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass  # not in the cache yet
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if offline or not hub_reachable():
        raise ModelLoadError(
            f"cannot download {what} for {source!r}: offline, and it is not in the Hugging Face cache",
            hint="connect once to download it (it is cached then), or pass a local directory",
        )
    return _call(loader, source, what, kwargs, local=False)


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
