"""chunkqa.cli.repl and chunkqa.chat: the chat loop without a terminal, and the engine on a tiny model."""

from __future__ import annotations

import io

import pytest
from tiny_models import load_with_method

from chunkqa.chat import ChatEngine, plan_chat
from chunkqa.cli.console import Console
from chunkqa.cli.repl import Command, Message, Repl, parse_command, read_message
from chunkqa.cli.report import chat_lines
from chunkqa.documents import load_document
from chunkqa.engine.loading import ModelSpec
from chunkqa.engine.results import GenerationConfig, Stats, Step
from chunkqa.errors import DocumentNotFound, DoesNotFitError
from chunkqa.methods.spec import MethodSpec
from chunkqa.plan import Request

GREEDY = GenerationConfig.greedy(12)
DOC = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 12


# ---- a scripted terminal and a fake engine -----------------------------------------------------------
def reader(*items):
    """read_line that returns the given lines, raising the given exceptions, then EOFError (Ctrl-D)."""
    queue = list(items)
    prompts = []

    def read_line(prompt: str) -> str:
        prompts.append(prompt)
        if not queue:
            raise EOFError
        item = queue.pop(0)
        if isinstance(item, type) and issubclass(item, BaseException):
            raise item
        return item

    read_line.prompts = prompts
    read_line.left = queue
    return read_line


class FakeEngine:
    """Answers 'Hello, world' in three pieces; 'interrupt me' raises Ctrl-C before the third."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.closed: list[str] = []
        self.last_stats = None
        self.context_used = 0
        self.generation_defaults = {}

    def ask(self, question, config, on_progress=None):
        self.calls.append(("ask", question, config))
        if question == "too long":
            raise DoesNotFitError("the conversation needs 99 tokens, over the limit of 50", hint="/clear")
        return self._steps(question)

    def _steps(self, question):
        reason = "eos"
        try:
            for i, piece in enumerate(["Hello", ", ", "world"]):
                if question == "interrupt me" and i == 2:
                    raise KeyboardInterrupt
                yield Step(i, piece)
        except GeneratorExit:
            self.closed.append(question)
            reason = "interrupted"
            raise
        except KeyboardInterrupt:
            reason = "interrupted"
            raise
        finally:
            self.last_stats = Stats(40, 30, 10, 0.01, 3, 0.02, 0.01, reason)
        yield Step(-1, "", self.last_stats)

    def state(self):  # shown as it is: make_repl describes a state by itself
        return ["model tiny (llama, float32, cpu)", "document doc.txt (100 chars) · 20 tokens", "DCA on"]

    def cache_events(self, wait=False):
        return []

    def __getattr__(self, name):  # clear, reset, switch, set_system: recorded
        return lambda *args: self.calls.append((name, *args))


def make_repl(*lines, engine=None, stdout=None):
    out, err = stdout or io.StringIO(), io.StringIO()
    console = Console("never", stdout=out, stderr=err)
    repl = Repl(
        engine or FakeEngine(), console, reader(*lines), GenerationConfig(max_new_tokens=5), lambda s: s
    )
    return repl, out, err


# ---- parsing ----------------------------------------------------------------------------------------
def test_parse_command():
    assert parse_command("/help") == Command("help")
    assert parse_command("  /SET temperature 0.2 ") == Command("set", "temperature 0.2")
    assert parse_command("exit") == parse_command("quit") == Command("bye")
    assert parse_command("What is the result?") is None
    assert parse_command("/") == Command("")


def test_read_message_single_and_multiline():
    assert read_message(reader("plain question")) == Message("plain question")
    assert read_message(reader('"""one line"""')) == Message("one line", literal=True)
    lines = reader('"""', "first", "/clear is text here", 'last"""')
    assert read_message(lines) == Message("first\n/clear is text here\nlast", literal=True)
    assert lines.prompts == [">>> ", "... ", "... ", "... "]
    assert read_message(reader('"""start', 'end"""')) == Message("start\nend", literal=True)


# ---- the loop -----------------------------------------------------------------------------------------
def test_answers_go_to_stdout_and_stats_to_stderr():
    repl, out, err = make_repl("What is it?")
    assert repl.run() == 0
    assert out.getvalue() == "Hello, world\n"
    assert "40 context tokens · 30 reused from cache, 10 computed" in err.getvalue()
    assert repl.engine.calls == [("ask", "What is it?", GenerationConfig(max_new_tokens=5))]


def test_commands_dispatch_and_settings(tmp_path):
    lines = [
        "/help", "/?", "/set temperature 0.2", "/set max_tokens 7", "/set seed 3", "/show",
        "/set top_p 2", "/set bogus 1", "/set temperature warm", "/set system Be brief.", "/set system",
        "/stats", "/foo", "/clear", "/reset", "/doc other.txt", "/doc", "/save", "exit", "never read",
    ]  # fmt: skip
    repl, out, err = make_repl(*lines)
    assert repl.run() == 0
    assert repl.read_line.left == ["never read"]
    assert (repl.config.temperature, repl.config.max_new_tokens, repl.config.seed) == (0.2, 7, 3)
    assert repl.config.top_p is None  # 2 was refused: still the model default
    names = [call[0] for call in repl.engine.calls]
    assert names == ["set_system", "set_system", "clear", "reset", "switch"]
    assert repl.engine.calls[0] == ("set_system", "Be brief.") and repl.engine.calls[1] == ("set_system", "")
    text = err.getvalue()
    assert text.count("/set temperature 0.2   also: max_tokens 512") == 2  # /help and /?
    assert "document doc.txt" in text and "temperature 0.2 · max_tokens 7" in text
    assert "Error: top_p must be in (0, 1], got 2.0" in text
    assert "Error: usage: /set temperature T" in text and "Error: temperature takes a number" in text
    assert "Unknown command /foo: type /? for help." in text and "No answer yet." in text
    assert "Error: usage: /doc PATH" in text and "Error: usage: /save FILE" in text
    assert out.getvalue() == ""  # nothing but answers on stdout


@pytest.mark.parametrize("word", ["/bye", "/exit", "/quit", "exit", "quit"])
def test_every_exit_word_ends_with_code_0(word):
    repl, _, _ = make_repl(word, "never read")
    assert repl.run() == 0 and repl.read_line.left == ["never read"]


def test_ctrl_c_at_the_prompt_drops_the_line_and_ctrl_d_leaves():
    repl, out, err = make_repl(KeyboardInterrupt, '"""', "half a block", KeyboardInterrupt, "Q?", EOFError)
    assert repl.run() == 0
    assert err.getvalue().count("(Ctrl-D or /bye to leave)") == 1  # the hint is shown once
    assert [c[1] for c in repl.engine.calls] == ["Q?"]  # the unfinished block was dropped
    assert out.getvalue() == "Hello, world\n"


