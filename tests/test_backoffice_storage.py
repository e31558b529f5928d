"""The same storage tests on both backends (SQLite and PostgreSQL), through TransactionCore."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backoffice.ledger import ISSUER_SETTLEMENT, RECEIVABLE, REVENUE
from backoffice.records import AggStatus
from backoffice.reports import first_ride_risk
from backoffice.service import TransactionCore
from backoffice.storage import (
    SqlStore,
    StorageError,
    StorageUnavailableError,
    database_url,
    open_store,
    redact,
    sqlite_url,
)
from backoffice.storage.urls import parse_sqlite_url
from backoffice.taps import tap_to_mapping
from issuer.models import HoldStatus
from tests.core_fixtures import (
    BACKENDS,
    BANKS,
    IMK,
    KEK,
    MERCHANT,
    T0,
    TOKEN_KEY,
    TestCard,
    config,
    flat_pricer,
    keystore,
    luhn_pan,
    make_store,
    open_card,
    pan_for,
)

H = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SqlStore, str]]:
    yield from make_store(request.param, tmp_path)


def new_core(store: SqlStore, **kw: object) -> TransactionCore:
    return TransactionCore(store, flat_pricer(), keystore(), BANKS, TOKEN_KEY, config(**kw))


def setup_cards(tc_core: TransactionCore, balances: list[int]) -> list[TestCard]:
    cards = [TestCard(pan_for(200 + i), "sm4" if i % 2 else "tdes") for i in range(len(balances))]
    for tc, bal in zip(cards, balances, strict=True):
        tc_core.run(lambda tc=tc, bal=bal: open_card(tc_core.issuer, tc, balance=bal))
    return cards


def test_a_day_survives_a_restart_and_reconciles(store_url: tuple[SqlStore, str]) -> None:
    store, url = store_url
    c = new_core(store)
    cards = setup_cards(c, [10_000, 300, 10_000])
    taps = [tc.tap(f"c{i}-{k}", T0 + k * H) for i, tc in enumerate(cards) for k in range(3)]
    res = c.ingest([tap_to_mapping(t) for t in taps[:5]], T0 + 3 * H)
    assert res.accepted == 5

    # Restart on a fresh connection: the rest of the day, with the first batch re-sent.
    store.close()
    store2 = open_store(url)
    try:
        c2 = new_core(store2)
        assert c2.core.tap_ids == {t.tap_id for t in taps[:5]}
        res = c2.ingest(taps, T0 + 4 * H)
        assert (res.accepted, res.duplicates) == (4, 5)
        res = c2.close_due(T0 + DAY)
        assert sorted(e.amount for e in res.of_kind("charged")) == [600, 600]
        assert [e.code for e in res.of_kind("declined")] == ["51"]
        recon = c2.reconcile()
        assert recon.ok, recon.problems
        f = recon.figures
        assert f.tap_fares == 1800 and f.issuer_captured == 1200 and f.debts_open == 600
        assert f.balances[RECEIVABLE] == 600 and f.balances[REVENUE] == -1800
        [line] = f.lines
        assert (line.operator_id, line.taps, line.fares, line.collected, line.outstanding) == (
            "bus1", 9, 1800, 1200, 600,
        )  # fmt: skip
        assert [d.pan_token for d in store2.deny_list()] == [cards[1].token]
        assert [e.op for _, e in store2.deny_events()] == ["add"]
        risk = first_ride_risk(store2.debts())
        assert (risk.outstanding, risk.cards) == (600, 1)
        # The issuer's side came back too: balances and captured holds.
        c3 = new_core(store2)
        assert c3.issuer.accounts == c2.issuer.accounts
        assert c3.issuer.cards == c2.issuer.cards
        assert all(h.status is not HoldStatus.ACTIVE for h in c3.issuer.holds.values())
        assert c3.core.balances == c2.core.balances
    finally:
        store2.close()


def test_recovery_and_deny_list_removal_are_durable(store_url: tuple[SqlStore, str]) -> None:
    store, _ = store_url
    c = new_core(store)
    [tc] = setup_cards(c, [100])
    c.ingest([tc.tap("t0", T0), tc.tap("t1", T0 + H)], T0 + H)
    c.close_due(T0 + DAY)
    assert [d.status for d in store.debts()] == ["open"]
    c.run(lambda: c.issuer.deposit(c.issuer.card(tc.token).account_id, 1_000, T0 + DAY + H))
    c2 = new_core(store)  # restart between decline and recovery
    res = c2.run_recovery(T0 + 2 * DAY)
    assert [e.amount for e in res.of_kind("recovered")] == [400]
    assert store.deny_list() == []
    assert [e.op for _, e in store.deny_events()] == ["add", "remove"]
    assert [d.status for d in store.debts()] == ["recovered"]
    recon = c2.reconcile()
    assert recon.ok, recon.problems
    assert recon.figures.balances[ISSUER_SETTLEMENT] == 400


def test_open_aggregates_resume_after_restart(store_url: tuple[SqlStore, str]) -> None:
    store, _ = store_url
    c = new_core(store, nominal_amount=100)  # a nominal hold that outlives the restart
    [tc] = setup_cards(c, [10_000])
    c.ingest([tc.tap("t0", T0), tc.tap("t2", T0 + 2 * H)], T0 + 2 * H)
    account_id = c.issuer.card(tc.token).account_id
    assert c.issuer.account(account_id).held == 100
    c2 = new_core(store, nominal_amount=100)
    [agg] = c2.core.open_aggregates()
    assert (agg.aggregate_id, agg.total, [p.tap.tap_id for p in agg.taps]) == (
        "A:t0", 400, ["t0", "t2"],
    )  # fmt: skip
    c2.ingest([tc.tap("t1", T0 + H)], T0 + 3 * H)  # a late tap after the restart
    c2.close_due(T0 + DAY)
    [row] = store.aggregates(AggStatus.CHARGED.value)
    assert row.total == 600 and row.tap_count == 3
    assert sum(cap.amount for cap in store.captures(MERCHANT)) == 600
    account = new_core(store).issuer.account(account_id)
    assert (account.balance, account.held) == (9_400, 0)
    assert c2.reconcile().ok


def test_malformed_records_are_kept_in_the_rejects_table(store_url: tuple[SqlStore, str]) -> None:
    store, _ = store_url
    c = new_core(store)
    [tc] = setup_cards(c, [10_000])
    good = tc.tap("t0", T0)
    bad = dict(tap_to_mapping(tc.tap("t1", T0)))
    bad["time"] = "2026-03-02 08:00"  # no offset
    leaked = {"tap_id": "t2", "pan": tc.pan, "note": f"PAN {tc.pan}"}
    res = c.ingest([good, bad, leaked, bad], T0)
    assert (res.accepted, res.rejected, res.duplicates) == (1, 2, 1)
    rejects = store.rejects()
    assert [(r.tap_id, r.field) for r in rejects] == [("t1", "time"), ("t2", "pan")]
    assert "UTC offset" in rejects[0].reason
    assert all(tc.pan not in r.raw for r in rejects)
    assert store.count("rejects") == 2
    assert new_core(store).core.reject_ids == {r.reject_id for r in rejects}


def test_no_clear_pan_or_key_anywhere_in_the_database(store_url: tuple[SqlStore, str]) -> None:
    store, _ = store_url
    c = new_core(store)
    cards = [
        TestCard(luhn_pan("623190739184625318")),
        TestCard(luhn_pan("623190582047193664"), "sm4"),
    ]
    for tc, bal in zip(cards, [10_000, 0], strict=True):
        c.run(lambda tc=tc, bal=bal: open_card(c.issuer, tc, balance=bal))
    c.ingest([tc.tap(f"c{i}", T0) for i, tc in enumerate(cards)], T0)
    c.close_due(T0 + DAY)
    ks = keystore()
    secrets = {IMK.hex(), KEK.hex()}
    for tc in cards:
        secrets |= {tc.pan, tc.pan[6:-4]}
        secrets.add(ks.card_key(c.issuer.card(tc.token).key).hex())
    tables = [
        "taps", "rejects", "ledger", "aggregates", "debts", "transit_cards", "deny_list",
        "deny_events", "alerts", "iss_accounts", "iss_cards", "iss_auths", "iss_holds",
        "iss_captures",
    ]  # fmt: skip
    dump = []
    for table in tables:
        rows = store._query(f"SELECT * FROM {table}")
        assert rows or table in ("rejects", "alerts"), f"{table} is empty: the test proves nothing"
        dump.extend(str(v).lower() for r in rows for v in r)
    text = "\n".join(dump)
    for secret in secrets:
        assert secret.lower() not in text


def test_a_failed_commit_leaves_nothing_behind_and_memory_reloads(
    store_url: tuple[SqlStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = store_url
    c = new_core(store)
    [tc] = setup_cards(c, [10_000])
    taps = [tc.tap(f"t{i}", T0 + i * H) for i in range(3)]
    real = type(store)._write_issuer

    def boom(self: SqlStore, changes: object) -> None:
        real(self, changes)  # type: ignore[arg-type]
        raise StorageError("disk full (simulated)")

    monkeypatch.setattr(type(store), "_write_issuer", boom)
    with pytest.raises(StorageError, match="simulated"):
        c.ingest(taps, T0 + 3 * H)
    monkeypatch.undo()
    assert store.count("taps") == 0 and store.count("iss_auths") == 0
    assert c.core.tap_ids == set() and not c.issuer.auths  # memory reloaded
    assert c.ingest(taps, T0 + 3 * H).accepted == 3
    c.close_due(T0 + DAY)
    assert c.reconcile().ok


def test_an_interrupt_leaves_memory_to_reload_when_next_used(
    store_url: tuple[SqlStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in a batch: nothing committed, and no reload of the whole database before the
    interrupt goes on (seconds on a big one, for a process that is ending)."""
    store, _ = store_url
    c = new_core(store)
    [tc] = setup_cards(c, [10_000])
    loads: list[int] = []
    real_load = type(store).load
    monkeypatch.setattr(type(store), "load",
                        lambda self, **kw: loads.append(1) or real_load(self, **kw))

    def interrupted() -> None:
        c.core.ingest([tc.tap("t0", T0)], T0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        c.run(interrupted)
    assert loads == [] and store.count("taps") == 0
    assert c.core.tap_ids == set() and loads == [1]  # reloaded on first use
    assert c.ingest([tc.tap("t0", T0)], T0).accepted == 1


def test_database_keys_refuse_a_double_charge(store_url: tuple[SqlStore, str]) -> None:
    """Below the core's own dedupe, the schema refuses a second posting or capture."""
    store, _ = store_url
    c = new_core(store)
    [tc] = setup_cards(c, [10_000])
    c.ingest([tc.tap("t0", T0)], T0)
    c.close_due(T0 + DAY)
    [cap] = store.captures()
    from backoffice.storage import issuer_rows as ir

    dup = dataclasses.replace(cap, capture_id="cap:other")
    with pytest.raises(StorageError), store._tx():
        store._executemany(
            "INSERT INTO iss_captures VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [ir.capture_row(dup)]
        )
    assert len(store.captures()) == 1


def test_urls_and_unreachable_databases() -> None:
    with pytest.raises(StorageError, match="unsupported"):
        open_store("mysql://x")
    with pytest.raises(StorageError, match=r"names a host 'relative\.db'"):
        open_store("sqlite://relative.db")
    with pytest.raises(StorageError, match="unknown option"):
        open_store("sqlite:////tmp/x.db?fast=1")
    with pytest.raises(StorageUnavailableError, match="does not exist"):
        open_store("sqlite:////no/such/dir/x.db")
    with pytest.raises(StorageUnavailableError) as info:
        open_store("postgresql://bob:s3cret@127.0.0.1:1/test?connect_timeout=1")
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
    assert redact("postgresql://u:p@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(StorageError, match="identifier"):
        open_store("postgresql://127.0.0.1:1/test?schema=Bad-Name")


def test_sqlite_urls_read_as_sqlalchemy_does(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Three slashes: relative to the current directory; four: absolute (SQLAlchemy)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    open_store("sqlite:///rel.db").close()
    open_store(f"sqlite:///{tmp_path}/sub/abs.db?synchronous=normal").close()
    assert (tmp_path / "rel.db").is_file() and (tmp_path / "sub" / "abs.db").is_file()
    assert not Path("/rel.db").exists()
    assert sqlite_url(tmp_path / "x.db") == f"sqlite:////{str(tmp_path).lstrip('/')}/x.db"
    assert database_url("bare.db") == sqlite_url(tmp_path / "bare.db")
    assert database_url("sqlite:///rel.db") == "sqlite:///rel.db"
    for memory in ("sqlite://", "sqlite:///:memory:"):
        assert parse_sqlite_url(memory).in_memory
    for bad, why in (("sqlite:/x.db", "write sqlite:///relative"),
                     ("sqlite:x.db", "write sqlite:///relative"),
                     ("sqlite://host/x.db", "names a host 'host'"),
                     ("sqlite:///", "names no file"),
                     ("sqlite:///x.db?synchronous", "not name=value")):
        with pytest.raises(StorageError, match=why):
            open_store(bad)
    with pytest.raises(StorageError, match="write sqlite:///relative"):
        database_url("sqlite:x.db")
