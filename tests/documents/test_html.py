"""chunkqa.documents.markup: HTML told by content, its text extracted as a reader of the page sees it."""

from __future__ import annotations

import codecs
import hashlib
from pathlib import Path

import pytest

from chunkqa.documents import document_from_bytes, load_document
from chunkqa.errors import EXIT_RUNTIME, DocumentError

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>  Quarterly   report </title>
  <style>body { color: red }</style>
  <script>var secret = "not in the text";</script>
</head>
<body>
  <nav hidden>Skip to content</nav>
  <!-- a comment -->
  <h1>Results &amp; outlook</h1>
  <p>Revenue grew
     by <b>12&nbsp;%</b> in Q3.<br>Costs fell.</p>
  <h2>Figures</h2>
  <table>
    <tr><th>Quarter</th><th>Revenue</th></tr>
    <tr><td>Q2</td><td>10.0</td></tr>
    <tr><td>Q3</td> <td>11.2</td></tr>
  </table>
  <ul><li>First point</li><li> Second <i>point</i>
    <ol start="3"><li>sub a</li><li>sub b</li></ol></li></ul>
  <pre>code  keeps
   its spaces</pre>
  <div>Café <span>inline</span></div><div>next</div>
  <script>document.write("not in the text either")</script>
  <noscript>Enable JavaScript</noscript>
  <p></p><p> </p><p>End.</p>
</body>
</html>
"""
TEXT = """Quarterly report

Results & outlook

Revenue grew by 12 % in Q3.
Costs fell.

Figures

Quarter | Revenue
Q2 | 10.0
Q3 | 11.2

- First point
- Second point
  3. sub a
  4. sub b

code  keeps
   its spaces

Café inline
next

End."""


def test_page_text(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text(PAGE, encoding="utf-8")
    doc = load_document(path)
    assert (doc.kind, doc.pages, doc.warnings, doc.name) == ("html", None, (), "report.html")
    assert doc.text == TEXT
    assert doc.sha256 == hashlib.sha256(PAGE.encode()).hexdigest()
    assert "secret" not in doc.text and "<" not in doc.text and "\n\n\n" not in doc.text


@pytest.mark.parametrize(
    "prefix",
    ["", "\ufeff", "\n\n   \t", "<!-- saved from url=(0014)about:internet -->\n", '<?xml version="1.0"?>\n'],
)
def test_html_from_stdin_is_told_by_content(prefix: str) -> None:
    doc = document_from_bytes((prefix + PAGE).encode())
    assert (doc.kind, doc.text) == ("html", TEXT)


@pytest.mark.parametrize(
    "page",
    [
        "<html><body><p>Hello</p></body></html>",
        "<!doctype HTML><p>Hello</p>",
        "<HTML lang=en>\n<p>Hello",
        "<body><p>Hello</p></body>",
    ],
)
def test_html_starts(page: str) -> None:
    assert document_from_bytes(page.encode()).kind == "html"


def test_utf16_page() -> None:
    doc = document_from_bytes(PAGE.encode("utf-16"))
    assert (doc.kind, doc.text) == ("html", TEXT)


def test_extension_decides_only_when_content_is_ambiguous(tmp_path: Path) -> None:
    fragment = b"<h2>Notes</h2>\n<p>One &lt;two&gt;</p>"
    (tmp_path / "notes.htm").write_bytes(fragment)
    assert (load_document(tmp_path / "notes.htm").kind, load_document(tmp_path / "notes.htm").text) == (
        "html",
        "Notes\n\nOne <two>",
    )
    assert document_from_bytes(fragment).kind == "text"  # stdin: no extension, markup kept
    (tmp_path / "plain.html").write_bytes(b"Just text, no tags at all.\n")
    assert load_document(tmp_path / "plain.html").kind == "text"
    (tmp_path / "page.txt").write_bytes(PAGE.encode())
    assert load_document(tmp_path / "page.txt").kind == "html"  # content wins over the extension


def test_text_that_mentions_html_stays_text() -> None:
    data = b"How to write a page: start with <!doctype html>, then <html>.\n"
    assert document_from_bytes(data).kind == "text"


def test_declared_legacy_charset_is_no_guess() -> None:
    body = "<p>Café “quoted” €5</p>"
    page = f'<html><head><meta charset="windows-1252"></head><body>{body}</body></html>'
    doc = document_from_bytes(page.encode("cp1252"))
    assert (doc.kind, doc.text, doc.warnings) == ("html", "Café “quoted” €5", ())
    old = f'<html><head><meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1"></head>{body}'
    assert document_from_bytes(old.encode("cp1252")).text == "Café “quoted” €5"


@pytest.mark.parametrize("meta", ["", '<meta charset="utf-8">', "<meta charset=hex>", "<meta charset=bogus>"])
def test_undeclared_or_misdeclared_charset_is_guessed_with_a_warning(meta: str) -> None:
    page = f"<html><head>{meta}</head><body><p>Le garçon a mangé à la crème brûlée.</p></body></html>"
    doc = document_from_bytes(page.encode("cp1252"))
    assert (doc.kind, doc.text) == ("html", "Le garçon a mangé à la crème brûlée.")
    assert len(doc.warnings) == 1 and doc.warnings[0].startswith("decoded as cp1252 (not valid UTF-8")


def test_page_without_text() -> None:
    page = b"<!doctype html><html><head><title></title><script>app()</script></head><body><div id=root></div>"
    with pytest.raises(DocumentError) as info:
        document_from_bytes(page)
    error = info.value
    assert type(error) is DocumentError and error.exit_code == EXIT_RUNTIME
    assert error.message == "standard input is an HTML page with no text" and "JavaScript" in error.hint


def test_deeply_nested_unclosed_tags() -> None:
    page = "<html><body>" + "<div><span>word " * 5000
    doc = document_from_bytes(page.encode())
    assert doc.text.split() == ["word"] * 5000


def test_bom_and_empty_input_are_not_html() -> None:
    with pytest.raises(DocumentError, match="is empty"):
        document_from_bytes(codecs.BOM_UTF8)


def test_core_writes_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    document_from_bytes(PAGE.encode())
    with pytest.raises(DocumentError):
        document_from_bytes(b"<html><body></body></html>")
    assert capfd.readouterr() == ("", "")
