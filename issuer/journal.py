"""The bank's journal: every money movement at the bank as one double-entry row.

A holder's money lives in two ledger accounts: ``account:<id>`` (available) and
``held:<id>`` (reserved by holds).  Everything else is the bank's side: ``cash:<bank>``
(the counter: deposits, withdrawals, pay-outs), ``merchant:<id>`` (captures owed to an
acquirer) and ``epurse_float:<issuer>`` (e-purse loads)::

    open / deposit   cash:<bank>      -> account:<id>      (debit -> credit)
    withdraw/payout  account:<id>     -> cash:<bank>
    transfer         account:<from>   -> account:<to>     (branch transfer, replacement move)
    hold             account:<id>     -> held:<id>
    capture          held:<id>        -> merchant:<m> | epurse_float:<issuer>
    release          held:<id>        -> account:<id>     (also the rest of a partial capture)

Holder accounts are owed by the bank (credit-normal), so from the rows alone an account's
available money is ``-(debits - credits)`` of ``account:<id>`` and its held money the same
of ``held:<id>``: :func:`reconcile` checks both against the account rows.  Every entry id
is derived from the id of the request that moved the money (``deposit:<request>``,
``hold:<hold>``, ``capture:<capture>`` ...), and the table's primary key refuses a second
row with it: a retried request never moves money twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from issuer.models import Account, AccountStatus, _slot_init

ACCOUNT_PREFIX = "account:"
HELD_PREFIX = "held:"
CASH_PREFIX = "cash:"
MERCHANT_PREFIX = "merchant:"
FLOAT_PREFIX = "epurse_float:"

MAX_AMOUNT = 999_999_999_999
"""The largest amount one branch operation moves, in minor units: EMV's 12-digit amount
(n12), as the command line and the wire messages hold to."""
MAX_BALANCE = 999_999_999_999_999
"""The largest balance an account may reach (10^15 - 1 minor units): BIGINT (2^63 - 1, about
9.2 * 10^18) keeps more than 9,000 times that as headroom for sums over many accounts."""


@_slot_init
@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One money movement at the bank: one debit, one credit, a positive amount."""

    entry_id: str
    at: datetime
    debit: str
    credit: str
    amount: int
    currency: str
    ref: str


def account_ledger(account_id: str) -> str:
    """A holder's available money as a ledger account name."""
    return ACCOUNT_PREFIX + account_id


def held_ledger(account_id: str) -> str:
    """A holder's money under holds as a ledger account name."""
    return HELD_PREFIX + account_id


def cash_ledger(bank_id: str) -> str:
    """A bank's counter (cash in and out at its branches)."""
    return CASH_PREFIX + bank_id


def merchant_ledger(merchant_id: str) -> str:
    """Where a capture goes: the merchant (acquirer); an e-purse float is named as it is."""
    if merchant_id.startswith(FLOAT_PREFIX):
        return merchant_id
    return MERCHANT_PREFIX + merchant_id


def ledger_balances(entries: Iterable[JournalEntry]) -> dict[str, int]:
    """Every ledger account's balance from the rows (debits positive, credits negative)."""
    out: dict[str, int] = {}
    for e in entries:
        out[e.debit] = out.get(e.debit, 0) + e.amount
        out[e.credit] = out.get(e.credit, 0) - e.amount
    return out


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One account whose row disagrees with the journal (or with its holds)."""

    account_id: str
    what: str  # "available", "held", "holds", "closed", "unknown", "captures"
    stored: int
    journal: int

    def __str__(self) -> str:
        if self.what == "unknown":
            return (f"journal names account {self.account_id!r}, which the bank does not hold "
                    f"({self.journal} in the rows)")
        if self.what == "holds":
            return (f"account {self.account_id}: held {self.stored} but its active holds sum "
                    f"to {self.journal}")
        if self.what == "captures":
            return (f"{self.account_id}: captures sum to {self.stored}, the journal rows to "
                    f"{self.journal}")
        if self.what == "closed":
            return f"account {self.account_id}: closed with a balance of {self.stored}"
        return (f"account {self.account_id}: {self.what} {self.stored} stored, "
                f"{self.journal} from the journal rows")


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The outcome of :func:`reconcile`: per-ledger totals and every mismatch."""

    accounts: int
    entries: int
    total: int  # sum of all rows' sides: 0 for double entry
    mismatches: tuple[Mismatch, ...]
    bank_side: dict[str, int]  # cash, merchant and float ledger balances (debits positive)

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.total == 0


def reconcile(
    accounts: Iterable[Account],
    balances: Mapping[str, int],
    *,
    active_holds: Mapping[str, int],
    captured: Mapping[str, int] | None = None,
    entries: int = 0,
) -> Reconciliation:
    """Compare every account row with what the journal rows sum to.

    ``balances`` are the ledger balances (debits positive, :func:`ledger_balances` or the
    database's GROUP BY); ``active_holds`` the sum of active holds per account id.  An
    account's available money (balance - held) must equal the credits of ``account:<id>``
    net of its debits, its held money those of ``held:<id>`` and its active holds; a closed
    account holds nothing; no row names an account the bank does not have; and, given
    ``captured`` (captures per merchant id), each merchant's (or float's) rows sum to them.
    """
    mismatches: list[Mismatch] = []
    known: set[str] = set()
    count = 0
    for a in accounts:
        count += 1
        known.add(a.account_id)
        available = -balances.get(account_ledger(a.account_id), 0)
        held = -balances.get(held_ledger(a.account_id), 0)
        if available != a.balance - a.held:
            mismatches.append(Mismatch(a.account_id, "available", a.balance - a.held, available))
        if held != a.held:
            mismatches.append(Mismatch(a.account_id, "held", a.held, held))
        holds = active_holds.get(a.account_id, 0)
        if holds != a.held:
            mismatches.append(Mismatch(a.account_id, "holds", a.held, holds))
        if a.status is AccountStatus.CLOSED and (a.balance or a.held):
            mismatches.append(Mismatch(a.account_id, "closed", a.balance, 0))
    bank_side: dict[str, int] = {}
    for name, value in sorted(balances.items()):
        for prefix in (ACCOUNT_PREFIX, HELD_PREFIX):
            if name.startswith(prefix):
                account_id = name[len(prefix):]
                if account_id not in known and value:
                    mismatches.append(Mismatch(account_id, "unknown", 0, -value))
                break
        else:
            bank_side[name] = value
    if captured is not None:
        by_ledger: dict[str, int] = {}
        for merchant, amount in captured.items():
            name = merchant_ledger(merchant)
            by_ledger[name] = by_ledger.get(name, 0) + amount
        names = set(by_ledger) | {
            n for n in bank_side if n.startswith((MERCHANT_PREFIX, FLOAT_PREFIX))
        }
        for name in sorted(names):
            rows = -bank_side.get(name, 0)
            if rows != by_ledger.get(name, 0):
                mismatches.append(Mismatch(name, "captures", by_ledger.get(name, 0), rows))
    return Reconciliation(
        accounts=count,
        entries=entries,
        total=sum(balances.values()),
        mismatches=tuple(mismatches),
        bank_side=bank_side,
    )


__all__ = [
    "ACCOUNT_PREFIX", "CASH_PREFIX", "FLOAT_PREFIX", "HELD_PREFIX", "MAX_AMOUNT", "MAX_BALANCE",
    "MERCHANT_PREFIX", "JournalEntry", "Mismatch", "Reconciliation", "account_ledger",
    "cash_ledger", "held_ledger", "ledger_balances", "merchant_ledger", "reconcile",
]
