"""`tapsim backoffice replay`: taps through validators' kernels and the whole transaction core.

Also the pieces `tapsim card issue` and `tapsim account` share with it: which database
(``--db``), which key-encryption key (``TAPSIM_KEK``), which banks.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tapsim.cakeys import add_ca_keys_option, resolve_ca_keys
from tapsim.checks import (
    DAY_S,
    check_broker_tls,
    check_output_file,
    integer,
    number,
)
from tapsim.commands.fare import open_feed, read_taps_text
from tapsim.commands.tap import token_key
from tapsim.errors import Interrupted, UserError

if TYPE_CHECKING:
    from backoffice.acquirer.gateway import NetworkIssuer
    from backoffice.consumer import ConsumerStats
    from backoffice.fare_pricer import FarePricer
    from backoffice.policy import BackOfficeConfig
    from backoffice.service import TransactionCore
    from backoffice.storage import SqlStore
    from fare.model import Feed
    from issuer.keys import KeyStore
    from issuer.policy import BankPolicy
    from replay.cardsfile import CardsFile
    from replay.day import ReplayReport, TapsFile
    from wire.messages import FareTableVersion
    from wire.signing import Signer

DEFAULT_DB = "tapsim.db"  # in the current directory: sqlite:///tapsim.db
CURRENCY_META_KEY = "backoffice.currency"
PROGRESS_FROM = 200  # taps: a progress bar for inputs at least this long
DEFAULT_BATCH = 500  # replay.day.DEFAULT_BATCH, written out for the parser
MAX_BATCH = 1_000_000  # taps in one database transaction
MAX_WORKERS = 64  # backoffice.consumer.ConsumerConfig's limit, written out for the parser
REJECT_LINES = 20  # rejected records named one per line on stderr; the rest counted


# -- shared with `card issue` and `account` -----------------------------------------------


def add_db_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db", metavar="URL", default=None,
        help="sqlite:///relative.db, sqlite:////absolute/path.db, postgresql://..., or a "
             "file path (SQLite); default "
             f"$TAPSIM_DB, else {DEFAULT_DB} in the current directory",
    )  # fmt: skip


def db_url(arg: str | None) -> str:
    """``--db``, else $TAPSIM_DB, else tapsim.db here, as a URL (a plain path: SQLite)."""
    from backoffice.storage import StorageError, database_url  # noqa: PLC0415

    try:
        return database_url(arg or os.environ.get("TAPSIM_DB") or DEFAULT_DB)
    except StorageError as exc:
        raise UserError(str(exc)) from None


def missing_sqlite_file(arg: str | None) -> str | None:
    """The file of the SQLite database ``--db`` names when it is not there, else None (it is,
    or the database is not a SQLite file).  A command that needs an existing database asks
    this first: opening a mistyped path would make an empty database and act on nothing."""
    from backoffice.storage import StorageError  # noqa: PLC0415
    from backoffice.storage.urls import is_sqlite, parse_sqlite_url  # noqa: PLC0415

    url = db_url(arg)
    if not is_sqlite(url):
        return None
    try:
        parsed = parse_sqlite_url(url)
    except StorageError as exc:
        raise UserError(str(exc)) from None
    return None if parsed.in_memory or Path(parsed.path).exists() else parsed.path


def check_db_url(url: str) -> None:
    """A URL whose host and port can be read, or a UserError naming it (urllib's
    ValueError for ``postgresql://[::1`` would otherwise end in a traceback)."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    from backoffice.storage import redact  # noqa: PLC0415

    try:
        urlsplit(url).port  # noqa: B018 - parsed for its ValueError
    except ValueError as exc:
        raise UserError(f"database URL {redact(url)!r}: {exc}") from None


def open_db(arg: str | None, *, read_only: bool = False) -> SqlStore:
    """The tapsim database ``--db`` names, or a UserError (another program's database, an
    unreachable server...); ``read_only``: one that exists already, opened without writing."""
    from backoffice.storage import StorageError, open_store  # noqa: PLC0415

    url = db_url(arg)
    check_db_url(url)
    try:
        return open_store(url, read_only=read_only)
    except StorageError as exc:
        raise UserError(str(exc)) from None


def kek() -> bytes:
    """The key-encryption key card keys are wrapped under: TAPSIM_KEK (hex, 16/24/32 bytes),
    else the labelled TEST KEK (a simulator's database only)."""
    from backoffice.branch import TEST_KEK  # noqa: PLC0415

    raw = os.environ.get("TAPSIM_KEK")
    if not raw:
        return TEST_KEK
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        raise UserError("TAPSIM_KEK must be hex") from None
    if len(key) not in (16, 24, 32):
        raise UserError(f"TAPSIM_KEK must be 16, 24 or 32 bytes (AES), got {len(key)}")
    return key


def db_banks(store: SqlStore, *extra: BankPolicy) -> list[BankPolicy]:
    """The built-in banks, those the database knows, and ``extra`` (stored if new)."""
    from backoffice.branch import (  # noqa: PLC0415
        BANKS_META_KEY,
        BUILTIN_BANKS,
        BranchError,
        banks_from_json,
        banks_to_json,
        merge_banks,
    )

    try:
        stored = banks_from_json(store.meta(BANKS_META_KEY))
    except BranchError as exc:
        raise UserError(str(exc)) from None
    banks = merge_banks(BUILTIN_BANKS, stored, extra)
    if extra and banks_to_json(banks) != banks_to_json(merge_banks(BUILTIN_BANKS, stored)):
        store.set_meta(BANKS_META_KEY, banks_to_json(banks))
    return banks


def parse_at(text: str | None, option: str = "--at") -> dt.datetime:
    """An ISO 8601 time with a UTC offset (``--at``, ``--until``); default now."""
    if text is None:
        return dt.datetime.now().astimezone()
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"{option} {text!r} is not an ISO 8601 date and time") from None
    if t.tzinfo is None or t.utcoffset() is None:
        raise UserError(
            f"{option} {text!r} has no UTC offset (write e.g. 2025-03-03T08:00:00+08:00)"
        )
    return t


