"""The races of issue 15 as the user met them: `tapsim backoffice run` (a real process, a real
Mosquitto) charging a stream of taps, or `tapsim issuer run` answering bursts of requests,
while `tapsim account deposit` and `tapsim account lost` run beside it, on SQLite and
PostgreSQL.  Afterwards the deposit is in the balance and every authorization decided after
the loss report is a 41.

Each tap of the two cards falls three hours after the previous one, so every few taps a card's
aggregate closes (a capture: its account row written) and a new one opens (an account
verification: its card row written): the core keeps rewriting exactly the rows the branch
changes.  Whether a branch write lands inside a batch in a given run is timing; the stats
file's ``redone`` says how often it did (the deterministic versions are in
test_backoffice_branch_race.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from backoffice.storage import open_store
from issuer.codes import ResponseCode
from tapsim.cli import main
from tests.core_fixtures import BACKENDS, fresh_db_url
from tests.fixtures.backoffice import Proc, core_tap_ids, issue_cards
from tests.fixtures.mosquitto import Broker
from tests.fixtures.terminal import TOKEN_KEY, StepClock, rig
from wire import encode, topics

pytestmark = pytest.mark.service

ROOT = Path(__file__).resolve().parents[1]
DEPOSIT = 77_700  # 777.00
STEP = dt.timedelta(hours=3)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_db_url(request.param, tmp_path)


def payloads(path: Path, vid: str, card: str, n: int, start: dt.datetime) -> list[bytes]:
    """``n`` taps of ``card`` on validator ``vid``, three hours apart, as published."""
    r = rig(path, validator_id=vid, stop_id="S01", route_id="1", card_name=card,
            clock=StepClock(start, STEP))
    out = []
    for _ in range(n):
        rec = r.validator.tap(r.reader).record
        assert rec is not None
        out.append(encode(rec))
    return out


def publish(broker: Broker, items: list[tuple[str, bytes]]) -> None:
    async def go() -> None:
        async with aiomqtt.Client(broker.host, broker.port) as client:
            for topic, payload in items:
                await client.publish(topic, payload, qos=1)

    asyncio.run(go())


def test_deposit_and_loss_report_while_the_back_office_streams(
        mosquitto: Broker, tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = issue_cards(url, TOKEN_KEY, {"unionpay-debit": True, "sscard3-sm": True})
    payer, loser = tokens["unionpay-debit"], tokens["sscard3-sm"]
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
    paying = payloads(tmp_path / "V1.journal", "V1", "unionpay-debit", 240, start)
    losing = payloads(tmp_path / "V2.journal", "V2", "sscard3-sm", 76, start)
    before, after = losing[:60], losing[60:]
    stream = [(topics.tap_topic("V1"), p) for p in paying]
    for k, p in enumerate(before):  # one of the lost card's taps after every fourth payment
        stream.insert(4 * k + 4, (topics.tap_topic("V2"), p))
    env = {"TAPSIM_TOKEN_KEY": TOKEN_KEY.hex(), "PYTHONPATH": str(ROOT)}
    stats = tmp_path / "stats.json"
    bo = Proc("backoffice", ["backoffice", "run", "--broker", mosquitto.url, "--db", url,
                             "--batch", "20", "--stats", str(stats), "--json"], tmp_path, env)
    try:
        bo.wait_for_line("ready:")
        sender = threading.Thread(target=publish, args=(mosquitto, stream))
        sender.start()
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
        while len(_taps(url)) < 40 and dt.datetime.now(dt.UTC) < deadline:
            time.sleep(0.05)
        # The core is busy with the stream: now the branch.
        monkeypatch.setenv("TAPSIM_TOKEN_KEY", TOKEN_KEY.hex())
        capsys.readouterr()
        assert main(["account", "deposit", "--db", url, "--card", payer, "--amount",
                     str(DEPOSIT), "--json"]) == 0
        assert main(["account", "lost", "--db", url, "--card", loser, "--json"]) == 0
        reported = dt.datetime.now(dt.UTC)
        capsys.readouterr()
        sender.join(60)
        publish(mosquitto, [(topics.tap_topic("V2"), p) for p in after])
        total = len(paying) + len(losing)
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90)
        while len(_taps(url)) < total and dt.datetime.now(dt.UTC) < deadline:
            time.sleep(0.1)
        assert len(_taps(url)) == total, bo.stderr()
    finally:
        code = bo.stop()
    assert code == 0, bo.stderr()
    figures = json.loads(stats.read_text())
    print(f"\nbatches {figures['batches']}, redone {figures['redone']}")

    store = open_store(url)
    try:
        issuer = store.load_issuer()
        cards = {c.pan_token: c for c in issuer.cards}
        accounts = {a.account_id: a for a in issuer.accounts}
        account = accounts[cards[payer].account_id]
        captured = sum(c.amount for c in store.captures() if c.account_id == account.account_id)
        assert captured > 0  # the core wrote the payer's account while the branch did
        assert account.balance == 10_000 + DEPOSIT - captured
        assert cards[loser].state.value == "lost"
        later = [a for a in issuer.auths if a.pan_token == loser and a.at > reported]
        assert later, "no authorization of the lost card after the report"
        assert {a.code for a in later} == {ResponseCode.LOST_CARD}, \
            sorted((a.at, a.kind.value, a.code.value) for a in later)
    finally:
        store.close()


def _taps(url: str) -> set[str]:
    store = open_store(url)
    try:
        return core_tap_ids(store)
    finally:
        store.close()



# -- `tapsim issuer run` --------------------------------------------------------------------


def test_deposit_and_loss_report_while_the_issuer_host_answers(
        tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`tapsim issuer run` (a real process) answering bursts of 40 holds of 1.00 on sscard3
    and account verifications of sscard3-sm, while the branch deposits 777.00 on sscard3 and
    reports sscard3-sm lost: the deposit and every hold are in the account, and every request
    of sscard3-sm after the report is refused 41."""
    from emv.card.profile import load_profile
    from isolink.taps import CardTapper
    from tests.iso8583_support import Client, authorization, issue, start_host, token

    issue(url, "sscard3", balance=10_000)
    issue(url, "sscard3-sm", balance=10_000)
    payer, loser = CardTapper(load_profile("sscard3")), CardTapper(load_profile("sscard3-sm"))
    host = start_host(url, tmp_path, "--json")
    approved: list[int] = []
    codes_after: list[str] = []
    reported = threading.Event()
    failures: list[BaseException] = []

    def stream() -> None:
        try:
            c = Client(host.port)
            after = 0
            while after < 3:  # bursts all along, three more once the branch is done
                late = reported.is_set()
                after += late
                asks = []
                for k in range(40):
                    if k % 8 == 7:
                        asks.append(("loser", authorization(loser, token("sscard3-sm"))))
                    else:
                        asks.append(("payer", authorization(payer, token("sscard3"),
                                                            amount=100)))
                for _, fields in asks:
                    c.send(fields)
                for who, fields in asks:
                    answer = c.receive()
                    assert answer["11"] == fields["11"]
                    if who == "payer" and answer["39"] == "00":
                        approved.append(100)
                    if who == "loser" and late:
                        codes_after.append(str(answer["39"]))
        except BaseException as exc:  # handed to the test's thread
            failures.append(exc)

    sender = threading.Thread(target=stream)
    try:
        sender.start()
        time.sleep(0.5)
        capsys.readouterr()
        assert main(["account", "deposit", "--db", url, "--card", "sscard3", "--amount",
                     str(DEPOSIT), "--json"]) == 0
        assert main(["account", "lost", "--db", url, "--card", "sscard3-sm", "--json"]) == 0
        capsys.readouterr()
        reported.set()
        sender.join(120)
        assert not failures, failures
    finally:
        assert host.stop() == 143
    assert host.proc.stdout is not None
    figures = json.loads(host.proc.stdout.read().strip().splitlines()[-1])
    print(f"\nbatches {figures['batches']}, redone {figures['redone']}")
    assert codes_after and set(codes_after) == {"41"}, codes_after
    store = open_store(url)
    try:
        issuer = store.load_issuer()
        cards = {c.pan_token: c for c in issuer.cards}
        account = {a.account_id: a for a in issuer.accounts}[cards[token("sscard3")].account_id]
        assert (account.balance, account.held) == (10_000 + DEPOSIT, sum(approved))
        assert cards[token("sscard3-sm")].state.value == "lost"
    finally:
        store.close()
