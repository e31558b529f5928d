"""The double-entry ledger: every fen is a debit on one account and a credit on another.

Postings carry the operator and the service day they belong to, so the settlement report
per operator and day is a sum over postings.  ``amount`` is signed: positive debit,
negative credit; the postings of one transaction sum to zero (:func:`transfer` makes
them in pairs and :func:`check_balanced` proves it).

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
    """Postings that do not balance, or name an unknown account."""


class Line(NamedTuple):
    """The share of an amount that belongs to one operator and service day."""

    operator_id: str
    service_day: str
    amount: int


class Posting(NamedTuple):
    """One side of a transaction (column order of the ``postings`` table)."""

    txn_id: str
    account: str
    operator_id: str
    service_day: str
    amount: int  # + debit, - credit
    at_us: int


def transfer(
    txn_id: str, debit: str, credit: str, lines: Iterable[Line], at_us: int
) -> list[Posting]:
    """Debit ``debit`` and credit ``credit`` with each line's amount (zero lines skipped)."""
    out: list[Posting] = []
    for op, day, amount in lines:
        if amount:
            out.append(Posting(txn_id, debit, op, day, amount, at_us))
            out.append(Posting(txn_id, credit, op, day, -amount, at_us))
    return out


def check_balanced(postings: Iterable[Posting]) -> None:
    """Raise :class:`LedgerError` unless every transaction sums to zero on known accounts."""
    sums: dict[str, int] = {}
    for p in postings:
        if p.account not in ACCOUNTS:
            raise LedgerError(f"posting of {p.txn_id} names unknown account {p.account!r}")
        sums[p.txn_id] = sums.get(p.txn_id, 0) + p.amount
    bad = sorted(t for t, s in sums.items() if s)
    if bad:
        raise LedgerError(f"unbalanced transactions: {', '.join(bad[:5])}")


def merge_lines(lines: Iterable[Line]) -> list[Line]:
    """Lines summed per operator and day, in a stable order, zero lines dropped."""
    acc: dict[tuple[str, str], int] = {}
    for op, day, amount in lines:
        acc[op, day] = acc.get((op, day), 0) + amount
    return [Line(op, day, amt) for (op, day), amt in sorted(acc.items()) if amt]
