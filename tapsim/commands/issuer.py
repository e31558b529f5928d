"""`tapsim issuer run`: the card's bank as an ISO 8583 host over TCP (issuerhost/README.md).

The same issuer (``issuer/``) over the same database `tapsim card issue` and the back
office use; the dialect from ``--spec`` (default isolink/dialect.json).  Prints a
``ready:`` line once listening; Ctrl-C or SIGTERM end it with 130 / 143.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tapsim.checks import integer
from tapsim.commands.backoffice import (
    DEFAULT_DB,
    add_db_argument,
    db_banks,
    db_url,
    kek,
    missing_sqlite_file,
    open_db,
)
from tapsim.commands.tap import token_key
from tapsim.errors import UserError

if TYPE_CHECKING:
    from isolink.dialect import Dialect


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("issuer", help="the card's bank as a network host (ISO 8583)")
    cs = p.add_subparsers(dest="issuer_command", metavar="ACTION")
    cs.required = True
    run = cs.add_parser(
        "run", help="answer ISO 8583 authorizations, financial requests and reversals over TCP",
        description="The issuer of a database as an ISO 8583 host: 0100/0200/0400/0420/0800 "
                    "requests framed by a 2-byte length, answered after they are durable; "
                    "repeats get the same answer. Runs until Ctrl-C or SIGTERM.")
    run.add_argument("--listen", required=True, metavar="HOST:PORT",
                     help="address to listen on (port 0: any free port, named in the ready: "
                          "line)")
    add_db_argument(run)
    add_spec_argument(run)
    run.add_argument("--clock-from", default=None, metavar="ISO-TIME",
                     help="the host's clock starts at this time and runs on from there "
                          "(default: the real clock); to answer a replay of recorded days "
                          "as the bank would have then (expiry, dormancy)")
    run.add_argument("--retention", type=integer(1, 366, "days"), default=7, metavar="DAYS",
                     help="keep in memory the records of the last DAYS days (from the start "
                          "of that UTC day by the host's clock), open verifications 28 days "
                          "before that and active holds; older ones stay in the database, "
                          "which answers a late repeat or reversal naming one (default 7, "
                          "the back office's late-arrival horizon)")
    run.add_argument("--json", action="store_true",
                     help="print the final figures as one JSON object")
    run.set_defaults(func=run_main)


def add_spec_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=Path, default=None, metavar="FILE",
                   help="the ISO 8583 dialect as a JSON file (default: tapsim's own, "
                        "isolink/dialect.json)")


def load_spec(path: Path | None) -> Dialect:
    from isolink.dialect import SpecError, load_dialect  # noqa: PLC0415

    try:
        return load_dialect(path)
    except SpecError as exc:
        raise UserError(f"--spec: {exc}") from None


def parse_listen(text: str, option: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) -> (host, port); a UserError naming the option."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UserError(f"{option} {text!r}: write HOST:PORT with a port 0-65535")
    return host.strip("[]") or "127.0.0.1", int(port)


def _clock(start: str | None) -> Callable[[], dt.datetime]:
    """The real clock, or one that starts at ``start`` and runs at the real clock's pace."""
    if start is None:
        return lambda: dt.datetime.now(dt.UTC)
    from tapsim.commands.backoffice import parse_at  # noqa: PLC0415

    origin = parse_at(start, "--clock-from")
    began = time.monotonic()
    return lambda: origin + dt.timedelta(seconds=time.monotonic() - began)


def run_main(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from backoffice.branch import key_store  # noqa: PLC0415
    from backoffice.storage import StorageError, redact  # noqa: PLC0415
    from backoffice.writer_lock import ISSUER_RUN, IssuerLock  # noqa: PLC0415
    from issuer.service import Issuer  # noqa: PLC0415
    from issuerhost.host import IssuerHost  # noqa: PLC0415

    host, port = parse_listen(args.listen)
    dialect = load_spec(args.spec)
    clock = _clock(args.clock_from)
    if missing_sqlite_file(args.db) is not None:
        spec = args.db or os.environ.get("TAPSIM_DB") or DEFAULT_DB
        raise UserError(f"no database {spec} (tapsim card issue creates one)")
    store = open_db(args.db)
    # The bank's records in memory from here to the end: one such process per database (a
    # back office with its issuer in process is another), backoffice/writer_lock.py.
    lock = IssuerLock(db_url(args.db), ISSUER_RUN)
    try:
        lock.acquire()
    except StorageError as exc:
        store.close()
        raise UserError(str(exc)) from None

    def log(message: str) -> None:
        print(f"issuer: {message}", file=sys.stderr, flush=True)

    try:
        keys = key_store(kek())  # card keys are stored wrapped: the KEK is all it needs
        tokens = token_key()
        banks = db_banks(store)

        def load_issuer(floor: dt.datetime | None) -> Issuer:
            snapshot = store.load_issuer() if floor is None else store.load_issuer_since(floor)
            return Issuer(keys, banks, tokens, snapshot)

        stopped_by: list[int] = []

        async def main() -> dict[str, object]:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()

            def on_signal(signum: int) -> None:
                stopped_by.append(signum)
                stop.set()

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal, sig)
            server = IssuerHost(store, load_issuer, dialect, log=log, clock=clock,
                                retention=dt.timedelta(days=args.retention))

            def ready(h: str, p: int) -> None:
                lock.note(listen=f"[{h}]:{p}" if ":" in h else f"{h}:{p}")
                print(f"ready: issuer host on {h}:{p} for {redact(store.url)}, dialect "
                      f"{dialect.name} v{dialect.version}, {len(server.handler.issuer.cards)} "
                      f"card(s), {len(server.handler.issuer.auths)} authorization(s) in memory "
                      f"(retention {args.retention} days)", flush=True)

            try:
                stats = await server.serve(host, port, stop, ready)
            except OSError as exc:
                raise UserError(f"--listen {args.listen}: {exc.strerror or exc}") from None
            return stats.to_dict()

        try:
            figures = asyncio.run(main())
        except StorageError as exc:
            raise UserError(str(exc)) from None
    finally:
        store.close()
        lock.release()
    answered = figures["answered"]
    assert isinstance(answered, dict)
    done = (f"answered {sum(answered.values())} message(s) on {figures['connections']} "
            f"connection(s), {figures['format_errors']} format error(s), {figures['dropped']} "
            "dropped")
    if args.json:
        print(json.dumps(figures))
    if stopped_by:
        print(f"tapsim: interrupted: {done}", file=sys.stderr)
        return 128 + stopped_by[0]
    print(done, file=sys.stderr)
    return 0
