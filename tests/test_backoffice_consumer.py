"""The back-office consumer against a real Mosquitto: taps into the ledger exactly once,
acknowledged only after the commit, bad input dead-lettered with its reason, the signed deny
list out to validators, worker sessions shared and retired, storage failures survived."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from backoffice.consumer.gate import read_dead_letter
from backoffice.consumer.link import BrokerAddress, BrokerUrlError, Link
from backoffice.service import TransactionCore
from backoffice.storage import StorageError, open_store, sqlite_url
from backoffice.writer_lock import WriterLock, WriterLockError
from tapsim.cli import main
from tests.core_fixtures import backend_url, drop_schema, pg_unavailable
from tests.fixtures.backoffice import (
    consumer,
    core_tap_ids,
    issue_cards,
    ledger_fares,
    running,
    until,
)
from tests.fixtures.mosquitto import Broker, BrokerFactory
from tests.fixtures.mqtt import BO_KEY, SIGNER, Collector, Running, settings
from tests.fixtures.terminal import TOKEN_KEY, Rig, rig
from wire import DenyListSnapshot, FareTableVersion, TapRecord, Verifier, decode, encode, topics

pytestmark = pytest.mark.service


def validator(tmp_path: Path, vid: str = "V1", card: str = "unionpay-debit") -> Rig:
    return rig(tmp_path / f"{vid}.journal", validator_id=vid, stop_id="S01", route_id="1",
               card_name=card)


def tap_payloads(r: Rig, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        rec = r.validator.tap(r.reader).record
        assert rec is not None
        out.append(encode(rec))
    return out


async def publish(b: Broker, items: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client(b.host, b.port) as client:
        for topic, payload in items:
            await client.publish(topic, payload, qos=1)


def meta(url: str, key: str) -> str | None:
    store = open_store(url)
    try:
        return store.meta(key)
    finally:
        store.close()


def taps_in(url: str) -> set[str]:
    store = open_store(url)
    try:
        return core_tap_ids(store)
    finally:
        store.close()


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "bo.db")
    issue_cards(url, TOKEN_KEY, {"unionpay-debit": True, "unionpay-dual": False})
    return url


def test_taps_reach_the_ledger_once_and_are_acknowledged_after_commit(
        mosquitto: Broker, tmp_path: Path, db: str) -> None:
    v1 = validator(tmp_path)
    payloads = tap_payloads(v1, 6)
    ids = {decode(p, TapRecord).tap_id for p in payloads}

    async def go() -> None:
        async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY)) as c:
            await publish(mosquitto, [(topics.tap_topic("V1"), p) for p in payloads])
            assert await until(lambda: c.stats.ingested == 6)
        assert c.stats.acked == 6 and c.stats.not_acked == 0
        assert c.stats.latencies_ms and max(c.stats.latencies_ms) > 0
        # Acknowledged: a new run gets nothing again.
        async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY)) as again:
            await asyncio.sleep(1.0)
        assert again.stats.received == 0

    asyncio.run(go())
    store = open_store(db)
    assert core_tap_ids(store) == ids
    fares = ledger_fares(store)
    assert set(fares) <= ids and all(n == 1 for n in fares.values()) and fares
    store.close()


def test_a_commit_whose_acknowledgement_was_lost_is_redelivered_and_not_charged_twice(
        mosquitto: Broker, tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the back office died between COMMIT and PUBACK."""
    payloads = tap_payloads(validator(tmp_path), 4)

    async def go() -> None:
        with monkeypatch.context() as m:
            m.setattr(Link, "ack", lambda self, mid, qos: False)
            async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY)) as c:
                await publish(mosquitto, [(topics.tap_topic("V1"), p) for p in payloads])
                assert await until(lambda: c.stats.ingested == 4)
        store = open_store(db)
        before = (core_tap_ids(store), ledger_fares(store))
        store.close()
        async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY)) as again:
            assert await until(lambda: again.stats.duplicates == 4)
        assert again.stats.ingested == 0 and again.stats.acked == 4
        store = open_store(db)
        assert (core_tap_ids(store), ledger_fares(store)) == before
        store.close()

    asyncio.run(go())


