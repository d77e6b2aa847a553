"""chunkqa.session: a document read once, prefix reuse, conversations, interrupts, exact answers."""

from __future__ import annotations

import pytest
import torch
from tiny_models import load_with_method

from chunkqa.engine.results import GenerationConfig
from chunkqa.prompt import PromptBuilder
from chunkqa.session import Session, common_prefix, trim_cache

DOC = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 12
GREEDY = GenerationConfig.greedy(8)


@pytest.fixture(scope="module")
def loaded(cli_models):
    return load_with_method(cli_models["qwen2"])


def new_session(loaded, piece: int = 64) -> Session:
    builder = PromptBuilder(loaded.tokenizer)
    return Session(loaded, builder, builder.encode_document(DOC), piece=piece)


def tokens_of(session: Session, question: str, history: bool = False) -> list[int]:
    return [
        s.token for s in session.ask(question, GREEDY, history=history) if s.stats is None and s.token >= 0
    ]


def test_helpers():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0 and common_prefix([1, 2], [1, 2]) == 2


def test_document_is_read_once_and_answers_are_exact(loaded):
    session = new_session(loaded)
    first = tokens_of(session, "What is the main result?")
    stats1 = session.last_stats
    second = tokens_of(session, "Who wrote it?")
    stats2 = session.last_stats
    prefix = len(session.prompt("Who wrote it?", history=False).prefix)
    assert stats1.reused_tokens == 0 and stats1.prefill_tokens > 500  # the document, several DCA chunks long
    assert stats2.reused_tokens >= prefix and stats2.prefill_tokens < 30
    assert tokens_of(new_session(loaded), "Who wrote it?") == second  # same tokens as a fresh session
    assert stats1.context_tokens == len(session.prompt("What is the main result?", False)) + len(first)


def test_conversation_history_and_clear(loaded):
    session = new_session(loaded)
    tokens_of(session, "first?", history=True)
    assert len(session.turns) == 1
    with_history = session.prompt("second?", history=True)
    assert len(with_history) > len(session.prompt("second?", history=False))
    follow_up = tokens_of(session, "second?", history=True)
    assert session.last_stats.reused_tokens > len(with_history.prefix)  # earlier turn reused too
    session.clear()
    after_clear = tokens_of(session, "second?", history=True)
    assert session.last_stats.reused_tokens >= len(with_history.prefix)  # rolled back to the document
    assert after_clear == tokens_of(new_session(loaded), "second?", history=True)
    assert isinstance(follow_up, list)


def test_interrupted_prefill_leaves_a_consistent_cache(loaded):
    session = new_session(loaded, piece=50)
    calls = []

    def interrupt(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(session.ask("What?", GREEDY, on_progress=interrupt))
    assert len(session.cache_ids) == 150
    assert all(layer.get_seq_length() == 150 for layer in session.cache.layers)
    again = tokens_of(session, "What?")
    assert session.last_stats.reused_tokens == 150
    assert again == tokens_of(new_session(loaded), "What?")


def test_answer_matches_a_plain_full_forward(loaded):
    """Greedy tokens equal an independent loop of full forwards at the pinned logit scale."""
    session = new_session(loaded)
    prompt = session.prompt("What?", history=False)
    got = tokens_of(session, "What?")
    ids = list(prompt.ids)
    expected = []
    with torch.no_grad(), loaded.handle.prompt_length(len(prompt.prefix)):
        for _ in range(len(got)):
            token = int(loaded.model(torch.tensor([ids + expected])).logits[0, -1].argmax())
            expected.append(token)
            if token in session.stop_ids:
                break
    assert got == expected[: len(got)]


def test_reset_and_trim(loaded):
    session = new_session(loaded)
    tokens_of(session, "What?")
    trim_cache(session.cache, 10)
    assert session.cache.get_seq_length() == 10
    session.reset()
    assert session.cache.get_seq_length() == 0 and session.cache_ids == []
    tokens_of(session, "What?")
    assert session.last_stats.reused_tokens == 0


def test_graph_decoder_steps_in_a_session_give_the_same_answers(loaded, monkeypatch):
    """The CUDA-graph decoder's fixed-shape step (run eagerly off CUDA) inside a Session: the same
    tokens as ordinary decoding, through follow-ups, an abandoned answer and a rollback."""
    from chunkqa.engine import cuda_graphs as graphs

    plain = new_session(loaded)
    monkeypatch.setattr(graphs, "graphs_wanted", lambda loaded: True)
    stepped = new_session(loaded)
    assert plain.decoder is None and stepped.decoder is not None and not stepped.decoder.capture
    calls = []
    step = stepped.decoder.step
    stepped.decoder.step = lambda token: calls.append(token) or step(token)
    for history in (False, True, True):
        assert tokens_of(stepped, "Who wrote it?", history) == tokens_of(plain, "Who wrote it?", history)
    assert len(calls) == 3 * (GREEDY.max_new_tokens - 1)  # every token but each answer's last was stepped
    answer = stepped.ask("Where?", GREEDY)
    next(answer), next(answer)
    answer.close()  # abandoned after two tokens: the cache is trimmed to what was fed
    assert stepped.cache.get_seq_length() == len(stepped.cache_ids)
    stepped.clear(), plain.clear()
    assert tokens_of(stepped, "Why?", True) == tokens_of(plain, "Why?", True)
