"""Prompt building: templates from prompts/, chat templates for instruct models, a plain one for base models.

A prompt is split where the document ends: `prefix` (system text, framing and the document) is the
expensive, cacheable part; `rest` holds the questions, earlier answers and the generation prompt.
Each piece is tokenized on its own, so the same document always gives the same prefix tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any

from chunkqa.errors import UsageError

TEMPLATE_NAMES = ("qa", "summary", "base")
DOC_MARK = "@@chunkqa-document-7f3a@@"  # stands in for the document while a template is rendered
FOLLOW_UP = "\n\nQuestion: {question}\nAnswer:"  # later turns for base models


def prompts_folder() -> Any:
    """The installed prompts (chunkqa.prompts), or the checkout's prompts/ when run from source."""
    try:
        return resources.files("chunkqa.prompts")
    except ModuleNotFoundError:  # not installed: PYTHONPATH points at a checkout
        return Path(__file__).resolve().parent.parent / "prompts"


def packaged_text(name: str) -> str:
    """A file from the packaged prompts folder, without its final newline."""
    return prompts_folder().joinpath(f"{name}.txt").read_text("utf-8").rstrip("\n")


def read_template(name_or_path: str) -> str:
    """A packaged template (qa, summary, base) or a file holding {document} and then {question}."""
    if name_or_path in TEMPLATE_NAMES:
        text = packaged_text(name_or_path)
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise UsageError(
                f"no template {name_or_path!r}",
                hint=f"use one of {', '.join(TEMPLATE_NAMES)}, or a file with {{document}} and {{question}}",
            )
        text = path.read_text("utf-8").rstrip("\n")
    doc, question = text.find("{document}"), text.find("{question}")
    if doc < 0 or question < 0 or question < doc:
        raise UsageError(
            f"template {name_or_path!r} must contain {{document}} followed later by {{question}}",
            hint="the document comes first so that it can be read once and reused across questions",
        )
    return text


def default_system_prompt() -> str:
    return packaged_text("system")


@dataclass(frozen=True)
class Turn:
    """One question and, once given, its answer."""

    question: str
    answer: str | None = None


@dataclass(frozen=True)
class PromptTokens:
    """Token ids of a prompt, split where the document ends."""

    prefix: tuple[int, ...]
    rest: tuple[int, ...]

    @property
    def ids(self) -> list[int]:
        return [*self.prefix, *self.rest]

    def __len__(self) -> int:
        return len(self.prefix) + len(self.rest)


class PromptBuilder:
    """Turns a document and a conversation into token ids for one tokenizer."""

    def __init__(
        self, tokenizer: Any, template: str | None = None, system: str | None = None, chat: bool | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
        self.template_name = template or ("qa" if self.chat else "base")
        self.template = read_template(self.template_name)
        self.system = (default_system_prompt() if self.chat else None) if system is None else (system or None)
        self.bos = self._bos_id()

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def encode_document(self, text: str) -> list[int]:
        return self.encode(text)

    def frame(self, turns: Sequence[Turn]) -> tuple[list[int], list[int]]:
        """Token ids before and after the document, for this conversation (last answer None: generate)."""
        if not turns or turns[-1].answer is not None:
            raise ValueError("the last turn must be an unanswered question")
        text = self._render_chat(turns) if self.chat else self._render_plain(turns)
        before, after = text.split(DOC_MARK)
        head = [self.bos] if self.bos is not None else []
        return head + self.encode(before), self.encode(after)

    def build(self, document_ids: Sequence[int], turns: Sequence[Turn]) -> PromptTokens:
        before, after = self.frame(turns)
        return PromptTokens(tuple(before) + tuple(document_ids), tuple(after))

    def _first_user_message(self, question: str) -> str:
        return self.template.replace("{document}", DOC_MARK).replace("{question}", question)

    def _render_plain(self, turns: Sequence[Turn]) -> str:
        text = self._first_user_message(turns[0].question)
        for previous, turn in pairwise(turns):
            text += f" {(previous.answer or '').strip()}" + FOLLOW_UP.format(question=turn.question)
        return f"{self.system}\n\n{text}" if self.system else text

    def _messages(self, turns: Sequence[Turn], merge_system: bool) -> list[dict[str, str]]:
        first = self._first_user_message(turns[0].question)
        if self.system and merge_system:
            first = f"{self.system}\n\n{first}"
        messages = [{"role": "system", "content": self.system}] if self.system and not merge_system else []
        messages.append({"role": "user", "content": first})
        for previous, turn in pairwise(turns):
            messages.append({"role": "assistant", "content": (previous.answer or "").strip()})
            messages.append({"role": "user", "content": turn.question})
        return messages

    def _render_chat(self, turns: Sequence[Turn]) -> str:
        options = {"tokenize": False, "add_generation_prompt": True, "enable_thinking": False}
        try:
            text = self.tokenizer.apply_chat_template(self._messages(turns, merge_system=False), **options)
        except Exception:  # templates without a system role raise from inside jinja
            text = self.tokenizer.apply_chat_template(self._messages(turns, merge_system=True), **options)
        if text.count(DOC_MARK) != 1:
            raise UsageError(
                "the model's chat template does not keep the user's message intact",
                hint="use --template base for a plain prompt",
            )
        return text

    def _bos_id(self) -> int | None:
        """BOS for plain prompts when the tokenizer adds one by default (chat templates write their own)."""
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is None or self.chat:
            return None
        probe = self.tokenizer("a")["input_ids"]
        return bos if probe and probe[0] == bos else None
