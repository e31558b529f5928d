"""`tapsim clearing run`: clear a day of T-Union e-purse purchases kept in a database.

Verifies every TAC with the card issuer's key (the TEST issuers of emv.epurse.issuers),
refuses forged, duplicated, replayed and out-of-sequence records with their reason, and
prints the day's settlement report (clearing/README.md).  Re-running a day settles nothing
twice: it prints the same report.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from tapsim.commands.backoffice import add_db_argument, missing_sqlite_file, open_db
from tapsim.errors import UserError

# Written out for the parser (tested equal to the domain's): clearing.report.FORMATS.
FORMATS = ("table", "json", "csv")
SUFFIX = {"table": "txt", "json": "json", "csv": "csv"}


def _day(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def _home(text: str) -> tuple[str, str]:
    from emv.epurse.issuers import check_issuer_id  # noqa: PLC0415
    from emv.epurse.keys import EpurseKeyError  # noqa: PLC0415

    operator, _, issuer = text.partition("=")
    try:
        if not operator:
            raise EpurseKeyError("no operator")
        return operator, check_issuer_id(issuer)
    except EpurseKeyError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write OPERATOR=ISSUER, e.g. OPA=0000") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cl = sub.add_parser("clearing", help="T-Union e-purse clearing: TACs, batches, settlement")
    cs = cl.add_subparsers(dest="clearing_command", metavar="ACTION")
    cs.required = True
    run = cs.add_parser("run", help="clear one day's e-purse purchases and print its "
                                    "settlement report (idempotent)")
    add_db_argument(run)
    run.add_argument("--day", required=True, type=_day, metavar="YYYY-MM-DD",
                     help="the clearing day: the purchases' local date as the card recorded it")
    run.add_argument("--format", choices=FORMATS, default="table",
                     help="report format (default: table)")
    run.add_argument("--home", action="append", default=[], type=_home,
                     metavar="OPERATOR=ISSUER",
                     help="an operator's home city (issuer id, 4 hex digits), repeatable: the "
                          "report then nets what each city's issuer owes the other city")
    run.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="write the report to DIR/clearing-<day>.<txt|json|csv> instead of "
                          "standard output")
    run.set_defaults(func=run_main)


def run_main(args: argparse.Namespace) -> int:
    from clearing.report import FORMATS as RENDER  # noqa: PLC0415
    from clearing.store import run_day  # noqa: PLC0415
    from emv.epurse.issuers import TEST_ISSUERS  # noqa: PLC0415

    missing = missing_sqlite_file(args.db)
    if missing is not None:  # a typo, not a day without purchases
        raise UserError(f"--db: no database at {missing} (clearing reads the back office's; "
                        "tapsim backoffice run or replay writes it)")
    store = open_db(args.db)
    try:
        report = run_day(store, args.day, TEST_ISSUERS, dt.datetime.now(dt.UTC),
                         dict(args.home) or None, freeze=True)
    finally:
        store.close()
    text = RENDER[args.format](report)
    if args.out is None:
        print(text, end="")
        return 0
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"clearing-{args.day}.{SUFFIX[args.format]}"
        path.write_text(text)
    except OSError as exc:
        raise UserError(f"--out {args.out}: cannot write the report ({exc.strerror})") from None
    print(path)
    return 0