def test_bad_input_goes_to_the_dead_letter_topic_with_its_reason(
        mosquitto: Broker, tmp_path: Path, db: str) -> None:
    good = tap_payloads(validator(tmp_path), 1)[0]
    rec = decode(good, TapRecord)
    replayed_atc = encode(msgspec.structs.replace(rec, tap_id="V1:replay:1", seq=99))
    raw = msgspec.msgpack.decode(good)
    raw[12] = "6222020000000000018"  # the card number where its token goes
    clear_pan = msgspec.msgpack.encode(raw)
    sent = [
        (topics.tap_topic("V1"), b"\x00garbage"),
        (topics.tap_topic("V1"), b"\x93" + b"x" * 6000),  # over the 4 KiB limit
        ("tapsim/v1/taps/bad id", good),  # not a validator id
        (topics.tap_topic("V2"), good),  # V1's record on V2's topic
        (topics.tap_topic("V1"), clear_pan),  # a card number where the token goes
        (topics.tap_topic("V1"), good),
        (topics.tap_topic("V1"), good),  # the same tap again: a duplicate, no dead letter
        (topics.tap_topic("V1"), replayed_atc),  # same card and ATC, another tap id
    ]

    async def go() -> list[tuple[str, bytes]]:
        async with Collector(mosquitto.host, mosquitto.port, [topics.DEAD_LETTER]) as dl, \
                running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY)) as c:
            await publish(mosquitto, sent)
            assert await dl.wait_for(lambda m: len(m) >= 6)
            assert await until(lambda: c.stats.acked == len(sent))
            await asyncio.sleep(0.3)
        assert c.stats.ingested == 1 and c.stats.duplicates == 1 and c.stats.rejected == 1
        return dl.messages

    letters = [read_dead_letter(p) for _, p in asyncio.run(go())]
    by_reason = sorted((d.reason, d.topic) for d in letters)
    assert by_reason == [("malformed", "tapsim/v1/taps/V1"), ("malformed", "tapsim/v1/taps/V1"),
                         ("rejected", "tapsim/v1/taps/V1"), ("too-large", "tapsim/v1/taps/V1"),
                         ("wrong-topic", "tapsim/v1/taps/V2"),
                         ("wrong-topic", "tapsim/v1/taps/bad id")]
    rejected = next(d for d in letters if d.reason == "rejected")
    assert rejected.tap_id == "V1:replay:1" and "atc" in rejected.detail
    pan = next(d for d in letters if "pan_token" in d.detail)
    assert "6222020000000000018" not in (pan.payload_b64 or "") + pan.detail
    import base64

    assert b"6222020000000000018" not in base64.b64decode(pan.payload_b64 or "")
    store = open_store(db)
    assert [r.tap_id for r in store.rejects()] == ["V1:replay:1"]  # the core keeps its own
    store.close()


