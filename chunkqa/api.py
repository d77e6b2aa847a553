"""Conveniences of the public API: a model with a method in one call, a question in one call.

Both compose the layers below exactly as the CLI does (Request -> make_plan -> open_session), so a
library user gets the same budget checks, prompts and method settings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from chunkqa.documents import Document, load_document
from chunkqa.engine.loading import LoadedModel, ModelSpec, load_model, resolve_model
from chunkqa.engine.results import Step
from chunkqa.methods.spec import MethodSpec, resolve_method
from chunkqa.plan import Request, make_plan
from chunkqa.session import Session, open_session


def load(model: str | ModelSpec = "tiny", method: str | MethodSpec = "dca") -> LoadedModel:
    """A model with a context-extension method applied ("none": as it is); `.close()` removes it."""
    spec = model if isinstance(model, ModelSpec) else ModelSpec(model)
    method = method if isinstance(method, MethodSpec) else MethodSpec(method)
    info = resolve_model(spec)
    return load_model(info, method=resolve_method(method, info.config), kernel=method.kernel)


Documents = Document | str | Path | Sequence[Document | str | Path]


def open_document_session(documents: Documents, questions: Sequence[str] = ("?",), **request: Any) -> Session:
    """A Session on documents (paths or Documents), its budget checked for `questions`.

    `request`: any other Request field (model, method, generation, max_context, ...), by keyword.
    """
    if isinstance(documents, (Document, str, Path)):
        documents = [documents]
    docs = tuple(d if isinstance(d, Document) else load_document(d) for d in documents)
    return open_session(make_plan(Request(documents=docs, **request), questions))


def ask(documents: Documents, question: str, **request: Any) -> Iterator[Step]:
    """Stream the answer to one question: text steps, the last one carrying Stats."""
    session = open_document_session(documents, [question], **request)
    yield from session.ask(question, request.get("generation"))
