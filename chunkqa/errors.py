"""The errors chunkqa raises on purpose: each carries a one-line message, a hint and an exit code.

The CLI prints `Error: <message>` and `Hint: <hint>` and exits with `exit_code`; library users catch
`ChunkqaError` (or the standard base class each one also derives from). A setting named in a message
is written in backquotes (`max_context`); the CLI shows it as the flag (--max-context).

Exit codes, one rule: 2 when the command line must change (a bad option, or a path that names
nothing or the wrong kind of thing: a missing document or model folder, a folder given as a
document); 1 when something that exists fails (a model that cannot load, a document that cannot be
read, a package to install, the network, the device); 3 when the prompt or its memory does not fit;
130 when interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_DOES_NOT_FIT = 3
EXIT_INTERRUPTED = 130


class ChunkqaError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ChunkqaError, ValueError):
    """Bad options or arguments."""

    exit_code = EXIT_USAGE


class DCAConfigError(UsageError):
    """DCA settings that cannot work (w >= c, c > P, non-positive values)."""


class SelfExtendConfigError(UsageError):
    """SelfExtend settings that cannot work (W >= P, non-positive values)."""


class UnsupportedModelError(ChunkqaError, ValueError):
    """A model whose architecture DCA cannot patch."""


class PaddedBatchError(ChunkqaError, ValueError):
    """A padded batch reached a DCA-patched model."""


class DocumentError(ChunkqaError):
    """A document that cannot be read as text."""


class DocumentNotFound(DocumentError, FileNotFoundError):
    """A document path that does not exist."""

    exit_code = EXIT_USAGE


class NotADocument(DocumentError):
    """A document path that names a folder."""

    exit_code = EXIT_USAGE


class ModelLoadError(ChunkqaError):
    """A model or tokenizer that cannot be loaded (unknown id, offline, bad files)."""


class ModelNotFound(ModelLoadError):
    """A model path that names nothing, or not a model (a folder without config.json, a stray file)."""

    exit_code = EXIT_USAGE


class DoesNotFitError(ChunkqaError):
    """The prompt or its memory does not fit the limits, and no truncation policy was chosen."""

    exit_code = EXIT_DOES_NOT_FIT


class OutOfMemoryError(ChunkqaError):
    """The device ran out of memory."""
