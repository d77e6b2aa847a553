"""For tests that interrupt a child process: give it the default SIGINT disposition.

A shell without job control starts background commands with SIGINT ignored, and children inherit
that; Python then installs no KeyboardInterrupt handler, so Ctrl-C would do nothing and the test
would wait out its timeout. Pass `preexec_fn=default_sigint` to subprocess.Popen or pexpect.spawn.
"""

from __future__ import annotations

import signal


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
