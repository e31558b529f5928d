"""The uplink and downlink against a real Mosquitto: delivery, restarts, partitions, catch-up.

Each test starts its own broker (tests/fixtures/mosquitto.py).  A test-side collector
plays the back office's tap consumer; a test-side signer plays its deny-list publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from terminal.denystore import DenyStore, deny_store_path
from terminal.journal import Journal
from tests.fixtures.mosquitto import Broker
from tests.fixtures.mqtt import (
    SIGNER,
    Collector,
    Running,
    burst,
    journal_ids,
    publish,
    settings,
    tap_ids,
    wait_until,
)
from tests.fixtures.netproxy import Proxy
from tests.fixtures.terminal import rig
from wire import (
    SIZE_LIMITS,
    DenyListDelta,
    DenyListSnapshot,
    FareTableVersion,
    Reason,
    Signed,
    Signer,
    TapRecord,
    decode,
    encode,
    generate_signing_key,
    topics,
)

pytestmark = pytest.mark.service

T0 = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
TOK = [f"{i:032x}" for i in range(1, 40)]


@contextlib.asynccontextmanager
async def backoffice_collector(b: Broker, **kw: object) -> AsyncIterator[Collector]:
    async with Collector(b.host, b.port, [topics.TAPS_ALL], client_id="test-backoffice",
                         clean=False, **kw) as c:  # type: ignore[arg-type]
        yield c


def test_taps_go_up_once_acked_and_are_marked_sent(mosquitto: Broker, tmp_path: Path) -> None:
    r = rig(tmp_path / "j.db")
    burst(r, 30)  # journaled while no link exists yet

    async def main() -> None:
        async with backoffice_collector(mosquitto) as c, \
                Running(settings(mosquitto.host, mosquitto.port), tmp_path / "j.db") as run:
            burst(r, 20, run.uplink.notify)
            assert await c.wait_for(lambda m: tap_ids(m) == journal_ids(r))
            assert await run.uplink.drain(10)
            assert run.uplink.stats.published == 50
            assert {t for t, _ in c.messages} == {"tapsim/v1/taps/V1"}

    asyncio.run(main())
    assert r.journal.unsent_count() == 0
    assert all(e.sent is not None for e in r.journal.entries())


def test_broker_restart_loses_no_tap(mosquitto: Broker, tmp_path: Path) -> None:
    r = rig(tmp_path / "j.db")

    async def main() -> None:
        async with backoffice_collector(mosquitto) as c, \
                Running(settings(mosquitto.host, mosquitto.port), tmp_path / "j.db") as run:
            burst(r, 10, run.uplink.notify)
            assert await run.uplink.drain(10)
            mosquitto.stop()  # SIGTERM: mosquitto saves sessions and queued messages
            await wait_until(lambda: not run.uplink.connected.is_set(), 10)
            burst(r, 15, run.uplink.notify)  # the bus drives on; taps wait in the journal
            assert r.journal.unsent_count() == 15
            mosquitto.start()
            assert await run.uplink.drain(20)
            assert run.uplink.stats.connects >= 2
            assert await c.wait_for(lambda m: tap_ids(m) == journal_ids(r), 20)

    asyncio.run(main())


def test_partition_then_heal_delivers_everything_and_converges_deny_list(
        mosquitto: Broker, netproxy: type[Proxy], tmp_path: Path) -> None:
    proxy = netproxy(mosquitto.host, mosquitto.port)
    r = rig(tmp_path / "j.db")

    async def main() -> None:
        async with backoffice_collector(mosquitto) as c, \
                Running(settings("127.0.0.1", proxy.port), tmp_path / "j.db") as run:
            r.validator.deny_list = run.downlink.deny_list  # type: ignore[union-attr]
            await publish(mosquitto.host, mosquitto.port, topics.DENY_SNAPSHOT,
                          SIGNER.sign(DenyListSnapshot(version=1, issued_at=T0, tokens=TOK[:2])),
                          retain=True)
            assert await wait_until(lambda: run.downlink.deny_list.version == 1)  # type: ignore[union-attr]
            burst(r, 5, run.uplink.notify)
            proxy.cut()
            await wait_until(lambda: not run.uplink.connected.is_set(), 10)
            burst(r, 12, run.uplink.notify)
            # The back office moves on while the validator is cut off: QoS 1 deltas queue.
            for v in (1, 2):
                await publish(mosquitto.host, mosquitto.port, topics.DENY_DELTA,
                              SIGNER.sign(DenyListDelta(from_version=v, to_version=v + 1,
                                                        issued_at=T0, add=[TOK[v + 5]],
                                                        remove=[TOK[v - 1]])))
            await asyncio.sleep(1.0)
            assert r.journal.unsent_count() >= 12
            proxy.heal()
            assert await run.uplink.drain(20)
            assert await c.wait_for(lambda m: tap_ids(m) == journal_ids(r), 20)
            dl = run.downlink
            assert dl is not None
            assert await wait_until(lambda: dl.deny_list.version == 3)
            assert dl.deny_list.tokens() == {TOK[6], TOK[7]}

    asyncio.run(main())


def test_blackholed_link_is_noticed_and_recovered(
        mosquitto: Broker, netproxy: type[Proxy], tmp_path: Path) -> None:
    proxy = netproxy(mosquitto.host, mosquitto.port)
    r = rig(tmp_path / "j.db")

    async def main() -> None:
        async with backoffice_collector(mosquitto) as c, \
                Running(settings("127.0.0.1", proxy.port), tmp_path / "j.db") as run:
            proxy.blackhole()  # packets vanish; no FIN, no RST
            burst(r, 8, run.uplink.notify)
            await asyncio.sleep(0.5)
            proxy.heal()  # the old TCP connection stays silent: only a timeout ends it
            assert await wait_until(lambda: run.uplink.stats.connects >= 2, 20)
            assert await run.uplink.drain(20)
            assert await c.wait_for(lambda m: tap_ids(m) == journal_ids(r), 20)

    asyncio.run(main())


def test_offline_validator_catches_up_on_reconnect(mosquitto: Broker, tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    Journal(path).close()
    host, port = mosquitto.host, mosquitto.port

    async def main() -> None:
        async with Running(settings(host, port), path) as run:  # first contact: subscribes
            assert run.downlink is not None and run.downlink.deny_list.version == 0
        # Offline now.  The back office publishes a snapshot, deltas and a fare version.
        await publish(host, port, topics.DENY_SNAPSHOT, SIGNER.sign(
            DenyListSnapshot(version=4, issued_at=T0, tokens=TOK[:3])), retain=True)
        for v in (4, 5, 6):
            await publish(host, port, topics.DENY_DELTA, SIGNER.sign(
                DenyListDelta(from_version=v, to_version=v + 1, issued_at=T0,
                              add=[TOK[10 + v]], remove=[])))
        await publish(host, port, topics.FARE_VERSION, SIGNER.sign(FareTableVersion(
            version=9, table_id="city-2026", sha256=bytes(32), effective_from=T0,
            issued_at=T0)), retain=True)
        async with Running(settings(host, port), path) as run:
            dl = run.downlink
            assert dl is not None
            assert await wait_until(lambda: dl.deny_list.version == 7 and dl.fare_version == 9)
            assert dl.deny_list.tokens() == {*TOK[:3], TOK[14], TOK[15], TOK[16]}
        # ... and it remembers across a restart without any network.
        store = DenyStore(deny_store_path(path))
        assert store.load_deny_list() == (7, {*TOK[:3], TOK[14], TOK[15], TOK[16]})
        store.close()

    asyncio.run(main())


def test_bad_downlink_is_refused_and_the_link_stays_up(mosquitto: Broker,
                                                       tmp_path: Path) -> None:
    host, port = mosquitto.host, mosquitto.port
    r = rig(tmp_path / "j.db")
    burst(r, 1)
    replayed_tap = next(r.journal.entries()).payload
    intruder = Signer(generate_signing_key())
    good = DenyListSnapshot(version=2, issued_at=T0, tokens=TOK[:1])

    async def main() -> None:
        async with Running(settings(host, port), tmp_path / "j.db") as run:
            dl = run.downlink
            assert dl is not None
            bad = [
                (topics.DENY_SNAPSHOT, b"\xc1garbage"),
                # Over every message's limit, yet under the broker's max_packet_size (which
                # refuses anything larger outright).
                (topics.DENY_SNAPSHOT, b"\x00" * (SIZE_LIMITS[Signed] + 1024)),
                (topics.DENY_SNAPSHOT, encode(good)),  # unsigned
                (topics.DENY_SNAPSHOT, intruder.sign(good)),  # signed by someone else
                (topics.DENY_DELTA, replayed_tap),  # a tap record replayed onto the downlink
                (topics.DENY_DELTA, SIGNER.sign(good)),  # a snapshot on the delta topic
            ]
            for topic, payload in bad:
                await publish(host, port, topic, payload)
            await publish(host, port, topics.DENY_SNAPSHOT, SIGNER.sign(good))
            await publish(host, port, topics.DENY_SNAPSHOT, SIGNER.sign(  # stale
                DenyListSnapshot(version=1, issued_at=T0, tokens=[])))
            assert await wait_until(lambda: sum(dl.stats.rejected.values()) == 7)
            assert dl.deny_list.version == 2 and dl.deny_list.tokens() == {TOK[0]}
            assert dict(dl.stats.rejected) == {
                Reason.MALFORMED: 1, Reason.TOO_LARGE: 1, Reason.UNSIGNED: 1,
                Reason.UNKNOWN_KEY: 1, Reason.WRONG_KIND: 2, Reason.STALE: 1}
            assert run.uplink.stats.connects == 1

    asyncio.run(main())


def test_a_tap_stays_pending_until_the_back_office_confirms_it(mosquitto: Broker,
                                                                tmp_path: Path) -> None:
    """ack/1 on the validator's commit topic ends a tap's life; until then it is sent again
    after the commit timeout; an acknowledgement for another validator changes nothing."""
    from wire import CommitAck, encode

    r = rig(tmp_path / "j.db")
    burst(r, 4)
    ids = sorted(journal_ids(r))

    def ack(vid: str, tap_ids: list[str]) -> bytes:
        return encode(CommitAck(validator_id=vid, issued_at=dt.datetime.now(dt.UTC),
                                tap_ids=tap_ids))

    async def main() -> None:
        async with backoffice_collector(mosquitto) as c, \
                Running(settings(mosquitto.host, mosquitto.port), tmp_path / "j.db") as run:
            run.uplink.commit_timeout = run.uplink._resend_after = 0.4
            assert await c.wait_for(lambda m: tap_ids(m) == set(ids))
            await publish(mosquitto.host, mosquitto.port, topics.commit_topic("V1"),
                          ack("V1", ids[:2]))
            await publish(mosquitto.host, mosquitto.port, topics.commit_topic("V1"),
                          ack("V2", ids[2:]))  # not ours: ignored
            assert await wait_until(lambda: run.uplink.stats.committed == 2)
            # The two unconfirmed ones come again, the confirmed ones never.
            assert await c.wait_for(lambda m: len(m) >= 6, 5)
            again = [decode(p, TapRecord).tap_id for _, p in c.messages[4:]]
            assert set(again) == set(ids[2:])
            await publish(mosquitto.host, mosquitto.port, topics.commit_topic("V1"),
                          ack("V1", ids[2:]))
            assert await wait_until(lambda: run.uplink.stats.committed == 4)

    asyncio.run(main())
    assert r.journal.uncommitted_count() == 0
