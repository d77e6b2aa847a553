"""chunkqa on a real pretrained model: GGUF loading, factual answers, DCA past the window, perplexity.

SmolLM2-135M-Instruct has an 8,192-token window. Documents are excerpts of the shared Gutenberg
*train* books (character offsets below); every question's answer is stated in its excerpt, and the
model does not give it without the excerpt (checked when these were chosen: docs/evaluation.md).
"""

from __future__ import annotations

import math

import pytest
import torch

import chunkqa
from chunkqa.documents import document_from_bytes

# (book, start, end, question, expected, a wrong answer the model gives without the text)
FACTS = [
    (215, 502, 6538, "What was the name of Buck's father?", "Elmo", None),
    (521, 0, 3797, "In what year was the narrator born?", "1632", "1990"),
    (944, 2324, 7784, "Who was in command of the Beagle?", "Fitz Roy", "Robert Ball"),
    (86, 7407, 12433, "What was the stranger's father's trade?", "blacksmith", None),
    (
        205,
        0,
        3118,
        "How long did the author live in the house by Walden Pond?",
        "two years and two months",
        None,
    ),
]
GREEDY_SHORT = chunkqa.GenerationConfig(max_new_tokens=24)  # chunkqa's defaults, short answers


def excerpt(books, book: int, start: int, end: int) -> chunkqa.Document:
    text = (books / f"{book}.txt").read_text("utf-8")[start:end]
    return document_from_bytes(text.encode("utf-8"), source=f"{book}.txt", name=f"{book}.txt")


def ask(model_dir, document, question: str, **request) -> str:
    session = chunkqa.open_document_session(
        document, [question], model=chunkqa.ModelSpec(str(model_dir)), generation=GREEDY_SHORT, **request
    )
    answer, _ = session.answer(question, GREEDY_SHORT)
    return answer


def test_the_gguf_file_gives_the_logits_of_the_saved_directory(smollm2):
    from chunkqa.engine.loading import ModelSpec, load_model, resolve_model

    saved = load_model(resolve_model(ModelSpec(str(smollm2.directory), device="cpu")))
    ids = torch.arange(100, 300).reshape(1, -1)
    with torch.inference_mode():
        torch.testing.assert_close(saved.model(ids).logits, smollm2.gguf.model(ids).logits, rtol=0, atol=1e-6)
    assert smollm2.gguf.config.max_position_embeddings == 8192  # P: the GGUF file's context length
    assert smollm2.gguf.tokenizer.chat_template and saved.tokenizer.chat_template


@pytest.mark.parametrize(("book", "start", "end", "question", "expected", "wrong"), FACTS)
def test_factual_questions_about_short_documents(smollm2, books, book, start, end, question, expected, wrong):
    answer = ask(smollm2.directory, excerpt(books, book, start, end), question)
    assert expected in answer, answer
    assert wrong is None or wrong not in answer
    assert answer == answer.lstrip()  # no leading white space


def test_dca_finds_a_fact_in_a_document_longer_than_the_window(smollm2, books):
    """About 14,000 tokens (1.7x the window), the answer (said once in the book) at 30 % depth."""
    document = excerpt(books, 23, 10956, 68531)
    plan = chunkqa.make_plan(
        chunkqa.Request(documents=[document], model=chunkqa.ModelSpec(str(smollm2.directory))), ["?"]
    )
    assert 1.5 < plan.extension < 2.0 and plan.method is not None
    answer = ask(smollm2.directory, document, "What was the name of the narrator's mother?")
    assert "Harriet Bailey" in answer, answer


def token_nll(model, ids, piece: int) -> torch.Tensor:
    """NLL [L - 1] of each id given its prefix, fed in pieces through a KV cache."""
    from transformers import DynamicCache

    from chunkqa.engine.forward import cache_kwargs

    ids_t = torch.tensor([ids])
    cache, out = DynamicCache(config=model.config), []
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, piece):
            logits = model(input_ids=ids_t[:, start : start + piece], **cache_kwargs(model, cache)).logits[0]
            targets = ids_t[0, start + 1 : start + 1 + logits.shape[0]]
            out.append(torch.nn.functional.cross_entropy(logits[: len(targets)], targets, reduction="none"))
    return torch.cat(out).double()


def test_perplexity_with_dca_at_twice_the_window_stays_near_one_window(smollm2, books):
    """A validation book at 1x (8,192 tokens) and 2x: DCA within 15 % of 1x, plain RoPE far off.

    The plain pass over 2x also gives 1x: its first 8,191 predictions see exactly what a 1x window sees.
    """
    loaded = chunkqa.load(str(smollm2.directory), method="none")
    text = (books / "1342.txt").read_text("utf-8")[100_000:]
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"][: 2 * 8192]
    plain = token_nll(loaded.model, ids, 2048)
    handle = chunkqa.apply_dca(loaded.model)
    with handle.prompt_length(len(ids)):
        dca = token_nll(loaded.model, ids, 2048)
    handle.remove()
    one, plain_two, dca_two = (math.exp(float(x.mean())) for x in (plain[:8191], plain, dca))
    assert dca_two < 1.15 * one, (one, dca_two)
    assert plain_two > 1.5 * one and plain_two > 1.3 * dca_two, (one, plain_two, dca_two)
