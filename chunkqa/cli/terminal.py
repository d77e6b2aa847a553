"""A chat's terminal: questions read with line editing and saved history, prompts kept off stdout."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chunkqa.errors import UsageError


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
