"""The broker `tapsim broker config` generates, attacked by a client holding a validator's
valid credentials (V2's), with real clients (mosquitto_sub / mosquitto_pub and paho through
aiomqtt).  Each attack of issue 12 runs while validator V1 uplinks a burst to a running
back office; afterwards every tap V1 accepted is in the ledger exactly once."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt
import pytest

from backoffice.consumer import Consumer
from backoffice.consumer.link import BrokerAddress
from backoffice.storage import open_store, sqlite_url
from tests.fixtures.backoffice import consumer, exactly_once, issue_cards, running, until
from tests.fixtures.mosquitto import Broker, BrokerFactory
from tests.fixtures.mqtt import Running, settings
from tests.fixtures.services import find_binary, missing
from tests.fixtures.terminal import TOKEN_KEY, Rig, rig
from wire import topics
from wire.broker import BACKOFFICE_USER, MAX_PACKET

pytestmark = pytest.mark.service
TAPS = 30


def tool(name: str) -> str:
    exe = find_binary(name)
    if exe is None:
        missing(name, "install the Debian package 'mosquitto-clients'")
    return exe


def hostile_args(b: Broker, client_id: str | None = None) -> list[str]:
    """mosquitto_sub / mosquitto_pub options: V2's valid credentials (password on stdin is not
    offered by these tools; -P is fine in a test)."""
    assert b.auth is not None
    return ["-h", b.host, "-p", str(b.port), "-u", "V2", "-P", b.auth.credentials["V2"],
            "-i", client_id or topics.validator_client_id("V2"), "-q", "1"]


def backoffice_of(b: Broker, url: str, workers: int = 2) -> Consumer:
    assert b.auth is not None
    c = consumer(b.host, b.port, url, TOKEN_KEY, workers=workers)
    c.broker = BrokerAddress(b.host, b.port, username=BACKOFFICE_USER,
                             password=b.auth.credentials[BACKOFFICE_USER], keepalive=5,
                             timeout=5.0)
    return c


@pytest.fixture
def setup(broker_factory: BrokerFactory, tmp_path: Path) -> tuple[Broker, str, Rig]:
    b = broker_factory(validators=["V1", "V2"])
    url = sqlite_url(tmp_path / "bo.db")
    issue_cards(url, TOKEN_KEY, {"unionpay-debit": True})
    v1 = rig(tmp_path / "V1.journal", validator_id="V1", stop_id="S01", route_id="1",
             card_name="unionpay-debit")
    return b, url, v1


def burst_through(b: Broker, url: str, v1: Rig, tmp_path: Path,
                  attack: Callable[[], Awaitable[None]]) -> Consumer:
    """V1 taps TAPS times while ``attack`` runs; the back office must commit all of them."""
    assert b.auth is not None
    st = settings(b.host, b.port, "V1", username="V1", password=b.auth.credentials["V1"])

    async def go() -> Consumer:
        async with running(backoffice_of(b, url)) as bo, \
                Running(st, tmp_path / "V1.journal") as run:
            hostile = asyncio.create_task(attack())
            for _ in range(TAPS):
                v1.validator.tap(v1.reader)
                run.uplink.notify()
                await asyncio.sleep(0.01)
            await hostile
            assert await run.uplink.drain(20)
            assert await until(lambda: bo.stats.ingested >= TAPS, 20), bo.stats
        return bo

    bo = asyncio.run(go())
    store = open_store(url)
    try:
        exactly_once(store, [tmp_path / "V1.journal"])
    finally:
        store.close()
    return bo


def test_a_validator_cannot_join_the_backoffice_share(setup: tuple[Broker, str, Rig],
                                                      tmp_path: Path) -> None:
    b, url, v1 = setup
    sub = tool("mosquitto_sub")
    outcome: dict[str, str] = {}

    async def attack() -> None:
        # Real mosquitto_sub: the broker refuses the SUBSCRIBE ("All subscription requests
        # were denied" and exit 1), so it takes no share of anyone's taps.
        done = await asyncio.to_thread(subprocess.run, [
            sub, *hostile_args(b), "-t", topics.SHARED_TAPS, "-W", "3", "-v"],
            capture_output=True, text=True, check=False)
        outcome["sub"] = done.stderr + done.stdout
        # paho: SUBACK 128 (failure) for the share and for the plain filter.
        async with aiomqtt.Client(b.host, b.port, identifier=topics.validator_client_id("V2"),
                                  username="V2", password=b.auth.credentials["V2"]) as c:  # type: ignore[union-attr]
            granted = await c.subscribe([(topics.SHARED_TAPS, 1), (topics.TAPS_ALL, 1)])
            outcome["paho"] = ",".join(str(int(getattr(g, "value", g))) for g in granted)

    burst_through(b, url, v1, tmp_path, attack)
    assert "denied" in outcome["sub"]
    assert outcome["paho"] == "128,128"  # SUBACK failure for both filters


@pytest.mark.parametrize("victim", ["tapsim-backoffice-1", "tapsim-validator-V1"])
def test_no_one_can_take_another_identitys_session(setup: tuple[Broker, str, Rig],
                                                   tmp_path: Path, victim: str) -> None:
    b, url, v1 = setup
    sub = tool("mosquitto_sub")
    refused: list[str] = []

    async def attack() -> None:
        for _ in range(3):
            done = await asyncio.to_thread(subprocess.run, [
                sub, *hostile_args(b, victim), "-c", "-t", topics.DENY_DELTA, "-W", "2"],
                capture_output=True, text=True, check=False)
            refused.append(done.stderr)
            await asyncio.sleep(0.1)

    burst_through(b, url, v1, tmp_path, attack)
    assert len(refused) == 3 and all("not authorised" in e.lower() for e in refused), refused


def test_an_oversized_packet_is_refused_by_the_broker(setup: tuple[Broker, str, Rig],
                                                      tmp_path: Path) -> None:
    b, url, v1 = setup
    pub = tool("mosquitto_pub")
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (MAX_PACKET + 1024 * 1024))  # 49 MiB: over the limit
    result: dict[str, int] = {}

    async def attack() -> None:
        done = await asyncio.to_thread(subprocess.run, [
            pub, *hostile_args(b), "-t", topics.tap_topic("V2"), "-f", str(big)],
            capture_output=True, check=False)
        result["code"] = done.returncode

    bo = burst_through(b, url, v1, tmp_path, attack)
    assert result["code"] != 0  # the broker closed the connection
    assert bo.stats.received == TAPS and not bo.stats.dead_letters


def test_a_retained_tap_is_not_handled_again_by_every_start(setup: tuple[Broker, str, Rig],
                                                             tmp_path: Path) -> None:
    b, url, v1 = setup
    pub = tool("mosquitto_pub")

    async def attack() -> None:
        done = await asyncio.to_thread(subprocess.run, [
            pub, *hostile_args(b), "-t", topics.tap_topic("V2"), "-r", "-m", "garbage"],
            capture_output=True, check=False)
        assert done.returncode == 0

    first = burst_through(b, url, v1, tmp_path, attack)
    assert first.stats.dead_letters == {"malformed": 1}  # the live copy, once

    async def again() -> Consumer:
        async with running(backoffice_of(b, url, workers=3)) as bo:
            await asyncio.sleep(1.0)
        return bo

    second = asyncio.run(again())
    assert not second.stats.dead_letters and second.stats.skipped["retained"] >= 1
