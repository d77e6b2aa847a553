"""chunkqa.documents (reader and pdf): real extraction, text decoding, every user-facing error."""

from __future__ import annotations

import codecs
import dataclasses
import functools
import hashlib
import io
import logging
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from chunkqa.documents import Document, combine_documents, document_from_bytes, load_document
from chunkqa.documents.pdf import _CONTROL, _LIGATURES, pdf_header_offset, tidy
from chunkqa.errors import EXIT_RUNTIME, EXIT_USAGE, DocumentError, DocumentNotFound, NotADocument

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pdfs"
# the data beside the checkout (../shared, as CI lays it out too); PDFs not shipped are skipped without it
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "pdfs"

# file, pages, {page: phrases that page must contain}
PDF_CASES = [
    (
        "arxiv-2306.15595v2-position-interpolation.pdf",
        18,
        {
            1: ["GUAGE MODELS VIA POSITION INTERPOLATION", "Position Interpolation (PI) that extends"],
            9: ["after merely fine-tuning for 200 steps"],
            17: ["C.1 CODE FOR FIG. 2", "freqs = 1.0 / (theta ** (torch.arange(0, d, 2)"],
        },
    ),
    (
        "arxiv-2309.00071v2-yarn.pdf",
        18,
        {
            1: ["YaRN: Efficient Context Window Extension of Large", "Yet another RoPE extensioN method"],
            9: ["Table 1: Sliding window perplexity (S = 256)"],
            17: ["Table 5: Passkey retrieval performance of various models"],
        },
    ),
    (
        "federal-register-2020-17221.pdf",
        15,
        {
            1: ["Airworthiness Directives; The Boeing", "Notice of proposed rulemaking"],
            7: ["replace the existing Airspeed Unreliable"],
            14: ["Master Minimum", "Equipment List (MMEL) items 22–10–01B"],
        },
    ),
    (
        "acl-2020.acl-main.207-specter.pdf",
        13,
        {
            1: ["SPECTER: Document-level Representation Learning", "Institute for Artificial Intelligence"],
            12: ["A Appendix A - Baseline Details"],
        },
    ),
    (
        "acl-2020.acl-main.447-s2orc.pdf",
        15,
        {
            1: ["S2ORC: The Semantic Scholar Open Research Corpus"],
            7: ["configurations on a single TPU v3-8 for one week"],
            14: ["the canonical document used to represent the pa-"],
        },
    ),
    (
        "acl-2023.eacl-main.121-longeval.pdf",
        20,
        {
            1: ["Faithfulness in Long-form Summarization"],
            10: ["Human evaluation is a noisy process with many"],
            19: ["The LabelStudio annotation interface used for COARSE evaluation"],
        },
    ),
]
PDF_IDS = [case[0].split("-")[1] if case[0].startswith("arxiv") else case[0][:-4] for case in PDF_CASES]
MARKER = re.compile(r"^\[Page (\d+)\]$", re.MULTILINE)


def pdf_path(name: str) -> Path:
    for folder in (SAMPLES, SHARED):
        if (folder / name).is_file():
            return folder / name
    pytest.skip(f"{name} is not shipped in sample_pdfs/ and {SHARED} is absent")


@functools.cache
def loaded(name: str) -> Document:
    return load_document(pdf_path(name))


def page_texts(text: str) -> dict[int, str]:
    parts = MARKER.split(text)
    return {int(number): body for number, body in zip(parts[1::2], parts[2::2], strict=True)}


def make_pdf(pages: list[str | None], algorithm: str = "RC4-128", **encrypt: str) -> bytes:
    """A PDF with one Helvetica line per page (None: a page with no text), encrypted if asked."""
    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    for line in pages:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        if line is not None:
            stream = DecodedStreamObject()
            stream.set_data(f"BT /F1 12 Tf 72 720 Td ({line}) Tj ET".encode("latin-1"))
            page.replace_contents(stream)
    if encrypt:
        writer.encrypt(algorithm=algorithm, **encrypt)  # RC4 needs no `cryptography`, AES does
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def check_user_error(error: DocumentError, cls: type[DocumentError], exit_code: int) -> None:
    assert type(error) is cls
    assert error.exit_code == exit_code
    assert error.message and "\n" not in error.message and str(error) == error.message
    assert error.hint and "\n" not in error.hint


