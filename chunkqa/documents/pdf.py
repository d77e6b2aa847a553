"""PDF bytes → the tidied text of each page, through pypdf.

Owns opening and decrypting a PDF (RC4 or AES, the latter through `cryptography`, which chunkqa gets
with `pypdf[crypto]`; a file with only an owner password opens with the empty user password, as in
any viewer), extracting page text in physical page order, the modest tidying of what pypdf returns,
the "[Page N]" layout, and turning pypdf's failures into `DocumentError`s with a hint. pypdf is
imported inside the functions that need it: text documents never pay for it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from io import BytesIO
from typing import TYPE_CHECKING

from chunkqa.errors import DocumentError

if TYPE_CHECKING:
    from pypdf import PdfReader

HEADER_WINDOW = 1024  # PDF readers accept junk before "%PDF-" within the first 1024 bytes
_HEADER = b"%PDF-"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # keeps \t and \n
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_RUN = re.compile(r"\n{4,}")  # three or more blank lines
_LIGATURES = str.maketrans(
    {0xFB00: "ff", 0xFB01: "fi", 0xFB02: "fl", 0xFB03: "ffi", 0xFB04: "ffl", 0xFB05: "st", 0xFB06: "st"}
)
_DAMAGED_HINT = (
    "The file may be damaged or truncated: download or export it again, or repair it with "
    "`qpdf in.pdf out.pdf`; `pdftotext in.pdf out.txt` gives a text file chunkqa can read too."
)


def pdf_header_offset(data: bytes) -> int | None:
    """Where "%PDF-" starts if it starts within the first 1024 bytes, else None."""
    offset = data.find(_HEADER, 0, HEADER_WINDOW + len(_HEADER))
    return offset if 0 <= offset < HEADER_WINDOW else None


def extract_pages(data: bytes, label: str, password: str | None = None) -> list[str]:
    """The tidied text of every page of the PDF `data` starts with; `label` names it in errors."""
    with _quiet_pypdf():
        reader = _open(data, label)
        _unlock(reader, label, password)
        with _pypdf_errors(label, "page tree"):
            count = len(reader.pages)
        texts = [_page_text(reader, index, label) for index in range(count)]
    if not texts:
        raise DocumentError(
            f"{label} has no pages", hint="Export the document to PDF again, or pass its text."
        )
    if not any(texts):
        raise DocumentError(
            f"{label} has no text layer: it looks scanned or image-only",
            hint="Run OCR on it first, e.g. `ocrmypdf in.pdf out.pdf`, then ask about out.pdf.",
        )
    return texts


def join_pages(texts: Sequence[str]) -> str:
    """Each page under a "[Page N]" line, pages apart by a blank line; empty pages keep their marker."""
    return "\n\n".join(f"[Page {n}]\n{text}" if text else f"[Page {n}]" for n, text in enumerate(texts, 1))


def tidy(text: str) -> str:
    """Unicode ligatures spelt out, control characters and trailing spaces gone, blank runs capped at two."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_LIGATURES)
    text = _TRAILING_SPACE.sub("", _CONTROL.sub("", text))
    return _BLANK_RUN.sub("\n\n\n", text).strip("\n")


def _open(data: bytes, label: str) -> PdfReader:
    from pypdf import PdfReader

    with _pypdf_errors(label, "structure"):
        return PdfReader(BytesIO(data))


def _unlock(reader: PdfReader, label: str, password: str | None) -> None:
    if not reader.is_encrypted:
        return
    from pypdf import PasswordType

    # An empty user password opens the file for anyone, whatever password was given.
    candidates = [password, ""] if password else [""]
    with _pypdf_errors(label, "encryption"):
        if any(reader.decrypt(c) != PasswordType.NOT_DECRYPTED for c in candidates):
            return
    if not password:
        raise DocumentError(f"{label} is encrypted and needs a password", hint="Pass it with `--password`.")
    raise DocumentError(
        f"wrong password for {label}",
        hint="Check the password (it is case-sensitive) and pass it again with `--password`.",
    )


def _page_text(reader: PdfReader, index: int, label: str) -> str:
    with _pypdf_errors(label, f"page {index + 1}"):
        return tidy(reader.pages[index].extract_text())


@contextmanager
def _pypdf_errors(label: str, where: str) -> Iterator[None]:
    """pypdf raises many exception types on damaged files; each becomes one `DocumentError`."""
    from pypdf.errors import DependencyError

    try:
        yield
    except (DocumentError, MemoryError):
        raise
    except DependencyError as exc:
        raise DocumentError(
            f"{label} needs an extra package to decrypt: {_one_line(exc)}",
            hint="Install it with `pip install cryptography` (part of pypdf[crypto]), then try again.",
        ) from exc
    except Exception as exc:
        message = f"cannot read {label} as a PDF ({where}: {_one_line(exc)})"
        raise DocumentError(message, hint=_DAMAGED_HINT) from exc


@contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """pypdf logs the damage it works around; the core never writes to the terminal."""
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
