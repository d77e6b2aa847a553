"""The one place that knows about terminals: colour policy, stderr messages, progress, stdout answers.

stdout carries only answers (or JSON); banners, progress, stats, warnings and errors go to stderr.
Rich is used only when stderr is a terminal (or --color always) and NO_COLOR is unset; piped output
is plain text. `Terminal` reads a chat's questions with line editing and history, keeping prompts off
stdout. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from chunkqa.errors import UsageError

COLOR_CHOICES = ("auto", "always", "never")


class Console:
    """Where and how chunkqa talks to the user."""

    def __init__(
        self,
        color: str = "auto",
        quiet: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.out = stdout or sys.stdout
        self.err = stderr or sys.stderr
        self.quiet = quiet
        tty = _isatty(self.err)
        no_color = "NO_COLOR" in os.environ and os.environ["NO_COLOR"] != ""
        self.rich = color == "always" or (color == "auto" and tty)
        self.color = self.rich and color != "never" and not (no_color and color != "always")
        self.interactive = tty
        self._rich_console = None

    @classmethod
    def silent(cls) -> Console:
        """A console that shows only errors and drops answers (for ranks other than 0)."""
        return cls("never", quiet=True, stdout=io.StringIO())

    # -- stderr ---------------------------------------------------------------------------------
    @property
    def rich_err(self) -> Any:
        if self._rich_console is None:
            from rich.console import Console as RichConsole

            self._rich_console = RichConsole(
                file=self.err,
                force_terminal=self.rich,
                no_color=not self.color,
                highlight=False,
                soft_wrap=True,
            )
        return self._rich_console

    def info(self, text: str, style: str | None = None) -> None:
        """A line on stderr (banner, stats); silent with --quiet."""
        if not self.quiet:
            self._line(text, style)

    def warn(self, text: str) -> None:
        if not self.quiet:
            self._line(f"Warning: {text}", "yellow")

    def error(self, message: str, hint: str | None = None) -> None:
        """`Error: …` and `Hint: …` on stderr, even with --quiet."""
        self._line(f"Error: {message}", "bold red")
        if hint:
            self._line(f"Hint: {hint}", "dim")

    def _line(self, text: str, style: str | None) -> None:
        if self.rich:
            self.rich_err.print(text, style=style if self.color else None, markup=False)
        else:
            self.err.write(text + "\n")
            self.err.flush()

    @contextmanager
    def progress(self, label: str, total: int) -> Iterator[Any]:
        """A progress bar with ETA on a terminal; a no-op elsewhere or with --quiet."""
        if self.quiet or not self.rich or not self.interactive:
            yield lambda done, total: None
            return
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.completed:,}/{task.total:,} tok"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.rich_err, transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda done, all_: bar.update(task, completed=done, total=all_)

    def can_confirm(self) -> bool:
        """Whether a yes/no question can be asked: stdin and stderr are terminals."""
        return _isatty(sys.stdin) and _isatty(self.err)

    def confirm(self, question: str) -> bool:
        """Ask on stderr, read the answer from stdin; only y or yes agrees (Ctrl-D: no)."""
        self.err.write(f"{question} [y/N] ")
        self.err.flush()
        answer = sys.stdin.readline()
        if not answer:
            self.err.write("\n")
        return answer.strip().lower() in ("y", "yes")

    # -- stdout ---------------------------------------------------------------------------------
    def answer_piece(self, text: str) -> None:
        """Stream part of an answer to stdout."""
        if text:
            self.out.write(text)
            self.out.flush()

    def end_answer(self) -> None:
        self.out.write("\n")
        self.out.flush()

    def json(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.out.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def human_seconds(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def stats_line(stats: Any, show_reuse: bool = False) -> str:
    """One line: context, prefill, decode, time to first token, peak memory per device."""
    parts = [f"{stats.context_tokens:,} context tokens"]
    if show_reuse or stats.reused_tokens:
        parts.append(f"{stats.reused_tokens:,} reused from cache, {stats.prefill_tokens:,} computed")
    parts.append(
        f"prefill {stats.prefill_tokens:,} tok in {human_seconds(stats.prefill_seconds)}"
        f" ({stats.prefill_tps:,.0f} tok/s)"
    )
    parts.append(f"decode {stats.generated_tokens} tok at {stats.decode_tps:.1f} tok/s")
    parts.append(f"TTFT {human_seconds(stats.ttft_seconds)}")
    parts.append(memory_text(stats.peak_memory))
    if stats.stop_reason == "length":
        parts.append("stopped at --max-new-tokens")
    return " · ".join(parts)


def memory_text(peaks: dict[str, dict[str, int]]) -> str:
    items = []
    for device, kinds in peaks.items():
        if "rss" in kinds:
            items.append(f"peak RSS {human_bytes(kinds['rss'])}")
        else:
            items.append(
                f"{device} peak {human_bytes(kinds['allocated'])} alloc / "
                f"{human_bytes(kinds['reserved'])} reserved"
            )
    return ", ".join(items)


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# -- the chat's terminal ----------------------------------------------------------------------------
def history_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "chunkqa" / "history"


class Terminal:
    """Where a chat reads questions: the user's terminal, with readline editing and saved history.

    stdin serves when it is a terminal; after a piped document (or with stdin from /dev/null) the
    controlling terminal, /dev/tty, is put onto fd 0. Prompts and the typing echo go to the terminal
    (stderr's, else /dev/tty) and never to stdout, which holds only answers even when redirected.
    """

    def __init__(self, out_fd: int, tty_fd: int | None = None) -> None:
        self.out_fd = out_fd
        self._tty_fd = tty_fd
        self._readline: Any = None

    @classmethod
    def open(cls, stdin_is_document: bool) -> Terminal:
        """Find the terminal before any work is done; UsageError (exit 2) when there is none."""
        if not stdin_is_document and _fd_isatty(0):
            return cls(2 if _fd_isatty(2) else _open_tty(os.O_WRONLY) or 0)
        if not stdin_is_document and _holds_data(0):
            raise UsageError(
                "chunkqa chat reads questions from the terminal, but standard input is a pipe or a file",
                hint="to chat about piped text use `chunkqa chat -`; for scripted questions use "
                "`chunkqa ask DOC -q QUESTION`",
            )
        tty = _open_tty(os.O_RDWR)
        if tty is None:
            raise UsageError(
                "chunkqa chat needs a terminal to read questions from, and there is none",
                hint="to answer questions from a script, use `chunkqa ask DOC -q QUESTION [-q ...]`",
            )
        return cls(2 if _fd_isatty(2) else tty, tty)

    def attach(self, commands: Sequence[str] = ()) -> None:
        """Put the terminal onto fd 0 (once a piped document has been read); load history."""
        if self._tty_fd is not None:
            os.dup2(self._tty_fd, 0)
        try:
            import readline
        except ImportError:  # no line editing on this platform; input() still works
            return
        self._readline = readline
        readline.set_history_length(1000)
        with contextlib.suppress(OSError):
            readline.read_history_file(history_path())
        readline.set_completer_delims(" \t\n")

        def complete(text: str, n: int) -> str | None:
            matches = [c for c in commands if c.startswith(text)]
            return matches[n] if n < len(matches) else None

        readline.set_completer(complete)
        binding = "bind ^I rl_complete" if "libedit" in (readline.__doc__ or "") else "tab: complete"
        readline.parse_and_bind(binding)

    def read_line(self, prompt: str) -> str:
        """One line; EOFError on Ctrl-D, KeyboardInterrupt on Ctrl-C (after moving to a new line)."""
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(self.out_fd, 1)  # readline writes the prompt and echo to fd 1: the terminal, for now
        try:
            return input(prompt)
        except (EOFError, KeyboardInterrupt):
            os.write(self.out_fd, b"\n")
            raise
        finally:
            os.dup2(saved, 1)
            os.close(saved)

    def close(self) -> None:
        """Save the history."""
        if self._readline is not None:
            with contextlib.suppress(OSError):
                history_path().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._readline.write_history_file(history_path())
                history_path().chmod(0o600)  # questions about private documents


def _fd_isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _open_tty(flags: int) -> int | None:
    """The controlling terminal, or None (no terminal, e.g. a daemon or a CI job)."""
    try:
        return os.open("/dev/tty", flags)
    except OSError:
        return None


def _holds_data(fd: int) -> bool:
    """A pipe, socket or regular file (not a terminal, not /dev/null)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)