# --- real PDFs -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "pages", "phrases"), PDF_CASES, ids=PDF_IDS)
def test_pdf_pages_and_markers(name: str, pages: int, phrases: dict[int, list[str]]) -> None:
    doc = loaded(name)
    assert (doc.kind, doc.pages, doc.name) == ("pdf", pages, name)
    assert [int(n) for n in MARKER.findall(doc.text)] == list(range(1, pages + 1))
    assert doc.text.startswith("[Page 1]\n")
    assert doc.sha256 == hashlib.sha256(pdf_path(name).read_bytes()).hexdigest()


@pytest.mark.parametrize(("name", "pages", "phrases"), PDF_CASES, ids=PDF_IDS)
def test_pdf_phrases_on_their_pages(name: str, pages: int, phrases: dict[int, list[str]]) -> None:
    by_page = page_texts(loaded(name).text)
    assert len(by_page) == pages
    for page, wanted in phrases.items():
        for phrase in wanted:
            assert phrase in by_page[page], f"{phrase!r} not on page {page}"


@pytest.mark.parametrize(("name", "pages", "phrases"), PDF_CASES, ids=PDF_IDS)
def test_pdf_text_is_tidy(name: str, pages: int, phrases: dict[int, list[str]]) -> None:
    text = loaded(name).text
    assert not _CONTROL.search(text)
    assert not re.search("[\ufb00-\ufb06]", text)
    assert not re.search(r"[ \t]$", text, re.MULTILINE)
    assert "\n\n\n\n" not in text and "\r" not in text


@pytest.mark.parametrize("name", ["arxiv-2309.00071v2-yarn.pdf", "federal-register-2020-17221.pdf"])
def test_tidying_keeps_every_word(name: str) -> None:
    raw = [page.extract_text() for page in PdfReader(pdf_path(name)).pages]
    raw_words = " ".join(_CONTROL.sub(" ", text.translate(_LIGATURES)) for text in raw).split()
    words = MARKER.sub("", loaded(name).text).split()
    assert words == raw_words
    assert len(words) > 7000


def test_ligatures_are_spelt_out() -> None:
    text = loaded("acl-2020.acl-main.447-s2orc.pdf").text
    assert "scientific" in text and "\ufb01" not in text


def test_tidy() -> None:
    raw = "\n\n  Title  \r\nof\x00 the \ufb01rst \ufb04ow\t\n\n\n\n\n\x0cnext\n \n\nend \n\n"
    assert tidy(raw) == "  Title\nof the first fflow\n\n\nnext\n\n\nend"


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        (b"%PDF-1.7", 0),
        (codecs.BOM_UTF8 + b"%PDF-", 3),
        (b" " * 1023 + b"%PDF-1.4", 1023),
        (b" " * 1024 + b"%PDF-1.4", None),
    ],
)
def test_pdf_header_offset(data: bytes, offset: int | None) -> None:
    assert pdf_header_offset(data) == offset
    assert pdf_header_offset(data.replace(b"%PDF-", b"%PDX-")) is None


def test_pdf_detected_by_content_not_extension(tmp_path: Path) -> None:
    pdf = write(tmp_path, "notes.txt", make_pdf(["Hello from a PDF"]))
    text = write(tmp_path, "paper.pdf", b"just text\n")
    assert (load_document(pdf).kind, load_document(pdf).text) == ("pdf", "[Page 1]\nHello from a PDF")
    assert (load_document(text).kind, load_document(text).text) == ("text", "just text\n")


@pytest.mark.parametrize("junk", [codecs.BOM_UTF8, b"  \r\n\t", b"X-Mailer: junk\n" * 60])
def test_pdf_with_junk_before_header(junk: bytes) -> None:
    doc = document_from_bytes(junk + make_pdf(["Junk before the header"]))
    assert (doc.kind, doc.pages, doc.text) == ("pdf", 1, "[Page 1]\nJunk before the header")


def test_header_after_1024_bytes_is_not_a_pdf() -> None:
    with pytest.raises(DocumentError) as info:
        document_from_bytes(b"x" * 1025 + make_pdf(["late"]))
    assert "does not look like text or PDF" in info.value.message
    assert "starts at byte 1025" in info.value.message and "tail -c +1026" in info.value.hint


