"""Errors the command line turns into a one-line message and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for (bad file, unknown card, malformed input)."""
