"""The command line: everything that knows Typer, Rich, readline, a terminal or stdout."""

from chunkqa.cli.app import main

__all__ = ["main"]