def test_deny_list_changes_reach_validators_signed(mosquitto: Broker, tmp_path: Path,
                                                   db: str) -> None:
    """A card whose bank account was never activated: its account verification is declined,
    the core deny-lists it, the consumer publishes a signed delta and a retained snapshot;
    a running validator applies the delta, a new one starts from the snapshot."""
    bad = validator(tmp_path, "V2", card="unionpay-dual")
    payloads = tap_payloads(bad, 1)
    token = decode(payloads[0], TapRecord).pan_token
    st1 = settings(mosquitto.host, mosquitto.port, "V1")

    async def go() -> None:
        async with Collector(mosquitto.host, mosquitto.port, [topics.FARE_VERSION]) as fares, \
                running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY,
                                 signer=SIGNER)) as c, \
                Running(st1, tmp_path / "v1.journal", "V1") as v1:
            assert await fares.wait_for(lambda m: len(m) == 1)
            fare = Verifier(BO_KEY.public_key()).open(fares.messages[0][1], FareTableVersion)
            assert fare.version == 1 and fare.table_id
            await publish(mosquitto, [(topics.tap_topic("V2"), payloads[0])])
            assert v1.downlink is not None
            assert await until(lambda: token in v1.downlink.deny_list)
            dl = v1.downlink
            assert await until(lambda: c.stats.deltas >= 1
                               and dl.deny_list.version == c.stats.deny_version)
            await until(lambda: c.stats.snapshots >= 2)
            st3 = settings(mosquitto.host, mosquitto.port, "V3")
            async with Running(st3, tmp_path / "v3.journal", "V3") as v3:
                assert v3.downlink is not None
                assert await until(lambda: token in v3.downlink.deny_list)  # the snapshot
                assert v3.downlink.deny_list.version == c.stats.deny_version

    asyncio.run(go())
    store = open_store(db)
    assert [r.pan_token for r in store.deny_list()] == [token]
    store.close()


def test_a_new_retained_snapshot_carries_the_whole_list(mosquitto: Broker, tmp_path: Path,
                                                         db: str) -> None:
    bad = validator(tmp_path, "V2", card="unionpay-dual")
    payloads = tap_payloads(bad, 1)

    async def go() -> DenyListSnapshot:
        async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY,
                                    signer=SIGNER)) as c:
            await publish(mosquitto, [(topics.tap_topic("V2"), payloads[0])])
            assert await until(lambda: c.stats.snapshots >= 1 and c.stats.deny_version >= 1)
            await asyncio.sleep(0.5)  # > snapshot_every: the snapshot after the change is out
        async with Collector(mosquitto.host, mosquitto.port, [topics.DENY_SNAPSHOT]) as snap:
            assert await snap.wait_for(lambda m: len(m) == 1)
            return Verifier(BO_KEY.public_key()).open(snap.messages[0][1], DenyListSnapshot)

    snapshot = asyncio.run(go())
    assert snapshot.tokens == [decode(payloads[0], TapRecord).pan_token]
    assert snapshot.version >= 1


def test_workers_share_the_taps_and_an_earlier_runs_extra_sessions_are_retired(
        mosquitto: Broker, tmp_path: Path, db: str) -> None:
    payloads = tap_payloads(validator(tmp_path), 20)

    async def go() -> None:
        async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY,
                                    workers=3)):
            pass
        # The back office is down: the broker keeps each of the three sessions' share.
        await publish(mosquitto, [(topics.tap_topic("V1"), p) for p in payloads])
        async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY,
                                    workers=1)) as c:
            assert await until(lambda: c.stats.ingested == 20)
            assert await until(lambda: meta(db, "backoffice.consumer.sessions") == "1")

    asyncio.run(go())
    store = open_store(db)
    assert len(core_tap_ids(store)) == 20
    store.close()


def test_a_storage_failure_keeps_the_batch_until_the_database_is_back(
        mosquitto: Broker, tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = tap_payloads(validator(tmp_path), 5)
    real = TransactionCore.ingest
    failures = [3]

    def flaky(self: TransactionCore, records: object, now: dt.datetime) -> object:
        if failures[0] > 0:
            failures[0] -= 1
            raise StorageError("sqlite: disk I/O error (test)")
        return real(self, records, now)  # type: ignore[arg-type]

    monkeypatch.setattr(TransactionCore, "ingest", flaky)

    async def go() -> None:
        async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY)) as c:
            await publish(mosquitto, [(topics.tap_topic("V1"), p) for p in payloads])
            assert await until(lambda: c.stats.ingested == 5)
        assert c.stats.storage_retries == 3 and c.stats.acked == 5

    asyncio.run(go())


