"""What the issuer needs from storage: a snapshot to start from and change sets to keep.

The issuer itself holds its records in memory (it is one process's bank); whoever owns the
database writes a change set in the same transaction as its own work, so a crash never
leaves a capture without the charge that asked for it.  The back office's stores
(SQLite, PostgreSQL) implement :class:`IssuerStore`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from issuer.journal import JournalEntry
from issuer.models import Account, AuthRecord, Capture, Card, Hold


@dataclass(slots=True)
class IssuerSnapshot:
    """Every record the issuer keeps, as loaded at start-up."""

    accounts: list[Account] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    auths: list[AuthRecord] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    captures: list[Capture] = field(default_factory=list)


@dataclass(slots=True)
class IssuerChanges:
    """Records created or changed since the last drain (latest version of each wins), and
    the journal rows of the money that moved meanwhile (inserted, never updated: a row whose
    id the table already holds fails the transaction, so a retry never moves money twice)."""

    accounts: dict[str, Account] = field(default_factory=dict)
    cards: dict[str, Card] = field(default_factory=dict)
    auths: dict[str, AuthRecord] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    captures: dict[str, Capture] = field(default_factory=dict)
    journal: dict[str, JournalEntry] = field(default_factory=dict)  # new rows only (by id)

    def __bool__(self) -> bool:
        return bool(
            self.accounts or self.cards or self.auths or self.holds or self.captures
            or self.journal
        )


class IssuerStore(Protocol):
    """Durable home of the issuer's records."""

    def load_issuer(self) -> IssuerSnapshot: ...

    def save_issuer(self, changes: IssuerChanges) -> None:
        """Write one change set atomically (its own transaction)."""
        ...
