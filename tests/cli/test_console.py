"""chunkqa.cli.console: colour policy, stderr lines, stdout answers, stats line."""

from __future__ import annotations

import io

from chunkqa.cli.console import Console, human_bytes, stats_line
from chunkqa.engine.results import Stats


def streams():
    return io.StringIO(), io.StringIO()


def test_plain_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    out, err = streams()
    console = Console("auto", stdout=out, stderr=err)
    assert not console.rich and not console.color
    console.info("banner")
    console.warn("careful")
    console.error("it broke", "try this")
    console.answer_piece("The answer")
    console.end_answer()
    assert out.getvalue() == "The answer\n"
    assert err.getvalue() == "banner\nWarning: careful\nError: it broke\nHint: try this\n"


def test_quiet_keeps_errors_only():
    out, err = streams()
    console = Console("never", quiet=True, stdout=out, stderr=err)
    console.info("banner")
    console.error("bad")
    assert err.getvalue() == "Error: bad\n"


def test_color_always_and_no_color(monkeypatch):
    out, err = streams()
    Console("always", stdout=out, stderr=err).error("red")
    assert "\x1b[" in err.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    out, err = streams()
    console = Console("auto", stdout=out, stderr=err)
    assert not console.color
    out, err = streams()
    Console("never", stdout=out, stderr=err).error("plain")
    assert "\x1b[" not in err.getvalue()


def test_progress_is_a_noop_when_piped():
    out, err = streams()
    with Console("auto", stdout=out, stderr=err).progress("reading", 10) as update:
        update(5, 10)
    assert err.getvalue() == ""


def test_json_goes_to_stdout():
    out, err = streams()
    Console(stdout=out, stderr=err).json({"answer": "ü"})
    assert out.getvalue() == '{"answer": "ü"}\n' and err.getvalue() == ""


def test_stats_line():
    stats = Stats(1200, 1000, 200, 0.5, 21, 1.0, 0.55, "length", {"cpu": {"rss": 3 * 2**30}})
    line = stats_line(stats)
    for part in (
        "1,200 context tokens",
        "1,000 reused from cache, 200 computed",
        "prefill 200 tok in 500 ms",
        "(400 tok/s)",
        "decode 21 tok at 20.0 tok/s",
        "TTFT 550 ms",
        "peak RSS 3.0 GiB",
        "stopped at --max-new-tokens",
    ):
        assert part in line, part
    gpu = Stats(10, 0, 10, 1.0, 1, 0.0, 1.0, "eos", {"cuda:0": {"allocated": 2**30, "reserved": 2 * 2**30}})
    assert "cuda:0 peak 1.0 GiB alloc / 2.0 GiB reserved" in stats_line(gpu)
    assert "reused" not in stats_line(gpu) and "reused" in stats_line(gpu, show_reuse=True)
    assert human_bytes(512) == "512 B" and human_bytes(None) == "?"


def test_progress_bar_on_a_terminal():
    out, err = streams()
    console = Console("always", stdout=out, stderr=err)
    console.interactive = True  # as if stderr were a terminal
    with console.progress("reading", 0) as update:
        update(2048, 4096)
    assert "reading" in err.getvalue() and out.getvalue() == ""
