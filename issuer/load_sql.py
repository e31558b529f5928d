"""Loads and the bank's journal in the back office's database (SQLite or PostgreSQL).

Two tables beside the issuer's ``iss_*`` tables, written in the SAME transaction as the
issuer's records (the hold, the capture, the account), so a pending load never exists without
its hold and a capture never without its journal row:

* ``iss_epurse_loads``: one row per load request (:class:`issuer.epurse_load.LoadRecord`),
  primary key ``load_id``; a unique index on (e-purse token, online serial) over the pending
  and captured loads keeps one card serial to one load that may have credited the chip (a
  released load frees its serial: the card never used it);
* ``iss_journal``: the bank's money movements, one debit and one credit per row
  (``held:<id>`` -> ``epurse_float:<issuer>`` for a load; every other movement of the bank
  is written there too, with the account rows it changes: ``issuer.journal``).

:func:`reconcile_db` checks the bank's account rows against the journal's sums, in SQL
(one row per ledger account read, never the journal's history).

The tables are created here, not in ``backoffice/storage/schema.py``: the adapter works
with the back office's ``SqlStore`` through the small :class:`SqlBackend` surface (its
transaction, statement and issuer-row writers), which is all it needs.
"""

from __future__ import annotations

import secrets
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from issuer.epurse_load import (
    LOAD_ENTRY_PREFIX,
    JournalEntry,
    LoadRecord,
    LoadState,
    LoadStoreError,
)
from issuer.journal import FLOAT_PREFIX, Reconciliation, reconcile
from issuer.models import Account, AccountStatus
from issuer.store import IssuerChanges

# backoffice.storage.base.ISSUER_CHANGED_KEY, written out (issuer does not import backoffice):
# a new value tells a running back office to reload the issuer's records.
ISSUER_CHANGED_KEY = "issuer.changed"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The bank's journal: every money movement, one row (issuer/README.md, "Journal"); the back
# office's schema creates it from this same text (backoffice.storage.schema).
JOURNAL_TABLE = """CREATE TABLE IF NOT EXISTS iss_journal (
        entry_id TEXT PRIMARY KEY,
        at_us BIGINT NOT NULL,
        debit TEXT NOT NULL,
        credit TEXT NOT NULL,
        amount BIGINT NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        ref TEXT NOT NULL)"""
JOURNAL_COLS = ("entry_id", "at_us", "debit", "credit", "amount", "currency", "ref")

TABLES = (
    """CREATE TABLE IF NOT EXISTS iss_epurse_loads (
        load_id TEXT PRIMARY KEY,
        pan_token TEXT NOT NULL,
        purse_token TEXT NOT NULL,
        epurse_issuer TEXT NOT NULL,
        account_id TEXT NOT NULL,
        amount BIGINT NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        terminal_id TEXT NOT NULL,
        online_serial INTEGER,
        balance_before BIGINT,
        algorithm TEXT NOT NULL,
        credit_time TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        resolved_us BIGINT,
        tac TEXT,
        mac2 TEXT NOT NULL
    )""",
    """CREATE UNIQUE INDEX IF NOT EXISTS iss_epurse_loads_serial
        ON iss_epurse_loads (purse_token, online_serial)
        WHERE state IN ('pending', 'captured')""",
    """CREATE INDEX IF NOT EXISTS iss_epurse_loads_pending
        ON iss_epurse_loads (pan_token, state)""",
    JOURNAL_TABLE,
)

LOAD_COLS = (
    "load_id", "pan_token", "purse_token", "epurse_issuer", "account_id", "amount", "currency",
    "terminal_id", "online_serial", "balance_before", "algorithm", "credit_time", "state",
    "reason", "created_us", "resolved_us", "tac", "mac2",
)  # fmt: skip


