"""The chat loop: read a message or a /command, dispatch it, stream answers, keep a transcript.

No terminal here: lines come from a `read_line(prompt)` callable (EOFError on Ctrl-D,
KeyboardInterrupt on Ctrl-C) and everything shown goes through a Console (answers on stdout, the
rest on stderr), so tests drive the loop with a list of lines. The model side is an engine with the
methods of `chunkqa.chat.ChatEngine`; what /show prints is built by chunkqa.cli.report.

Ctrl-C while an answer is produced stops it; what was said is kept, in the transcript and in the
conversation, and the prompt comes back. Ctrl-C at the prompt drops the line being typed (or an
unfinished \"\"\" block) and shows a fresh prompt, as a shell does. Ctrl-D, /bye, /exit, /quit and a
bare `exit` or `quit` end the chat with exit code 0.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chunkqa.cli.common import SETTING_NAME
from chunkqa.cli.console import Console, stats_line
from chunkqa.cli.report import chat_lines
from chunkqa.engine.results import GenerationConfig
from chunkqa.errors import ChunkqaError, UsageError

PROMPT = ">>> "
CONTINUATION = "... "
FENCE = '"""'
COMMANDS = ("/help", "/bye", "/exit", "/quit", "/clear", "/reset", "/doc", "/show", "/stats", "/set", "/save")
HELP = """\
/help, /?              this help
/bye, /exit, /quit     leave (also `exit` or Ctrl-D)
/clear                 forget the conversation, keep the document
/reset                 re-read the document and compute it again
/doc PATH              chat about another document
/show                  model, document, DCA settings, context used
/stats                 what the last answer cost, and totals
/set temperature 0.2   also: max_tokens 512, top_p 0.9, repeat_penalty 1.1, no_repeat_ngram 10,
                       seed 7 (or none), system TEXT
/save FILE             write the transcript as Markdown
\"\"\"                    begin and end a message of several lines
Ctrl-C stops an answer (what was said is kept); at the prompt it drops the line."""
SETTINGS = {
    "temperature": ("temperature", float),
    "max_tokens": ("max_new_tokens", int),
    "max_new_tokens": ("max_new_tokens", int),
    "top_p": ("top_p", float),
    "repeat_penalty": ("repeat_penalty", float),
    "no_repeat_ngram": ("no_repeat_ngram", int),
    "seed": ("seed", int),
}
CHAT_NAMES = {"max_new_tokens": "max_tokens"}  # a setting as /set names it


def as_chat_words(text: str | None) -> str | None:
    """The library's setting names (`top_p`) as a chat user types them after /set (top_p)."""
    if text is None:
        return None
    return SETTING_NAME.sub(lambda m: CHAT_NAMES.get(m.group(1), m.group(1)), text)


SET_USAGE = (
    "usage: /set temperature T | max_tokens N | top_p P | repeat_penalty R | no_repeat_ngram N | "
    "seed N|none | system TEXT"
)
Reader = Callable[[str], str]


@dataclass(frozen=True)
class Message:
    text: str
    literal: bool = False  # typed inside \"\"\": never a command


@dataclass(frozen=True)
class Command:
    name: str
    arg: str = ""


def parse_command(text: str) -> Command | None:
    """A /command (or bare exit/quit), else None: the text is a question."""
    stripped = text.strip()
    if stripped in ("exit", "quit"):
        return Command("bye")
    if not stripped.startswith("/"):
        return None
    name, _, arg = stripped[1:].partition(" ")
    return Command(name.lower(), arg.strip())


def read_message(read_line: Reader) -> Message:
    """One line, or everything from a line starting with \"\"\" to the next line ending with it."""
    line = read_line(PROMPT)
    if not line.lstrip().startswith(FENCE):
        return Message(line)
    body = line.lstrip()[len(FENCE) :]
    if len(body.rstrip()) >= len(FENCE) and body.rstrip().endswith(FENCE):  # \"\"\"one line\"\"\"
        return Message(body.rstrip()[: -len(FENCE)].strip(), literal=True)
    lines = [body]
    while True:
        line = read_line(CONTINUATION)
        if line.rstrip().endswith(FENCE):
            lines.append(line.rstrip()[: -len(FENCE)])
            return Message("\n".join(lines).strip("\n"), literal=True)
        lines.append(line)


@dataclass
class Transcript:
    """What was said, for /save: questions, answers (marked when interrupted) and notes."""

    entries: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)

    def add(self, kind: str, text: str) -> None:
        self.entries.append((kind, text))

    def markdown(self, about: list[str]) -> str:
        when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
        parts = ["# chunkqa chat", "", *[f"- {line}" for line in about], f"- saved {when}", ""]
        for kind, text in self.entries:
            if kind == "question":
                parts += ["## Question", "", text, ""]
            elif kind == "answer":
                parts += ["## Answer", "", text or "*(no answer)*", ""]
            else:
                parts += [f"*{text}*", ""]
        return "\n".join(parts)


