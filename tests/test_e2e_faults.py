"""End to end under faults, every part a real process: validators (`tapsim terminal run`),
Mosquitto with credentials and ACLs, the back office (`tapsim backoffice run`) on SQLite.

While validators tap on: kill -9 a validator mid-burst and restart it; partition another
(its link through a proxy that is cut) while a new card is deny-listed; restart the broker;
kill -9 the back office and keep it down for a while.  After recovery every tap a journal
holds as accepted is in the ledger exactly once (and the ledger reconciles), and every
validator holds the back office's deny list at its version.  The consumer's bad input is
tested here too, as sent by a validator with its own credentials.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from backoffice.consumer.gate import read_dead_letter
from backoffice.storage import open_store, sqlite_url
from tapsim.cli import main
from tests.fixtures.backoffice import (
    Proc,
    core_tap_ids,
    deny_truth,
    deny_view,
    exactly_once,
    journal_accepted,
)
from tests.fixtures.mosquitto import Broker, BrokerFactory
from tests.fixtures.mqtt import Collector
from tests.fixtures.netproxy import Proxy
from tests.test_e2e_pcsc import keys
from wire import TapRecord, decode, encode, topics

pytestmark = [pytest.mark.service, pytest.mark.slow]


def wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def taps_in(url: str) -> set[str]:
    store = open_store(url)
    try:
        return core_tap_ids(store)
    finally:
        store.close()


def deny_log(url: str) -> list[tuple[int, str, str, str, str, int]]:
    """The deny events (seq, token, masked PAN, add/remove, reason, time), for a failure."""
    store = open_store(url)
    try:
        return [(seq, *e) for seq, e in store.deny_events()]
    finally:
        store.close()


class Fleet:
    """The processes of one test and how to start them again."""

    def __init__(self, tmp_path: Path, broker: Broker, url: str) -> None:
        assert broker.auth is not None
        self.tmp, self.b, self.url = tmp_path, broker, url
        self.creds = broker.auth.credentials
        self.private, self.public = keys(tmp_path)
        self.procs: list[Proc] = []

    def backoffice(self) -> Proc:
        # --atc-window: each validator here taps one card every 10-20 ms and sends again
        # what the back office has not confirmed after its commit timeout (seconds): by then
        # the card has made hundreds of taps, more than the default window of 64 (weeks of a
        # real card's taps), and the late ones would be refused as too old, by design
        # (backoffice/README.md, the ATC window).  These tests are about nothing being lost
        # or charged twice in crashes, so the window is sized for their cards' rate.
        p = Proc("backoffice", [
            "backoffice", "run", "--broker", f"mqtt://backoffice@{self.b.host}:{self.b.port}",
            "--db", self.url, "--signing-key", str(self.private), "--snapshot-every", "0.5",
            "--tick", "2", "--atc-window", "4096", "--json", "-v"],
            self.tmp, {"TAPSIM_MQTT_PASSWORD": self.creds["backoffice"]})
        self.procs.append(p)
        p.wait_for_line("ready:")
        return p

    def journal(self, vid: str) -> Path:
        return self.tmp / f"{vid}.journal"

    def validator(self, vid: str, card: str, port: int | None = None,
                  interval: str = "0.02", extra: list[str] | None = None,
                  name: str | None = None) -> Proc:
        p = Proc(name or vid, [
            "terminal", "run", "--validator-id", vid, "--card", card,
            "--broker", f"mqtt://{vid}@{self.b.host}:{port or self.b.port}",
            "--deny-list-key", str(self.public), "--journal", str(self.journal(vid)),
            "--stop-id", "S01", "--route-id", "1", "--duplicate-window", "0",
            "--interval", interval, "--drain", "30", "--json", "-v", *(extra or [])],
            self.tmp, {"TAPSIM_MQTT_PASSWORD": self.creds[vid]})
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.alive():
                p.kill()


@pytest.fixture
def fleet_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """A core database: two cards active, two whose bank accounts were never activated."""
    url = sqlite_url(tmp_path / 'bo.db')
    # Enough money for any number of taps at 0.02 s: on a fast machine V1's card otherwise
    # ran out of money (51) and joined the deny list before the partition under test.
    assert main(["card", "issue", "--profile", "unionpay-debit", "--activate", "--balance",
                 "10000000", "--db", url]) == 0
    assert main(["card", "issue", "--profile", "sscard3-sm", "--activate", "--db", url]) == 0
    assert main(["card", "issue", "--profile", "unionpay-dual", "--db", url]) == 0
    assert main(["card", "issue", "--profile", "sscard3", "--db", url]) == 0
    capsys.readouterr()
    return url


def test_every_accepted_tap_is_charged_once_and_the_deny_list_converges_after_faults(
        broker_factory: BrokerFactory, netproxy: type[Proxy], tmp_path: Path,
        fleet_db: str) -> None:
    b = broker_factory(validators=["V1", "V2", "V3"])
    fleet = Fleet(tmp_path, b, fleet_db)
    try:
        bo = fleet.backoffice()
        proxy = netproxy(b.host, b.port)
        v1 = fleet.validator("V1", "unionpay-debit")
        v2 = fleet.validator("V2", "unionpay-dual", port=proxy.port, interval="0.05")
        # V2's card is declined at its account verification: deny-listed, out to validators.
        _, denied = (0, set())

        def v2_blocked() -> bool:
            nonlocal denied
            _, denied = deny_truth(fleet_db)
            return bool(denied) and denied <= deny_view(fleet.journal("V1"))[1] \
                and denied <= deny_view(fleet.journal("V2"))[1]

        wait(v2_blocked, 30, "the first deny-list change at V1 and V2")
        wait(lambda: len(taps_in(fleet_db)) >= 30, 30, "taps in the ledger")

        # 1. kill -9 a validator mid-burst, restart it on its journal.  Another card is in its
        # field then: the virtual card lives in the validator's process and starts its ATC
        # again, which the core rightly refuses as replayed.
        v1.kill()
        v1 = fleet.validator("V1", "sscard3-sm")

        # 2. partition V2 while another card (V3's) goes on the deny list.
        proxy.cut()
        v3 = fleet.validator("V3", "sscard3", interval="0.3")
        wait(lambda: len(deny_truth(fleet_db)[1]) == 2, 30, "V3's card deny-listed")
        time.sleep(1.0)
        held = deny_view(fleet.journal("V2"))[1]
        assert len(held) == 1, (held, deny_log(fleet_db))  # cut off: V2 does not know yet
        proxy.heal()

        # 3. restart the broker under load.
        b.restart()

        # 4. kill -9 the back office; validators keep tapping; back after a while.
        time.sleep(1.0)
        bo.kill()
        time.sleep(3.0)
        bo = fleet.backoffice()
        time.sleep(2.0)

        # Recovery: every validator holds the back office's list, at its version.
        def converged() -> bool:
            version, tokens = deny_truth(fleet_db)
            return all(deny_view(fleet.journal(v))[:2] == (version, tokens)
                       for v in ("V1", "V2", "V3"))

        wait(converged, 30, "the deny list on every validator")
        assert all(deny_view(fleet.journal(v))[2] == "1" for v in ("V1", "V2", "V3"))
        for v in (v1, v2, v3):
            assert v.stop() == 0, v.stderr()
        # A validator stopped by a signal leaves what it did not send in its journal for its
        # next run: run each once more, tapping nothing, until its journal is sent.
        for vid, card in (("V1", "sscard3-sm"), ("V2", "unionpay-dual"), ("V3", "sscard3")):
            # (its own output files: the stopped run may rightly have said it left some)
            again = fleet.validator(vid, card, extra=["--taps", "0"], name=f"{vid}-final")
            assert again.proc.wait(60) == 0, again.stderr()
            assert "not yet confirmed" not in again.stderr()
        journals = [fleet.journal(v) for v in ("V1", "V2", "V3")]
        accepted: set[str] = set()
        for j in journals:
            accepted |= journal_accepted(j)
        try:
            wait(lambda: taps_in(fleet_db) == accepted, 60, "every accepted tap in the ledger")
        except AssertionError:
            ledger = taps_in(fleet_db)
            raise AssertionError(f"not in the ledger: {sorted(accepted - ledger)}; "
                                 f"not accepted: {sorted(ledger - accepted)}") from None
        assert bo.stop() == 0, bo.stderr()
        summary = json.loads(bo.lines()[-1])
        assert summary["dead_letters"] == {}, summary
    finally:
        fleet.close()
    store = open_store(fleet_db)
    try:
        exactly_once(store, journals)
    finally:
        store.close()
    # The run had refusals at the validators (deny-listed cards) and some duplicates at the
    # back office (the killed back office's uncommitted or unacknowledged batches).
    outcomes = [json.loads(x)["outcome"] for x in (tmp_path / "V2.out").read_text().splitlines()
                if x.startswith("{")]
    assert "deny_listed" in outcomes and "accepted" in outcomes


def test_bad_input_from_a_validator_is_dead_lettered_by_the_running_back_office(
        broker_factory: BrokerFactory, tmp_path: Path, fleet_db: str) -> None:
    """With its own credentials a validator can only reach its own topic (the broker's ACL);
    what it sends there is checked anyway: garbage, oversized, a record claiming to be
    another validator's, a replayed record under a new id, a replay of the same id."""
    b = broker_factory(validators=["V1", "V2"])
    fleet = Fleet(tmp_path, b, fleet_db)
    try:
        bo = fleet.backoffice()
        v1 = fleet.validator("V1", "unionpay-debit", extra=["--taps", "3"])
        assert v1.proc.wait(60) == 0, v1.stderr()
        wait(lambda: taps_in(fleet_db) == journal_accepted(fleet.journal("V1")), 30, "V1's taps")
        import sqlite3

        db = sqlite3.connect(fleet.journal("V1"))
        good = bytes(db.execute("SELECT payload FROM taps ORDER BY seq LIMIT 1").fetchone()[0])
        db.close()
        rec = decode(good, TapRecord)
        as_v2 = encode(msgspec.structs.replace(rec, validator_id="V2", tap_id="V2:x:1"))
        new_id = encode(msgspec.structs.replace(rec, tap_id="V1:again:1"))
        sent = [b"\xc1", b"\x91" + b"\x00" * 5000, as_v2, new_id, good]

        async def go() -> list[bytes]:
            bo_creds = {"username": "backoffice", "password": fleet.creds["backoffice"]}
            async with Collector(b.host, b.port, [topics.DEAD_LETTER], **bo_creds) as dl:  # type: ignore[arg-type]
                async with aiomqtt.Client(b.host, b.port, username="V1",
                                          identifier=topics.validator_client_id("V1"),
                                          password=fleet.creds["V1"]) as client:
                    for payload in sent:
                        await client.publish(topics.tap_topic("V1"), payload, qos=1)
                assert await dl.wait_for(lambda m: len(m) == 4, 20)
                return [p for _, p in dl.messages]

        import asyncio

        letters = [read_dead_letter(p) for p in asyncio.run(go())]
        assert bo.stop() == 0
    finally:
        fleet.close()
    assert sorted(d.reason for d in letters) == ["malformed", "rejected", "too-large",
                                                 "wrong-topic"]
    replay = next(d for d in letters if d.reason == "rejected")
    assert replay.tap_id == "V1:again:1" and "ATC seen before" in replay.detail
    # The payload travels with digit runs of card length masked (here inside the AID);
    # its hash names the original, which the validator's journal holds.
    assert replay.sha256 == hashlib.sha256(new_id).hexdigest()
    assert len(base64.b64decode(replay.payload_b64 or "")) == len(new_id)
    summary = json.loads(bo.lines()[-1])
    assert summary["duplicates"] >= 1  # the same tap id again: absorbed, not charged
    assert taps_in(fleet_db) == journal_accepted(fleet.journal("V1"))