class SqlBackend(Protocol):
    """What the adapter uses of ``backoffice.storage.SqlStore``."""

    @property
    def url(self) -> str: ...

    def _transaction(self) -> AbstractContextManager[None]: ...

    def _tx(self) -> AbstractContextManager[None]: ...

    def issuer_held(self) -> AbstractContextManager[str]: ...

    def _execute(self, sql: str, params: Any = ()) -> None: ...

    def _query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]: ...

    def _write_issuer(self, ch: IssuerChanges) -> None: ...

    def _lock_issuer(self) -> str: ...


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _at(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _row(r: LoadRecord) -> tuple[Any, ...]:
    return (
        r.load_id, r.pan_token, r.purse_token, r.epurse_issuer, r.account_id, r.amount,
        r.currency, r.terminal_id, r.online_serial, r.balance_before, r.algorithm,
        r.credit_time, r.state.value, r.reason, _us(r.created_at),
        None if r.resolved_at is None else _us(r.resolved_at), r.tac, r.mac2,
    )  # fmt: skip


def _record(row: tuple[Any, ...]) -> LoadRecord:
    return LoadRecord(
        row[0], row[1], row[2], row[3], row[4], int(row[5]), row[6], row[7],
        None if row[8] is None else int(row[8]), None if row[9] is None else int(row[9]),
        row[10], row[11], LoadState(row[12]), row[13], _at(int(row[14])),
        None if row[15] is None else _at(int(row[15])), row[16], row[17],
    )  # fmt: skip


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    return JournalEntry(row[0], _at(int(row[1])), row[2], row[3], int(row[4]), row[5], row[6])


def _upsert(table: str, cols: tuple[str, ...], key: str) -> str:
    marks = ", ".join("?" for _ in cols)
    sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c != key)
    return (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) "  # noqa: S608
            f"ON CONFLICT ({key}) DO UPDATE SET {sets}")


_SAVE_LOAD = _upsert("iss_epurse_loads", LOAD_COLS, "load_id")
_SAVE_ENTRY = (f"INSERT INTO iss_journal ({', '.join(JOURNAL_COLS)}) "  # noqa: S608
               f"VALUES ({', '.join('?' for _ in JOURNAL_COLS)})")