def money(amount: int, currency: str) -> str:
    from fare.currency import format_minor  # noqa: PLC0415

    return f"{format_minor(amount, currency)}"


# -- the replay ---------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bo = sub.add_parser("backoffice", help="the transit operator's transaction core")
    bs = bo.add_subparsers(dest="backoffice_command", metavar="ACTION")
    bs.required = True
    p = bs.add_parser(
        "replay", help="replay a taps CSV through validators and the transaction core",
        description="Tap each row's card on the contactless kernel, then push the tap records "
                    "through the transaction core (fares, deferred authorization at the issuer, "
                    "deny list, debt recovery, ledger) into the database, and report. "
                    "Amounts are minor units of the feed's currency. See backoffice/README.md.",
    )  # fmt: skip
    p.add_argument("--feed", required=True, metavar="PATH|NAME",
                   help="GTFS-Fares v2 folder or zip, or a sample feed (city, harbour)")
    p.add_argument("--taps", required=True, metavar="FILE.csv",
                   help="taps CSV: tap_id,card,time,stop_id,route_id,action[,rider_category,"
                        "fare_media,operator_id,validator_id]; '-' reads standard input")
    p.add_argument("--cards", required=True, metavar="FILE.toml|NAME,NAME",
                   help="cards file (TOML) for the card ids of the CSV, or a comma list of "
                        "built-in card profiles (the names are the card ids)")
    add_db_argument(p)
    p.add_argument("--until", default=None, metavar="ISO-TIME",
                   help="keep the clock running to this time (day-end closes, scheduled debt "
                        "recovery); default: the end of the last tap's service day")
    p.add_argument("--batch", type=integer(1, MAX_BATCH, "taps"), default=DEFAULT_BATCH,
                   metavar="N",
                   help=f"taps per transaction (default {DEFAULT_BATCH})")
    p.add_argument("--json", action="store_true", help="print one JSON object (shape: README)")
    add_issuer_arguments(p)
    add_atc_window_argument(p)
    add_ca_keys_option(p)
    p.set_defaults(func=replay_main)
    register_run(bs)


