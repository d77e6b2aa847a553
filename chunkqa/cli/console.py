"""Where chunkqa talks to the user: colour policy, stderr messages, progress, stdout answers.

stdout carries only answers (or JSON); banners, progress, stats, warnings and errors go to stderr.
Rich is used only when stderr is a terminal (or --color always) and NO_COLOR is unset; piped output
is plain text. `stdout_to_stderr` keeps libraries that print (DeepSpeed) off stdout. Nothing here
imports torch; a chat's line input lives in chunkqa.cli.terminal.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any, TextIO

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
        self.started = time.perf_counter()  # when the command began (load times count from here)
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
    def status(self, label: str) -> Iterator[None]:
        """A spinner with `label` on a terminal while something slow runs; nothing elsewhere."""
        if self.quiet or not self.rich or not self.interactive:
            yield
            return
        with self.rich_err.status(label, spinner="dots"):
            yield

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


def stats_line(stats: Any, show_reuse: bool = False, load_seconds: float | None = None) -> str:
    """One line: context, prefill, decode, time to first token, peak memory per device (and the
    start-up: imports, reading and the model load, when given)."""
    parts = [f"{stats.context_tokens:,} context tokens"]
    if load_seconds is not None:
        parts.append(f"start-up {human_seconds(load_seconds)}")
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
    elif stats.stop_reason == "stop":
        parts.append("stopped at a --stop string")
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


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Libraries that print notes on stdout (DeepSpeed) print them on stderr: stdout is for answers."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError):  # no real stdout (e.g. captured in tests): Python-level redirect only
        saved = None
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
