"""chunkqa.documents.encoding: UTF-8 as before, legacy encodings decoded with a warning, binary refused."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import random
import zipfile
from pathlib import Path

import pytest

from chunkqa.documents import document_from_bytes, load_document
from chunkqa.errors import EXIT_RUNTIME, DocumentError

CP1252 = "He said “yes” — and paid €10… that’s all.\r\nŒuvres, Š and ‰ too.\r\n"
FRENCH = "Le garçon a mangé à la crème brûlée. Où est l'hôtel ? Ça va très bien, merci.\n"
GERMAN = "Grüße aus München: Die Straße ist schön, Äpfel und Öl für alle.\n"
NORDIC = "Æble, øl og å. Hvordan går det? Smørrebrød på bordet.\n"


def guessed(encoding: str) -> str:
    return f"decoded as {encoding} (not valid UTF-8; if it reads wrongly, convert it to UTF-8)"


def test_cp1252_quotes_and_euro(tmp_path: Path) -> None:
    raw = CP1252.encode("cp1252")
    path = tmp_path / "notes.txt"
    path.write_bytes(raw)
    doc = load_document(path)
    assert doc.text == CP1252.replace("\r\n", "\n")
    assert (doc.kind, doc.pages, doc.warnings) == ("text", None, (guessed("cp1252"),))
    assert doc.sha256 == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("text", [FRENCH, GERMAN, NORDIC, "café\n"])
def test_latin1_accented_letters(text: str) -> None:
    doc = document_from_bytes(text.encode("latin-1"))
    assert doc.text == text
    # Latin-1's letters are cp1252's: the name the warning gives is the one that reads both
    assert doc.warnings == (guessed("cp1252"),)


@pytest.mark.parametrize(
    ("text", "encoding", "shown"),
    [
        ("Привет, как дела? Это тестовый текст на русском языке.\n", "cp1251", "cp1251"),
        ("Привет, как дела? Это тестовый текст на русском языке.\n", "koi8_r", "koi8-r"),
        ("Καλημέρα σας, αυτό είναι ένα δοκιμαστικό κείμενο στα ελληνικά.\n", "cp1253", "cp1253"),
        ("Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy.\n", "cp1250", "cp1250"),
        ("これは日本語のテキストです。文字コードの判定をテストします。\n", "shift_jis", "cp932"),
    ],
)
def test_other_legacy_encodings(text: str, encoding: str, shown: str) -> None:
    doc = document_from_bytes(text.encode(encoding))
    assert (doc.text, doc.warnings) == (text, (guessed(shown),))


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8])
def test_utf8_has_no_warning(bom: bytes) -> None:
    doc = document_from_bytes(bom + "Naïve café “quoted” €5\n".encode())
    assert (doc.text, doc.warnings) == ("Naïve café “quoted” €5\n", ())


def test_utf16_has_no_warning() -> None:
    assert document_from_bytes("Grüße\n".encode("utf-16")).warnings == ()


def test_warning_is_one_line_and_the_core_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    (warning,) = document_from_bytes(GERMAN.encode("latin-1")).warnings
    assert "\n" not in warning
    assert capfd.readouterr() == ("", "")


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello " * 100)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00", "invalid UTF-8 at byte 0"),
        (_zip(), "invalid UTF-8 at byte"),
        (gzip.compress(b"hello " * 100, mtime=0), "invalid UTF-8 at byte 1"),
        ("café\x00".encode("latin-1"), "invalid UTF-8 at byte 3"),
        (random.Random(7).randbytes(4000).replace(b"\x00", b"\x01"), "no other text encoding fits"),
        ("caf\xe9 \x01\x02\x03\x04 data \x05\x06".encode("latin-1"), "no other text encoding fits"),
    ],
    ids=["png", "zip", "gzip", "latin1-with-nul", "random", "control-bytes"],
)
def test_binary_is_refused(data: bytes, detail: str) -> None:
    with pytest.raises(DocumentError) as info:
        document_from_bytes(data, source="data.bin", name="data.bin")
    error = info.value
    assert type(error) is DocumentError and error.exit_code == EXIT_RUNTIME
    assert error.message.startswith("data.bin does not look like text or PDF (") and detail in error.message
    assert error.hint and ".txt" in error.hint and ".pdf" in error.hint and "iconv" in error.hint
