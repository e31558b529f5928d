"""The core runs each batch with the cyclic garbage collector paused (TransactionCore.run,
fare.engine.cycles_not_collected).  That is only sound while the core's records form no
reference cycles, freed by reference counting alone; these tests hold it to that, over every
path a day takes (fares with transfers, verification, charge, decline, debt, deny list,
rejects, replayed ATCs), and check the collector is back as it was after a batch, even one
that fails."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from backoffice.engine import BackOffice
from backoffice.fare_pricer import FarePricer
from backoffice.service import TransactionCore
from backoffice.storage import open_store, sqlite_url
from backoffice.taps import Action, TapRecord
from fare.gtfs import load_feed
from fare.samples import sample_feed_path
from tests.core_fixtures import (
    BANKS,
    CST,
    TOKEN_KEY,
    TestCard,
    config,
    keystore,
    new_issuer,
    open_card,
    pan_for,
)

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=CST)  # a Monday


def _taps(cards: list[TestCard]) -> Iterator[list[TapRecord]]:
    """Three days of four city rides a card (transfers 40 minutes after the first and third),
    one batch an hour; then a replayed ATC and a ride on a route the feed lacks."""
    rides = ((timedelta(0), "1"), (timedelta(minutes=40), "2"), (timedelta(hours=9), "5"),
             (timedelta(hours=9, minutes=40), "11"))  # fmt: skip
    for day in range(3):
        for k, (offset, route) in enumerate(rides):
            batch = []
            for i, tc in enumerate(cards):
                tap = tc.tap(f"{i}-{day}-{k}", T0 + timedelta(days=day, seconds=i) + offset,
                             operator="lsbus", route=route, stop=f"S{(i + k) % 24 + 1:02d}",
                             action=Action.TAP_ON)  # fmt: skip
                batch.append(dataclasses.replace(tap, fare_media="cemv"))
            yield batch
    replayed = dataclasses.replace(batch[0], tap_id="replayed")
    unknown = dataclasses.replace(cards[1].tap("nowhere", T0 + timedelta(days=3)),
                                  route_id="no-such-route", fare_media="cemv")  # fmt: skip
    yield [replayed, unknown]


def _cards() -> list[TestCard]:
    return [TestCard(pan_for(70_000 + i), "sm4" if i % 2 else "tdes") for i in range(12)]


def test_a_core_run_leaves_no_cyclic_garbage() -> None:
    cards = _cards()
    batches = list(_taps(cards))  # the cryptograms, made before the counting starts
    # Loaded once per process and kept (the feed and its index refer to each other).
    feed = load_feed(sample_feed_path("city"))
    FarePricer(feed)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        issuer = new_issuer()
        for i, tc in enumerate(cards):
            # Every third card cannot pay: declined charges, debts, the deny list.
            open_card(issuer, tc, T0, balance=0 if i % 3 == 0 else 100_000)
        bo = BackOffice(FarePricer(feed), issuer, config(spend_limit=100_000))
        accepted = rejected = 0
        for batch in batches:
            res = bo.ingest(batch, batch[-1].time + timedelta(minutes=1))
            accepted += res.accepted
            rejected += res.rejected
        closed = bo.close_due(T0 + timedelta(days=5))
        recovered = bo.run_recovery(T0 + timedelta(days=6))
        bo.drain_changes()
        issuer.drain_changes()
        # The day took every path this test is about.
        assert accepted == 12 * 12 and rejected == 2
        assert closed.of_kind("charged") and closed.of_kind("declined")
        assert bo.deny and recovered is not None
        del bo, issuer, res, closed, recovered
        found = gc.collect()
        kinds = sorted({type(o).__name__ for o in gc.garbage})
        assert found == 0, f"{found} objects in reference cycles: {kinds[:20]}"
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


def test_the_collector_is_restored_after_a_batch_and_after_a_failed_one(tmp_path: Path) -> None:
    store = open_store(sqlite_url(str(tmp_path / "core.db")))
    try:
        core = TransactionCore(store, FarePricer(load_feed(sample_feed_path("city"))),
                               keystore(), BANKS, TOKEN_KEY, config())  # fmt: skip
        tc = TestCard(pan_for(71_000))
        core.run(lambda: open_card(core.issuer, tc, T0))
        assert gc.isenabled()
        tap = dataclasses.replace(tc.tap("t1", T0, operator="lsbus", route="1", stop="S01",
                                         action=Action.TAP_ON), fare_media="cemv")  # fmt: skip
        assert core.ingest([tap], T0).accepted == 1
        assert gc.isenabled()

        def fails() -> None:
            assert not gc.isenabled()  # paused while the batch runs
            raise RuntimeError("the batch fails")

        with pytest.raises(RuntimeError, match="the batch fails"):
            core.run(fails)
        assert gc.isenabled()
        gc.disable()  # a caller that runs with the collector off keeps it off
        try:
            core.ingest([], T0)
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        store.close()
