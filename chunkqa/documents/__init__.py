"""Documents: files and bytes handed in by the caller become `Document`s (text, kind, pages, sha256).

`reader` tells PDF from text by content and decodes text; `pdf` extracts PDF pages through pypdf.
Nothing here prints or reads stdin: a caller reads stdin and hands the bytes to
`document_from_bytes`.
"""

from chunkqa.documents.reader import (
    Document,
    DocumentKind,
    combine_documents,
    document_from_bytes,
    load_document,
)

__all__ = ["Document", "DocumentKind", "combine_documents", "document_from_bytes", "load_document"]
