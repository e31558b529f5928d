"""Entry point of the `tapsim` command.

Each sub-command lives in its own module under ``tapsim/commands`` and exposes
``register(subparsers)``; this module only collects them.  Domain errors that
carry a message for the user end the program with exit code 2 and that message,
never with a traceback.  Ctrl-C (SIGINT) and SIGTERM end it with one line saying what was
done and exit code 130 or 143 (128 + the signal): SIGTERM is raised as
``tapsim.errors.Interrupted``, a ``KeyboardInterrupt``, so both take the same path through
every command's clean-up.  A command that serves until stopped may install its own handlers.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from tapsim import __version__
from tapsim.commands import COMMANDS
from tapsim.errors import Interrupted, UserError


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


def _terminated(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    # Only the main thread may set handlers (tests call main() from threads too).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        args = build_parser().parse_args(argv)
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
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return code


if __name__ == "__main__":
    sys.exit(main())
