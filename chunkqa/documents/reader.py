"""Documents: a path or raw bytes becomes a `Document` (text, kind, page count, sha256, warnings).

Owns reading files, telling PDF, HTML and plain text apart by content (the extension only settles
text that starts with a tag), the user-facing errors for input that cannot be read, and joining
several documents into one text. Decoding lives in `chunkqa.documents.encoding` (UTF-8, a BOM, or a
legacy encoding guessed with a warning), HTML extraction in `chunkqa.documents.markup`, PDF parsing
in `chunkqa.documents.pdf`. Nothing here prints or reads stdin: the CLI reads stdin and hands the
bytes to `document_from_bytes`, and shows each `Document.warnings` line.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from chunkqa.documents.encoding import decode_text
from chunkqa.documents.markup import declared_charset, html_text, looks_like_html
from chunkqa.documents.pdf import HEADER_WINDOW, extract_pages, join_pages, pdf_header_offset
from chunkqa.errors import DocumentError, DocumentNotFound, NotADocument

__all__ = ["Document", "DocumentKind", "combine_documents", "document_from_bytes", "load_document"]

DocumentKind = Literal["pdf", "html", "text"]

_EMPTY_HINT = (
    "Pass a document with some text in it; when piping, check that the command before `|` prints it."
)


@dataclass(frozen=True)
class Document:
    """One document's full text and where it came from."""

    source: str  # the path as given, or "<stdin>"
    name: str  # short display name: the file name, or "stdin"
    text: str = field(repr=False)  # PDFs: "[Page N]" before each page's text; HTML: no markup
    kind: DocumentKind
    pages: int | None  # PDFs only
    sha256: str  # of the raw input bytes
    warnings: tuple[str, ...] = ()  # one line each, for the user: e.g. a guessed text encoding

    @property
    def chars(self) -> int:
        return len(self.text)


def load_document(path: str | os.PathLike[str], password: str | None = None) -> Document:
    """Read the file at `path` (PDF, HTML or text, told by content); `password` opens encrypted PDFs."""
    source = os.fsdecode(path)
    data = _read_file(source)
    return document_from_bytes(data, source=source, name=Path(source).name or source, password=password)


def document_from_bytes(
    data: bytes, source: str = "<stdin>", name: str = "stdin", password: str | None = None
) -> Document:
    """A document from raw bytes, e.g. what the CLI read from stdin; `name`'s extension may mark HTML."""
    digest = hashlib.sha256(data).hexdigest()
    label = _label(source)
    offset = pdf_header_offset(data)
    if offset is not None:
        texts = extract_pages(data[offset:], label, password)  # xref offsets count from the header
        return Document(source, name, join_pages(texts), "pdf", len(texts), digest)
    text, warnings = decode_text(data, label, declared_charset(data))
    late = data.find(b"%PDF-") if warnings else -1
    if late >= 0:  # binary, not text in a legacy encoding: a PDF with too much before its header
        raise DocumentError(
            f"{label} does not look like text or PDF (its PDF header starts at byte {late}, "
            f"past the first {HEADER_WINDOW} where PDF readers look)",
            hint=f"If it is a PDF, cut what comes before the header: `tail -c +{late + 1} in > out.pdf`.",
        )
    if looks_like_html(text, name):
        return Document(source, name, html_text(text, label), "html", None, digest, warnings)
    if not text.strip():
        detail = "is empty" if not text else "contains only whitespace"
        raise DocumentError(f"{label} {detail}", hint=_EMPTY_HINT)
    return Document(source, name, text, "text", None, digest, warnings)


def combine_documents(docs: Sequence[Document]) -> str:
    """One text for the prompt: a single document unchanged, several under numbered headers."""
    if not docs:
        raise ValueError("combine_documents needs at least one document")
    if len(docs) == 1:
        return docs[0].text
    return "\n\n".join(f"=== Document {i}: {doc.name} ===\n{doc.text}" for i, doc in enumerate(docs, 1))


def _read_file(source: str) -> bytes:
    path = Path(source)
    label = _label(source)
    try:
        if path.is_dir():
            raise IsADirectoryError(source)
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise DocumentNotFound(f"no such file: {label}", hint=_not_found_hint(source, label)) from exc
    except IsADirectoryError as exc:
        raise NotADocument(
            f"{label} is a directory, not a document",
            hint=f"Pass the files inside it instead, e.g. {label}/*.pdf",
        ) from exc
    except PermissionError as exc:
        raise DocumentError(
            f"cannot read {label}: permission denied",
            hint=f"Check its permissions with `ls -l {label}`; `chmod u+r {label}` fixes it if it is yours.",
        ) from exc
    except OSError as exc:
        raise DocumentError(
            f"cannot read {label}: {exc.strerror or exc}",
            hint="Check that the file is complete and its disk or network share is reachable.",
        ) from exc


def _not_found_hint(source: str, label: str) -> str:
    if source == "-":
        return "Library callers read stdin themselves and pass the bytes to `document_from_bytes`."
    try:
        where = "" if os.path.isabs(source) else f" (relative to {_label(os.getcwd())})"
    except OSError:  # the working directory itself was removed
        where = ""
    return f"Check the path {label}{where}, or pass `-` to read the document from standard input."


def _label(source: str) -> str:
    """`source` as one printable line, for messages."""
    if source == "<stdin>":
        return "standard input"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in source)
