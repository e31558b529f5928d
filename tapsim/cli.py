"""Entry point of the `tapsim` command.

Each sub-command lives in its own module under ``tapsim/commands`` and exposes
``register(subparsers)``; this module only collects them.  Domain errors that
carry a message for the user end the program with exit code 2 and that message,
never with a traceback.  Ctrl-C (SIGINT) and SIGTERM end it with one line saying what was
done and exit code 130 or 143 (128 + the signal): SIGTERM is raised as
``tapsim.errors.Interrupted``, a ``KeyboardInterrupt``, so both take the same path through
every command's clean-up.  A command that serves until stopped may install its own handlers.

Fast start, one rule: a run imports what its command uses and nothing else.  So a
command module's top level imports only light standard-library modules,
``tapsim.errors`` and other command modules (themselves light); the domain packages
(emv, fare, issuer, backoffice, terminal, wire, sim) and rich are imported inside the
function that runs the command or uses them, and types for annotations under
``TYPE_CHECKING``.  A constant a parser needs from the domain (a default, a list of
choices) is written out in the command module and tested equal to the domain's own.
And `main` builds the parser of the command it runs only (``COMMANDS`` names each
command's module without importing it): the others' modules are imported when a
parser must list every command (`tapsim --help`, an unknown command).
tests/test_cli_imports.py checks, per command, which packages a run imports.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Collection, Sequence

from tapsim import __version__
from tapsim.commands import COMMANDS
from tapsim.errors import Interrupted, UserError


def build_parser(only: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The `tapsim` parser with every sub-command, or with those named in ``only``
    (the other commands' modules are then not imported)."""
    parser = argparse.ArgumentParser(
        prog="tapsim",
        description="Contactless transit and payment terminal simulator.",
    )
    parser.add_argument("--version", action="version", version=f"tapsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        if only is None or name in only:
            importlib.import_module(module).register(sub)
    return parser


def commands_needed(argv: Sequence[str]) -> list[str] | None:
    """The sub-commands the parser needs for ``argv``: the one it runs; none for
    ``--version`` (it ends the parse); all (None) for `tapsim --help` and for an unknown
    command (the parser lists them).  The top level has no option taking a value, so the
    first word that is not an option is the command."""
    for arg in argv:
        if arg == "--version":
            return []
        if not arg.startswith("-"):
            return [arg] if arg in COMMANDS else None
        if arg in ("-h", "--help"):
            return None
    return None


def _terminated(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def _is_storage_error(exc: Exception) -> bool:
    """A database failure no command turned into a UserError (its message names the
    database and says why): looked up, not imported, to keep the fast start."""
    base = sys.modules.get("backoffice.storage.base")
    return base is not None and isinstance(exc, base.StorageError)


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    # Only the main thread may set handlers (tests call main() from threads too).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        args = build_parser(commands_needed(words)).parse_args(words)
        code: int = args.func(args)
    except UserError as exc:
        print(f"tapsim: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tapsim ... | head` is not an error
        return 0
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as Interrupted
        stop = exc if isinstance(exc, Interrupted) else Interrupted.of(exc, "")
        print(f"tapsim: interrupted{': ' + stop.done if stop.done else ''}", file=sys.stderr)
        return stop.exit_code
    except Exception as exc:
        if not _is_storage_error(exc):
            raise
        print(f"tapsim: error: {exc}", file=sys.stderr)  # a read-only database, a full disk
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return code


if __name__ == "__main__":
    sys.exit(main())
