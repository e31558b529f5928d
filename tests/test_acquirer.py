"""The back office as ISO 8583 acquirer (`--issuer iso8583://`) against `tapsim issuer run`
as a real process on 127.0.0.1, directly and through a misbehaving proxy.

* the sample day replayed through the link gives the same ledger as the in-process issuer;
* faults (host killed -9 mid-run and restarted, answers after the timeout, dropped,
  garbled, a cut between request and answer, a silent bank): afterwards every aggregate is
  charged once or is a debt, the bank's captures equal the operator's ledger per card, and
  nothing is charged twice; no clear PAN in the acquirer's log.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backoffice.acquirer.gateway import NetworkIssuer
from backoffice.acquirer.mapping import AcquirerConfig
from backoffice.branch import key_store
from backoffice.fare_pricer import FarePricer
from backoffice.ledger import ISSUER_SETTLEMENT
from backoffice.service import TransactionCore
from backoffice.storage import StorageUnavailableError, open_store
from emv.card.profile import load_profile
from emv.pan import pan_token
from isolink.taps import card_pans
from replay.cardsfile import load_cards
from replay.day import Replay, read_taps
from tapsim.commands.backoffice import core_config, db_banks, kek
from tapsim.commands.fare import open_feed
from tapsim.commands.tap import token_key
from tests.acquirer_proxy import FaultProxy
from tests.core_fixtures import backend_url, drop_schema, pg_unavailable
from tests.iso8583_support import DIALECT, ROOT, Host, start_host

SAMPLES = ROOT / "backoffice" / "samples"
CLOCK_FROM = "2025-03-02T00:00:00+08:00"  # the bank's clock for the sample days
MERCHANT = "tapsim-transit"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tapsim.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300, check=False)


def _new_db(path: Path) -> str:
    url = f"sqlite:///{path}"
    open_store(url).close()
    return url


def _ledger(url: str) -> dict[str, Any]:
    """What must be equal between two runs: ledger rows per account, operator and day;
    aggregates (status, total); debts (status, amount); fares; the deny list."""
    store = open_store(url)

    def q(sql: str) -> list[tuple[Any, ...]]:
        return sorted(tuple(r) for r in store._query(sql))

    try:
        return {
            "ledger": q("SELECT debit, credit, operator_id, service_day, SUM(amount), COUNT(*) "
                        "FROM ledger GROUP BY debit, credit, operator_id, service_day"),
            "entries": q("SELECT txn_id, debit, credit, amount FROM ledger"),
            "aggregates": q("SELECT aggregate_id, status, total FROM aggregates"),
            "debts": q("SELECT debt_id, status, amount FROM debts"),
            "taps": q("SELECT tap_id, amount FROM taps"),
            "deny": q("SELECT pan_token FROM deny_list"),
            "bank_captured": q("SELECT COALESCE(SUM(amount), 0) FROM iss_captures"),
        }
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sample_day_through_the_link_gives_the_same_ledger(tmp_path: Path, backend: str) -> None:
    common = ["backoffice", "replay", "--feed", "city", "--taps", str(SAMPLES / "taps.csv"),
              "--cards", str(SAMPLES / "cards.toml"), "--json"]
    urls, schemas = [], []
    for name in ("inproc", "wire"):
        (tmp_path / name).mkdir()
        url, schema = backend_url(backend, tmp_path / name)
        urls.append(url)
        schemas.append(schema)
    inproc, wire_url = urls
    try:
        try:
            open_store(wire_url).close()  # the database the host opens
        except StorageUnavailableError as exc:
            pg_unavailable(str(exc))
        done = _cli(*common, "--db", inproc, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        host = start_host(wire_url, tmp_path, "--clock-from", CLOCK_FROM)
        try:
            wire = _cli(*common, "--db", wire_url, "--issuer",
                        f"iso8583://127.0.0.1:{host.port}", cwd=tmp_path)
        finally:
            host.stop()
        assert wire.returncode == 0, wire.stderr
        a, b = json.loads(done.stdout), json.loads(wire.stdout)
        assert b["acquirer"]["link"]["answered"] > 0
        assert b["acquirer"]["adapter"]["stood_in"] == 0
        assert a["reconciliation"] == b["reconciliation"]
        assert a["charges"] == b["charges"] and a["recoveries"] == b["recoveries"]
        assert a["deny_list"] == b["deny_list"]
        assert sorted((d["card"], d["kind"], d["code"]) for d in a["declines"]) == \
            sorted((d["card"], d["kind"], d["code"]) for d in b["declines"])
        # The same rows, and the bank's own captures equal to what the ledger collected.
        ours, theirs = _ledger(inproc), _ledger(wire_url)
        assert ours == theirs
        assert theirs["bank_captured"] == [(b["reconciliation"]["ledger"][ISSUER_SETTLEMENT],)]
        assert b["reconciliation"]["ledger"][ISSUER_SETTLEMENT] > 0
    finally:
        for schema in schemas:
            if schema:
                drop_schema(schema)


# -- faults ---------------------------------------------------------------------------------

CARDS = 14
STOPS = [("07:50", "S01", "1", "on"), ("08:30", "S05", "2", "on"), ("18:00", "D01", "801", "on"),
         ("18:30", "D04", "801", "off")]


def _scenario(tmp: Path) -> tuple[Path, Path, list[str]]:
    """A day of CARDS cards, four taps each, two of them short of money."""
    pans = card_pans(load_profile("unionpay-debit").pan, CARDS)
    cards = [f'[cards.c{i:02d}]\nprofile = "unionpay-debit"\npan = "{pan}"\n'
             f"balance = {300 if i in (3, 9) else 5000}\n" for i, pan in enumerate(pans)]
    (tmp / "cards.toml").write_text("\n".join(cards))
    rows = ["tap_id,card,time,stop_id,route_id,action,rider_category,fare_media"]
    for i in range(CARDS):
        for j, (hm, stop, route, action) in enumerate(STOPS):
            h, m = hm.split(":")
            rows.append(f"t{i:02d}{j},c{i:02d},2025-03-03T{h}:{int(m) + i:02d}:00+08:00,{stop},"
                        f"{route},{action},,cemv")
    (tmp / "taps.csv").write_text("\n".join(rows) + "\n")
    return tmp / "taps.csv", tmp / "cards.toml", pans


def _core(url: str, cards_path: Path, gateway_port: int,
          config: AcquirerConfig) -> tuple[TransactionCore, NetworkIssuer]:
    feed = open_feed("city")
    cards = load_cards(str(cards_path))
    store = open_store(url)
    gateway = NetworkIssuer(store, "127.0.0.1", gateway_port, DIALECT, config)
    core = TransactionCore(store, FarePricer(feed), key_store(kek(), cards.profiles()),
                           db_banks(store, *cards.banks), token_key(),
                           core_config(feed.currency, feed.timezone), gateway)
    return core, gateway


FAULT_CONFIG = AcquirerConfig(timeout=0.25, attempts=2, retry_after=0.0, late_grace=0.5,
                              stand_in_limit=5000, echo_after=5.0)


@pytest.mark.parametrize("fault", ["kill9", "delay", "drop", "garble", "cut", "silent",
                                   "restart"])
def test_faults_leave_every_aggregate_charged_once_or_owed(
    tmp_path: Path, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tapsim.acquirer")
    taps_path, cards_path, pans = _scenario(tmp_path)
    url = _new_db(tmp_path / "bo.db")
    hosts: list[Host] = [start_host(tmp_path / "bo.db", tmp_path, "--clock-from", CLOCK_FROM)]
    proxy = FaultProxy(hosts[0].port)
    proxy.delay = 0.6
    # The fault starts at the 3rd financial request (0200: the day's charges, authorized and
    # captured at the bank) and lasts for 16 request frames (repeats, reversals included).
    seen = {"0200": 0, "since": -1}

    def restart() -> None:
        time.sleep(0.8)
        hosts.append(start_host(tmp_path / "bo.db", tmp_path, "--clock-from", CLOCK_FROM))
        proxy.target_port = hosts[-1].port

    def on_request(n: int, mti: str) -> None:
        if mti.startswith("020"):
            seen["0200"] += 1
        if seen["since"] < 0 and seen["0200"] == 3:
            seen["since"] = n
            if fault == "kill9":  # mid-run, with this request in flight
                hosts[0].proc.send_signal(signal.SIGKILL)
                threading.Thread(target=restart, daemon=True).start()
            else:  # restart: the bank drops answers until the back office has restarted
                proxy.mode = "drop" if fault == "restart" else fault
        elif seen["since"] >= 0 and n - seen["since"] >= 16 and fault != "restart":
            proxy.mode = "pass"

    proxy.on_request = on_request
    core, gateway = _core(url, cards_path, proxy.port, FAULT_CONFIG)
    try:
        feed = open_feed("city")
        replay = Replay(core, feed, load_cards(str(cards_path)), token_key=token_key(), batch=6)
        taps_file = read_taps(taps_path.read_text(), feed)
        replay.run(taps_file, source="taps.csv")
        if fault == "restart":  # the back office stops with reversals still owed, restarts
            assert gateway.journal.open_saf()
            gateway.close()
            core.store.close()
            proxy.mode = "pass"
            core, gateway = _core(url, cards_path, proxy.port, FAULT_CONFIG)
        proxy.mode = "pass"
        while len(hosts) < 2 and fault == "kill9":
            time.sleep(0.1)
        # The bank is back: the store-and-forward table drains, stood-in debts are collected
        # by their scheduled resubmissions.
        deadline = time.monotonic() + 30
        while gateway.journal.open_saf() and time.monotonic() < deadline:
            time.sleep(0.3)
            gateway.drain()
        assert not gateway.journal.open_saf()
        day_end = max(t.tap.time for t in taps_file.taps)
        for days in range(1, 15):
            at = day_end + timedelta(days=days)
            core.run(functools.partial(core.core.run_recovery, at))
        summary = gateway.summary()
        reconciliation = core.reconcile()
    finally:
        gateway.close()
        proxy.close()
        for h in hosts:
            if h.proc.poll() is None:
                h.proc.kill()
                h.proc.wait()
        core.store.close()
    link = summary["link"]
    assert isinstance(link, dict)
    assert proxy.faulted > 0 or fault == "kill9"
    saf = summary["saf"]
    assert isinstance(saf, dict) and saf["done"] > 0  # reversals or forwards went through
    if fault != "restart":  # (after a restart the link's counts start again)
        assert link["timeout"] + link["garbled"] + link["down"] > 0, summary  # fault felt
    assert reconciliation.ok, reconciliation.problems
    _assert_once(tmp_path / "bo.db")
    # What was stood in was collected once the bank was back: only the two cards short of
    # money still owe, and only they are on the deny list.
    short = {pan_token(pans[i], token_key()) for i in (3, 9)}
    with sqlite3.connect(tmp_path / "bo.db") as c:
        owing = {t for (t,) in c.execute(
            "SELECT pan_token FROM debts WHERE status != 'recovered'")}
        denied = {t for (t,) in c.execute("SELECT pan_token FROM deny_list")}
    assert owing <= short and denied <= short, (owing - short, denied - short)
    log = caplog.text
    assert log and not any(p in log for p in pans)  # no clear PAN in the acquirer's log


def _assert_once(db: Path) -> None:
    """Every aggregate charged at most once; the bank's captures per card equal what the
    operator's ledger collected from that card; every closed aggregate charged or owed."""
    with sqlite3.connect(db) as c:
        agg_pan = dict(c.execute("SELECT aggregate_id, pan_token FROM aggregates"))
        statuses = dict(c.execute("SELECT aggregate_id, status FROM aggregates"))
        debts = dict(c.execute("SELECT debt_id, status FROM debts"))
        entries = c.execute("SELECT txn_id, amount FROM ledger WHERE debit = ?",
                            (ISSUER_SETTLEMENT,)).fetchall()
        bank = c.execute("SELECT pan_token, SUM(amount) FROM iss_captures "
                         "WHERE merchant_id = ? GROUP BY pan_token", (MERCHANT,)).fetchall()
    settled_by: dict[str, set[str]] = defaultdict(set)
    ledger_by_card: dict[str, int] = defaultdict(int)
    for txn, amount in entries:
        agg = txn.split(":", 1)[1]  # chg:<aggregate> or rec:<debt = aggregate>
        settled_by[agg].add(txn)
        ledger_by_card[agg_pan[agg]] += amount
    assert all(len(t) == 1 for t in settled_by.values()), settled_by  # never charged twice
    assert dict(bank) == dict(ledger_by_card)
    for agg, status in statuses.items():
        assert status in ("charged", "debt", "open"), (agg, status)
        if status == "debt":
            assert agg in debts


