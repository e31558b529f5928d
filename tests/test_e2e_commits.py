"""End-to-end acknowledgement under crashes, every part a real process (wire/README.md,
"End-to-end acknowledgement"): the broker is only a transport.

* kill -9 of the broker mid-burst (not a clean restart: it loses what it acknowledged since
  its last autosave), twice: the validators send again what the back office never confirmed;
* kill -9 of validators and of the back office at random moments, 24 kills: nothing lost,
  nothing charged twice, no accepted tap refused as a replayed ATC, the deny list converged.

Afterwards every tap a journal holds as accepted is in the ledger exactly once, the ledger
reconciles, and every journal row is confirmed by the back office.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from pathlib import Path

import pytest

from backoffice.storage import open_store
from tests.fixtures.backoffice import Proc, deny_truth, deny_view, exactly_once, journal_accepted
from tests.fixtures.mosquitto import BrokerFactory
from tests.test_e2e_faults import Fleet, fleet_db, taps_in, wait

pytestmark = [pytest.mark.service, pytest.mark.slow]
__all__ = ["fleet_db"]  # the fixture, used by name
CARDS = {"V1": "unionpay-debit", "V2": "sscard3-sm"}  # one card each: its counters are its own
EXTRA = ["--commit-timeout", "2"]


def unconfirmed(journal: Path) -> int:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        return int(db.execute("SELECT COUNT(*) FROM taps WHERE committed_us IS NULL")
                   .fetchone()[0])
    finally:
        db.close()


def settle(fleet: Fleet, url: str, procs: dict[str, Proc]) -> None:
    """Validators up until the back office confirmed every tap; then all stopped."""
    journals = [fleet.journal(v) for v in CARDS]

    def done() -> bool:
        accepted: set[str] = set()
        for j in journals:
            accepted |= journal_accepted(j)
        return taps_in(url) == accepted and all(unconfirmed(j) == 0 for j in journals)

    time.sleep(3.0)  # a validator just restarted has its signal handlers up by now
    for vid in CARDS:
        assert procs[vid].stop() == 0, procs[vid].stderr()
    for vid, card in CARDS.items():  # tapping nothing, only resending what is pending
        procs[vid] = fleet.validator(vid, card, extra=[*EXTRA, "--taps", "0", "--drain", "5"])
        assert procs[vid].proc.wait(60) == 0, procs[vid].stderr()
    # Validators that only listen: confirmations still on their way, and the deny list.
    idle = [fleet.validator(vid, card, extra=[*EXTRA, "--interval", "3600"])
            for vid, card in CARDS.items()]

    def converged() -> bool:
        version, tokens = deny_truth(url)
        return all(deny_view(fleet.journal(v))[:2] == (version, tokens) for v in CARDS)

    try:
        wait(done, 90, "every tap in the ledger and confirmed to its validator")
        wait(converged, 30, "the back office's deny list (version and tokens) on every validator")
    except AssertionError:
        accepted: set[str] = set()
        for j in journals:
            accepted |= journal_accepted(j)
        ledger = taps_in(url)
        raise AssertionError(
            f"missing {sorted(accepted - ledger)[:5]} ({len(accepted - ledger)}), extra "
            f"{sorted(ledger - accepted)[:5]}, unconfirmed "
            f"{[unconfirmed(j) for j in journals]}; "
            f"{[p.stderr(1500) for p in idle]} {procs['bo'].stderr(1500)}") from None
    finally:
        for p in idle:
            p.stop()  # tapping nothing: a stop before its signal handler is up loses nothing
    assert procs["bo"].stop() == 0, procs["bo"].stderr()
    summary = json.loads(procs["bo"].lines()[-1])
    assert summary["dead_letters"] == {}, summary  # no accepted tap refused (replayed ATC)
    store = open_store(url)
    try:
        exactly_once(store, journals)
    finally:
        store.close()


def test_kill_9_of_the_broker_mid_burst_loses_nothing(broker_factory: BrokerFactory,
                                                      tmp_path: Path, fleet_db: str) -> None:
    b = broker_factory(validators=list(CARDS))
    fleet = Fleet(tmp_path, b, fleet_db)
    try:
        procs = {"bo": fleet.backoffice()}
        for vid, card in CARDS.items():
            procs[vid] = fleet.validator(vid, card, interval="0.01", extra=EXTRA)
        for _ in range(2):
            seen = len(taps_in(fleet_db))
            wait(lambda s=seen: len(taps_in(fleet_db)) >= s + 60, 30, "taps flowing")
            b.stop(kill=True)  # a crash: whatever it took since its last autosave is gone
            time.sleep(0.5)
            b.start()
        seen = len(taps_in(fleet_db))
        wait(lambda: len(taps_in(fleet_db)) >= seen + 60, 30, "taps flowing again")
        settle(fleet, fleet_db, procs)
    finally:
        fleet.close()


def test_kill_9_of_validators_and_back_office_at_random_loses_nothing(
        broker_factory: BrokerFactory, tmp_path: Path, fleet_db: str) -> None:
    b = broker_factory(validators=list(CARDS))
    fleet = Fleet(tmp_path, b, fleet_db)
    rng = random.Random(20261207)
    kills = 0
    try:
        procs = {"bo": fleet.backoffice()}
        for vid, card in CARDS.items():
            procs[vid] = fleet.validator(vid, card, interval="0.02", extra=EXTRA)
        while kills < 24:
            time.sleep(rng.uniform(0.2, 1.2))
            who = rng.choice(["V1", "V2", "bo"])
            procs[who].kill()
            kills += 1
            if who == "bo":
                procs[who] = Proc("backoffice", procs[who].proc.args[3:],  # type: ignore[index]
                                  tmp_path, {"TAPSIM_MQTT_PASSWORD": fleet.creds["backoffice"]})
                fleet.procs.append(procs[who])  # killed by fleet.close() if the test fails
            else:
                procs[who] = fleet.validator(who, CARDS[who], interval="0.02", extra=EXTRA)
        settle(fleet, fleet_db, procs)
    finally:
        fleet.close()
    assert kills >= 20
