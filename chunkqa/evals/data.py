"""Texts the evaluations read: the validation books by default, or the user's files (--data).

The validation books are the five of the mini PG-19 corpus that no chunkqa model is trained on
(see SPLITS.md next to them; public domain). They are read from $CHUNKQA_EVAL_DATA, else from
`../shared/data/gutenberg` beside a checkout, else from the gzipped copies installed with chunkqa
(chunkqa/assets/books), so `chunkqa eval` works from an installed package. Also: how a tokenizer is
asked for ids here.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chunkqa.errors import UsageError

DATA_ENV = "CHUNKQA_EVAL_DATA"
VALIDATION_BOOKS = ("1228.txt", "1342.txt", "2376.txt", "2554.txt", "20203.txt")
DEFAULT_LABEL = "validation books"


@dataclass(frozen=True)
class Text:
    """One text to evaluate on: a display name and its content."""

    name: str
    text: str = field(repr=False)


def default_data_dir() -> Path:
    """$CHUNKQA_EVAL_DATA, else ../shared/data/gutenberg beside the repository holding chunkqa."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "gutenberg"


BUNDLED_BOOKS = Path(__file__).resolve().parent.parent / "assets" / "books"  # gzipped, in the package


def validation_books(directory: Path | None = None) -> list[Text]:
    """The five validation books, in SPLITS.md order: from `directory` (or $CHUNKQA_EVAL_DATA, or the
    shared data beside a checkout), else the gzipped copies installed with chunkqa."""
    directory = directory or default_data_dir()
    missing = [name for name in VALIDATION_BOOKS if not (directory / name).is_file()]
    if not missing:
        return [Text(name, (directory / name).read_text("utf-8")) for name in VALIDATION_BOOKS]
    if os.environ.get(DATA_ENV) or not all((BUNDLED_BOOKS / f"{n}.gz").is_file() for n in VALIDATION_BOOKS):
        raise UsageError(
            f"the validation books are not in {directory} (missing {', '.join(missing)})",
            hint=f"pass your own texts with --data FILE, or set {DATA_ENV} to the folder holding them",
        )
    return [
        Text(name, gzip.decompress((BUNDLED_BOOKS / f"{name}.gz").read_bytes()).decode())
        for name in VALIDATION_BOOKS
    ]


def load_texts(paths: Sequence[str] | None) -> list[Text]:
    """The user's files (text or PDF, read as `chunkqa ask` reads them), else the validation books."""
    if not paths:
        return validation_books()
    from chunkqa.documents import load_document

    documents = [load_document(path) for path in paths]  # empty or unreadable files raise DocumentError
    return [Text(document.name, document.text) for document in documents]


def data_label(paths: Sequence[str] | None) -> str:
    return ", ".join(Path(p).name for p in paths) if paths else DEFAULT_LABEL


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of text alone: no BOS, no EOS."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def bos_ids(tokenizer: Any) -> list[int]:
    """[BOS] when the tokenizer puts one in front of text by default, else []."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    probe = tokenizer("a")["input_ids"]
    return [bos] if probe and probe[0] == bos else []