def test_a_request_left_sent_by_a_crash_is_reversed_after_restart(tmp_path: Path) -> None:
    """Durable before sending: a 0200 whose answer was never recorded (the back office died
    in between) becomes a reversal at the next start, sent until the bank answers."""
    from backoffice.acquirer.journal import Journal, RequestRow
    from backoffice.acquirer.mapping import Key, request_fields
    from issuer.models import AuthKind, AuthorizationRequest

    url = _new_db(tmp_path / "bo.db")
    store = open_store(url)
    request = AuthorizationRequest("chg:A:x1", "ab" * 16, AuthKind.RESUBMISSION, 700, "CNY",
                                   MERCHANT, original_request_id="av:A:x1")
    key = Key("0303120000", "000001")
    fields = request_fields(DIALECT, request, key, FAULT_CONFIG)
    Journal(store).put_request(RequestRow(request.request_id, "0200", key, fields,
                                          request.pan_token, 700, "sent", "", 0))
    host = start_host(tmp_path / "bo.db", tmp_path, "--clock-from", CLOCK_FROM)
    try:
        gateway = NetworkIssuer(store, "127.0.0.1", host.port, DIALECT, FAULT_CONFIG)
        row = gateway.journal.request(request.request_id)
        assert row is not None and row.state == "unanswered" and row.code == "91"
        [saf] = gateway.journal.open_saf()
        assert saf.kind == "reversal" and saf.fields["90"].startswith("0200000001")
        deadline = time.monotonic() + 10
        while gateway.journal.open_saf() and time.monotonic() < deadline:
            gateway.drain()
            time.sleep(0.2)
        [saf] = gateway.journal.all_saf()
        assert (saf.state, saf.code, saf.not_found) == ("done", "25", 1)  # asked twice
        # The core asking again gets the answer it got before: the stand-in, not a charge.
        again = gateway.authorize(request, datetime.now(UTC))
        assert again.code.value == "91" and again.hold_id is None
        gateway.close()
    finally:
        host.stop()
        store.close()


