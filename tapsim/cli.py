"""Entry point of the `tapsim` command.

Each sub-command lives in its own module under ``tapsim/commands`` and exposes
``register(subparsers)``; this module only collects them.  Domain errors that
carry a message for the user end the program with exit code 2 and that message,
never with a traceback.

Fast start, one rule: every run builds the whole parser, so a command module's top
level imports only the standard library's light modules, ``tapsim.errors`` and other
command modules (themselves light); the domain packages (emv, fare, issuer,
backoffice, terminal, wire, sim) and rich are imported inside the function that runs
the command or uses them, and types for annotations under ``TYPE_CHECKING``.  A
constant a parser needs from the domain (a default, a list of choices) is written
out in the command module and tested equal to the domain's own
(tests/test_cli_imports.py), which also checks, per command, which heavy packages a
run imports.  So `tapsim --version` costs Python, argparse and the parser, and each
command pays only for what it uses.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tapsim import __version__
from tapsim.commands import COMMANDS
from tapsim.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tapsim",
        description="Contactless transit and payment terminal simulator.",
    )
    parser.add_argument("--version", action="version", version=f"tapsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except UserError as exc:
        print(f"tapsim: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tapsim ... | head` is not an error
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