def add_issuer_arguments(p: argparse.ArgumentParser) -> None:
    """``--issuer`` and what goes with it (backoffice/README.md, "The bank over the wire")."""
    p.add_argument("--issuer", default="inprocess", metavar="URL",
                   help="the card's bank: 'inprocess' (default: the issuer of the database, "
                        "in this process) or iso8583://HOST:PORT (a host speaking the "
                        "dialect, e.g. tapsim issuer run)")
    p.add_argument("--spec", type=Path, default=None, metavar="FILE",
                   help="with --issuer iso8583://: the dialect as JSON (default "
                        "isolink/dialect.json)")
    p.add_argument("--stand-in", type=integer(0, 10**12 - 1, "fen"), default=0, metavar="FEN",
                   help="with --issuer iso8583://: when the bank cannot be reached, accept "
                        "first taps and charges up to FEN at the operator's risk (a debt, "
                        "first-ride risk, collected when the bank is back); 0 (default): "
                        "decline and deny-list")
    p.add_argument("--issuer-timeout", type=number(0.01, 600, "seconds"), default=5.0,
                   metavar="S", help="with --issuer iso8583://: seconds to wait for each answer "
                                     "(default 5; a request is sent twice before it counts "
                                     "as unanswered)")


def open_gateway(args: argparse.Namespace, store: SqlStore) -> NetworkIssuer | None:
    """The network adapter ``--issuer`` names on ``store``, or None for the in-process one."""
    from backoffice.acquirer.gateway import NetworkIssuer, parse_issuer_url  # noqa: PLC0415
    from backoffice.acquirer.mapping import AcquirerConfig, MappingError  # noqa: PLC0415
    from isolink.dialect import SpecError, load_dialect  # noqa: PLC0415

    if args.issuer == "inprocess":
        if args.spec is not None or args.stand_in:
            raise UserError("--spec and --stand-in need --issuer iso8583://HOST:PORT")
        return None
    try:
        host, port = parse_issuer_url(args.issuer)
        config = AcquirerConfig(timeout=args.issuer_timeout, stand_in_limit=args.stand_in,
                                retry_after=max(1.0, args.issuer_timeout),
                                late_grace=2 * args.issuer_timeout)
        dialect = load_dialect(args.spec)
    except MappingError as exc:
        raise UserError(f"--issuer: {exc}") from None
    except SpecError as exc:
        raise UserError(f"--spec: {exc}") from None
    return NetworkIssuer(store, host, port, dialect, config)


def issuer_lock(url: str, command: str,
                args: argparse.Namespace) -> contextlib.AbstractContextManager[object]:
    """The lock of the bank's records of ``url`` when this back office holds them in memory
    (its issuer in process); nothing to take when it reaches the bank over the wire.  A
    running `tapsim issuer run` on the database refuses it (backoffice/writer_lock.py)."""
    from backoffice.writer_lock import IssuerLock  # noqa: PLC0415

    return IssuerLock(url, command) if args.issuer == "inprocess" else contextlib.nullcontext()


def check_issuer_arguments(args: argparse.Namespace) -> None:
    """A bad ``--issuer``/``--spec`` is an error before anything is opened."""
    from backoffice.acquirer.gateway import parse_issuer_url  # noqa: PLC0415
    from backoffice.acquirer.mapping import MappingError  # noqa: PLC0415
    from isolink.dialect import SpecError, load_dialect  # noqa: PLC0415

    if args.issuer == "inprocess":
        if args.spec is not None or args.stand_in:
            raise UserError("--spec and --stand-in need --issuer iso8583://HOST:PORT")
        return
    try:
        parse_issuer_url(args.issuer)
        load_dialect(args.spec)
    except MappingError as exc:
        raise UserError(f"--issuer: {exc}") from None
    except SpecError as exc:
        raise UserError(f"--spec: {exc}") from None


def add_atc_window_argument(p: argparse.ArgumentParser) -> None:
    """``--atc-window``: how far behind a card's highest counter a tap is still taken."""
    from backoffice.policy import ATC_WINDOW  # noqa: PLC0415

    p.add_argument("--atc-window", type=integer(1, 4096, "counter values"), default=ATC_WINDOW,
                   metavar="N",
                   help=f"per card, the ATCs below its highest one that are still told apart "
                        f"(default {ATC_WINDOW}); a tap whose ATC is further behind is refused "
                        f"as replayed or too old, so a card that can tap more than N times "
                        f"before a validator's resend arrives needs more (backoffice/README.md)")


