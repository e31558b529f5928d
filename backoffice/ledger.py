"""The double-entry ledger: every fen is a debit on one account and a credit on another.

Each :class:`Entry` is one journal line: ``amount`` (always positive) debited to ``debit``
and credited to ``credit``, for one operator and service day, so the settlement report per
operator and day is a sum over entries and no entry can be one-sided.
:func:`transfer` makes entries (a negative line swaps the accounts), :func:`check_entries`
refuses malformed ones, :func:`balances` gives debits minus credits per account.

Accounts (asset accounts debit-normal, the others credit-normal):

========================  ======================================================
``receivable``            fares owed by riders, not yet collected (asset)
``revenue``               fare revenue of the operator (income)
``issuer_settlement``     money captured at the issuer, due to the operator (asset)
``first_ride_loss``       fares accepted offline and written off (expense)
========================  ======================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

RECEIVABLE = "receivable"
REVENUE = "revenue"
ISSUER_SETTLEMENT = "issuer_settlement"
FIRST_RIDE_LOSS = "first_ride_loss"
ACCOUNTS = (RECEIVABLE, REVENUE, ISSUER_SETTLEMENT, FIRST_RIDE_LOSS)


class LedgerError(ValueError):
    """An entry that is one-sided, of no amount, or names an unknown account."""


class Line(NamedTuple):
    """The share of an amount that belongs to one operator and service day."""

    operator_id: str
    service_day: str
    amount: int


class Entry(NamedTuple):
    """One journal line (column order of the ``ledger`` table)."""

    txn_id: str
    debit: str
    credit: str
    operator_id: str
    service_day: str
    amount: int  # > 0
    at_us: int


def transfer(
    txn_id: str, debit: str, credit: str, lines: Iterable[Line], at_us: int
) -> list[Entry]:
    """Debit ``debit`` and credit ``credit`` with each line (negative: the other way round)."""
    out: list[Entry] = []
    for op, day, amount in lines:
        if amount > 0:
            out.append(Entry(txn_id, debit, credit, op, day, amount, at_us))
        elif amount < 0:
            out.append(Entry(txn_id, credit, debit, op, day, -amount, at_us))
    return out


def check_entries(entries: Iterable[Entry]) -> None:
    """Raise :class:`LedgerError` for an entry that is not a proper debit-and-credit pair."""
    for e in entries:
        if e.debit not in ACCOUNTS or e.credit not in ACCOUNTS:
            raise LedgerError(f"entry of {e.txn_id} names an unknown account")
        if e.debit == e.credit:
            raise LedgerError(f"entry of {e.txn_id} debits and credits {e.debit}")
        if e.amount <= 0:
            raise LedgerError(f"entry of {e.txn_id} has amount {e.amount} (must be positive)")


def balances(entries: Iterable[Entry]) -> dict[str, int]:
    """Debits minus credits per account."""
    out = dict.fromkeys(ACCOUNTS, 0)
    for e in entries:
        out[e.debit] += e.amount
        out[e.credit] -= e.amount
    return out


def merge_lines(lines: Iterable[Line]) -> list[Line]:
    """Lines summed per operator and day, in a stable order, zero lines dropped."""
    acc: dict[tuple[str, str], int] = {}
    for op, day, amount in lines:
        acc[op, day] = acc.get((op, day), 0) + amount
    return [Line(op, day, amt) for (op, day), amt in sorted(acc.items()) if amt]