def test_empty_pages_keep_their_markers() -> None:
    doc = document_from_bytes(make_pdf(["First page", None, "Third   page   ", None]))
    assert doc.text == "[Page 1]\nFirst page\n\n[Page 2]\n\n[Page 3]\nThird   page\n\n[Page 4]"
    assert doc.pages == 4


def test_encrypted_pdf_opens_with_user_or_owner_password(tmp_path: Path) -> None:
    path = write(tmp_path, "locked.pdf", make_pdf(["Secret text"], user_password="pw", owner_password="own"))
    assert load_document(path, password="pw").text == "[Page 1]\nSecret text"
    assert load_document(path, password="own").text == "[Page 1]\nSecret text"


@pytest.mark.parametrize("password", [None, "", "not-needed"])
def test_empty_user_password_just_works(password: str | None) -> None:
    data = make_pdf(["Open to all"], user_password="", owner_password="owner")
    assert PdfReader(io.BytesIO(data)).is_encrypted
    assert document_from_bytes(data, password=password).text == "[Page 1]\nOpen to all"


AES = ["AES-128", "AES-256"]


@pytest.mark.parametrize("password", [None, "", "not-needed"])
@pytest.mark.parametrize("algorithm", AES)
def test_aes_pdf_with_only_an_owner_password_opens(algorithm: str, password: str | None) -> None:
    data = make_pdf(["Open to all", "Second page"], algorithm, user_password="", owner_password="owner")
    assert PdfReader(io.BytesIO(data)).is_encrypted
    doc = document_from_bytes(data, password=password)
    assert (doc.kind, doc.pages, doc.warnings) == ("pdf", 2, ())
    assert doc.text == "[Page 1]\nOpen to all\n\n[Page 2]\nSecond page"


@pytest.mark.parametrize("algorithm", AES)
def test_aes_pdf_opens_with_user_or_owner_password(tmp_path: Path, algorithm: str) -> None:
    data = make_pdf(["Secret text"], algorithm, user_password="pw", owner_password="own")
    path = write(tmp_path, "locked.pdf", data)
    assert load_document(path, password="pw").text == "[Page 1]\nSecret text"
    assert load_document(path, password="own").text == "[Page 1]\nSecret text"


@pytest.mark.parametrize(
    ("password", "message"), [(None, "is encrypted"), ("", "is encrypted"), ("PW", "wrong")]
)
@pytest.mark.parametrize("algorithm", AES)
def test_aes_pdf_without_its_password(
    tmp_path: Path, algorithm: str, password: str | None, message: str
) -> None:
    path = write(tmp_path, "locked.pdf", make_pdf(["Secret"], algorithm, user_password="pw"))
    with pytest.raises(DocumentError) as info:
        load_document(path, password=password)
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert message in info.value.message and "--password" in info.value.hint


def test_aes_without_cryptography_is_a_clear_error(tmp_path: Path) -> None:
    """AES-128 fails when pages are decrypted, AES-256 when the password is checked: both are clear."""
    paths = [
        str(write(tmp_path, f"{alg}.pdf", make_pdf(["Secret"], alg, user_password="", owner_password="o")))
        for alg in AES
    ]
    code = (
        "import sys\n"
        "sys.modules['cryptography'] = sys.modules['Crypto'] = None  # neither crypto provider installed\n"
        "from chunkqa.documents import load_document\n"
        "from chunkqa.errors import DocumentError\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        load_document(path)\n"
        "    except DocumentError as exc:\n"
        "        print(exc.message, '|', exc.hint)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and result.stderr == ""
    for line in lines:
        assert "needs an extra package to decrypt" in line and "pip install cryptography" in line


def test_dependencies_cover_aes_html_and_legacy_text() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    wanted = {"pypdf[crypto]>=4", "beautifulsoup4>=4.12", "charset-normalizer>=3"}
    assert wanted <= set(pyproject["project"]["dependencies"])


# --- text ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [
        ("utf-8", b""),
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-32-le", codecs.BOM_UTF32_LE),
        ("utf-32-be", codecs.BOM_UTF32_BE),
    ],
)
def test_text_encodings(tmp_path: Path, encoding: str, bom: bytes) -> None:
    content = "Naïve café – 日本語 🙂\nsecond line\n"
    raw = bom + content.encode(encoding)
    path = write(tmp_path, "notes.md", raw)
    doc = load_document(path)
    assert (doc.text, doc.kind, doc.pages, doc.chars) == (content, "text", None, len(content))
    assert (doc.source, doc.name) == (str(path), "notes.md")
    assert doc.sha256 == hashlib.sha256(raw).hexdigest()


