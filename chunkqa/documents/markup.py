"""HTML → the text a reader of the page sees, through BeautifulSoup with Python's own html.parser.

Owns telling HTML by content (a doctype or an <html>, <head> or <body> tag first; the file extension
only settles text that starts with another tag), the charset a page declares, and the extraction:
scripts, styles, the head (but its title) and other non-text elements dropped, paragraphs and headings
a blank line apart, list items, table rows and line breaks on lines of their own, table cells joined
by " | ", white space collapsed as a browser does (but in <pre>). bs4 is imported only for HTML.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from chunkqa.documents.encoding import not_text
from chunkqa.errors import DocumentError

if TYPE_CHECKING:
    from bs4 import Tag

__all__ = ["declared_charset", "html_text", "looks_like_html"]

_SNIFF_WINDOW = 4096  # comments and white space may come before the doctype
_HTML_START = re.compile(
    r"(?:[\s\ufeff]|<!--.*?-->|<\?xml[^>]*>)*<(?:!doctype\s+html|html|head|body)[\s>/]", re.I | re.S
)
_META_CHARSET = re.compile(rb"<meta\b[^>]*?\bcharset\s*=\s*[\"']?\s*([\w.:-]+)", re.I)
_EXTENSIONS = (".html", ".htm", ".xhtml")
_DROPPED = frozenset((
    "script", "style", "noscript", "template", "head", "title", "svg", "canvas", "iframe", "object",
    "embed", "audio", "video", "select",
))  # fmt: skip
_PARAGRAPHS = frozenset((
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "table", "ul", "ol", "dl", "figure",
    "hr", "address", "details", "fieldset",
))  # fmt: skip
_LINES = frozenset((
    "div", "li", "tr", "dt", "dd", "caption", "figcaption", "summary", "legend", "article", "aside",
    "footer", "header", "main", "nav", "section",
))  # fmt: skip
_PRE = frozenset(("pre", "textarea", "listing", "plaintext"))
_SPACE = re.compile(r"\s+")
_BLANK_RUN = re.compile(r"\n{3,}")
_NO_TEXT_HINT = (
    "The page may build its text with JavaScript: save it from a browser as text or PDF and pass that."
)


def looks_like_html(text: str, name: str = "") -> bool:
    """Whether `text` is an HTML page: by content, or by `name`'s extension when it starts with a tag."""
    if _HTML_START.match(text, 0, _SNIFF_WINDOW):
        return True
    return name.lower().endswith(_EXTENSIONS) and text.lstrip().startswith("<")


def declared_charset(data: bytes) -> str | None:
    """The charset an HTML page's <meta> names in its first 1024 bytes; None for other input."""
    head = data[:1024].decode("latin-1")
    if not _HTML_START.match(head):
        return None
    found = _META_CHARSET.search(data, 0, 1024)
    return found.group(1).decode("ascii") if found else None


def html_text(page: str, label: str) -> str:
    """The text of the HTML `page`; `label` names it in errors."""
    from bs4 import BeautifulSoup

    try:
        soup = BeautifulSoup(page, "html.parser")
    except Exception as exc:  # html.parser is lenient; this is a last resort
        raise not_text(label, f"HTML that cannot be parsed: {type(exc).__name__}") from exc
    writer = _Writer()
    title = next((t for t in soup.find_all("title") if t.find_parent("svg") is None), None)
    if title is not None and title.get_text(strip=True):
        writer.text(title.get_text())
        writer.brk(2)
    _walk(soup, writer)
    text = writer.value()
    if not text:
        raise DocumentError(f"{label} is an HTML page with no text", hint=_NO_TEXT_HINT)
    return text


def _walk(root: Tag, writer: _Writer) -> None:
    """Depth first without recursion: pages with thousands of unclosed tags nest that deep."""
    from bs4 import NavigableString, Tag
    from bs4.element import PreformattedString, Script, Stylesheet, TemplateString

    skipped = (PreformattedString, Script, Stylesheet, TemplateString)  # comments, doctype, code
    stack: list[tuple[object, bool]] = [(child, False) for child in reversed(root.contents)]
    while stack:
        node, leaving = stack.pop()
        if isinstance(node, Tag):
            if leaving:
                writer.close(node)
            elif node.name not in _DROPPED and not node.has_attr("hidden"):
                writer.open(node)
                stack.append((node, True))
                stack.extend((child, False) for child in reversed(node.contents))
        elif isinstance(node, NavigableString) and not isinstance(node, skipped):
            writer.text(str(node))


class _Writer:
    """Text pieces with the line breaks between blocks kept pending until more text comes."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.breaks = 0  # newlines owed before the next text
        self.pre = 0  # depth inside <pre>
        self.lists: list[int | None] = []  # per open list: the next number, None when unordered

    def text(self, piece: str) -> None:
        if not self.pre:
            piece = _SPACE.sub(" ", piece)
            if piece.startswith(" ") and (self.breaks or not self.parts or self.parts[-1].endswith(" ")):
                piece = piece[1:]
        if piece:
            self._put(piece)

    def brk(self, newlines: int) -> None:
        self.breaks = max(self.breaks, newlines)

    def open(self, tag: Tag) -> None:
        name = tag.name
        if name in _PRE:
            self.pre += 1
        if name == "br":
            self.breaks = min(self.breaks + 1, 2)
        elif name in ("ul", "ol"):
            self.brk(1 if self.lists else 2)
            self.lists.append(_start(tag) if name == "ol" else None)
        elif name == "li":
            self.brk(1)
            number = self.lists[-1] if self.lists else None
            if self.lists and number is not None:
                self.lists[-1] = number + 1
            indent = "  " * max(len(self.lists) - 1, 0)
            self._put(f"{indent}- " if number is None else f"{indent}{number}. ")
        elif name in ("td", "th"):
            if self.parts and not self.breaks and not self.parts[-1].endswith("\n"):
                self._put("| " if self.parts[-1].endswith(" ") else " | ")
        else:
            self.brk(2 if name in _PARAGRAPHS else 1 if name in _LINES else 0)

    def close(self, tag: Tag) -> None:
        name = tag.name
        if name in _PRE:
            self.pre -= 1
        if name in ("ul", "ol") and self.lists:
            self.lists.pop()
            self.brk(1 if self.lists else 2)
        elif name in _PARAGRAPHS:
            self.brk(2)
        elif name in _LINES:
            self.brk(1)

    def value(self) -> str:
        text = "\n".join(line.rstrip() for line in "".join(self.parts).split("\n"))
        return _BLANK_RUN.sub("\n\n", text).strip("\n")

    def _put(self, piece: str) -> None:
        if self.breaks and self.parts:
            self.parts.append("\n" * self.breaks)
        self.breaks = 0
        self.parts.append(piece)


def _start(tag: Tag) -> int:
    try:
        return int(str(tag.get("start", 1)))
    except ValueError:
        return 1