def core_config(currency: str, feed_tz: dt.tzinfo, atc_window: int | None = None,
                ) -> BackOfficeConfig:  # fmt: skip
    """The core's rules for a feed: its currency, service days in its time zone, and the
    ATC window (``--atc-window``; None: the default)."""
    from backoffice.policy import (  # noqa: PLC0415
        ATC_WINDOW,
        AggregationPolicy,
        BackOfficeConfig,
        ServiceDay,
    )

    return BackOfficeConfig(
        currency=currency, aggregation=AggregationPolicy(service_day=ServiceDay(tz=feed_tz)),
        atc_window=ATC_WINDOW if atc_window is None else atc_window,
    )


def open_core(
    store: SqlStore, pricer: FarePricer, keys: KeyStore, banks: list[BankPolicy],
    config: BackOfficeConfig, gateway: NetworkIssuer | None = None,
) -> TransactionCore:  # fmt: skip
    """The transaction core of a database, with the real fare engine as its pricer."""
    from backoffice.pricing import PricingError  # noqa: PLC0415
    from backoffice.service import TransactionCore  # noqa: PLC0415

    stored = store.meta(CURRENCY_META_KEY)
    if stored is not None and stored != config.currency:
        raise UserError(f"the database {store.url} settles in {stored}; this feed charges in "
                        f"{config.currency}")  # fmt: skip
    try:
        core = TransactionCore(store, pricer, keys, banks, token_key(), config, gateway)
    except PricingError as exc:
        raise UserError(f"the database {store.url} holds fare states this feed cannot read: "
                        f"{exc}") from None  # fmt: skip
    if stored is None:
        store.set_meta(CURRENCY_META_KEY, config.currency)
    return core


def replay_main(args: argparse.Namespace) -> int:
    from backoffice.branch import BranchError, key_store  # noqa: PLC0415
    from backoffice.fare_pricer import FarePricer  # noqa: PLC0415
    from backoffice.storage import StorageError  # noqa: PLC0415
    from backoffice.writer_lock import BACKOFFICE_REPLAY, WriterLock  # noqa: PLC0415
    from issuer.errors import IssuerError  # noqa: PLC0415
    from replay.cardsfile import CardsFileError, load_cards  # noqa: PLC0415
    from replay.day import ReplayError, read_taps, reconciliation_dict  # noqa: PLC0415

    check_issuer_arguments(args)
    feed = open_feed(args.feed)
    text, source = read_taps_text(args.taps)
    until = parse_at(args.until, "--until") if args.until else None
    try:
        taps_file = read_taps(text, feed)
        cards = load_cards(args.cards)
    except (ReplayError, CardsFileError) as exc:
        raise UserError(f"{source}: {exc}" if isinstance(exc, ReplayError) else str(exc)) \
            from None
    for problem in taps_file.problems:
        print(f"{source}:{problem} (kept as a reject)", file=sys.stderr)
    store = open_db(args.db)
    # The core's state (and, in process, the bank's records) in memory from here to the end:
    # one such process per database (backoffice/writer_lock.py).
    locks = contextlib.ExitStack()
    try:
        locks.enter_context(WriterLock(db_url(args.db), BACKOFFICE_REPLAY))
        locks.enter_context(issuer_lock(db_url(args.db), BACKOFFICE_REPLAY, args))
    except BaseException as exc:
        locks.close()
        store.close()
        if isinstance(exc, StorageError):
            raise UserError(str(exc)) from None
        raise
    try:
        before = store.count("taps")  # so an interrupted run can say what it added
        banks = db_banks(store, *cards.banks)
        gateway = open_gateway(args, store)
        core = open_core(store, FarePricer(feed), key_store(kek(), cards.profiles()), banks,
                         core_config(feed.currency, feed.timezone, args.atc_window),
                         gateway)  # fmt: skip
        report = _run(core, feed, cards, taps_file, source, until, args)
        if gateway is not None:
            gateway.drain()  # what is due in the store-and-forward table, before reporting
            report.reconciliation = reconciliation_dict(core.reconcile())
            report.acquirer = gateway.summary()
            gateway.close()
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: each batch commits or rolls back
        try:
            added = f"{store.count('taps') - before:,}"
        except StorageError:
            added = "?"
        raise Interrupted.of(exc, f"{added} new taps (of {len(taps_file.taps):,} in "
                                  f"{source}) committed to {store.url} in whole batches, the "
                                  "database consistent; the same command again adds the rest "
                                  "(the taps already in count as duplicates)") from None
    except (ReplayError, BranchError, IssuerError) as exc:
        raise UserError(str(exc.args[0]) if exc.args else str(exc)) from None
    except StorageError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()
        locks.close()
    print_rejects(report, source, {p.line for p in taps_file.problems})
    if args.json:
        print(report.to_json())
    else:
        print_report(report)
    return 0 if report.reconciliation.get("ok") else 1