class Repl:
    """The loop; `run()` returns the exit code."""

    def __init__(
        self,
        engine: Any,
        console: Console,
        read_line: Reader,
        config: GenerationConfig,
        describe: Callable[[Any], list[str]] = chat_lines,
    ) -> None:
        self.engine = engine
        self.describe = describe  # the engine's state() as lines (/show, /doc, /save)
        self.console = console
        self.read_line = read_line
        self.config = config
        self.transcript = Transcript()
        self.totals = {"answers": 0, "reused": 0, "computed": 0, "generated": 0}
        self._hinted = False
        self._handlers = {
            "help": self.help, "?": self.help, "bye": None, "exit": None, "quit": None,
            "clear": self.clear, "reset": self.reset, "doc": self.doc, "show": self.show,
            "stats": self.stats, "set": self.set, "save": self.save,
        }  # fmt: skip

    def run(self) -> int:
        while True:
            try:
                message = read_message(self.read_line)
            except EOFError:
                return 0
            except KeyboardInterrupt:
                self._interrupted_at_prompt()
                continue
            command = None if message.literal else parse_command(message.text)
            if command is None:
                if message.text.strip():
                    self.ask(message.text.strip())
                continue
            if command.name in self._handlers and self._handlers[command.name] is None:
                return 0
            self.dispatch(command)

    def dispatch(self, command: Command) -> None:
        handler = self._handlers.get(command.name)
        if handler is None:
            self.console.info(f"Unknown command /{command.name}: type /? for help.")
            return
        try:
            handler(command.arg)
        except ChunkqaError as exc:
            self.console.error(as_chat_words(exc.message), as_chat_words(exc.hint))
        self._report_cache()

    # -- answers -----------------------------------------------------------------------------------
    def ask(self, question: str) -> None:
        """Stream the answer to stdout, then the stats line; Ctrl-C stops it and keeps what was said."""
        before = self.engine.last_stats
        try:
            text, interrupted = self._stream(question)
        except ChunkqaError as exc:  # e.g. the conversation no longer fits: nothing was computed
            self.console.error(as_chat_words(exc.message), as_chat_words(exc.hint))
            return
        self.transcript.add("question", question)
        self.transcript.add("answer", text + ("\n\n*(interrupted)*" if interrupted else ""))
        if interrupted:
            self.console.info("(interrupted)")
        self._report_cache()
        stats = self.engine.last_stats
        if stats is not None and stats is not before:
            self._count(stats)
            self.console.info(stats_line(stats, show_reuse=True))

    def _stream(self, question: str) -> tuple[str, bool]:
        text, steps = "", None
        try:
            with self.console.progress("reading", 0) as update:
                steps = self.engine.ask(question, self.config, update)
                step = next(steps)  # the prefill
            while step.stats is None:
                text += step.text
                self.console.answer_piece(step.text)
                step = next(steps)
        except KeyboardInterrupt:
            return text, True
        finally:
            if steps is not None:
                steps.close()  # the session's cleanup runs now, not at garbage collection
            if text:
                self.console.end_answer()
        return text, False

    def _count(self, stats: Any) -> None:
        self.totals["answers"] += 1
        self.totals["reused"] += stats.reused_tokens
        self.totals["computed"] += stats.prefill_tokens
        self.totals["generated"] += stats.generated_tokens

    def _interrupted_at_prompt(self) -> None:
        if not self._hinted:
            self.console.info("(Ctrl-D or /bye to leave)")
            self._hinted = True

    def _report_cache(self) -> None:
        for event in self.engine.cache_events():
            if event.kind in ("corrupt", "failed"):
                self.console.warn(event.message)
            else:
                self.console.info(event.message)

    # -- commands ----------------------------------------------------------------------------------
    def help(self, _: str) -> None:
        for line in HELP.splitlines():
            self.console.info(line)

    def clear(self, _: str) -> None:
        self.engine.clear()
        self.transcript.add("note", "conversation cleared")
        self.console.info("Conversation cleared; the document stays loaded.")

    def reset(self, _: str) -> None:
        self.engine.reset()
        self.transcript.add("note", "document reloaded")
        self.console.info("Document re-read; it is computed again with the next question.")

    def doc(self, arg: str) -> None:
        if not arg:
            raise UsageError("usage: /doc PATH")
        self.engine.switch(str(Path(arg).expanduser()))
        self.transcript.add("note", f"switched to {arg}")
        for line in self.describe(self.engine.state())[1:2]:
            self.console.info(line)

    def show(self, _: str) -> None:
        for line in self.describe(self.engine.state()):
            self.console.info(line)
        c = self.config.resolved(self.engine.generation_defaults)
        seed = "none" if c.seed is None else c.seed
        self.console.info(
            f"temperature {c.temperature} · max_tokens {c.max_new_tokens} · top_p {c.top_p} · "
            f"repeat_penalty {c.repeat_penalty} · no_repeat_ngram {c.no_repeat_ngram} · seed {seed}"
        )

    def stats(self, _: str) -> None:
        stats = self.engine.last_stats
        self.console.info(stats_line(stats, show_reuse=True) if stats else "No answer yet.")
        t = self.totals
        self.console.info(
            f"{t['answers']} answers · {t['reused']:,} prompt tokens reused · {t['computed']:,} computed · "
            f"{t['generated']:,} generated · {self.engine.context_used:,} tokens in the cache now"
        )

    def set(self, arg: str) -> None:
        name, _, value = arg.partition(" ")
        name, value = name.lower(), value.strip()
        if name == "system":
            self.engine.set_system(value)
            done = "set" if value else "removed"
            self.console.info(f"System prompt {done}; the conversation starts over.")
            return
        if name not in SETTINGS or not value:
            raise UsageError(SET_USAGE)
        key, kind = SETTINGS[name]
        try:
            parsed = None if key == "seed" and value.lower() == "none" else kind(value)
        except ValueError:
            raise UsageError(f"{name} takes a number, got {value!r}", hint=SET_USAGE) from None
        self.config = replace(self.config, **{key: parsed})  # GenerationConfig checks the range
        self.console.info(f"{name} = {parsed}")

    def save(self, arg: str) -> None:
        if not arg:
            raise UsageError("usage: /save FILE")
        path = Path(arg).expanduser()
        try:
            path.write_text(
                self.transcript.markdown(self.describe(self.engine.state())[:2]), encoding="utf-8"
            )
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        self.console.info(f"Transcript saved to {path}")