def test_day_end_close_runs_on_the_timer(mosquitto: Broker, tmp_path: Path, db: str) -> None:
    """The consumer's clock says it is the next day: the tick closes the aggregate and the
    deferred charge is captured (the issuer's settlement account moves)."""
    payloads = tap_payloads(validator(tmp_path), 2)
    tap_time = decode(payloads[0], TapRecord).time
    later = tap_time + dt.timedelta(days=1, hours=2)

    async def go() -> None:
        async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY,
                                    clock=lambda: later, tick=0.2)) as c:
            await publish(mosquitto, [(topics.tap_topic("V1"), p) for p in payloads])
            assert await until(lambda: c.stats.ingested == 2)
            assert await until(lambda: c.stats.ticks >= 1)

    asyncio.run(go())
    store = open_store(db)
    assert [(a.status, a.close_reason) for a in store.aggregates()] == \
        [("charged", "service_day_end")]
    assert {b.account for b in store.ledger_balances() if b.balance} >= {"issuer_settlement"}
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_one_writer_per_database(backend: str, tmp_path: Path) -> None:
    url, schema = backend_url(backend, tmp_path)
    if backend == "postgresql":
        try:
            open_store(url).close()
        except StorageError as exc:
            pg_unavailable(str(exc))
    try:
        with WriterLock(url), pytest.raises(WriterLockError, match="another back office"):
            WriterLock(url).acquire()
        with WriterLock(url):  # released: taken again
            pass
    finally:
        if schema:
            drop_schema(schema)


def test_postgresql_backend(mosquitto: Broker, tmp_path: Path) -> None:
    url, schema = backend_url("postgresql", tmp_path)
    try:
        issue_cards(url, TOKEN_KEY, {"unionpay-debit": True})
    except StorageError as exc:
        pg_unavailable(str(exc))
    payloads = tap_payloads(validator(tmp_path), 5)

    async def go() -> None:
        async with running(consumer(mosquitto.host, mosquitto.port, url, TOKEN_KEY)) as c:
            await publish(mosquitto, [(topics.tap_topic("V1"), p) for p in payloads])
            assert await until(lambda: c.stats.ingested == 5)

    try:
        asyncio.run(go())
        store = open_store(url)
        assert core_tap_ids(store) == {decode(p, TapRecord).tap_id for p in payloads}
        store.close()
    finally:
        assert schema is not None
        drop_schema(schema)


# -- the command ------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--broker", "http://x"], "scheme must be mqtt:// or mqtts://"),
    (["--broker", "mqtt://h:99999"], "bad port"),
    (["--broker", "mqtt://h", "--ca", "ca.pem"], "use mqtts://"),
    (["--broker", "mqtt://h", "--signing-key", "/nonexistent.pem"], "/nonexistent.pem"),
    (["--broker", "mqtt://h", "--feed", "nowhere"], "no feed at 'nowhere'"),
])
def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                              args: list[str], message: str) -> None:
    code = main(["backoffice", "run", "--db", str(tmp_path / "bo.db"), *args])
    assert code == 2 and message in capsys.readouterr().err


def test_a_database_another_back_office_writes_is_refused(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "bo.db")
    with WriterLock(url):
        code = main(["backoffice", "run", "--db", url, "--broker", "mqtt://127.0.0.1:1"])
    assert code == 2 and "another back office is writing" in capsys.readouterr().err


