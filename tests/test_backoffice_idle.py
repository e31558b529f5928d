"""Cards idle past the late-arrival floor leave memory and come back from the database when
they tap again (backoffice.idle): fare state and ATC window continue, denied and indebted
cards stay, a restart reads only the cards a core holds, a failed commit loses nothing, and
memory is bounded by the cards active within the horizon (both backends)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from backoffice.engine import BackOffice
from backoffice.fare_pricer import FarePricer
from backoffice.idle import evict_idle
from backoffice.outcomes import BatchResult
from backoffice.policy import BackOfficeConfig
from backoffice.pricing import Pricer
from backoffice.records import ATC_SAVED, Aggregate, TransitCard
from backoffice.service import TransactionCore
from backoffice.storage import SqlStore, StorageError, open_store
from backoffice.taps import Action, TapRecord
from fare.gtfs import load_feed
from fare.samples import sample_feed_path
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


def cfg() -> BackOfficeConfig:
    return config(spend_limit=100_000, late_horizon=DAY)


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SqlStore, str]]:
    yield from make_store(request.param, tmp_path)


def new_core(store: SqlStore, pricer: Pricer | None = None) -> TransactionCore:
    return TransactionCore(store, pricer or flat_pricer(), keystore(), BANKS, TOKEN_KEY, cfg())


def city_pricer() -> FarePricer:
    return FarePricer(load_feed(sample_feed_path("city")))


def city_tap(tc: TestCard, tap_id: str, when: datetime) -> TapRecord:
    tap = tc.tap(tap_id, when, operator="lsbus", route="1", stop="S01", action=Action.TAP_ON)
    return dataclasses.replace(tap, fare_media="cemv")


def test_an_evicted_card_comes_back_with_its_fare_state_and_atc_window(
    store_url: tuple[SqlStore, str],
) -> None:
    """A card rides 54 times over six days (the city's monthly tier starts discounting),
    stops, is evicted, the core restarts, and the card taps again: priced as a core that
    never forgot it prices it, and its old ATC is still refused as replayed."""
    store, url = store_url
    rider, ticker = TestCard(pan_for(801)), TestCard(pan_for(802))
    days: list[list[TapRecord]] = []
    old_taps: list[TapRecord] = []
    for d in range(10):  # the rider on days 0-5, the ticker every day (moves the floor)
        batch = [city_tap(ticker, f"k{d}", T0 + d * DAY)]
        if d < 6:  # two hours apart: no transfers
            rides = [city_tap(rider, f"r{d}-{i}", T0 + d * DAY + i * 2 * H) for i in range(9)]
            old_taps += rides
            batch += rides
        days.append(batch)
    back = city_tap(rider, "back", T0 + 10 * DAY + H)
    replay = dataclasses.replace(old_taps[-20], tap_id="replay", time=T0 + 10 * DAY)

    # The reference: a core that keeps every card (in memory, no store).
    issuer = new_issuer()
    for tc in (rider, ticker):
        open_card(issuer, tc, balance=1_000_000)
    ref = BackOffice(city_pricer(), issuer, cfg())
    for d, batch in enumerate(days):
        ref.ingest(batch, T0 + d * DAY + 17 * H)
        ref.close_due(T0 + (d + 1) * DAY - H)
    ref_replay = ref.ingest([replay], T0 + 10 * DAY)
    ref_back = ref.ingest([back], T0 + 10 * DAY + 2 * H)
    ref_tap = ref._open[rider.token].taps[-1]
    assert ref_tap.tap.tap_id == "back" and ref_tap.amount < 200  # the monthly tier's discount

    c = new_core(store, city_pricer())
    for tc in (rider, ticker):
        c.run(lambda tc=tc: open_card(c.issuer, tc, balance=1_000_000))
    for d, batch in enumerate(days):
        assert c.ingest(batch, T0 + d * DAY + 17 * H).accepted == len(batch)
        c.close_due(T0 + (d + 1) * DAY - H)
    assert rider.token not in c.core.cards and ticker.token in c.core.cards  # evicted
    assert store.count("card_atcs") >= 1
    store.close()

    store2 = open_store(url)
    try:
        c2 = new_core(store2, city_pricer())
        assert rider.token not in c2.core.cards  # a restart leaves it in the database
        res = c2.ingest([replay], T0 + 10 * DAY)
        assert (res.accepted, res.rejected) == (0, 1) == (ref_replay.accepted, ref_replay.rejected)
        assert [e.detail for e in res.of_kind("alert")] == ["replayed_atc"]
        res = c2.ingest([back], T0 + 10 * DAY + 2 * H)
        assert res.accepted == ref_back.accepted == 1
        [row] = store2.tap_rows(["back"])
        assert row.amount == ref_tap.amount  # the fare state went on where it left off
        assert c2.core.fares_total == ref.fares_total
        assert c2.reconcile().ok
    finally:
        store2.close()


def test_denied_and_indebted_cards_are_never_evicted(store_url: tuple[SqlStore, str]) -> None:
    store, url = store_url
    c = new_core(store)
    broke, ticker = TestCard(pan_for(811)), TestCard(pan_for(812))
    c.run(lambda: open_card(c.issuer, broke, balance=0))
    c.run(lambda: open_card(c.issuer, ticker))
    c.ingest([broke.tap("b0", T0)], T0)
    c.close_due(T0 + DAY)  # declined: a debt, and the deny list
    assert c.core.cards[broke.token].debts and c.core.cards[broke.token].denied
    for d in range(1, 6):
        c.ingest([ticker.tap(f"k{d}", T0 + d * DAY)], T0 + d * DAY)
        c.close_due(T0 + (d + 1) * DAY - H)
    assert c.core.floor is not None and c.core.floor > T0 + 3 * DAY
    assert broke.token in c.core.cards
    store.close()
    store2 = open_store(url)
    try:
        assert broke.token in new_core(store2).core.cards  # and read back at restart
    finally:
        store2.close()


def test_only_clean_idle_cards_are_evicted() -> None:
    """Each condition on its own (the pure rule, on a bare core)."""
    bo = BackOffice(flat_pricer(), new_issuer(), cfg(), evict_idle=True)

    def card(n: int, **kw: object) -> TransitCard:
        c = TransitCard(f"{n:032x}", "6200****0000", last_day=5, atc_unsaved=ATC_SAVED)
        for k, v in kw.items():
            setattr(c, k, v)
        bo.cards[c.pan_token] = c
        return c

    idle = card(1)
    card(2, last_day=10)  # tapped from the floor on
    card(3, debts={"d": object()})
    card(4, denied=True)
    card(5, dirty=True)
    card(6, atc_unsaved=5)  # its ATC window not saved
    card(7, open_agg=Aggregate("A:x", f"{7:032x}", "2026-03-02", 0, 0, "x", None))
    assert evict_idle(bo, 10) == 1 and idle.pan_token not in bo.cards and len(bo.cards) == 6
    bare = BackOffice(flat_pricer(), new_issuer(), cfg())
    assert bare.evict_idle is False  # a core without a store keeps every card


def test_a_failed_commit_loses_no_evicted_card(store_url: tuple[SqlStore, str]) -> None:
    """The batch that evicts a card fails to commit: the core reloads with the old floor,
    the card with it; the batch done again evicts it for good."""
    store, _ = store_url
    c = new_core(store)
    gone, ticker = TestCard(pan_for(821)), TestCard(pan_for(822))
    for tc in (gone, ticker):
        c.run(lambda tc=tc: open_card(c.issuer, tc))
    c.ingest([gone.tap("g0", T0), ticker.tap("k0", T0)], T0)
    c.close_due(T0 + DAY - H)
    c.ingest([ticker.tap("k1", T0 + DAY)], T0 + DAY)
    c.close_due(T0 + 2 * DAY - H)
    assert gone.token in c.core.cards
    [row] = store.tap_rows(["k1"])
    poison = row._replace(tap_id="k3", atc=999)
    with store._tx():  # the id the next batch inserts: its commit fails on the key
        store._executemany("INSERT INTO taps VALUES (" + ", ".join("?" * len(poison)) + ")",
                           [poison])
    k3 = ticker.tap("k3", T0 + 3 * DAY)
    with pytest.raises(StorageError):
        c.ingest([k3], T0 + 3 * DAY)
    with store._tx():
        store._execute("DELETE FROM taps WHERE tap_id = ?", ("k3",))
    assert gone.token in c.core.cards  # reloaded: the floor did not move in the database
    assert c.ingest([k3], T0 + 3 * DAY).accepted == 1
    assert gone.token not in c.core.cards
    gone.atc -= 1
    res = c.ingest([gone.tap("g-replay", T0 + 3 * DAY + H)], T0 + 3 * DAY + H)
    assert res.rejected == 1 and [e.detail for e in res.of_kind("alert")] == ["replayed_atc"]


def test_cards_in_memory_are_bounded_by_the_cards_active_within_the_horizon(
    store_url: tuple[SqlStore, str],
) -> None:
    """Twelve days; each day five new cards ride, each card on two days in a row: memory
    holds about three days of riders, the database all sixty."""
    store, _ = store_url
    c = new_core(store)
    cards = [TestCard(pan_for(900 + i)) for i in range(60)]
    for tc in cards:
        c.run(lambda tc=tc: open_card(c.issuer, tc))
    held = []
    for d in range(12):
        riders = cards[max(0, 5 * (d - 1)):5 * (d + 1)]
        c.ingest([tc.tap(f"{d}-{i}", T0 + d * DAY + i * H) for i, tc in enumerate(riders)],
                 T0 + d * DAY + 12 * H)
        c.close_due(T0 + (d + 1) * DAY - H)
        held.append(len(c.core.cards))
    assert store.count("transit_cards") == 60
    assert max(held) <= 15, held  # riders of today, yesterday and the day before
    assert c.reconcile().ok


def test_a_batch_given_to_the_core_inside_run_reads_evicted_cards_back(
    store_url: tuple[SqlStore, str],
) -> None:
    """What ``tapsim backoffice replay`` does (``core.ingest`` inside ``run``, after
    ``adopt_cards``): an evicted card's old ATC is refused there too."""
    store, _ = store_url
    c = new_core(store)
    gone, ticker = TestCard(pan_for(831)), TestCard(pan_for(832))
    for tc in (gone, ticker):
        c.run(lambda tc=tc: open_card(c.issuer, tc))
    c.ingest([gone.tap("g0", T0)], T0)
    for d in range(4):
        c.ingest([ticker.tap(f"k{d}", T0 + d * DAY)], T0 + d * DAY)
        c.close_due(T0 + (d + 1) * DAY - H)
    assert gone.token not in c.core.cards
    gone.atc -= 1
    replay = gone.tap("g-replay", T0 + 3 * DAY + H)

    def batch() -> BatchResult:
        c.adopt_cards([replay])
        return c.core.ingest([replay], T0 + 3 * DAY + H)

    res = c.run(batch)
    assert res.rejected == 1 and [e.detail for e in res.of_kind("alert")] == ["replayed_atc"]