def print_rejects(report: ReplayReport, source: str, printed: set[int]) -> None:
    """The records the core rejected during the run (a card the cards file lacks, a tap id
    like a card number, a replayed ATC...) on stderr with their reason, as the bad rows were
    before it: the first REJECT_LINES, then a count (all are in the report and `rejects`)."""
    from backoffice.taps import scrub_id  # noqa: PLC0415

    rest = [x for x in report.rejects if x["line"] not in printed]
    for x in rest[:REJECT_LINES]:
        where = f"{source}:{x['line']}" if x["line"] else source
        tap = f" tap {scrub_id(x['tap_id'])}:" if x["tap_id"] else ""
        print(f"{where}:{tap} {x['field']}: {x['reason']} (kept as a reject)", file=sys.stderr)
    if len(rest) > REJECT_LINES:
        print(f"{source}: {len(rest) - REJECT_LINES} more record(s) rejected (kept as rejects; "
              "all in the report)", file=sys.stderr)


def _run(core: TransactionCore, feed: Feed, cards: CardsFile, taps_file: TapsFile, source: str,
         until: dt.datetime | None, args: argparse.Namespace) -> ReplayReport:  # fmt: skip
    from rich.console import Console  # noqa: PLC0415 - only the terminal output needs rich
    from rich.progress import Progress  # noqa: PLC0415

    from replay.day import Replay  # noqa: PLC0415

    console = Console(stderr=True)
    total = len(taps_file.taps)
    show = not args.json and total >= PROGRESS_FROM
    with Progress(console=console, transient=True, disable=not show) as bar:
        task = bar.add_task("replaying taps", total=total)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        replay = Replay(core, feed, cards, token_key=token_key(), batch=args.batch,
                        ca_keys=resolve_ca_keys(args.ca_keys),
                        progress=progress)  # fmt: skip
        return replay.run(taps_file, source=source, until=until)