def test_a_signing_key_that_is_not_one(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("not a key")
    code = main(["backoffice", "run", "--db", str(tmp_path / "bo.db"), "--broker",
                 "mqtt://h", "--signing-key", str(key)])
    assert code == 2 and "not a PEM private key" in capsys.readouterr().err


def test_a_broker_that_lets_anyone_in_is_refused(capsys: pytest.CaptureFixture[str],
                                                  mosquitto: Broker, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With credentials, an anonymous broker is another broker (say, the system's one on a
    port the tapsim broker could not bind): the back office refuses it, naming it."""
    monkeypatch.setenv("TAPSIM_MQTT_PASSWORD", "s3cret")
    code = main(["backoffice", "run", "--db", str(tmp_path / "bo.db"), "--broker",
                 f"mqtt://backoffice@{mosquitto.host}:{mosquitto.port}"])
    err = capsys.readouterr().err
    assert code == 2 and f"mqtt://{mosquitto.host}:{mosquitto.port}" in err
    assert "without credentials" in err and "s3cret" not in err
    assert not (tmp_path / "bo.db").exists()


def test_broker_url_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPSIM_MQTT_PASSWORD", "s3cret")
    addr = BrokerAddress.from_url("mqtts://backoffice@broker.example:8884",
                                  tls_ca=Path("ca.pem"))
    assert (addr.host, addr.port, addr.username, addr.password) == \
        ("broker.example", 8884, "backoffice", "s3cret")
    assert "s3cret" not in repr(addr)
    with pytest.raises(BrokerUrlError, match="no host"):
        BrokerAddress.from_url("mqtt://")


def test_the_command_runs_and_stops_cleanly_on_sigterm(mosquitto: Broker, tmp_path: Path) -> None:
    """`tapsim backoffice run` as a process: ready line, SIGTERM, counts, stats file."""
    url = sqlite_url(tmp_path / "bo.db")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TAPSIM_TOKEN_KEY": TOKEN_KEY.hex()}
    issue_cards(url, TOKEN_KEY, {"unionpay-debit": True})
    payloads = tap_payloads(validator(tmp_path), 3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapsim.cli", "backoffice", "run", "--broker", mosquitto.url,
         "--db", url, "--stats", str(tmp_path / "stats.json"), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready: 2 worker(s)"), \
            (line, proc.stderr.read() if proc.stderr else "")
        assert "no signing key" in line
        asyncio.run(publish(mosquitto, [(topics.tap_topic("V1"), p) for p in payloads]))

        async def wait() -> bool:
            return await until(lambda: len(taps_in(url)) == 3)

        assert asyncio.run(wait())
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    import json

    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ingested"] == 3 and summary["acked"] == 3
    assert json.loads((tmp_path / "stats.json").read_text())["tap_to_ledger_ms"]["n"] == 3


def test_over_tls_with_the_back_office_credentials_and_acl(broker_factory: BrokerFactory,
                                                           tmp_path: Path) -> None:
    """mqtts:// with the broker's TEST CA, as the `backoffice` user the ACL allows to read
    every tap and write the downlink and dead-letter topics (and nothing plain is open)."""
    b = broker_factory(validators=["V1"], tls=True, plain=False)
    assert b.auth is not None and b.ca is not None and b.tls_port is not None
    url = sqlite_url(tmp_path / "bo.db")
    issue_cards(url, TOKEN_KEY, {"unionpay-debit": True})
    payloads = tap_payloads(validator(tmp_path), 2)
    addr = BrokerAddress.from_url(f"mqtts://backoffice:{b.auth.credentials['backoffice']}@"
                                  f"localhost:{b.tls_port}", tls_ca=b.ca.cafile)
    c = consumer(b.host, b.tls_port, url, TOKEN_KEY, signer=SIGNER)
    c.broker = addr

    async def go() -> None:
        import ssl

        async with running(c):
            ctx = ssl.create_default_context(cafile=str(b.ca.cafile))  # type: ignore[union-attr]
            async with aiomqtt.Client("localhost", b.tls_port, username="V1",  # type: ignore[arg-type]
                                      identifier=topics.validator_client_id("V1"),
                                      password=b.auth.credentials["V1"],  # type: ignore[union-attr]
                                      tls_context=ctx) as v1:
                for p in [*payloads, b"garbage"]:
                    await v1.publish(topics.tap_topic("V1"), p, qos=1)
            assert await until(lambda: c.stats.ingested == 2 and c.stats.acked == 3)
            assert await until(lambda: c.stats.snapshots >= 1)
        assert c.stats.dead_letters == {"malformed": 1} and c.stats.not_acked == 0

    asyncio.run(go())


def test_garbage_waiting_at_the_broker_is_dead_lettered_at_start(mosquitto: Broker,
                                                                 db: str) -> None:
    """The sessions deliver what they hold right after connecting, maybe before the
    publisher is up: the dead letter waits for it rather than leave the message in flight."""
    async def go() -> None:
        async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY)):
            pass
        await publish(mosquitto, [(topics.tap_topic("V1"), b"\xc1" * n) for n in (1, 2, 3, 4)])
        async with Collector(mosquitto.host, mosquitto.port, [topics.DEAD_LETTER]) as dl, \
                running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY)) as c:
            assert await dl.wait_for(lambda m: len(m) == 4)
            assert await until(lambda: c.stats.acked == 4)
        assert c.stats.not_acked == 0

    asyncio.run(go())


def test_a_card_issued_while_the_back_office_runs_is_seen(mosquitto: Broker, tmp_path: Path,
                                                          db: str) -> None:
    """`tapsim card issue` writes to the database of a running back office: its next batch
    reloads the issuer's records, so the new card's taps are charged, not declined (code 14,
    unknown card) and deny-listed."""
    payloads = tap_payloads(validator(tmp_path, card="sscard3-sm"), 3)
    ids = {decode(p, TapRecord).tap_id for p in payloads}

    async def go() -> None:
        async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY)) as c:
            await asyncio.sleep(0.2)  # running, its issuer loaded
            tokens = issue_cards(db, TOKEN_KEY, {"sscard3-sm": True})  # another process
            await publish(mosquitto, [(topics.tap_topic("V1"), p) for p in payloads])
            assert await until(lambda: c.stats.acked == 3)
        assert c.stats.ingested == 3 and c.stats.rejected == 0
        store = open_store(db)
        try:
            assert tokens["sscard3-sm"] not in {r.pan_token for r in store.deny_list()}
            assert core_tap_ids(store) >= ids
        finally:
            store.close()

    asyncio.run(go())


def test_deny_list_versions_only_grow_across_a_restored_database(mosquitto: Broker,
                                                                tmp_path: Path,
                                                                db: str) -> None:
    """A back office restarted on a backup from before a deny-list change would publish
    versions validators already passed (and ignore as stale): it reads the broker's retained
    snapshot at start and continues after it, so validators take its list."""
    import sqlite3

    path = Path(db.removeprefix("sqlite:///"))
    backup = tmp_path / "backup.db"
    with sqlite3.connect(path) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)  # before any deny-list change: version 0
    payloads = tap_payloads(validator(tmp_path, "V2", card="unionpay-dual"), 1)
    token = decode(payloads[0], TapRecord).pan_token
    st1 = settings(mosquitto.host, mosquitto.port, "V1")

    async def go() -> tuple[int, int]:
        async with Running(st1, tmp_path / "v1.journal", "V1") as v1:
            dl = v1.downlink
            assert dl is not None
            async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY,
                                        signer=SIGNER)) as c:
                await publish(mosquitto, [(topics.tap_topic("V2"), payloads[0])])
                assert await until(lambda: token in dl.deny_list and c.stats.snapshots >= 1
                                   and c.stats.deny_version >= 1)
                await asyncio.sleep(0.3)  # the last snapshot retained at the broker
            before = dl.deny_list.version
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            with sqlite3.connect(backup) as src, sqlite3.connect(path) as dst:
                src.backup(dst)  # the restore
            async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY,
                                        signer=SIGNER)) as again:
                assert await until(lambda: token not in dl.deny_list)
                assert dl.deny_list.version == again.stats.deny_version
            return before, dl.deny_list.version

    before, after = asyncio.run(go())
    assert before >= 1 and after > before