def test_newlines_are_normalised() -> None:
    doc = document_from_bytes(b"one\r\ntwo\rthree\n\r\nfour")
    assert doc.text == "one\ntwo\nthree\n\nfour"
    assert doc.sha256 == hashlib.sha256(b"one\r\ntwo\rthree\n\r\nfour").hexdigest()


def test_utf16_with_crlf() -> None:
    doc = document_from_bytes("line one\r\nline two\r\n".encode("utf-16"))
    assert doc.text == "line one\nline two\n"


def test_stdin_bytes() -> None:
    doc = document_from_bytes(b"piped text\n")
    assert (doc.source, doc.name, doc.kind, doc.text) == ("<stdin>", "stdin", "text", "piped text\n")


def test_source_is_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "a.txt", b"relative")
    monkeypatch.chdir(tmp_path)
    assert (load_document("a.txt").source, load_document(Path("a.txt")).source) == ("a.txt", "a.txt")
    assert load_document("./a.txt").name == "a.txt"


def test_document_is_frozen_and_short_in_repr() -> None:
    doc = document_from_bytes(b"x" * 10_000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.text = "changed"  # type: ignore[misc]
    assert len(repr(doc)) < 300 and "sha256=" in repr(doc)


# --- errors ----------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.pdf"
    with pytest.raises(DocumentNotFound) as info:
        load_document(path)
    check_user_error(info.value, DocumentNotFound, EXIT_USAGE)
    assert isinstance(info.value, FileNotFoundError)
    assert str(path) in info.value.message and str(path) in info.value.hint and "`-`" in info.value.hint


def test_missing_relative_path_names_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DocumentNotFound) as info:
        load_document("paper.pdf")
    assert str(tmp_path) in info.value.hint and "paper.pdf" in info.value.hint


def test_missing_path_with_newline_stays_one_line(tmp_path: Path) -> None:
    with pytest.raises(DocumentNotFound) as info:
        load_document(tmp_path / "two\nlines.txt")
    check_user_error(info.value, DocumentNotFound, EXIT_USAGE)
    assert "two\\nlines.txt" in info.value.message


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(DocumentError) as info:
        load_document(tmp_path)
    check_user_error(info.value, NotADocument, EXIT_USAGE)  # the command line must change: exit 2
    assert "directory" in info.value.message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.txt", b"text")
    path.chmod(0)
    with pytest.raises(DocumentError) as info:
        load_document(path)
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert "permission denied" in info.value.message


def test_permission_error_from_the_os(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "secret.txt", b"text")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(DocumentError) as info:
        load_document(path)
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert "permission denied" in info.value.message and "chmod" in info.value.hint


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", "is empty"),
        (codecs.BOM_UTF8, "is empty"),
        (b" \n\t\r\n  ", "contains only whitespace"),
        ("  \r\n".encode("utf-16"), "contains only whitespace"),
    ],
)
def test_empty_input(tmp_path: Path, data: bytes, detail: str) -> None:
    path = write(tmp_path, "blank.txt", data)
    with pytest.raises(DocumentError) as info:
        load_document(path)
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert info.value.message == f"{path} {detail}"


def test_empty_stdin() -> None:
    with pytest.raises(DocumentError) as info:
        document_from_bytes(b"")
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert info.value.message == "standard input is empty"


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"abc\x00\x01\x02def", "NUL bytes"),
        ("café\x00".encode("latin-1"), "invalid UTF-8 at byte 3"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "invalid UTF-8 at byte 0"),
        (codecs.BOM_UTF16_LE + b"a\x00b", "invalid UTF-16"),
        ("no BOM".encode("utf-16-le"), "NUL bytes"),
    ],
)
def test_binary_input(tmp_path: Path, data: bytes, detail: str) -> None:
    with pytest.raises(DocumentError) as info:
        load_document(write(tmp_path, "data.bin", data))
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert "does not look like text or PDF" in info.value.message and detail in info.value.message
    assert ".txt" in info.value.hint and ".pdf" in info.value.hint


@pytest.mark.parametrize("password", [None, ""])
def test_encrypted_pdf_without_password(tmp_path: Path, password: str | None) -> None:
    path = write(tmp_path, "locked.pdf", make_pdf(["Secret"], user_password="pw"))
    with pytest.raises(DocumentError) as info:
        load_document(path, password=password)
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert "encrypted" in info.value.message and "--password" in info.value.hint


