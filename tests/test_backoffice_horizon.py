"""State bounded by cards and a late-arrival horizon, not by history: tap ids deduplicated
within the horizon (older taps refused as too late and kept), ATCs as a per-card high-water
mark and window, and a restart that reads open state only (both backends)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backoffice.engine import TOTALS_KEY, BackOffice
from backoffice.policy import BackOfficeConfig, PolicyError
from backoffice.records import TransitCard, atc_seen, remember_atc
from backoffice.service import TransactionCore
from backoffice.storage import SqlStore, open_store
from issuer.service import Issuer
from tests.core_fixtures import (
    BACKENDS,
    BANKS,
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


def horizon_config(days: int = 1, window: int = 64) -> BackOfficeConfig:
    return config(late_horizon=timedelta(days=days), atc_window=window)


def engine(issuer: Issuer, **kw: int) -> BackOffice:
    return BackOffice(flat_pricer(), issuer, horizon_config(**kw))


def test_a_tap_older_than_the_horizon_is_refused_as_too_late_and_kept() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(701))
    open_card(issuer, tc)
    bo = engine(issuer)
    old = tc.tap("d0", T0)
    assert bo.ingest([old], T0).accepted == 1
    assert bo.floor is not None and bo.floor <= T0 - DAY  # one day behind, at a UTC midnight
    bo.ingest([tc.tap("d3", T0 + 3 * DAY)], T0 + 3 * DAY)
    # The floor moved: day 0's ids are forgotten, and day 0's taps are too late.
    assert bo.floor is not None and T0 < bo.floor <= T0 + 2 * DAY
    assert bo.tap_ids == {"d3"}
    res = bo.ingest([old], T0 + 3 * DAY + H)  # a resend of an accepted tap: not charged again
    assert (res.accepted, res.duplicates, res.rejected) == (0, 0, 1)
    [rejected] = res.of_kind("rejected")
    assert rejected.ref == "d0" and rejected.detail.startswith("time: too late")
    [row] = bo.drain_changes().rejects
    assert (row.tap_id, row.field) == ("d0", "time")  # kept, with why
    again = bo.ingest([old], T0 + 3 * DAY + 2 * H)  # the same record again: kept once
    assert (again.rejected, again.duplicates) == (0, 1)
    assert bo.fares_total == 400  # d0 and d3, once each


def test_a_late_tap_inside_the_horizon_is_taken_and_a_resend_is_a_duplicate() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(702))
    open_card(issuer, tc)
    bo = engine(issuer, days=2)
    early = tc.tap("early", T0)
    later = tc.tap("later", T0 + DAY + H)
    assert bo.ingest([later], T0 + DAY + H).accepted == 1
    res = bo.ingest([early, later], T0 + DAY + 2 * H)  # a day late: inside two days
    assert (res.accepted, res.duplicates, res.rejected) == (1, 1, 0)


def test_a_validator_clock_ahead_does_not_push_the_floor() -> None:
    """The floor follows tap times capped at their arrival: a tap stamped a year ahead
    moves it no further than the time it arrived."""
    issuer = new_issuer()
    a, b = TestCard(pan_for(703)), TestCard(pan_for(704))
    open_card(issuer, a)
    open_card(issuer, b)
    bo = engine(issuer)
    assert bo.ingest([a.tap("ahead", T0 + 365 * DAY)], T0).accepted == 1
    assert bo.ingest([b.tap("now", T0 + H)], T0 + H).accepted == 1


def test_atcs_are_a_high_water_mark_and_a_window() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(705))
    open_card(issuer, tc)
    bo = engine(issuer, window=8)
    tc.atc = 99
    assert bo.ingest([tc.tap("a100", T0)], T0).accepted == 1
    tc.atc = 94
    assert bo.ingest([tc.tap("a95", T0 + H)], T0 + H).accepted == 1  # late, inside the window
    tc.atc = 94
    res = bo.ingest([tc.tap("a95-clone", T0 + 2 * H)], T0 + 2 * H)
    assert [e.detail for e in res.of_kind("alert")] == ["replayed_atc"]
    tc.atc = 91  # 92: below the window of the 8 under 100, never seen, still refused
    res = bo.ingest([tc.tap("a92", T0 + 3 * H)], T0 + 3 * H)
    assert res.rejected == 1 and [e.detail for e in res.of_kind("alert")] == ["stale_atc"]
    tc.atc = 130
    assert bo.ingest([tc.tap("a131", T0 + 4 * H)], T0 + 4 * H).accepted == 1
    card = bo.cards[tc.token]
    assert card.atc_high == 131 and card.atc_bits == 1  # 100 and 95 slid out of the window


def test_atc_windows_are_saved_as_their_taps_age_out() -> None:
    """The floor's move saves the window of the cards whose taps it passes, not of every
    card tapped since: each active card about once per horizon."""
    issuer = new_issuer()
    old, new = TestCard(pan_for(706)), TestCard(pan_for(707))
    open_card(issuer, old)
    open_card(issuer, new)
    bo = engine(issuer)
    bo.ingest([old.tap("old-0", T0)], T0)
    bo.drain_changes()
    bo.ingest([new.tap("new-3", T0 + 3 * DAY), old.tap("old-3", T0 + 3 * DAY)], T0 + 3 * DAY)
    rows = bo.drain_changes().card_atcs
    assert [(r.pan_token, r.atc_high) for r in rows] == [(old.token, 2)]
    # Day 3 ages out: only new's window is saved (old's was saved with its day-3 tap in it).
    bo.ingest([new.tap("new-5", T0 + 5 * DAY)], T0 + 5 * DAY)
    assert [r.pan_token for r in bo.drain_changes().card_atcs] == [new.token]


def test_the_atc_window_by_itself() -> None:
    card = TransitCard("tok", "622202******0026")
    for atc in (5, 3, 9):
        assert not atc_seen(card, atc, 4)
        remember_atc(card, atc, 4)
    assert (card.atc_high, card.atc_bits) == (9, 0b1)  # 5 and 3 are 4+ below 9
    assert atc_seen(card, 9, 4) and atc_seen(card, 5, 4) and atc_seen(card, 1, 4)
    assert not atc_seen(card, 8, 4) and not atc_seen(card, 10, 4)
    remember_atc(card, 7, 4)
    assert card.atc_bits == 0b101 and atc_seen(card, 7, 4)


def test_horizon_and_window_are_checked() -> None:
    with pytest.raises(PolicyError, match="late_horizon"):
        BackOfficeConfig(late_horizon=timedelta(hours=1))
    with pytest.raises(PolicyError, match="atc_window"):
        BackOfficeConfig(atc_window=0)


# -- restart: open state only ------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SqlStore, str]]:
    yield from make_store(request.param, tmp_path)


def new_core(store: SqlStore) -> TransactionCore:
    return TransactionCore(store, flat_pricer(), keystore(), BANKS, TOKEN_KEY, horizon_config())


def ledger_sums(store: SqlStore) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in store.ledger_balances():
        out[row.account] = out.get(row.account, 0) + row.balance
    return out


def test_a_restart_reads_taps_from_the_floor_on_only(store_url: tuple[SqlStore, str]) -> None:
    store, url = store_url
    c = new_core(store)
    cards = [TestCard(pan_for(710 + i)) for i in range(3)]
    for tc in cards:
        c.run(lambda tc=tc: open_card(c.issuer, tc))
    day0 = [tc.tap(f"d0-{i}", T0 + i * H) for i, tc in enumerate(cards)]
    c.ingest(day0, T0 + 3 * H)
    c.close_due(T0 + DAY)
    day3 = [tc.tap(f"d3-{i}", T0 + 3 * DAY + i * H) for i, tc in enumerate(cards[:2])]
    c.ingest(day3, T0 + 3 * DAY + 2 * H)
    store.close()

    store2 = open_store(url)
    try:
        snap = store2.load()
        assert {t[0] for t in snap.recent_taps} == {"d3-0", "d3-1"}  # not day 0's
        c2 = new_core(store2)
        assert c2.core.tap_ids == {"d3-0", "d3-1"}
        # The running totals came from the core's meta row, equal to summing every row.
        sums = ledger_sums(store2)
        assert {k: v for k, v in c2.core.balances.items() if v} == {
            k: v for k, v in sums.items() if v}
        assert c2.core.fares_total == sum(r.amount for r in store2.tap_rows()) == 1000
        # Day 0 re-sent after the restart: too late, kept, charged nothing.
        res = c2.ingest(day0, T0 + 3 * DAY + 3 * H)
        assert (res.accepted, res.rejected) == (0, 3)
        # Card 2 has no tap in the horizon: its ATC window came from card_atcs, so its
        # day-0 ATC under a new id and a fresh time is refused, not left to the unique key.
        cards[2].atc -= 1
        replay = cards[2].tap("d3-replay", T0 + 3 * DAY + 4 * H)
        res = c2.ingest([replay], T0 + 3 * DAY + 4 * H)
        assert res.rejected == 1 and [e.detail for e in res.of_kind("alert")] == ["replayed_atc"]
        assert c2.core.fares_total == 1000 and c2.reconcile().ok
    finally:
        store2.close()


def test_a_database_without_running_totals_is_summed_once(
    store_url: tuple[SqlStore, str],
) -> None:
    """A database the core never wrote its totals into (made before they existed) still
    restarts right: balances summed from the ledger, every tap id taken as recent."""
    store, url = store_url
    c = new_core(store)
    tc = TestCard(pan_for(720))
    c.run(lambda: open_card(c.issuer, tc))
    c.ingest([tc.tap("t0", T0), tc.tap("t1", T0 + H)], T0 + H)
    c.close_due(T0 + DAY)
    before = dict(c.core.balances), c.core.fares_total
    with store._tx():  # what an older tapsim left behind: no totals row
        store._execute("DELETE FROM meta WHERE key = ?", (TOTALS_KEY,))
    store.close()
    store2 = open_store(url)
    try:
        snap = store2.load()
        assert snap.floor_us is None and {t[0] for t in snap.recent_taps} == {"t0", "t1"}
        c2 = new_core(store2)
        assert (c2.core.balances, c2.core.fares_total) == before
        assert c2.ingest([tc.tap("t2", T0 + DAY + H)], T0 + DAY + H).accepted == 1
        assert store2.meta(TOTALS_KEY) is not None  # written with that batch
    finally:
        store2.close()


def test_the_issuer_reloads_open_records_not_its_history(
    store_url: tuple[SqlStore, str],
) -> None:
    """After the floor moved past day 0: a charge closed on day 0 is not reloaded, while a
    day-0 verification still open to its deferred charge is, and the charge is approved."""
    store, url = store_url
    c = new_core(store)
    done, still_open, today = (TestCard(pan_for(730 + i)) for i in range(3))
    for tc in (done, still_open, today):
        c.run(lambda tc=tc: open_card(c.issuer, tc))
    c.ingest([done.tap("done-0", T0)], T0)
    c.close_due(T0 + DAY)  # done's aggregate: verified, charged, captured on day 0
    c.ingest([still_open.tap("open-0", T0 + DAY - H)], T0 + DAY - H)  # day 0, still open
    c.ingest([today.tap("today-3", T0 + 3 * DAY)], T0 + 3 * DAY)
    store.close()

    store2 = open_store(url)
    try:
        c2 = new_core(store2)
        assert "chg:A:done-0" not in c2.issuer.auths and "av:A:done-0" not in c2.issuer.auths
        assert not c2.issuer.captures  # day 0's capture is history
        assert "av:A:open-0" in c2.issuer.auths and "av:A:today-3" in c2.issuer.auths
        res = c2.close_due(T0 + 3 * DAY + H)
        charged = {e.ref: e.code for e in res.of_kind("charged")}
        assert charged == {"A:open-0": "00"} and not res.of_kind("declined")
        assert c2.reconcile().ok
        # The full history is still there for whoever asks for it.
        assert "chg:A:done-0" in {a.request_id for a in store2.load_issuer().auths}
    finally:
        store2.close()