@pytest.mark.parametrize(("args", "message"), [
    (["--issuer", "http://127.0.0.1:1"], "write iso8583://HOST:PORT"),
    (["--issuer", "iso8583://127.0.0.1"], "with a port 1-65535"),
    (["--stand-in", "100"], "--spec and --stand-in need --issuer"),
    (["--issuer", "iso8583://127.0.0.1:9", "--spec", "nope.json"], "--spec"),
    (["--issuer", "iso8583://127.0.0.1:9", "--stand-in", "-1"], "--stand-in"),
])
def test_bad_issuer_options_are_named_before_anything_is_opened(
    tmp_path: Path, args: list[str], message: str
) -> None:
    for command in (["backoffice", "replay", "--feed", "city", "--taps",
                     str(SAMPLES / "taps.csv"), "--cards", str(SAMPLES / "cards.toml")],
                    ["backoffice", "run", "--broker", "mqtt://127.0.0.1:1"]):
        done = _cli(*command, "--db", "bo.db", *args, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "bo.db").exists()


@pytest.mark.service
def test_backoffice_run_through_the_link(mosquitto: Any, tmp_path: Path) -> None:
    """`tapsim backoffice run`'s consumer with the network adapter: validators' taps through
    the real broker, the first tap's verification answered by `tapsim issuer run`."""
    import asyncio

    import aiomqtt

    from backoffice.consumer import Consumer, ConsumerConfig
    from backoffice.consumer.link import BrokerAddress
    from backoffice.storage import sqlite_url
    from tests.fixtures.backoffice import CITY, CITY_MEDIA, issue_cards, running, until
    from tests.fixtures.terminal import TOKEN_KEY, rig
    from wire import encode, topics

    url = sqlite_url(tmp_path / "bo.db")
    issue_cards(url, TOKEN_KEY, {"unionpay-debit": True})
    host = start_host(tmp_path / "bo.db", tmp_path)
    gateways: list[NetworkIssuer] = []

    def make() -> TransactionCore:
        store = open_store(url)
        gateways.append(NetworkIssuer(store, "127.0.0.1", host.port, DIALECT,
                                      AcquirerConfig(timeout=5.0)))
        return TransactionCore(store, FarePricer(CITY), key_store(kek()), db_banks(store),
                               TOKEN_KEY, core_config("CNY", CITY.timezone), gateways[-1])

    r = rig(tmp_path / "V1.journal", validator_id="V1", stop_id="S01", route_id="1",
            card_name="unionpay-debit")
    payloads = []
    for _ in range(3):
        rec = r.validator.tap(r.reader).record
        assert rec is not None
        payloads.append(encode(rec))
    consumer = Consumer(BrokerAddress(mosquitto.host, mosquitto.port, keepalive=5, timeout=5.0),
                        make, CITY_MEDIA, CITY.timezone,
                        config=ConsumerConfig(tick=3600.0, snapshot_every=0.2))

    async def go() -> None:
        async with running(consumer) as c:
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
                for p in payloads:
                    await client.publish(topics.tap_topic("V1"), p, qos=1)
            assert await until(lambda: c.stats.ingested == 3)

    try:
        asyncio.run(go())
    finally:
        host.stop()
    with sqlite3.connect(tmp_path / "bo.db") as c:
        sent = c.execute("SELECT request_id, mti, state, code FROM acq_requests").fetchall()
        bank = c.execute("SELECT request_id, kind, code FROM iss_auths").fetchall()
        deny = c.execute("SELECT COUNT(*) FROM deny_list").fetchone()[0]
    assert [(m, s, code) for _, m, s, code in sent] == [("0100", "answered", "00")]
    assert sent[0][0].startswith("av:A:")
    assert [(k, code) for rid, k, code in bank if rid.startswith("iso:")] == \
        [("account_verification", "00")]
    assert deny == 0
    assert gateways[-1].link.stats["answered"] >= 2  # the sign-on and the verification


