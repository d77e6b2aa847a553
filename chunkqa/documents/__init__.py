"""Documents: files and bytes handed in by the caller become `Document`s (text, kind, pages, sha256).

`reader` tells PDF, HTML and text apart by content; `encoding` decodes text (UTF-8, a BOM, or a
guessed legacy encoding, which leaves a line in `Document.warnings`); `markup` extracts an HTML page's
text through BeautifulSoup; `pdf` extracts PDF pages through pypdf. Nothing here prints or reads
stdin: a caller reads stdin, hands the bytes to `document_from_bytes`, and shows the warnings.
"""

from chunkqa.documents.reader import (
    Document,
    DocumentKind,
    combine_documents,
    document_from_bytes,
    load_document,
)

__all__ = ["Document", "DocumentKind", "combine_documents", "document_from_bytes", "load_document"]
