"""What both SQL backends share: the queries, written once with ``?`` placeholders.

A backend subclass supplies the connection, transactions, placeholder style and the
fastest bulk insert it has (``executemany`` on SQLite, ``COPY`` on PostgreSQL).
"""

from __future__ import annotations

import gc
import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

from backoffice.ledger import ACCOUNTS, Entry
from backoffice.records import (
    AggregateRow,
    AlertRow,
    CardAtcRow,
    CardRow,
    Changes,
    ClearingItemRow,
    DebtRow,
    DenyEventRow,
    DenyRow,
    EpurseTapRow,
    RejectRow,
    Snapshot,
    TapRow,
    to_us,
)
from backoffice.storage import issuer_rows as ir
from backoffice.storage.base import (
    ISSUER_CHANGED_KEY,
    BalanceRow,
    FareRow,
    IssuerConflictError,
    StorageBusyError,
    StorageError,
)
from backoffice.storage.owner import Owner, Survey, classify, refusal
from backoffice.storage.schema import MARKER_KEY, SCHEMA_VERSION, TABLES, VERSION_KEY
from issuer.load_sql import JOURNAL_COLS
from issuer.models import AuthRecord, Capture
from issuer.retention import REFERENCE_REACH
from issuer.store import IssuerChanges, IssuerSnapshot

Params = Sequence[Any]
T = TypeVar("T")


def gc_paused(load: Callable[..., T]) -> Callable[..., T]:
    """Run a loader with the cyclic collector paused: a restart makes millions of acyclic
    rows and records, and the collections they would trigger cost about a third of it."""

    def run(*args: Any, **kwargs: Any) -> T:
        was = gc.isenabled()
        gc.disable()
        try:
            return load(*args, **kwargs)
        finally:
            if was:
                gc.enable()

    run.__doc__ = load.__doc__
    return run

_TABLES = frozenset(
    (
        "taps", "rejects", "ledger", "aggregates", "debts", "transit_cards", "deny_list",
        "deny_events", "alerts", "card_atcs", "iss_accounts", "iss_cards", "iss_auths",
        "iss_holds", "iss_captures", "iss_journal", "epurse_taps", "clearing_items",
    )
)  # fmt: skip


class _ReleasedError(Exception):
    """Thrown into a held issuer transaction to roll it back."""


def _cols(fields: Sequence[str]) -> str:
    return ", ".join(fields)


def _insert(table: str, fields: Sequence[str]) -> str:
    marks = ", ".join("?" for _ in fields)
    return f"INSERT INTO {table} ({_cols(fields)}) VALUES ({marks})"  # noqa: S608 - fixed names


def _upsert(table: str, fields: Sequence[str], key: str) -> str:
    sets = ", ".join(f"{f} = excluded.{f}" for f in fields if f != key)
    return f"{_insert(table, fields)} ON CONFLICT ({key}) DO UPDATE SET {sets}"


def _insert_ignore(table: str, fields: Sequence[str], key: str) -> str:
    return f"{_insert(table, fields)} ON CONFLICT ({key}) DO NOTHING"


TAP_COLS = TapRow._fields
AGG_COLS = AggregateRow._fields
DEBT_COLS = DebtRow._fields
CARD_COLS = CardRow._fields
CARD_ATC_COLS = CardAtcRow._fields
TOTALS_KEY = "core.totals"  # = backoffice.engine.TOTALS_KEY (the core's running figures)
# How far back a charge may refer to a verification: the longest travel time (14 days) plus
# the recovery retry window (14 days); issuer.retention, the rule this module's bounded
# issuer load writes in SQL.
REFERENCE_REACH_US = REFERENCE_REACH // timedelta(microseconds=1)
ENTRY_COLS = Entry._fields
REJECT_COLS = RejectRow._fields
DENY_COLS = DenyRow._fields
DENY_EVENT_COLS = DenyEventRow._fields
ALERT_COLS = AlertRow._fields
EPURSE_COLS = EpurseTapRow._fields
CLEARING_COLS = ClearingItemRow._fields
_CHUNK = 500  # ids per IN (...) query: far below SQLite's and PostgreSQL's parameter limits


