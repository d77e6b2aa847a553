"""Texts for the evaluations: the validation books, the user's files, and BOS handling."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from chunkqa.errors import DocumentError, DocumentNotFound, UsageError
from chunkqa.evals.data import (
    VALIDATION_BOOKS,
    bos_ids,
    data_label,
    default_data_dir,
    encode,
    load_texts,
)


@pytest.fixture
def books(tmp_path, monkeypatch):
    for name in VALIDATION_BOOKS:
        (tmp_path / name).write_text(f"Text of {name}.")
    monkeypatch.setenv("CHUNKQA_EVAL_DATA", str(tmp_path))
    return tmp_path


def test_default_texts_are_the_five_validation_books_in_order(books):
    texts = load_texts(None)
    assert [t.name for t in texts] == ["1228.txt", "1342.txt", "2376.txt", "2554.txt", "20203.txt"]
    assert texts[1].text == "Text of 1342.txt."
    assert data_label(None) == "validation books"


def test_missing_books_say_how_to_pass_texts(books):
    (books / "2554.txt").unlink()
    with pytest.raises(UsageError, match=r"missing 2554\.txt") as info:
        load_texts([])
    assert "--data" in info.value.hint


def test_default_folder_is_beside_the_repository(monkeypatch):
    monkeypatch.delenv("CHUNKQA_EVAL_DATA", raising=False)
    assert default_data_dir().parts[-3:] == ("shared", "data", "gutenberg")


def test_user_files_are_read_like_documents(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Some text.\r\nMore.")
    (text,) = load_texts([str(path)])
    assert (text.name, text.text) == ("notes.txt", "Some text.\nMore.")
    assert data_label([str(path)]) == "notes.txt"
    with pytest.raises(DocumentNotFound):
        load_texts([str(tmp_path / "absent.txt")])
    (tmp_path / "blank.txt").write_text("  \n")
    with pytest.raises(DocumentError, match="only whitespace"):
        load_texts([str(tmp_path / "blank.txt")])


def test_bos_only_where_the_tokenizer_adds_one(cli_models):
    base = AutoTokenizer.from_pretrained(cli_models["llama"])
    chat = AutoTokenizer.from_pretrained(cli_models["qwen2"])
    assert bos_ids(base) == [base.bos_token_id] == [0]
    assert bos_ids(chat) == []
    assert encode(base, "") == []
    assert encode(base, "pass key")[0] != 0


def test_an_installed_chunkqa_reads_its_own_copies_of_the_books(monkeypatch, tmp_path):
    """No shared data beside the package and no CHUNKQA_EVAL_DATA: the gzipped books shipped with it."""
    from chunkqa.evals import data

    monkeypatch.delenv("CHUNKQA_EVAL_DATA", raising=False)
    books = data.validation_books(tmp_path / "nowhere")
    assert [b.name for b in books] == list(data.VALIDATION_BOOKS)
    assert "It is a truth universally acknowledged" in books[1].text  # 1342: Pride and Prejudice
    monkeypatch.setenv("CHUNKQA_EVAL_DATA", str(tmp_path / "typo"))
    with pytest.raises(UsageError, match="not in"):  # a folder named on purpose must hold them
        data.validation_books()