def print_report(r: ReplayReport) -> None:
    """The human form: one rich table per section that has rows."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    from backoffice.taps import scrub_id  # noqa: PLC0415

    cur = r.currency
    console = Console(highlight=False, emoji=False)
    if not console.is_terminal:  # piped or captured: wide enough for the tables
        console = Console(highlight=False, emoji=False, width=160)

    def table(title: str, cols: list[str], rows: list[list[str]]) -> None:
        if not rows:
            return
        t = Table(title=title, title_justify="left", show_lines=False)
        for col in cols:
            wrap = col in ("why", "reason", "meaning", "result")
            t.add_column(col, justify="right" if col in ("amount", "line", "balance") else "left",
                         overflow="fold", no_wrap=not wrap)  # fmt: skip
        for row in rows:
            t.add_row(*(Text(cell) for cell in row))  # data, not markup
        console.print(t)

    def m(amount: int | None) -> str:
        return "" if amount is None else money(amount, cur)

    def hm(iso: str) -> str:
        return iso[:16].replace("T", " ")

    console.print(f"[bold]Replay[/] of {r.rows} row(s) on feed {r.feed} into {r.db} "
                  f"(amounts in {cur})")  # fmt: skip
    def change(before: str, after: str) -> str:
        return before if before == after else f"{before} -> {after}"

    table("Cards", ["card", "card number", "bank", "state", "balance", "deny list"], [
        [c["card"], c["masked_pan"], c["bank"], change(c["state"], c["state_after"]),
         change(m(c["balance"]), m(c["balance_after"])), "yes" if c["deny_listed"] else ""]
        for c in r.cards
    ])  # fmt: skip
    table("Fares", ["time", "card", "tap", "route", "amount", "why"], [
        [hm(f["time"]), f["card"], f["tap_id"], f"{f['route']} {f['action']}", m(f["amount"]),
         f["why"]] for f in r.fares
    ])  # fmt: skip
    table("Charges (one per aggregate)", ["time", "card", "aggregate", "amount", "closed by"], [
        [hm(c["time"]), c["card"], c["aggregate"], m(c["amount"]), c["closed_by"]]
        for c in r.charges
    ])  # fmt: skip
    table("Declines at the issuer", ["time", "card", "request", "amount", "code", "meaning"], [
        [hm(d["time"]), d["card"], f"{d['kind']} {d['request']}", m(d["amount"]), d["code"],
         d["meaning"] + (f" [{', '.join(d['flags'])}]" if d["flags"] else "")]
        for d in r.declines
    ])  # fmt: skip
    table("Deny list", ["time", "card", "change", "reason"], [
        [hm(d["time"]), d["card"], d["op"], d["reason"]] for d in r.deny_list
    ])  # fmt: skip
    table("Debt recovery", ["time", "card", "debt", "amount", "by"], [
        [hm(d["time"]), d["card"], d["debt"], m(d["amount"]), f"{d['by']} ({d['request']})"]
        for d in r.recoveries
    ])  # fmt: skip
    table("Written off (first-ride loss)", ["time", "card", "debt", "amount", "code"], [
        [hm(d["time"]), d["card"], d["debt"], m(d["amount"]), d["code"]] for d in r.written_off
    ])  # fmt: skip
    table("At the branch", ["time", "card", "action", "result"], [
        [hm(b["time"]), b["card"],
         b["action"] + (f" {m(b['amount'])}" if b["amount"] is not None else ""),
         b.get("result") or f"refused: {b.get('error')}"] for b in r.branch
    ])  # fmt: skip
    table("Refused at the validator", ["line", "tap", "card", "reason"], [
        [str(x["line"]), x["tap_id"], x["card"], f"{x['outcome']}: {x['reason']}"]
        for x in r.refused
    ])  # fmt: skip
    table("Rejected records (kept)", ["line", "tap", "field", "reason"], [
        [str(x["line"] or ""), scrub_id(x["tap_id"]) or "", x["field"], x["reason"]]
        for x in r.rejects
    ])  # fmt: skip
    table("Alerts", ["time", "card", "kind", "ref"], [
        [hm(a["time"]), a["card"], a["kind"], a["ref"]] for a in r.alerts
    ])  # fmt: skip
    rec = r.reconciliation
    led = rec["ledger"]
    table("Reconciliation", ["figure", "amount"], [
        ["taps x fares", m(rec["tap_fares"])],
        ["ledger revenue", m(-led.get("revenue", 0))],
        ["collected (ledger)", m(led.get("issuer_settlement", 0))],
        ["captured at the issuer", m(rec["issuer_captured"])],
        ["receivable: open aggregates", m(rec["open_aggregates"])],
        ["receivable: debts in recovery", m(rec["debts_in_recovery"])],
        ["first-ride loss (written off)", m(rec["debts_written_off"])],
    ])  # fmt: skip
    counts = r.counts
    console.print(
        f"taps accepted {counts.get('accepted', 0)}, duplicates {counts.get('duplicates', 0)}, "
        f"rejected {counts.get('rejected', 0)}, refused at the validator "
        f"{counts.get('refused_by_validator', 0)}"
    )
    if rec["ok"]:
        console.print("[bold green]reconciled[/]: taps x fares = ledger = issuer captures")
    else:
        console.print("[bold red]NOT reconciled[/]:")
        for problem in rec["problems"]:
            console.print(f"  {problem}")
    if r.acquirer is not None:
        a = r.acquirer
        link, saf, stood = a["link"], a["saf"], a["stood_in"]
        console.print(
            f"bank over ISO 8583: {link['answered']} answer(s) to {link['sent']} message(s), "
            f"timeouts {link['timeout']}, unreachable {link['down']}, garbled "
            f"{link['garbled']}; stood in for {stood['requests']} request(s), of them "
            f"{stood['charges']} aggregate charge(s) of {m(stood['charges_fen'])} at the "
            f"operator's risk; store-and-forward open {saf['open']}, done {saf['done']}"
        )


# -- the MQTT consumer: `tapsim backoffice run` -------------------------------------------

SIGNING_KEY_ENV = "TAPSIM_SIGNING_KEY"


def register_run(bs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = bs.add_parser(
        "run", help="consume validators' taps from MQTT into the core; publish the deny list",
        description="Take tap records from the broker (MQTT shared subscription, one persistent "
                    "session per worker), charge them through the transaction core (fares, "
                    "deferred authorization, deny list, ledger) and acknowledge each only after "
                    "its batch is committed; refused payloads go to the dead-letter topic. "
                    "Publishes the signed deny list (retained snapshot + deltas) and the fare "
                    "table version. Day-end closes and scheduled debt recovery run every --tick "
                    "seconds. Stop with SIGINT/SIGTERM. See backoffice/README.md.",
    )  # fmt: skip
    p.add_argument("--broker", required=True, metavar="URL",
                   help="mqtt://backoffice@host[:port] or mqtts://... (password: "
                        "$TAPSIM_MQTT_PASSWORD, e.g. from tapsim broker config's "
                        "credentials/backoffice)")
    p.add_argument("--ca", type=Path, metavar="PEM", help="CA certificate for mqtts://")
    add_db_argument(p)
    p.add_argument("--feed", default="city", metavar="PATH|NAME",
                   help="GTFS-Fares v2 folder or zip, or a sample feed (default city)")
    p.add_argument("--workers", type=integer(1, MAX_WORKERS), default=2, metavar="N",
                   help="MQTT connections sharing the tap subscription (default 2)")
    p.add_argument("--signing-key", type=Path, metavar="PEM",
                   help=f"Ed25519 key the deny list is signed with (backoffice-signing.pem of "
                        f"tapsim broker config; default ${SIGNING_KEY_ENV}); without one "
                        "nothing is published to validators")
    p.add_argument("--batch", type=integer(1, MAX_BATCH, "taps"), default=500, metavar="N",
                   help="at most N taps per transaction (default 500)")
    p.add_argument("--tick", type=number(0.01, DAY_S, "seconds"), default=60.0, metavar="S",
                   help="day-end closes and scheduled debt recovery every S seconds (default 60)")
    p.add_argument("--snapshot-every", type=number(0, DAY_S, "seconds"), default=5.0,
                   metavar="S",
                   help="after deny-list changes, a new retained snapshot at most every S "
                        "seconds (deltas go out at once; default 5)")
    p.add_argument("--stats", type=Path, metavar="FILE",
                   help="write the run's counts and tap-to-ledger latency (JSON) here at exit")
    p.add_argument("--json", action="store_true", help="print the final counts as JSON")
    p.add_argument("--no-commit-acks", action="store_true",
                   help="do not confirm committed taps to validators (they then resend "
                        "each tap after their commit timeout): only to measure what the "
                        "confirmations cost")
    add_issuer_arguments(p)
    add_atc_window_argument(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    p.set_defaults(func=run_main)


def _signer(path: Path | None) -> Signer | None:
    from wire.errors import WireError  # noqa: PLC0415
    from wire.signing import Signer, load_private_key  # noqa: PLC0415

    if path is None and os.environ.get(SIGNING_KEY_ENV):
        path = Path(os.environ[SIGNING_KEY_ENV])
    if path is None:
        return None
    try:
        return Signer(load_private_key(path.read_bytes(), str(path)))
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from None
    except WireError as exc:
        raise UserError(exc.detail) from None


def _feed_path(spec: str) -> Path:
    from fare.samples import sample_feed_path  # noqa: PLC0415

    path = Path(spec)
    return path if path.exists() else sample_feed_path(spec)


def run_main(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from backoffice.branch import key_store  # noqa: PLC0415
    from backoffice.consumer import Consumer, ConsumerConfig  # noqa: PLC0415
    from backoffice.consumer.downlink import fare_version, feed_digest  # noqa: PLC0415
    from backoffice.consumer.gate import FareMediaLabels  # noqa: PLC0415
    from backoffice.consumer.link import BrokerAddress, BrokerUrlError  # noqa: PLC0415
    from backoffice.fare_pricer import FarePricer  # noqa: PLC0415
    from backoffice.storage import StorageError, open_store, redact  # noqa: PLC0415
    from backoffice.writer_lock import BACKOFFICE_RUN, WriterLock  # noqa: PLC0415

    if args.verbose:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.stats is not None:  # written at the end of the run: checked at its start
        check_output_file(args.stats, "--stats")
    try:
        config = ConsumerConfig(workers=args.workers, max_batch=args.batch, tick=args.tick,
                                snapshot_every=args.snapshot_every,
                                commit_acks=not args.no_commit_acks)
        broker = BrokerAddress.from_url(args.broker, tls_ca=args.ca)
    except (ValueError, BrokerUrlError) as exc:
        raise UserError(str(exc)) from None
    check_broker_tls(broker, args.ca)
    if broker.username is not None and asyncio.run(broker.accepts_anonymous()):
        raise UserError(f"--broker {broker.url()} accepts clients without credentials: it is "
                        "not the broker 'tapsim broker config' made (is its port taken by "
                        "another broker?); refusing to send taps through it")
    feed = open_feed(args.feed)
    digest = feed_digest(_feed_path(args.feed))
    signer = _signer(args.signing_key)
    url = db_url(args.db)
    check_db_url(url)
    keys = key_store(kek())  # card keys are stored wrapped: the KEK is all the issuer needs
    token_key()  # a bad TAPSIM_TOKEN_KEY is an error now, not at the first reopen
    cfg = core_config(feed.currency, feed.timezone, args.atc_window)

    check_issuer_arguments(args)

    def open_core_here() -> TransactionCore:
        store = open_store(url)
        try:
            core = open_core(store, FarePricer(feed), keys, db_banks(store), cfg,
                             open_gateway(args, store))
        except BaseException:
            store.close()
            raise
        return core

    def fare_message(core: TransactionCore) -> FareTableVersion:
        now = dt.datetime.now(dt.UTC)
        return fare_version(core.store, feed.name or _feed_path(args.feed).stem, digest, now)

    consumer = Consumer(broker, open_core_here, FareMediaLabels(
        {m.fare_media_id: m.media_type for m in feed.fare_media.values()}), feed.timezone,
        signer=signer, fare=fare_message if signer else None, config=config)

    async def main() -> ConsumerStats:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        run = asyncio.create_task(consumer.run(stop))
        ready = asyncio.create_task(consumer.ready.wait())
        await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            print(f"ready: {config.workers} worker(s) on {broker.host}:{broker.port} into "
                  f"{redact(url)}; deny list version {consumer.stats.deny_version}"
                  + ("" if signer else " (no signing key: nothing published to validators)"),
                  flush=True)
        ready.cancel()
        return await run

    open_db(url).close()  # another program's database: refused before a lock is made beside it
    try:
        with WriterLock(url, BACKOFFICE_RUN), issuer_lock(url, BACKOFFICE_RUN, args):
            stats = asyncio.run(main())
    except StorageError as exc:
        raise UserError(str(exc)) from None
    summary = stats.to_dict()
    if args.stats:
        args.stats.write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary))
    else:
        lat = summary["tap_to_ledger_ms"]
        print(f"taps ingested {stats.ingested}, duplicates {stats.duplicates}, rejected "
              f"{stats.rejected}, not charged {sum(stats.skipped.values())}, dead letters "
              f"{sum(stats.dead_letters.values())}; tap to ledger p50 {lat['p50']} ms, "
              f"p99 {lat['p99']} ms")
    return 0
