"""The one storage interface of the transaction core, and its errors.

Two real backends implement :class:`Store`: SQLite (embedded default, WAL) and
PostgreSQL (psycopg 3), chosen by URL in :func:`backoffice.storage.open_store`.  A store
also implements :class:`issuer.store.IssuerStore`, so the in-process bank's records are
written in the same transaction as the charge that touched them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import NamedTuple, Protocol

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
)
from issuer.models import AuthRecord, Capture
from issuer.store import IssuerChanges, IssuerSnapshot

# Meta key rewritten whenever the issuer's records change outside a running back office;
# checked under the issuer lock by every commit of an in-memory issuer (backoffice/README.md).
ISSUER_CHANGED_KEY = "issuer.changed"


class StorageError(Exception):
    """A storage failure, with the backend named and no credentials in the message."""


class StorageUnavailableError(StorageError):
    """The database cannot be reached (not running, refused, wrong URL)."""


class StorageBusyError(StorageError):
    """Another writer held the database longer than this one waits (SQLite's busy timeout,
    PostgreSQL's lock timeout of a branch operation): this transaction wrote nothing.  Raised
    wherever the wait ends (opening the file, a first statement, taking the issuer lock), so
    every such refusal reads the same (``SqlStore._busy``)."""


class IssuerConflictError(StorageError):
    """Another process changed the issuer's records since they were loaded (the
    ISSUER_CHANGED_KEY mark moved): the transaction was rolled back, nothing written."""


class BalanceRow(NamedTuple):
    account: str
    operator_id: str
    service_day: str
    balance: int  # + debit, - credit


class FareRow(NamedTuple):
    operator_id: str
    service_day: str
    taps: int
    fares: int


_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    return _PASSWORD.sub(r"\1***@", url)


class Store(Protocol):
    """Durable state of the back office (and of the in-process issuer)."""

    @property
    def url(self) -> str:
        """The store's URL, password redacted."""
        ...

    def load(self, *, idle_cards: bool = True) -> Snapshot:
        """Open state; ``idle_cards=False`` leaves out cards idle past the floor
        (backoffice.idle), read when they tap again by ``load_cards``."""
        ...

    def load_cards(self, tokens: Sequence[str]) -> list[tuple[CardRow, CardAtcRow | None]]:
        """The stored rows of these cards (each with its saved ATC window), those it holds."""
        ...

    def load_issuer(self) -> IssuerSnapshot: ...

    def load_issuer_open(self) -> IssuerSnapshot:
        """The issuer's records a running core can still need (accounts, cards, active holds,
        recent authorizations and captures, open verifications), not its history."""
        ...

    def load_issuer_since(self, floor: datetime) -> IssuerSnapshot:
        """The issuer's records issuer.retention keeps for ``floor`` (tapsim issuer run)."""
        ...

    def issuer_request(self, request_id: str) -> IssuerSnapshot:
        """One authorization with its hold and capture, as the database has it."""
        ...

    def issuer_auths_from(self, at: datetime) -> list[AuthRecord]:
        """Authorizations answered at ``at`` or later."""
        ...

    def commit(self, changes: Changes, issuer: IssuerChanges | None = None, *,
               issuer_mark: str | None = None) -> None:
        """Write one batch's rows (and the issuer's) in one transaction: all or nothing;
        IssuerConflictError when ``issuer_mark`` is not the mark any more."""
        ...

    def save_issuer(self, changes: IssuerChanges, *, issuer_mark: str | None = None) -> str:
        """Write the issuer's records under the issuer lock with a new mark (returned)."""
        ...

    def issuer_mark(self) -> str:
        """The issuer's change mark now ("" when none was written)."""
        ...

    def issuer_held(self) -> AbstractContextManager[str]:
        """A transaction holding the issuer lock from its first read to its commit."""
        ...

    def meta(self, key: str) -> str | None:
        """A value of the key/value table (settings kept with the data), or None."""
        ...

    def set_meta(self, key: str, value: str) -> None: ...

    def tap_rows(self, tap_ids: Iterable[str] | None = None) -> list[TapRow]:
        """Tap rows in time order (all, or those of ``tap_ids``), fares as priced now."""
        ...

    # -- queries for reports and reconciliation --
    def ledger_balances(self) -> list[BalanceRow]: ...

    def bad_entries(self) -> list[str]:
        """Transaction ids of entries that are one-sided, not positive or of unknown accounts."""
        ...

    def fares_by_operator_day(self) -> list[FareRow]: ...

    def open_aggregates_total(self) -> int: ...

    def captures(self, merchant_id: str | None = None) -> list[Capture]: ...

    def aggregates(self, status: str | None = None) -> list[AggregateRow]:
        """Aggregate rows; an open one's total and tap count are as of its opening."""
        ...

    def debts(self, status: str | None = None) -> list[DebtRow]: ...

    def rejects(self, limit: int = 1000) -> list[RejectRow]: ...

    def deny_list(self) -> list[DenyRow]: ...

    def deny_events(self, after_seq: int = 0) -> list[tuple[int, DenyEventRow]]: ...

    def alerts(self) -> list[AlertRow]: ...

    def count(self, table: str) -> int: ...

    # -- T-Union e-purse records and clearing --
    def add_epurse(self, rows: Sequence[EpurseTapRow]) -> int:
        """Keep accepted e-purse taps, deduplicated by tap id; how many were new."""
        ...

    def epurse_taps(self, day: str | None = None) -> list[EpurseTapRow]: ...

    def epurse_cleared_of_cards(self, cards: Iterable[tuple[str, str]]) -> list[EpurseTapRow]: ...

    def add_clearing(self, items: Sequence[ClearingItemRow]) -> int:
        """Record clearing decisions; a tap already decided keeps its first one."""
        ...

    def clearing_items(self, day: str | None = None) -> list[ClearingItemRow]: ...

    def close(self) -> None: ...