def test_ctrl_c_during_an_answer_keeps_what_was_said(tmp_path):
    repl, out, err = make_repl("interrupt me", "next?", f"/save {tmp_path / 'chat.md'}")
    assert repl.run() == 0
    assert out.getvalue() == "Hello, \nHello, world\n"
    assert "(interrupted)" in err.getvalue() and "interrupted" not in out.getvalue()
    markdown = (tmp_path / "chat.md").read_text()
    assert "## Question\n\ninterrupt me\n\n## Answer\n\nHello, \n\n*(interrupted)*" in markdown
    assert "## Question\n\nnext?\n\n## Answer\n\nHello, world" in markdown
    assert markdown.startswith("# chunkqa chat\n\n- model tiny")


class _InterruptingOut(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.armed = True

    def write(self, text: str) -> int:
        if self.armed and text == ", ":
            self.armed = False
            raise KeyboardInterrupt
        return super().write(text)


def test_ctrl_c_while_printing_closes_the_answer_at_once():
    repl, out, err = make_repl("first?", "second?", stdout=_InterruptingOut())
    assert repl.run() == 0
    assert repl.engine.closed == ["first?"]  # the session's cleanup ran before the next question
    assert out.getvalue() == "Hello\nHello, world\n" and "(interrupted)" in err.getvalue()


def test_multiline_text_is_never_a_command():
    repl, _, _ = make_repl('"""', "/clear", '"""')
    repl.run()
    assert repl.engine.calls[0][:2] == ("ask", "/clear")


def test_an_answer_that_does_not_fit_is_an_error_line(tmp_path):
    repl, out, err = make_repl("too long", f"/save {tmp_path / 't.md'}", "/clear")
    assert repl.run() == 0
    assert "Error: the conversation needs 99 tokens" in err.getvalue() and "Hint: /clear" in err.getvalue()
    assert "too long" not in (tmp_path / "t.md").read_text() and out.getvalue() == ""
    assert "*conversation cleared*" not in (tmp_path / "t.md").read_text()


# ---- the engine, on a tiny model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded(cli_models):
    return load_with_method(cli_models["qwen2"])


def engine_for(loaded, path, max_context=None) -> ChatEngine:
    request = Request(
        [load_document(path)], ModelSpec(loaded.source.path), MethodSpec(), GREEDY, max_context=max_context
    )
    plan = plan_chat(request)
    engine = ChatEngine(request, loaded)
    engine.use(plan)
    return engine


def ask(engine, question: str) -> list[int]:
    return [s.token for s in engine.ask(question, GREEDY) if s.stats is None]


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text(DOC)
    return path


def test_clear_rolls_back_to_the_document_without_recomputing_it(loaded, doc):
    engine = engine_for(loaded, doc)
    ask(engine, "What is the main result?")
    ask(engine, "And then?")
    prefix = len(engine.session.prompt("And then?", history=False).prefix)
    assert engine.last_stats.reused_tokens > prefix  # the earlier turn is reused too
    engine.clear()
    after_clear = ask(engine, "And then?")
    assert engine.last_stats.reused_tokens >= prefix and engine.last_stats.prefill_tokens < 30
    assert after_clear == ask(engine_for(loaded, doc), "And then?")  # token-identical to a fresh chat


def test_reset_rereads_the_file_and_recomputes(loaded, doc):
    engine = engine_for(loaded, doc)
    ask(engine, "What?")
    doc.write_text(DOC.replace("wisdom", "foolishness"))
    engine.reset()
    assert "foolishness" in engine.plan.documents[0].text and engine.session.turns == []
    fresh = ask(engine, "What?")
    assert engine.last_stats.reused_tokens == 0
    assert fresh == ask(engine_for(loaded, doc), "What?")


def test_switch_and_system_prompt(loaded, doc, tmp_path):
    engine = engine_for(loaded, doc)
    other = tmp_path / "other.txt"
    other.write_text("The pass key is 12345. Remember it. " * 20)
    engine.switch(str(other))
    assert "other.txt" in chat_lines(engine.state())[1]
    with pytest.raises(DocumentNotFound):
        engine.switch(str(tmp_path / "missing.txt"))
    assert engine.plan.documents[0].name == "other.txt"  # unchanged by the failed switch
    engine.set_system("Answer in one word.")
    assert engine.session.builder.system == "Answer in one word."
    assert any("Answer in one word." in line for line in chat_lines(engine.state()))


def test_stopping_while_reading_the_answer_keeps_the_cache_consistent(loaded, doc):
    engine = engine_for(loaded, doc)
    steps = engine.ask("What is the main result?", GREEDY)
    said = "".join(next(steps).text for _ in range(4))
    steps.close()  # what the REPL does after Ctrl-C in the printing code
    assert engine.last_stats.stop_reason == "interrupted" and engine.last_stats.generated_tokens == 4
    assert engine.session.turns[-1].answer == said
    assert all(layer.get_seq_length() == engine.context_used for layer in engine.session.cache.layers)
    engine.clear()
    assert ask(engine, "Who?") == ask(engine_for(loaded, doc), "Who?")


def test_a_conversation_past_the_limit_is_refused(loaded, doc):
    limit = plan_chat(
        Request([load_document(doc)], ModelSpec(loaded.source.path), MethodSpec(), GREEDY)
    ).budget.total
    engine = engine_for(loaded, doc, max_context=limit)
    ask(engine, "What?")
    with pytest.raises(DoesNotFitError, match="over the limit"):
        engine.ask("And what about the second part of the document, in detail?", GREEDY)
    engine.clear()
    ask(engine, "What?")  # fits again once the turns are forgotten
