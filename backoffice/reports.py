"""Settlement per operator and day, the first-ride-risk figure, and the reconciliation.

All are pure functions of figures a store (or the in-memory core) provides; the
reconciliation proves three views agree: the taps and their fares, the double-entry
ledger, and what the issuer actually captured.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from backoffice.engine import BackOffice
from backoffice.ledger import FIRST_RIDE_LOSS, ISSUER_SETTLEMENT, RECEIVABLE, REVENUE
from backoffice.records import DebtRow, DebtStatus
from backoffice.storage.base import BalanceRow, FareRow, Store


@dataclass(frozen=True, slots=True)
class SettlementLine:
    """What one operator earned on one service day and where that money stands."""

    operator_id: str
    service_day: str
    taps: int
    fares: int  # taps x fares
    revenue: int  # credited to revenue in the ledger
    collected: int  # captured at the issuer
    outstanding: int  # still receivable (open aggregates, debts in recovery)
    written_off: int  # first-ride loss

    @property
    def balanced(self) -> bool:
        return self.fares == self.revenue == self.collected + self.outstanding + self.written_off


def settlement(fares: Iterable[FareRow], balances: Iterable[BalanceRow]) -> list[SettlementLine]:
    """One line per operator and service day, from tap fares and ledger balances."""
    acc: dict[tuple[str, str], dict[str, int]] = {}
    for f in fares:
        d = acc.setdefault((f.operator_id, f.service_day), {})
        d["taps"] = d.get("taps", 0) + f.taps
        d["fares"] = d.get("fares", 0) + f.fares
    for b in balances:
        d = acc.setdefault((b.operator_id, b.service_day), {})
        d[b.account] = d.get(b.account, 0) + b.balance
    return [
        SettlementLine(
            operator_id=op,
            service_day=day,
            taps=d.get("taps", 0),
            fares=d.get("fares", 0),
            revenue=-d.get(REVENUE, 0),
            collected=d.get(ISSUER_SETTLEMENT, 0),
            outstanding=d.get(RECEIVABLE, 0),
            written_off=d.get(FIRST_RIDE_LOSS, 0),
        )
        for (op, day), d in sorted(acc.items())
    ]


@dataclass(frozen=True, slots=True)
class FirstRideRisk:
    """Fares accepted offline (ride first, pay later) and not collected."""

    outstanding: int  # debts still in scheduled recovery
    written_off: int  # retries exhausted (recoverable only by the rider's next tap)
    cards: int  # cards owing either


def first_ride_risk(debts: Iterable[DebtRow]) -> FirstRideRisk:
    outstanding = written_off = 0
    cards: set[str] = set()
    for d in debts:
        if d.status == DebtStatus.OPEN.value:
            outstanding += d.amount
        elif d.status == DebtStatus.WRITTEN_OFF.value:
            written_off += d.amount
        else:
            continue
        cards.add(d.pan_token)
    return FirstRideRisk(outstanding, written_off, len(cards))


@dataclass(frozen=True, slots=True)
class Figures:
    """Everything the reconciliation compares, however it was gathered."""

    tap_fares: int
    balances: dict[str, int]  # ledger balance per account
    bad_entries: list[str]  # entries that are not a proper debit-and-credit pair
    issuer_captured: int  # captures at the issuer for this merchant
    open_aggregates: int  # sum of open aggregate totals
    debts_open: int
    debts_written_off: int
    lines: list[SettlementLine] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    figures: Figures
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def reconcile(f: Figures) -> Reconciliation:
    """taps x fares = ledger revenue; ledger settlement = issuer captures; sub-ledgers agree."""
    b = f.balances
    revenue = -b.get(REVENUE, 0)
    collected = b.get(ISSUER_SETTLEMENT, 0)
    receivable = b.get(RECEIVABLE, 0)
    loss = b.get(FIRST_RIDE_LOSS, 0)
    problems = []
    if f.bad_entries:
        problems.append(f"{len(f.bad_entries)} malformed ledger entries, e.g. {f.bad_entries[0]}")
    if sum(b.values()) != 0:
        problems.append(f"ledger does not balance: debits - credits = {sum(b.values())}")
    if f.tap_fares != revenue:
        problems.append(f"taps x fares {f.tap_fares} != ledger revenue {revenue}")
    if collected != f.issuer_captured:
        problems.append(f"ledger collected {collected} != issuer captures {f.issuer_captured}")
    if receivable != f.open_aggregates + f.debts_open:
        problems.append(
            f"receivable {receivable} != open aggregates {f.open_aggregates} "
            f"+ debts in recovery {f.debts_open}"
        )
    if loss != f.debts_written_off:
        problems.append(f"first-ride loss {loss} != written-off debts {f.debts_written_off}")
    problems.extend(
        f"{line.operator_id} {line.service_day}: fares {line.fares}, revenue {line.revenue}, "
        f"collected+outstanding+written off "
        f"{line.collected + line.outstanding + line.written_off}"
        for line in f.lines
        if not line.balanced
    )
    return Reconciliation(f, problems)


def store_figures(store: Store, merchant_id: str) -> Figures:
    """Gather :class:`Figures` from a store."""
    balances_rows = store.ledger_balances()
    balances: dict[str, int] = {}
    for row in balances_rows:
        balances[row.account] = balances.get(row.account, 0) + row.balance
    fares = store.fares_by_operator_day()
    debts = store.debts()
    return Figures(
        tap_fares=sum(r.fares for r in fares),
        balances=balances,
        bad_entries=store.bad_entries(),
        issuer_captured=sum(c.amount for c in store.captures(merchant_id)),
        open_aggregates=store.open_aggregates_total(),
        debts_open=sum(d.amount for d in debts if d.status == DebtStatus.OPEN.value),
        debts_written_off=sum(d.amount for d in debts if d.status == DebtStatus.WRITTEN_OFF.value),
        lines=settlement(fares, balances_rows),
    )


def memory_figures(core: BackOffice, issuer_captured: int) -> Figures:
    """:class:`Figures` from the in-memory core (no per-line view: it keeps account totals)."""
    debts = core.unpaid_debts()
    return Figures(
        tap_fares=core.fares_total,
        balances=dict(core.balances),
        bad_entries=[],
        issuer_captured=issuer_captured,
        open_aggregates=sum(a.total for a in core.open_aggregates()),
        debts_open=sum(d.amount for d in debts if d.status is DebtStatus.OPEN),
        debts_written_off=sum(d.amount for d in debts if d.status is DebtStatus.WRITTEN_OFF),
    )