def test_link_signs_on_echoes_when_idle_and_types_its_failures(tmp_path: Path) -> None:
    from backoffice.acquirer.link import Link, LinkDownError, LinkTimeoutError
    from backoffice.acquirer.mapping import ECHO, Key, network_fields

    _new_db(tmp_path / "bank.db")
    host = start_host(tmp_path / "bank.db", tmp_path)
    stan = [0]

    def key() -> Key:
        stan[0] += 1
        return Key.of(datetime.now(UTC), stan[0])

    cfg = AcquirerConfig(timeout=1.0, echo_after=0.05)
    proxy = FaultProxy(host.port)
    link = Link("127.0.0.1", proxy.port, DIALECT, cfg, key)
    try:
        assert link.exchange(network_fields(ECHO, key(), cfg), "echo")["39"] == "00"
        assert link.stats["sent"] == 2  # the sign-on first
        time.sleep(0.2)
        link.exchange(network_fields(ECHO, key(), cfg), "echo")
        assert (link.stats["sent"], link.stats["connects"]) == (4, 1)  # an idle echo first
        proxy.mode = "silent"
        with pytest.raises(LinkTimeoutError, match=r"no answer within 1 s"):
            link.exchange(network_fields(ECHO, key(), cfg), "echo")
        proxy.mode = "pass"
        host.stop()
        with pytest.raises(LinkDownError):
            link.exchange(network_fields(ECHO, key(), cfg), "echo")
    finally:
        link.close()
        proxy.close()
        host.stop()
