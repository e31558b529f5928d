"""Journal entries, settlement lines and the reconciliation's own checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backoffice.ledger import (
    FIRST_RIDE_LOSS,
    ISSUER_SETTLEMENT,
    RECEIVABLE,
    REVENUE,
    Entry,
    LedgerError,
    Line,
    balances,
    check_entries,
    merge_lines,
    transfer,
)
from backoffice.reports import Figures, reconcile, settlement
from backoffice.storage import BalanceRow, FareRow
from issuer.models import Account, evolve
from tests.core_fixtures import T0

lines = st.lists(
    st.builds(
        Line,
        st.sampled_from(["bus1", "metro"]),
        st.sampled_from(["2026-03-02", "2026-03-03"]),
        st.integers(-10_000, 10_000),
    ),
    max_size=8,
)


@given(lines)
def test_transfers_are_positive_pairs_that_move_exactly_the_lines(ls: list[Line]) -> None:
    entries = transfer("t", RECEIVABLE, REVENUE, ls, 0)
    check_entries(entries)
    b = balances(entries)
    total = sum(x.amount for x in ls)
    assert b[RECEIVABLE] == total and b[REVENUE] == -total
    assert sum(b.values()) == 0
    assert len(entries) == sum(1 for x in ls if x.amount)


def test_malformed_entries_are_refused() -> None:
    ok = Entry("t", RECEIVABLE, REVENUE, "bus1", "2026-03-02", 5, 0)
    check_entries([ok])
    for bad in (
        ok._replace(debit="cash"),
        ok._replace(credit=RECEIVABLE),
        ok._replace(amount=0),
        ok._replace(amount=-5),
    ):
        with pytest.raises(LedgerError):
            check_entries([bad])


def test_merge_lines_sums_per_operator_and_day() -> None:
    merged = merge_lines(
        [Line("bus1", "d1", 200), Line("metro", "d1", 300), Line("bus1", "d1", -200)]
    )
    assert merged == [Line("metro", "d1", 300)]


def test_settlement_line_balances_when_the_ledger_agrees() -> None:
    fares = [FareRow("bus1", "d1", 3, 600)]
    bal = [
        BalanceRow(REVENUE, "bus1", "d1", -600),
        BalanceRow(ISSUER_SETTLEMENT, "bus1", "d1", 400),
        BalanceRow(RECEIVABLE, "bus1", "d1", 100),
        BalanceRow(FIRST_RIDE_LOSS, "bus1", "d1", 100),
    ]
    [line] = settlement(fares, bal)
    assert line.balanced and (line.collected, line.outstanding, line.written_off) == (400, 100, 100)
    [off] = settlement([FareRow("bus1", "d1", 3, 700)], bal)
    assert not off.balanced


def test_reconciliation_names_each_disagreement() -> None:
    good = Figures(
        tap_fares=600,
        balances={REVENUE: -600, ISSUER_SETTLEMENT: 400, RECEIVABLE: 200, FIRST_RIDE_LOSS: 0},
        bad_entries=[],
        issuer_captured=400,
        open_aggregates=200,
        debts_open=0,
        debts_written_off=0,
    )
    assert reconcile(good).ok
    broken = Figures(
        tap_fares=700,
        balances={REVENUE: -600, ISSUER_SETTLEMENT: 400, RECEIVABLE: 200, FIRST_RIDE_LOSS: 0},
        bad_entries=["x"],
        issuer_captured=300,
        open_aggregates=100,
        debts_open=0,
        debts_written_off=50,
    )
    problems = " | ".join(reconcile(broken).problems)
    for words in ("malformed", "taps x fares 700", "issuer captures 300", "receivable", "loss"):
        assert words in problems


def test_evolve_copies_with_changes_and_refuses_unknown_fields() -> None:
    from issuer.models import AccountStatus

    a = Account("a1", "ICBC", "CNY", 100, 0, AccountStatus.OPEN, T0, T0)
    b = evolve(a, held=30)
    assert (a.held, b.held, b.available, b.account_id) == (0, 30, 70, "a1")
    with pytest.raises(TypeError, match="no field"):
        evolve(a, colour="red")
