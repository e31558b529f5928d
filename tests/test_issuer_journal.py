"""The bank's journal: every money movement at the bank is a row, and the accounts reconcile
from the rows alone, on SQLite and PostgreSQL (issuer/README.md, "Journal")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from backoffice.service import TransactionCore
from backoffice.storage import SqlStore, StorageError, open_store
from backoffice.taps import tap_to_mapping
from issuer.errors import AccountError, DuplicateError
from issuer.journal import (
    MAX_AMOUNT,
    JournalEntry,
    account_ledger,
    cash_ledger,
    held_ledger,
    ledger_balances,
    merchant_ledger,
    reconcile,
)
from issuer.load_sql import SqlLoadStore, reconcile_db
from issuer.models import AccountStatus, ReplaceReason
from tests.core_fixtures import (
    BACKENDS,
    BANKS,
    CST,
    MERCHANT,
    T0,
    TOKEN_KEY,
    TestCard,
    config,
    flat_pricer,
    keystore,
    make_store,
    new_issuer,
    open_card,
    pan_for,
)

H = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SqlStore, str]]:
    yield from make_store(request.param, tmp_path)


def new_core(store: SqlStore) -> TransactionCore:
    # A nominal hold at first use, so that aggregates place, capture and release holds.
    return TransactionCore(store, flat_pricer(), keystore(), BANKS, TOKEN_KEY,
                           config(nominal_amount=100))


def rows(store: SqlStore) -> list[JournalEntry]:
    return SqlLoadStore(store).journal()


def test_a_bank_day_reconciles_from_the_rows_alone(store_url: tuple[SqlStore, str]) -> None:
    store, url = store_url
    c = new_core(store)
    a, b = TestCard(pan_for(301)), TestCard(pan_for(302))
    c.run(lambda: open_card(c.issuer, a, balance=10_000))
    c.run(lambda: open_card(c.issuer, b, balance=300))
    acct_a = c.issuer.card(a.token).account_id
    acct_b = c.issuer.card(b.token).account_id
    c.run(lambda: c.issuer.deposit(acct_a, 2_500, T0, ref="branch-1:0001"))
    c.run(lambda: c.issuer.withdraw(acct_a, 500, T0 + H, ref="branch-1:0002"))
    taps = [tc.tap(f"{n}-{k}", T0 + (k + 2) * H) for n, tc in (("a", a), ("b", b))
            for k in range(3)]  # fmt: skip
    assert c.ingest([tap_to_mapping(t) for t in taps], T0 + 6 * H).accepted == 6
    c.close_due(T0 + 2 * DAY)  # the day's aggregates close: nominal holds released, captured
    assert reconcile_db(store).ok

    # A same-bank replacement of card a: its balance moves when the holder confirms.
    new = TestCard(pan_for(303))
    c.run(lambda: c.issuer.open_account("acct-new-303", "ICBC", "CNY", T0 + 3 * DAY))
    c.run(lambda: c.issuer.replace(a.token, new.pan, "01", "acct-new-303",
                                   reason=ReplaceReason.DAMAGE, imk_id="imk1",
                                   expires_at=datetime(2036, 1, 1, tzinfo=CST),
                                   now=T0 + 3 * DAY))  # fmt: skip
    c.run(lambda: c.issuer.confirm_balance_transfer(a.token, T0 + 4 * DAY))

    # The rows alone say what each account holds; the account rows agree.
    store.close()
    store = open_store(url)
    try:
        journal = rows(store)
        by_ledger = ledger_balances(journal)
        kinds = {e.entry_id.split(":", 1)[0] for e in journal}
        assert kinds == {"open", "deposit", "withdraw", "hold", "capture", "release", "replace"}
        assert all(e.amount > 0 and e.debit != e.credit for e in journal)
        assert sum(by_ledger.values()) == 0
        after = TransactionCore(store, flat_pricer(), keystore(), BANKS, TOKEN_KEY, config())
        issuer = after.issuer
        fares_a = sum(cap.amount for cap in issuer.captures.values() if cap.account_id == acct_a)
        fares_b = sum(cap.amount for cap in issuer.captures.values() if cap.account_id == acct_b)
        assert fares_a == 600  # 3 x 2.00, one aggregate
        assert issuer.account(acct_b).balance == 300 - fares_b
        assert -by_ledger[account_ledger("acct-new-303")] == 10_000 + 2_500 - 500 - fares_a
        assert issuer.account("acct-new-303").balance == 10_000 + 2_500 - 500 - fares_a
        assert by_ledger.get(account_ledger(acct_a), 0) == 0
        assert issuer.account(acct_a).status is AccountStatus.CLOSED
        assert -by_ledger[account_ledger(acct_b)] == issuer.account(acct_b).available
        assert -by_ledger[merchant_ledger(MERCHANT)] == fares_a + fares_b
        assert by_ledger[cash_ledger("ICBC")] == 10_000 + 300 + 2_500 - 500
        assert by_ledger.get(held_ledger(acct_a), 0) == by_ledger.get(held_ledger(acct_b), 0) == 0
        result = reconcile_db(store)
        assert result.ok and result.mismatches == () and result.entries == len(journal)
        assert result.accounts == 3
    finally:
        store.close()


def test_a_retried_request_moves_money_once(store_url: tuple[SqlStore, str]) -> None:
    store, _ = store_url
    c = new_core(store)
    tc = TestCard(pan_for(311))
    c.run(lambda: open_card(c.issuer, tc, balance=1_000))
    account_id = c.issuer.card(tc.token).account_id
    c.run(lambda: c.issuer.deposit(account_id, 700, T0, ref="r-1"))
    with pytest.raises(DuplicateError):  # the same request twice in one change set
        c.run(lambda: [c.issuer.deposit(account_id, 5, T0, ref="r-2") for _ in range(2)])
    # The same request id again, from a process that did not know it (a retry after a crash):
    # the journal's key refuses it, and the account row written with it is rolled back.
    with pytest.raises(StorageError):
        c.run(lambda: c.issuer.deposit(account_id, 700, T0 + H, ref="r-1"))
    assert c.issuer.account(account_id).balance == 1_700  # reloaded from the store
    assert [e.entry_id for e in rows(store) if e.entry_id.startswith("deposit:")] == [
        "deposit:r-1"]
    assert reconcile_db(store).ok


def test_a_changed_account_row_is_a_mismatch(store_url: tuple[SqlStore, str]) -> None:
    store, _ = store_url
    c = new_core(store)
    tc = TestCard(pan_for(321))
    c.run(lambda: open_card(c.issuer, tc, balance=1_000))
    account_id = c.issuer.card(tc.token).account_id
    with store._transaction():
        store._execute("UPDATE iss_accounts SET balance = balance + 77700 WHERE account_id = ?",
                       (account_id,))
    result = reconcile_db(store)
    assert not result.ok
    assert [(m.account_id, m.what, m.stored, m.journal) for m in result.mismatches] == [
        (account_id, "available", 78_700, 1_000)]
    assert "78700 stored, 1000 from the journal rows" in str(result.mismatches[0])


def test_reconcile_in_memory_names_every_kind_of_disagreement() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(331))
    card = open_card(issuer, tc, balance=900)
    issuer.deposit(card.account_id, 100, T0)
    changes = issuer.drain_changes()
    journal = list(changes.journal.values())
    accounts = list(changes.accounts.values())
    assert reconcile(accounts, ledger_balances(journal), active_holds={}).ok
    stray = JournalEntry("x", T0, "cash:ICBC", account_ledger("ghost"), 5, "CNY", "")
    out = reconcile(accounts, ledger_balances([*journal, stray]), active_holds={card.account_id: 3},
                    captured={MERCHANT: 10})  # fmt: skip
    assert sorted(m.what for m in out.mismatches) == ["captures", "holds", "unknown"]


def test_amounts_are_range_checked_at_the_bank() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(341))
    card = open_card(issuer, tc, balance=0)
    for bad in (0, -1, 10**20, MAX_AMOUNT + 1, True):
        with pytest.raises(AccountError, match="deposit amount must be a whole number of minor "
                                               r"units from 1 to 999,999,999,999"):
            issuer.deposit(card.account_id, bad, T0)  # type: ignore[arg-type]
    with pytest.raises(AccountError, match=r"opening balance must be .* from 0 to"):
        issuer.open_account("acct-x", "ICBC", "CNY", T0, 10**20)
    with pytest.raises(AccountError, match="withdrawal amount"):
        issuer.withdraw(card.account_id, 10**20, T0)
    with pytest.raises(AccountError, match=r"0 available .*cannot withdraw 1"):
        issuer.withdraw(card.account_id, 1, T0)
    issuer.deposit(card.account_id, MAX_AMOUNT, T0)  # the largest single amount is fine
    assert issuer.account(card.account_id).balance == MAX_AMOUNT
    for _ in range(999):
        issuer.deposit(card.account_id, MAX_AMOUNT, T0)
    with pytest.raises(AccountError, match="more than 999,999,999,999,999 minor units"):
        issuer.deposit(card.account_id, 1_000, T0)