def test_wrong_password(tmp_path: Path) -> None:
    path = write(tmp_path, "locked.pdf", make_pdf(["Secret"], user_password="pw"))
    with pytest.raises(DocumentError) as info:
        load_document(path, password="PW")
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert "wrong password" in info.value.message and "--password" in info.value.hint


def test_missing_crypto_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from pypdf.errors import DependencyError

    def needs_cryptography(self: PdfReader, password: str) -> None:
        raise DependencyError("cryptography>=3.1 is required for AES algorithm")

    monkeypatch.setattr(PdfReader, "decrypt", needs_cryptography)
    with pytest.raises(DocumentError) as info:
        document_from_bytes(make_pdf(["Secret"], user_password="pw"), password="pw")
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert "AES" in info.value.message and "pip install cryptography" in info.value.hint


def test_pdf_without_text_layer(tmp_path: Path) -> None:
    path = write(tmp_path, "scan.pdf", make_pdf([None, None, None]))
    with pytest.raises(DocumentError) as info:
        load_document(path)
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert "scanned or image-only" in info.value.message and "ocrmypdf" in info.value.hint


def test_pdf_without_pages() -> None:
    with pytest.raises(DocumentError) as info:
        document_from_bytes(make_pdf([]))
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert "no pages" in info.value.message


@pytest.mark.parametrize("keep", [0.3, 0.5, 0.99])
def test_truncated_pdf(tmp_path: Path, keep: float, caplog: pytest.LogCaptureFixture) -> None:
    data = pdf_path("arxiv-2309.00071v2-yarn.pdf").read_bytes()
    path = write(tmp_path, "cut.pdf", data[: int(len(data) * keep)])
    with caplog.at_level(logging.DEBUG), pytest.raises(DocumentError) as info:
        load_document(path)
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert info.value.message.startswith(f"cannot read {path} as a PDF")
    assert "qpdf" in info.value.hint
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]  # pypdf's chatter is muted


@pytest.mark.parametrize("data", [b"%PDF-1.7\n", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\njunk\n%%EOF\n"])
def test_corrupt_pdf(data: bytes) -> None:
    with pytest.raises(DocumentError) as info:
        document_from_bytes(data)
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert info.value.message.startswith("cannot read standard input as a PDF")


def test_page_that_fails_to_extract(monkeypatch: pytest.MonkeyPatch) -> None:
    from pypdf import PageObject

    def broken(self: PageObject) -> str:
        raise KeyError("/Font")

    monkeypatch.setattr(PageObject, "extract_text", broken)
    with pytest.raises(DocumentError) as info:
        document_from_bytes(make_pdf(["one"]))
    check_user_error(info.value, DocumentError, EXIT_RUNTIME)
    assert "page 1" in info.value.message


def test_core_writes_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    document_from_bytes(b"X-Junk\n" + make_pdf(["quiet"]))
    for data in (b"", make_pdf([None]), b"%PDF-1.7\n"):
        with pytest.raises(DocumentError):
            document_from_bytes(data)
    assert capfd.readouterr() == ("", "")


def test_import_is_cheap() -> None:
    code = (
        "import sys, chunkqa.documents.reader; "
        "print(sorted(m for m in ('pypdf', 'bs4', 'charset_normalizer', 'cryptography', 'torch', "
        "'transformers', 'rich', 'typer') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- combining -------------------------------------------------------------------------------


def test_combine_one_document_is_unchanged() -> None:
    doc = document_from_bytes(b"only one\n")
    assert combine_documents([doc]) == "only one\n"


def test_combine_several_documents() -> None:
    first = document_from_bytes(b"alpha", source="a.txt", name="a.txt")
    second = document_from_bytes(make_pdf(["beta"]), source="b.pdf", name="b.pdf")
    third = document_from_bytes(b"gamma\n")
    assert combine_documents([first, second, third]) == (
        "=== Document 1: a.txt ===\nalpha\n\n"
        "=== Document 2: b.pdf ===\n[Page 1]\nbeta\n\n"
        "=== Document 3: stdin ===\ngamma\n"
    )


def test_combine_nothing() -> None:
    with pytest.raises(ValueError, match="at least one"):
        combine_documents([])