_SAVE_META = ("INSERT INTO meta (key, value) VALUES (?, ?) "
              "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
_SELECT_LOADS = f"SELECT {', '.join(LOAD_COLS)} FROM iss_epurse_loads"  # noqa: S608
_SELECT_JOURNAL = f"SELECT {', '.join(JOURNAL_COLS)} FROM iss_journal"  # noqa: S608


class SqlLoadStore:
    """:class:`issuer.epurse_load.LoadStore` over the back office's database."""

    def __init__(self, db: SqlBackend) -> None:
        self.db = db
        self._guard(self._create)

    def _create(self) -> None:
        with self.db._transaction():
            for ddl in TABLES:
                self.db._execute(ddl)

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except LoadStoreError:
            raise
        except Exception as exc:  # the backend's StorageError (or its driver's): no secrets
            raise LoadStoreError(f"{self.db.url}: {exc}") from None

    def save_load(
        self, issuer: IssuerChanges, loads: list[LoadRecord], entries: list[JournalEntry]
    ) -> None:
        """The issuer's records, the loads and the journal rows: one transaction."""

        def write() -> None:
            # Part of an issuer_held transaction when one is open (LoadHost._fresh).
            with self.db._tx():
                if issuer:  # the issuer lock first, as every writer of the issuer's rows
                    self.db._lock_issuer()
                    self.db._write_issuer(issuer)
                for r in loads:
                    self.db._execute(_SAVE_LOAD, _row(r))
                for e in entries:
                    self.db._execute(_SAVE_ENTRY, (e.entry_id, _us(e.at), e.debit, e.credit,
                                                   e.amount, e.currency, e.ref))
                if issuer:
                    self.db._execute(_SAVE_META, (ISSUER_CHANGED_KEY, secrets.token_hex(8)))

        self._guard(write)

    def issuer_held(self) -> AbstractContextManager[str]:
        """The store's issuer lock, held to the end of the block (LoadStore.issuer_held)."""
        return self.db.issuer_held()

    def load_record(self, load_id: str) -> LoadRecord | None:
        rows = self._guard(self.db._query, f"{_SELECT_LOADS} WHERE load_id = ?", (load_id,))
        return _record(rows[0]) if rows else None

    def pending_loads(self, pan_token: str) -> list[LoadRecord]:
        rows = self._guard(self.db._query, f"{_SELECT_LOADS} WHERE pan_token = ? AND state = ?",
                           (pan_token, LoadState.PENDING.value))
        return [_record(r) for r in rows]

    def loads(self, state: LoadState | None = None) -> list[LoadRecord]:
        """Every load (of one state), oldest first."""
        where, params = ("WHERE state = ?", (state.value,)) if state is not None else ("", ())
        rows = self._guard(self.db._query, f"{_SELECT_LOADS} {where} ORDER BY created_us, load_id",
                           params)
        return [_record(r) for r in rows]

    def journal(self) -> list[JournalEntry]:
        """The bank's journal rows, in time order."""
        rows = self._guard(self.db._query, f"{_SELECT_JOURNAL} ORDER BY at_us, entry_id")
        return [_entry(r) for r in rows]

    def loaded_by_issuer(self) -> dict[str, int]:
        """Per e-purse issuer, the total of captured loads, from the journal rows: what the
        chips of its cards were credited at this bank (clearing's "loads")."""
        rows = self._guard(
            self.db._query,
            "SELECT credit, SUM(amount) FROM iss_journal WHERE entry_id LIKE ? "
            "AND credit LIKE ? GROUP BY credit",
            (LOAD_ENTRY_PREFIX + "%", FLOAT_PREFIX + "%"),  # bound: psycopg reads a bare % itself
        )
        return {r[0].split(":", 1)[1]: int(r[1]) for r in rows}


_SIDES = ("SELECT debit AS name, amount AS amt FROM iss_journal "
          "UNION ALL SELECT credit, -amount FROM iss_journal")
_ACCOUNT_COLS = ("account_id, bank_id, currency, balance, held, status, opened_us, "
                 "last_movement_us")


def journal_entry(db: SqlBackend, entry_id: str) -> JournalEntry | None:
    """The journal row with this id, or None (a branch request id seen before?)."""
    rows = db._query(f"{_SELECT_JOURNAL} WHERE entry_id = ?", (entry_id,))
    return _entry(rows[0]) if rows else None


def reconcile_db(db: SqlBackend) -> Reconciliation:
    """The bank's account rows, holds and captures against what its journal rows sum to
    (:func:`issuer.journal.reconcile`), read with GROUP BY queries: the result has one
    number per ledger account, however long the journal."""
    with db._transaction():  # one consistent view of accounts, holds and rows
        balances = {str(r[0]): int(r[1]) for r in db._query(
            f"SELECT name, SUM(amt) FROM ({_SIDES}) x GROUP BY name")}  # noqa: S608
        count = int(db._query("SELECT COUNT(*) FROM iss_journal")[0][0])
        accounts = [
            Account(r[0], r[1], r[2], int(r[3]), int(r[4]), AccountStatus(r[5]), _at(int(r[6])),
                    _at(int(r[7])))
            for r in db._query(f"SELECT {_ACCOUNT_COLS} FROM iss_accounts")  # noqa: S608
        ]
        holds = {str(r[0]): int(r[1]) for r in db._query(
            "SELECT account_id, SUM(amount) FROM iss_holds WHERE status = ? GROUP BY account_id",
            ("active",))}
        captured = {str(r[0]): int(r[1]) for r in db._query(
            "SELECT merchant_id, SUM(amount) FROM iss_captures GROUP BY merchant_id")}
    return reconcile(accounts, balances, active_holds=holds, captured=captured, entries=count)