# Both sides of every entry: debits positive, credits negative.
_SIDES = (
    "SELECT debit AS account, operator_id, service_day, amount AS amt FROM ledger "
    "UNION ALL SELECT credit, operator_id, service_day, -amount FROM ledger"
)


class SqlStore(ABC):
    """The shared implementation of :class:`backoffice.storage.base.Store`."""

    backend: str = "sql"
    _lock_clause = ""  # added to the issuer lock's read (PostgreSQL: " FOR UPDATE")
    # How long a branch operation waits for the issuer lock (PostgreSQL; SQLite's busy
    # timeout is the same 5 s): then it is refused with a message, not kept waiting.
    hold_wait_ms = 5000

    def __init__(self, url: str) -> None:
        self._url = url
        self._depth = 0  # open transactions of _tx: inner ones run inside the outer one
        self._held: ExitStack | None = None  # hold_issuer's transaction, until saved

    @property
    def url(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._url!r})"

    # -- what a backend provides ----------------------------------------------------------

    @abstractmethod
    def _execute(self, sql: str, params: Params = ()) -> None: ...

    @abstractmethod
    def _executemany(self, sql: str, rows: Sequence[Params]) -> None: ...

    @abstractmethod
    def _query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def _transaction(self) -> Any:
        """A context manager: BEGIN on enter, COMMIT on success, ROLLBACK on error."""

    @abstractmethod
    def close(self) -> None: ...

    def _bulk_insert(self, table: str, fields: Sequence[str], rows: Sequence[Params]) -> None:
        """Append-only rows (taps, ledger); backends override with their fastest path."""
        if rows:
            self._executemany(_insert(table, fields), rows)

    def _serial(self) -> str:
        return "INTEGER PRIMARY KEY AUTOINCREMENT"

    # -- schema ---------------------------------------------------------------------------

    @abstractmethod
    def _survey(self) -> Survey:
        """What the database holds (its tables, and SQLite's application id)."""

    def _where(self) -> str:
        """The database named for a message: which file, or which schema of which database."""
        return f"{self.backend} database {self._url}"

    def _busy(self) -> StorageBusyError:
        """The refusal when another writer held the database past the wait, wherever the
        wait was (backoffice/README.md, "Branch work while the core runs")."""
        return StorageBusyError(
            f"{self.backend} database at {self._url} is busy: another writer (a running "
            "`tapsim backoffice run`, `backoffice replay` or `tapsim issuer run` "
            "committing, or another branch operation) held it longer than the busy "
            "timeout; nothing was changed, try again")

    def _prepare_writes(self) -> None:
        """Settings a writer needs, made only once the database is known to be tapsim's
        (SQLite: WAL, so another program's file is never switched to it)."""
        return

    def _stamp(self) -> None:
        """Mark the database as tapsim's beyond the meta rows (SQLite: its application id)."""
        return

    def _meta_rows(self, tables: frozenset[str]) -> tuple[str | None, str | None]:
        """The marker and version rows of the meta table, if there is one."""
        if "meta" not in tables:
            return None, None
        try:
            rows = dict(self._query("SELECT key, value FROM meta WHERE key IN (?, ?)",
                                    (MARKER_KEY, VERSION_KEY)))
        except StorageError:  # another program's meta table, without these columns
            return None, None
        return rows.get(MARKER_KEY), rows.get(VERSION_KEY)

    def _open_schema(self, *, read_only: bool = False) -> None:
        """Check the database is tapsim's (an empty one is made tapsim's, unless
        ``read_only``) and of this tapsim's schema version, else a StorageError saying so;
        then, for a writer, create any missing table and the marker."""
        survey = self._survey()
        owner = classify(survey)
        if owner is Owner.FOREIGN:
            raise StorageError(refusal(self._where(), survey))
        if owner is Owner.EMPTY and read_only:
            raise StorageError(f"{self._where()} holds no tapsim data yet (nothing to read; "
                               "tapsim card issue or a replay creates it)")
        version = survey.marker or survey.version  # None: marked, but its rows are gone
        if version is not None and version != SCHEMA_VERSION:
            raise StorageError(f"{self._where()} has schema version {version}, "
                               f"this tapsim needs {SCHEMA_VERSION}")
        if read_only:
            return
        self._prepare_writes()
        with self._tx():
            for ddl in TABLES:
                self._execute(ddl.replace("{serial}", self._serial()))
            for key in (VERSION_KEY, MARKER_KEY):
                self._execute(_insert_ignore("meta", ("key", "value"), "key"),
                              (key, SCHEMA_VERSION))
            self._stamp()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One transaction; inside another one (``issuer_held``) it is part of that one,
        which commits or rolls back everything."""
        if self._depth:
            yield
            return
        with self._transaction():
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1

    # -- the issuer's records: one writer at a time, conflicts detected --------------------

    def _lock_issuer(self) -> str:
        """Inside a write transaction: take the issuer lock every writer of the issuer's
        records takes, and return the ISSUER_CHANGED_KEY mark ("" when none was written).

        On SQLite the write transaction (BEGIN IMMEDIATE) already is that lock (one writer
        per database): one read of the meta table's primary key.  PostgreSQL's write
        transactions run side by side, so the mark's row is read ``FOR UPDATE`` (created
        first, empty, if no one wrote a mark yet): the same one read, and it waits for a
        writer holding that row, then sees what it committed."""
        select = "SELECT value FROM meta WHERE key = ?" + self._lock_clause  # noqa: S608
        rows = self._query(select, (ISSUER_CHANGED_KEY,))
        if not rows and self._lock_clause:
            self._execute(_insert_ignore("meta", ("key", "value"), "key"),
                          (ISSUER_CHANGED_KEY, ""))
            rows = self._query(select, (ISSUER_CHANGED_KEY,))
        return str(rows[0][0] or "") if rows else ""

    def issuer_mark(self) -> str:
        """The ISSUER_CHANGED_KEY mark as of now ("" when none was written): what an
        in-memory issuer remembers at its load, and gives back to ``commit``."""
        return self.meta(ISSUER_CHANGED_KEY) or ""

    def _check_issuer(self, issuer_mark: str | None) -> str:
        current = self._lock_issuer()
        if issuer_mark is not None and current != issuer_mark:
            raise IssuerConflictError(
                f"{self.backend} database at {self._url}: the issuer's records were changed "
                "by another process (a branch operation) since they were loaded")
        return current

    @contextmanager
    def issuer_held(self) -> Iterator[str]:
        """A transaction holding the issuer lock from its first read to its commit: what is
        read inside is the latest, and no other writer of the issuer's records commits in
        between (``commit``/``save_issuer`` inside are part of it).  Yields the mark."""
        with self._tx():
            yield self._lock_issuer()

    @contextmanager
    def _held_waiting(self) -> Iterator[str]:
        """``issuer_held``, waiting at most ``hold_wait_ms`` for the lock."""
        with self._tx():
            if self._lock_clause:  # PostgreSQL: for this transaction only
                self._execute(f"SET LOCAL lock_timeout = {int(self.hold_wait_ms)}")
            yield self._lock_issuer()

    def hold_issuer(self) -> str:
        """Begin a branch operation: ``issuer_held`` until ``save_issuer`` commits it or
        ``release_issuer`` rolls it back.  Returns the mark."""
        if self._held is not None:
            raise StorageError(f"{self.backend}: the issuer is already held")
        stack = ExitStack()
        mark = stack.enter_context(self._held_waiting())  # StorageBusyError past the wait
        self._held = stack
        return mark

    def release_issuer(self) -> None:
        """End a held branch operation that did not save: nothing of it is written."""
        stack, self._held = self._held, None
        if stack is not None:
            stack.__exit__(_ReleasedError, _ReleasedError(), None)  # rolls the transaction back

    # -- writing --------------------------------------------------------------------------

    def commit(self, changes: Changes, issuer: IssuerChanges | None = None, *,
               issuer_mark: str | None = None) -> None:
        """One batch of the core, all or nothing.  With ``issuer_mark`` (the mark the core's
        issuer was loaded at), the transaction first takes the issuer lock and checks the
        mark: another process changed the issuer's records since -> IssuerConflictError,
        nothing written (the core reloads and redoes the batch)."""
        with self._tx():
            if issuer_mark is not None:
                self._check_issuer(issuer_mark)
            self._write(changes)
            if issuer:
                self._write_issuer(issuer)

    def save_issuer(self, changes: IssuerChanges, *, issuer_mark: str | None = None) -> str:
        """The issuer's records changed outside a running back office (``tapsim card issue``,
        ``tapsim account``, ``tapsim issuer run``): written under the issuer lock with a new
        ISSUER_CHANGED_KEY mark, which makes a running back office's next commit conflict
        and redo (and its next ``refresh`` reload).  With ``issuer_mark``, a mark that moved
        since is an IssuerConflictError.  Commits a ``hold_issuer`` transaction; returns the
        new mark."""
        mark = secrets.token_hex(8)
        with self._tx():
            self._check_issuer(issuer_mark)
            self._write_issuer(changes)
            self._execute(_upsert("meta", ("key", "value"), "key"), (ISSUER_CHANGED_KEY, mark))
        held, self._held = self._held, None
        if held is not None:
            held.close()  # commits
        return mark

    def _write(self, ch: Changes) -> None:
        self._bulk_insert("taps", TAP_COLS, ch.taps)
        if ch.tap_updates:
            self._executemany(
                "UPDATE taps SET amount = ?, explain = ? WHERE tap_id = ?", ch.tap_updates
            )
        if ch.rejects:
            self._executemany(_insert_ignore("rejects", REJECT_COLS, "reject_id"), ch.rejects)
        self._bulk_insert("ledger", ENTRY_COLS, ch.entries)
        if ch.aggregates:
            self._executemany(_upsert("aggregates", AGG_COLS, "aggregate_id"), ch.aggregates)
        if ch.debts:
            self._executemany(_upsert("debts", DEBT_COLS, "debt_id"), ch.debts)
        if ch.cards:
            self._executemany(_upsert("transit_cards", CARD_COLS, "pan_token"), ch.cards)
        if ch.card_atcs:
            self._executemany(_upsert("card_atcs", CARD_ATC_COLS, "pan_token"), ch.card_atcs)
        if ch.deny_set:
            self._executemany(_upsert("deny_list", DENY_COLS, "pan_token"), ch.deny_set)
        if ch.deny_clear:
            self._executemany(
                "DELETE FROM deny_list WHERE pan_token = ?", [(t,) for t in ch.deny_clear]
            )
        if ch.deny_events:
            self._executemany(_insert("deny_events", DENY_EVENT_COLS), ch.deny_events)
        if ch.alerts:
            self._executemany(_insert_ignore("alerts", ALERT_COLS, "alert_id"), ch.alerts)
        if ch.meta:
            self._executemany(_upsert("meta", ("key", "value"), "key"), sorted(ch.meta.items()))

    def _write_issuer(self, ch: IssuerChanges) -> None:
        if ch.accounts:
            self._executemany(
                _upsert("iss_accounts", ir.ACCOUNT_COLS, "account_id"),
                [ir.account_row(a) for a in ch.accounts.values()],
            )
        if ch.cards:
            self._executemany(
                _upsert("iss_cards", ir.CARD_COLS, "pan_token"),
                [ir.card_row(c) for c in ch.cards.values()],
            )
        if ch.auths:
            self._executemany(
                _upsert("iss_auths", ir.AUTH_COLS, "request_id"),
                [ir.auth_row(a) for a in ch.auths.values()],
            )
        if ch.holds:
            self._executemany(
                _upsert("iss_holds", ir.HOLD_COLS, "hold_id"),
                [ir.hold_row(h) for h in ch.holds.values()],
            )
        if ch.captures:
            self._executemany(
                _insert("iss_captures", ir.CAPTURE_COLS),
                [ir.capture_row(c) for c in ch.captures.values()],
            )
        if ch.journal:  # plain INSERT: an entry id seen before fails the transaction
            self._executemany(
                _insert("iss_journal", JOURNAL_COLS),
                [ir.journal_row(e) for e in ch.journal.values()],
            )

    # -- e-purse records and clearing -----------------------------------------------------

    def _existing(self, table: str, tap_ids: Sequence[str]) -> set[str]:
        """Which of ``tap_ids`` ``table`` already holds (asked in chunks: bounded by the
        batch, not by the table's history)."""
        found: set[str] = set()
        for i in range(0, len(tap_ids), _CHUNK):
            chunk = tap_ids[i:i + _CHUNK]
            marks = ", ".join("?" for _ in chunk)
            found.update(r[0] for r in self._query(
                f"SELECT tap_id FROM {table} WHERE tap_id IN ({marks})", chunk))  # noqa: S608
        return found

    def _add_new(self, table: str, cols: Sequence[str],
                 rows: Sequence[EpurseTapRow] | Sequence[ClearingItemRow]) -> int:
        """Insert the rows whose tap id ``table`` does not hold yet (each tap id once); how
        many were new."""
        if not rows:
            return 0
        with self._tx():
            known = self._existing(table, [r.tap_id for r in rows])
            fresh = {r.tap_id: r for r in rows if r.tap_id not in known}
            if fresh:
                self._executemany(_insert_ignore(table, cols, "tap_id"), list(fresh.values()))
        return len(fresh)

    def add_epurse(self, rows: Sequence[EpurseTapRow]) -> int:
        """Keep accepted e-purse taps; a tap id already kept is ignored (a resend).  How many
        were new."""
        return self._add_new("epurse_taps", EPURSE_COLS, rows)

    def epurse_taps(self, day: str | None = None) -> list[EpurseTapRow]:
        """Kept e-purse taps (of one clearing day, or all), in time order."""
        where, params = ("WHERE day = ? ORDER BY time_us, tap_id", (day,)) if day else (
            "ORDER BY time_us, tap_id", ())
        return [EpurseTapRow(*r) for r in self._select("epurse_taps", EPURSE_COLS, where, params)]

    def epurse_cleared_of_cards(self, cards: Iterable[tuple[str, str]]) -> list[EpurseTapRow]:
        """The cleared e-purse taps of these (issuer id, card number) pairs, any day: the
        history clearing checks a card's serials against (asked by card number, in chunks)."""
        wanted = set(cards)
        numbers = sorted({number for _, number in wanted})
        cols = ", ".join(f"e.{c}" for c in EPURSE_COLS)
        out: list[EpurseTapRow] = []
        for i in range(0, len(numbers), _CHUNK):
            chunk = numbers[i:i + _CHUNK]
            marks = ", ".join("?" for _ in chunk)
            rows = self._query(
                f"SELECT {cols} FROM epurse_taps e JOIN clearing_items c "  # noqa: S608
                f"ON c.tap_id = e.tap_id WHERE c.status = ? AND e.card_number IN ({marks})",
                ("cleared", *chunk))
            out += [EpurseTapRow(*r) for r in rows if (r[1], r[2]) in wanted]
        return out

    def add_clearing(self, items: Sequence[ClearingItemRow]) -> int:
        """Record clearing decisions; a tap already decided keeps its first decision (a
        re-run never settles twice).  How many were new."""
        return self._add_new("clearing_items", CLEARING_COLS, items)

    def clearing_items(self, day: str | None = None) -> list[ClearingItemRow]:
        where, params = ("WHERE day = ? ORDER BY tap_id", (day,)) if day else (
            "ORDER BY day, tap_id", ())
        return [ClearingItemRow(*r)
                for r in self._select("clearing_items", CLEARING_COLS, where, params)]

    # -- reading --------------------------------------------------------------------------

    def _select(
        self, table: str, fields: Sequence[str], where: str = "", params: Params = ()
    ) -> list[tuple[Any, ...]]:
        sql = f"SELECT {_cols(fields)} FROM {table}"  # noqa: S608 - fixed names
        return self._query(f"{sql} {where}" if where else sql, params)

    @gc_paused
    def load(self, *, idle_cards: bool = True) -> Snapshot:
        """Open state only (see :class:`Snapshot`): with the core's running totals kept, no
        query reads the whole history; every one is indexed or bounded by cards.

        ``idle_cards=False``: only the cards a core evicting idle cards can hold (tapped from
        the floor on, or with an open aggregate, an unpaid debt, on the deny list; see
        backoffice.idle), and one stored fare state to check; the caller reads the others
        when they tap again (:meth:`load_cards`)."""
        snap = Snapshot()
        totals = self.meta(TOTALS_KEY)
        since: tuple[str, Params] = ("", ())
        if totals is not None:
            kept = json.loads(totals)
            snap.floor_us = kept["floor_us"]
            snap.balances = {str(k): int(v) for k, v in kept["balances"].items()}
            snap.fares_total = int(kept["fares_total"])
        else:  # a database the core never wrote its totals into: summed once
            snap.balances = {
                r[0]: int(r[1])
                for r in self._query(f"SELECT account, SUM(amt) FROM ({_SIDES}) x GROUP BY account")  # noqa: S608
            }
            snap.fares_total = int(self._query("SELECT COALESCE(SUM(amount), 0) FROM taps")[0][0])
        if snap.floor_us is not None:
            since = ("WHERE time_us >= ?", (snap.floor_us,))
        where, params = since
        snap.recent_taps = [
            (r[0], r[1], r[2], r[3], r[4])
            for r in self._select("taps", ("tap_id", "pan_token", "atc", "time_us",
                                           "received_us"), where + " ORDER BY time_us", params)
        ]  # fmt: skip
        snap.reject_ids = {
            r[0] for r in self._select(
                "rejects", ("reject_id",), since[0].replace("time_us", "received_us"), since[1]
            )
        }  # fmt: skip
        if idle_cards or snap.floor_us is None:
            snap.cards = [CardRow(*r) for r in self._select("transit_cards", CARD_COLS)]
            snap.card_atcs = [CardAtcRow(*r) for r in self._select("card_atcs", CARD_ATC_COLS)]
        else:
            active = (
                "WHERE pan_token IN (SELECT pan_token FROM taps WHERE time_us >= ? "
                "UNION SELECT pan_token FROM aggregates WHERE status = 'open' "
                "UNION SELECT pan_token FROM debts WHERE status IN ('open', 'written_off') "
                "UNION SELECT pan_token FROM deny_list)"
            )
            params = (snap.floor_us,)
            snap.cards = [CardRow(*r) for r in self._select("transit_cards", CARD_COLS,
                                                            active, params)]
            snap.card_atcs = [CardAtcRow(*r) for r in self._select("card_atcs", CARD_ATC_COLS,
                                                                   active, params)]
            if not snap.cards:
                sample = self._query("SELECT fare_state FROM transit_cards "
                                     "WHERE fare_state <> '' LIMIT 1")
                snap.state_sample = str(sample[0][0]) if sample else None
        snap.open_aggregates = [
            AggregateRow(*r)
            for r in self._select("aggregates", AGG_COLS, "WHERE status = ?", ("open",))
        ]
        tap_cols = ", ".join(f"t.{c}" for c in TAP_COLS)
        snap.open_taps = [
            TapRow(*r)
            for r in self._query(
                f"SELECT {tap_cols} FROM taps t JOIN aggregates a "  # noqa: S608
                "ON a.aggregate_id = t.aggregate_id WHERE a.status = ?",
                ("open",),
            )
        ]
        snap.unpaid_debts = [
            DebtRow(*r)
            for r in self._select(
                "debts", DEBT_COLS, "WHERE status IN (?, ?)", ("open", "written_off")
            )
        ]
        snap.deny = [DenyRow(*r) for r in self._select("deny_list", DENY_COLS)]
        return snap

    def load_cards(self, tokens: Sequence[str]) -> list[tuple[CardRow, CardAtcRow | None]]:
        """The stored rows of these cards (those the database holds), each with its saved
        ATC window: what a core that evicted them needs when they tap again (one query per
        500 tokens, by primary key)."""
        cols = ", ".join(f"c.{f}" for f in CARD_COLS)
        out: list[tuple[CardRow, CardAtcRow | None]] = []
        for i in range(0, len(tokens), _CHUNK):
            chunk = tokens[i:i + _CHUNK]
            marks = ", ".join("?" for _ in chunk)
            for r in self._query(
                f"SELECT {cols}, a.atc_high, a.atc_bits FROM transit_cards c "  # noqa: S608
                f"LEFT JOIN card_atcs a ON a.pan_token = c.pan_token "
                f"WHERE c.pan_token IN ({marks})", chunk):
                card = CardRow(*r[:5])
                atcs = None if r[5] is None else CardAtcRow(card.pan_token, int(r[5]), str(r[6]))
                out.append((card, atcs))
        return out

    def load_issuer(self) -> IssuerSnapshot:
        return IssuerSnapshot(
            accounts=[ir.account_from(r) for r in self._select("iss_accounts", ir.ACCOUNT_COLS)],
            cards=[ir.card_from(r) for r in self._select("iss_cards", ir.CARD_COLS)],
            auths=[ir.auth_from(r) for r in self._select("iss_auths", ir.AUTH_COLS)],
            holds=[ir.hold_from(r) for r in self._select("iss_holds", ir.HOLD_COLS)],
            captures=[ir.capture_from(r) for r in self._select("iss_captures", ir.CAPTURE_COLS)],
        )

    @gc_paused
    def load_issuer_open(self) -> IssuerSnapshot:
        """What the in-process issuer of a running core can still need, not its history:
        :meth:`load_issuer_since` the core's late-arrival floor.  Without the core's floor
        (a database of an older tapsim): every record."""
        totals = self.meta(TOTALS_KEY)
        floor = json.loads(totals)["floor_us"] if totals is not None else None
        if floor is None:
            return self.load_issuer()
        return self._issuer_since(floor)

    @gc_paused
    def load_issuer_since(self, floor: datetime) -> IssuerSnapshot:
        """The records :mod:`issuer.retention` keeps for ``floor``: accounts and cards; holds
        still active and settled ones from the floor on; authorizations and captures from
        the floor on (a retried batch asks again with the same ids), and older approved,
        verified verifications no charge has completed yet (a deferred charge or a
        resubmission refers to them: up to 14 days of travel + 14 of retries back)."""
        return self._issuer_since(to_us(floor))

    def _issuer_since(self, floor: int) -> IssuerSnapshot:
        refs = floor - REFERENCE_REACH_US
        # Literals as in the partial index iss_auths_open, so both databases use it
        # (issuer.retention.keeps_auth in SQL).
        open_refs = ("WHERE completed_by IS NULL AND code = '00' AND verified = 1 "
                     "AND kind IN ('account_verification', 'purchase') "
                     "AND at_us >= ? AND at_us < ?")
        auths = self._select("iss_auths", ir.AUTH_COLS, "WHERE at_us >= ?", (floor,))
        auths += self._select("iss_auths", ir.AUTH_COLS, open_refs, (refs, floor))
        holds = self._select("iss_holds", ir.HOLD_COLS, "WHERE status = ?", ("active",))
        holds += self._select("iss_holds", ir.HOLD_COLS, "WHERE created_us >= ? AND status <> ?",
                              (floor, "active"))  # fmt: skip
        return IssuerSnapshot(
            accounts=[ir.account_from(r) for r in self._select("iss_accounts", ir.ACCOUNT_COLS)],
            cards=[ir.card_from(r) for r in self._select("iss_cards", ir.CARD_COLS)],
            auths=[ir.auth_from(r) for r in auths],
            holds=[ir.hold_from(r) for r in holds],
            captures=[ir.capture_from(r) for r in self._select(
                "iss_captures", ir.CAPTURE_COLS, "WHERE at_us >= ?", (floor,))],
        )  # fmt: skip

    def issuer_request(self, request_id: str) -> IssuerSnapshot:
        """One authorization as the database has it, with its hold and that hold's capture
        (empty when unknown): for a late message naming a record memory has pruned."""
        auths = [ir.auth_from(r) for r in self._select(
            "iss_auths", ir.AUTH_COLS, "WHERE request_id = ?", (request_id,))]  # fmt: skip
        hold_id = auths[0].hold_id if auths else None
        if hold_id is None:
            return IssuerSnapshot(auths=auths)
        return IssuerSnapshot(
            auths=auths,
            holds=[ir.hold_from(r) for r in self._select(
                "iss_holds", ir.HOLD_COLS, "WHERE hold_id = ?", (hold_id,))],
            captures=[ir.capture_from(r) for r in self._select(
                "iss_captures", ir.CAPTURE_COLS, "WHERE hold_id = ?", (hold_id,))],
        )  # fmt: skip

    def issuer_auths_from(self, at: datetime) -> list[AuthRecord]:
        """Authorizations answered at ``at`` or later (indexed by time), oldest first."""
        rows = self._select("iss_auths", ir.AUTH_COLS, "WHERE at_us >= ? ORDER BY at_us",
                            (to_us(at),))
        return [ir.auth_from(r) for r in rows]

    def meta(self, key: str) -> str | None:
        """A value of the key/value table (settings kept with the data), or None."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def meta_prefixed(self, prefix: str) -> dict[str, str]:
        rows = self._query("SELECT key, value FROM meta WHERE key LIKE ?", (prefix + "%",))
        return {str(k): str(v) for k, v in rows if str(k).startswith(prefix)}

    def set_meta(self, key: str, value: str) -> None:
        with self._tx():
            self._execute(_upsert("meta", ("key", "value"), "key"), (key, value))

    def tap_rows(self, tap_ids: Iterable[str] | None = None) -> list[TapRow]:
        """Tap rows in time order (all, or those of ``tap_ids``), fares as priced now."""
        rows = [TapRow(*r) for r in self._select("taps", TAP_COLS, "ORDER BY time_us, tap_id")]
        if tap_ids is None:
            return rows
        wanted = set(tap_ids)
        return [r for r in rows if r.tap_id in wanted]

    def ledger_balances(self) -> list[BalanceRow]:
        rows = self._query(
            f"SELECT account, operator_id, service_day, SUM(amt) FROM ({_SIDES}) x "  # noqa: S608
            "GROUP BY account, operator_id, service_day "
            "ORDER BY account, operator_id, service_day"
        )
        return [BalanceRow(r[0], r[1], r[2], int(r[3])) for r in rows]

    def bad_entries(self) -> list[str]:
        marks = ", ".join("?" for _ in ACCOUNTS)
        rows = self._query(
            "SELECT txn_id FROM ledger WHERE debit = credit OR amount <= 0 "  # noqa: S608
            f"OR debit NOT IN ({marks}) OR credit NOT IN ({marks}) ORDER BY txn_id",
            (*ACCOUNTS, *ACCOUNTS),
        )
        return [r[0] for r in rows]

    def fares_by_operator_day(self) -> list[FareRow]:
        rows = self._query(
            "SELECT operator_id, service_day, COUNT(*), SUM(amount) FROM taps "
            "GROUP BY operator_id, service_day ORDER BY operator_id, service_day"
        )
        return [FareRow(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    def open_aggregates_total(self) -> int:
        """Fares in open aggregates (their rows hold the total only from open and close)."""
        rows = self._query(
            "SELECT COALESCE(SUM(t.amount), 0) FROM taps t JOIN aggregates a "
            "ON a.aggregate_id = t.aggregate_id WHERE a.status = ?",
            ("open",),
        )
        return int(rows[0][0])

    def captures(self, merchant_id: str | None = None) -> list[Capture]:
        where, params = ("WHERE merchant_id = ?", (merchant_id,)) if merchant_id else ("", ())
        rows = self._select("iss_captures", ir.CAPTURE_COLS, where + " ORDER BY capture_id", params)
        return [ir.capture_from(r) for r in rows]

    def aggregates(self, status: str | None = None) -> list[AggregateRow]:
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = self._select("aggregates", AGG_COLS, where + " ORDER BY aggregate_id", params)
        return [AggregateRow(*r) for r in rows]

    def debts(self, status: str | None = None) -> list[DebtRow]:
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = self._select("debts", DEBT_COLS, where + " ORDER BY debt_id", params)
        return [DebtRow(*r) for r in rows]

    def rejects(self, limit: int = 1000) -> list[RejectRow]:
        rows = self._select(
            "rejects", REJECT_COLS, "ORDER BY received_us, reject_id LIMIT ?", (limit,)
        )
        return [RejectRow(*r) for r in rows]

    def deny_list(self) -> list[DenyRow]:
        return [DenyRow(*r) for r in self._select("deny_list", DENY_COLS, "ORDER BY pan_token")]

    def deny_events(self, after_seq: int = 0) -> list[tuple[int, DenyEventRow]]:
        rows = self._select(
            "deny_events", ("seq", *DENY_EVENT_COLS), "WHERE seq > ? ORDER BY seq", (after_seq,)
        )
        return [(int(r[0]), DenyEventRow(*r[1:])) for r in rows]

    def alerts(self) -> list[AlertRow]:
        return [
            AlertRow(*r) for r in self._select("alerts", ALERT_COLS, "ORDER BY at_us, alert_id")
        ]

    def count(self, table: str) -> int:
        if table not in _TABLES:
            raise StorageError(f"no table {table!r} in the transaction core")
        return int(self._query(f"SELECT COUNT(*) FROM {table}")[0][0])  # noqa: S608
