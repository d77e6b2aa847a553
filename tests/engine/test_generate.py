"""chunkqa.engine.generate: sampling, prefill in pieces, decoding, text streaming, stop ids."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from chunkqa import apply_dca
from chunkqa.engine.generate import AnswerText, decode_tokens, penalize, prefill, sample, stop_token_ids
from chunkqa.engine.results import REPEAT_PENALTY, GenerationConfig, Stats, model_generation_defaults
from chunkqa.errors import UsageError


@pytest.fixture(scope="module")
def llama(cli_models):
    model = AutoModelForCausalLM.from_pretrained(cli_models["llama"], dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(cli_models["llama"])


def test_greedy_and_nucleus_sampling():
    logits = torch.tensor([0.1, 3.0, 2.9, -5.0])
    assert sample(logits, 0.0, 1.0, None) == 1
    gen = torch.Generator().manual_seed(0)
    draws = {sample(logits, 1.0, 0.5, gen) for _ in range(50)}
    assert draws == {1}  # top_p=0.5 keeps only the most likely token (mass 0.52)
    draws = {sample(logits, 1.0, 0.99, gen) for _ in range(200)}
    assert draws == {0, 1, 2}  # -5.0 has mass < 1%: cut


def test_generation_config_validation():
    with pytest.raises(UsageError):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(UsageError):
        GenerationConfig(temperature=-1)
    with pytest.raises(UsageError):
        GenerationConfig(top_p=0)
    with pytest.raises(UsageError, match="repeat_penalty"):
        GenerationConfig(repeat_penalty=0)
    with pytest.raises(UsageError, match="stop"):
        GenerationConfig(stop=("",))


def test_unset_settings_come_from_the_model_then_chunkqa():
    plain = GenerationConfig().resolved()
    assert (plain.temperature, plain.top_p, plain.repeat_penalty) == (0.0, 1.0, REPEAT_PENALTY)
    model = {"temperature": 0.6, "top_p": 0.9, "repeat_penalty": 1.3}
    assert GenerationConfig().resolved(model).temperature == 0.6
    assert GenerationConfig(temperature=0.0, repeat_penalty=1.0).resolved(model).repeat_penalty == 1.0
    assert GenerationConfig.greedy(4).resolved(model).temperature == 0.0


def test_model_generation_defaults_count_sampling_only_when_the_model_samples():
    from transformers import GenerationConfig as HFConfig

    assert model_generation_defaults(HFConfig(do_sample=True, temperature=0.6, top_p=0.9)) == {
        "temperature": 0.6,
        "top_p": 0.9,
    }
    assert model_generation_defaults(HFConfig(temperature=0.6)) == {}  # greedy model: nothing to take
    assert model_generation_defaults(HFConfig(repetition_penalty=1.2)) == {"repeat_penalty": 1.2}
    assert model_generation_defaults(None) == {}


def test_penalty_follows_the_ctrl_rule():
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    out = penalize(logits, [0, 1, 1], 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0, 0.5] and logits.tolist() == [2.0, -2.0, 1.0, 0.5]
    assert penalize(logits, [0], 1.0) is logits and penalize(logits, [], 2.0) is logits


def test_a_penalty_breaks_a_greedy_loop():
    """A model that always prefers token 3 (then 4): with the penalty, the answer stops repeating 3."""

    class Loop:
        def forward(self, input_ids, past_key_values=None, **kwargs):
            logits = torch.tensor([[[0.0, 0.0, 0.0, 5.0, 4.0]]])
            return type("Out", (), {"logits": logits})()

        __call__ = forward

    start = torch.tensor([0.0, 0.0, 0.0, 5.0, 4.0])
    plain = GenerationConfig.greedy(4)
    assert list(decode_tokens(Loop(), None, start, plain, set())) == [3, 3, 3, 3]
    penalized = GenerationConfig(max_new_tokens=4, repeat_penalty=1.5, no_repeat_ngram=0).resolved()
    # 3 is penalized once seen (5 / 1.5 < 4): 4 comes; then both are seen, and 3 leads again
    assert list(decode_tokens(Loop(), None, start, penalized, set())) == [3, 4, 3, 3]


def test_prefill_in_pieces_gives_the_full_forward_logits(llama):
    model, _ = llama
    ids = torch.randint(5, 300, (1, 150), generator=torch.Generator().manual_seed(1))
    handle = apply_dca(model)
    with torch.no_grad(), handle.prompt_length(150):
        full = model(ids).logits[0, -1]
        logits = prefill(model, ids[0].tolist(), DynamicCache(config=model.config), piece=37)
    handle.remove()
    torch.testing.assert_close(logits, full, rtol=1e-5, atol=1e-5)


def test_decode_stops_at_stop_ids_and_length(llama):
    model, _ = llama
    ids = list(range(5, 60))
    cache = DynamicCache(config=model.config)
    logits = prefill(model, ids, cache, piece=64)
    greedy = list(decode_tokens(model, cache, logits, GenerationConfig.greedy(6), set()))
    assert len(greedy) == 6
    cache = DynamicCache(config=model.config)
    logits = prefill(model, ids, cache, piece=64)
    stopped = list(decode_tokens(model, cache, logits, GenerationConfig.greedy(6), {greedy[2]}))
    assert stopped == greedy[:3]
    assert cache.get_seq_length() == len(ids) + 2  # the stop token itself is never fed


def test_answer_text_holds_back_partial_characters(llama):
    _, tok = llama
    ids = tok("naïve café ✓", add_special_tokens=False)["input_ids"]
    stream = AnswerText(tok)
    pieces = [stream.add(i) for i in ids]
    assert "".join(pieces) == "naïve café ✓" == stream.text
    assert all("\ufffd" not in p for p in pieces)


class Chars:
    """A tokenizer whose token i is the i-th character of a fixed text."""

    def __init__(self, text: str) -> None:
        self.chars = text

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.chars[i] for i in ids)


def feed(text: str, stops=()) -> tuple[list[str], AnswerText]:
    answer = AnswerText(Chars(text), stops)
    pieces = []
    for i in range(len(text)):
        pieces.append(answer.add(i))
        if answer.stopped:
            break
    return pieces, answer


def test_answer_text_drops_leading_white_space():
    pieces, answer = feed("  \n The key is 42.")
    assert "".join(pieces) == "The key is 42." == answer.text and pieces[0] == ""


def test_answer_text_stops_at_a_stop_string_and_never_shows_it():
    pieces, answer = feed("Paris.\n\nQuestion: and Rome?", stops=("\n\nQuestion:",))
    assert answer.stopped and "".join(pieces) == "Paris." == answer.text
    assert all("\n" not in p for p in pieces)  # the start of the stop string was held back, then dropped


def test_answer_text_releases_a_held_back_tail_that_was_no_stop():
    pieces, answer = feed("a END b EN", stops=("ENDX",))
    assert not answer.stopped and "".join(pieces) == "a END b "  # "EN" could still become "ENDX"
    assert pieces[4] == "" and pieces[5] == "END "  # "END" was held back until " " ruled it out
    assert answer.flush() == "EN" and answer.flush() == ""  # no token follows: the tail is the answer's


def test_stop_ids_include_eos(llama):
    model, tok = llama
    assert tok.eos_token_id in stop_token_ids(model, tok)


def test_stats_rates():
    stats = Stats(100, 0, 100, 0.5, 11, 2.0, 0.5, "eos")
    assert stats.prefill_tps == 200 and stats.decode_tps == 5.0
    assert Stats(1, 0, 1, 0.0, 1, 0.0, 0.0, "eos").decode_tps == 0.0


def test_the_no_repeat_guard_stops_a_loop():
    """A model that loops on 3, 4, 3, 4, ...: a run of 3 answer tokens may not come twice."""

    class Loop:
        def __init__(self) -> None:
            self.fed: list[int] = []

        def forward(self, input_ids, past_key_values=None, **kwargs):
            self.fed.append(int(input_ids[0, -1]))
            nxt = 4 if self.fed[-1] == 3 else 3
            logits = torch.full((1, 1, 6), -1.0)
            logits[0, 0, nxt], logits[0, 0, 5] = 5.0, 1.0
            return type("Out", (), {"logits": logits})()

        __call__ = forward

    start = torch.tensor([-1.0, -1.0, -1.0, 5.0, -1.0, 1.0])
    looping = list(decode_tokens(Loop(), None, start, GenerationConfig.greedy(6), set()))
    assert looping == [3, 4, 3, 4, 3, 4]
    guarded = GenerationConfig(max_new_tokens=6, no_repeat_ngram=3).resolved()
    # 3, 4, 3, 4: then 3 would repeat "3 4 3"; 5 comes instead, and the loop is broken
    assert list(decode_tokens(Loop(), None, start, guarded, set())) == [3, 4, 3, 4, 5, 3]
    assert GenerationConfig().resolved().no_repeat_ngram == 10  # chunkqa's default guard
