"""chunkqa.prompt: templates, plain and chat prompts, the document split, conversations."""

from __future__ import annotations

import pytest
from tiny_models import save_tokenizer
from transformers import AutoTokenizer

from chunkqa.errors import UsageError
from chunkqa.prompt import PromptBuilder, Turn, default_system_prompt, read_template

DOC = "It was the best of times, it was the worst of times."


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    save_tokenizer(root / "base", chat=False)
    save_tokenizer(root / "chat", chat=True)
    return AutoTokenizer.from_pretrained(root / "base"), AutoTokenizer.from_pretrained(root / "chat")


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_packaged_templates_hold_document_before_question():
    for name in ("qa", "summary", "base"):
        text = read_template(name)
        assert text.index("{document}") < text.index("{question}")
        assert not text.endswith("\n")
    assert read_template("base") == "{document}\n\nQuestion: {question}\nAnswer:"
    assert "page" in default_system_prompt()


def test_template_files_are_checked(tmp_path):
    good = tmp_path / "t.txt"
    good.write_text("Doc: {document}\nQ: {question}\n")
    assert read_template(str(good)) == "Doc: {document}\nQ: {question}"
    bad = tmp_path / "bad.txt"
    bad.write_text("{question} then {document}")
    with pytest.raises(UsageError, match="followed later by"):
        read_template(str(bad))
    with pytest.raises(UsageError, match="no template"):
        read_template("nonexistent-template")


def test_base_prompt_layout_is_bos_document_then_question(tokenizers):
    base, _ = tokenizers
    builder = PromptBuilder(base)
    assert not builder.chat and builder.template_name == "base" and builder.system is None
    prompt = builder.build(ids(base, DOC), [Turn("What is it?")])
    assert list(prompt.prefix) == [base.bos_token_id, *ids(base, DOC)]
    assert list(prompt.rest) == ids(base, "\n\nQuestion: What is it?\nAnswer:")
    assert len(prompt) == len(prompt.ids)


def test_prefix_is_the_same_for_every_question(tokenizers):
    for tok in tokenizers:
        builder = PromptBuilder(tok)
        doc = builder.encode_document(DOC)
        first = builder.build(doc, [Turn("first?")])
        second = builder.build(doc, [Turn("a different, longer second question?")])
        assert first.prefix == second.prefix and first.rest != second.rest


def test_chat_prompt_uses_the_chat_template(tokenizers):
    _, chat = tokenizers
    builder = PromptBuilder(chat, system="Be brief.")
    assert builder.chat and builder.template_name == "qa"
    prompt = builder.build(builder.encode_document(DOC), [Turn("Who?")])
    text = chat.decode(prompt.ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert DOC in text and text.index(DOC) < text.index("Question: Who?")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_default_system_prompt_for_chat_and_none_for_base(tokenizers):
    base, chat = tokenizers
    assert PromptBuilder(chat).system == default_system_prompt()
    assert PromptBuilder(chat, system="").system is None
    assert PromptBuilder(base, system="Context follows.").system == "Context follows."


def test_system_role_falls_back_into_the_user_message(tokenizers):
    chat = AutoTokenizer.from_pretrained(tokenizers[1].name_or_path)  # a copy: its template is replaced
    chat.chat_template = (
        "{% for m in messages %}"
        "{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    builder = PromptBuilder(chat, system="SYS")
    text = chat.decode(builder.build(builder.encode_document(DOC), [Turn("Q?")]).ids)
    assert text.startswith("[user] SYS\n\nRead the document")


def test_conversation_turns(tokenizers):
    base, chat = tokenizers
    turns = [Turn("first?", "  One.  "), Turn("second?")]
    plain = PromptBuilder(base)
    text = base.decode(plain.build(plain.encode_document(DOC), turns).ids, skip_special_tokens=True)
    assert text.endswith("Question: first?\nAnswer: One.\n\nQuestion: second?\nAnswer:")
    chatty = PromptBuilder(chat, system="")
    text = chat.decode(chatty.build(chatty.encode_document(DOC), turns).ids)
    assert "<|im_start|>assistant\nOne.<|im_end|>\n<|im_start|>user\nsecond?<|im_end|>" in text
    with pytest.raises(ValueError, match="unanswered"):
        plain.build([], [Turn("q", "a")])


def test_document_braces_are_left_alone(tokenizers):
    base, _ = tokenizers
    builder = PromptBuilder(base)
    doc = "a {question} b {document} c"
    prompt = builder.build(builder.encode_document(doc), [Turn("real?")])
    assert base.decode(prompt.ids, skip_special_tokens=True).startswith(doc)
