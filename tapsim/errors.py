"""Errors the command line turns into a one-line message and an exit code.

``UserError``: exit code 2 and its message.  ``Interrupted``: Ctrl-C (SIGINT) or SIGTERM,
exit code 128 + the signal's number (130, 143) and one line saying what was done.
"""

from __future__ import annotations

import signal


class UserError(Exception):
    """A problem with what the user asked for (bad file, unknown card, malformed input)."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``done`` says what it had done and left behind.

    A ``KeyboardInterrupt`` (what Python raises for SIGINT), so code that already cleans up
    after Ctrl-C cleans up after SIGTERM too; ``tapsim.cli.main`` raises one for SIGTERM.
    A command re-raises it with ``done`` filled in (``Interrupted.of``).
    """

    def __init__(self, signum: int = signal.SIGINT, done: str = "") -> None:
        super().__init__(signum, done)
        self.signum = int(signum)
        self.done = done

    @classmethod
    def of(cls, exc: BaseException, done: str) -> Interrupted:
        """The same interruption (its signal) with what the command had done."""
        return cls(getattr(exc, "signum", signal.SIGINT), done)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
