"""T-Union e-purse clearing across two cities: real taps of two issuers' cards on validators
of two operators, kept by the back office, cleared to the fen; each kind of bad record
refused with its reason; the report's three formats agree; a re-run settles nothing twice.

The TAC layout the refusals are built with (amount || 06 || PSAM terminal id || PSAM serial
|| date || time, CBC-MAC under the card's diversified TAC key) is PBOC ED/EP as JT/T 978
takes it over (REFERENCE.md: T-Union e-purse, JT/T 978 style; emv/epurse/keys.py checks the
layout against the published worked example).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from backoffice.consumer.gate import EpurseTap, FareMediaLabels, epurse_row, to_core
from backoffice.records import EpurseTapRow
from backoffice.storage import SqlStore
from clearing.core import PurseRecord, Reason, clear_day
from clearing.report import as_csv, as_json, as_table
from clearing.store import day_report, issuer_positions, run_day
from clearing.tac import TacVerifier
from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.epurse import keys
from emv.epurse.issuers import TEST_CITY_A, TEST_CITY_B, TEST_ISSUERS
from emv.epurse.keys import Algorithm
from emv.epurse.psam import Psam
from terminal.denylist import DenyList
from terminal.journal import Journal
from terminal.readers import VirtualReader
from terminal.validator import Validator, ValidatorConfig
from tests.core_fixtures import BACKENDS, make_store
from tests.fixtures.mosquitto import Broker
from tests.fixtures.terminal import TERMINAL_EPURSE, StepClock
from wire import TapOutcome, encode
from wire import TapRecord as WireTap

DAY = "2026-11-23"
FARE_A, FARE_B = 200, 300  # fen: the flat fares of operator OPA (city A) and OPB (city B)
HOME = {"OPA": TEST_CITY_A.issuer_id, "OPB": TEST_CITY_B.issuer_id}
NOW = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
MEDIA = FareMediaLabels({"tunion": 2, "cemv": 3})


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    for s, _ in make_store(request.param, tmp_path):
        yield s


def _validator(path: Path, vid: str, operator: str, psam_id: str, fare: int,
               clock: StepClock) -> Validator:
    config = ValidatorConfig(validator_id=vid, operator_id=operator, amount=fare)
    return Validator(config, TERMINAL_EPURSE, Journal(path), DenyList(), clock=clock,
                     psam=Psam.test(terminal_id=bytes.fromhex(psam_id)))


def _reader(profile: str) -> VirtualReader:
    return VirtualReader(VirtualCard(personalise(load_profile(profile))))


@pytest.fixture(scope="module")
def day_taps(tmp_path_factory: pytest.TempPathFactory) -> list[WireTap]:
    """The day: card A (city A's sscard3) rides OPA twice and OPB once; card B (city B's
    sscard3-city-b) rides OPA once and OPB twice.  All on the e-purse."""
    path = tmp_path_factory.mktemp("day")
    clock = StepClock(dt.datetime(2026, 11, 23, 0, 30, tzinfo=dt.UTC),
                      dt.timedelta(minutes=7))
    opa = _validator(path / "a.db", "VA1", "OPA", "310000000001", FARE_A, clock)
    opb = _validator(path / "b.db", "VB1", "OPB", "990100000001", FARE_B, clock)
    card_a, card_b = _reader("sscard3"), _reader("sscard3-city-b")
    rides = [(opa, card_a), (opa, card_b), (opb, card_a), (opb, card_b), (opa, card_a),
             (opb, card_b)]
    out = []
    for validator, reader in rides:
        event = validator.tap(reader)
        assert event.record is not None and event.record.outcome is TapOutcome.ACCEPTED
        assert event.record.method.value == "epurse", event.record.reason
        out.append(event.record)
    return out


def _rows(taps: list[WireTap]) -> list[EpurseTapRow]:
    rows = []
    for t in taps:
        inbound = to_core(t, MEDIA, dt.UTC)
        assert isinstance(inbound, EpurseTap)
        rows.append(epurse_row(inbound.record, 0))
    return rows


def test_the_tap_record_carries_what_clearing_needs(day_taps: list[WireTap]) -> None:
    a, b = day_taps[0], day_taps[1]
    assert (a.epurse_issuer, b.epurse_issuer) == ("0000", "9901")
    # city B's card carries its own e-purse card number, not its bank PAN (6231900000000000030)
    assert b.epurse_card == "09901000000000000030"
    # and city A's, whose profile names none, one derived from (never equal to) its PAN
    assert a.epurse_card == "00031000000000000013"
    for t in day_taps:  # no bank PAN anywhere in what the validators send (and clearing keeps)
        wire = encode(t)
        for pan in ("6231900000000000014", "6231900000000000030"):
            assert pan.encode() not in wire and bytes.fromhex(pan + "F") not in wire
    # the card's wall-clock digits: the tap's time in the validator's zone (UTC+8)
    assert a.epurse_when == a.time.astimezone(dt.timezone(dt.timedelta(hours=8))).strftime(
        "%Y%m%d%H%M%S")
    assert (a.epurse_key_version, a.epurse_algorithm) == (1, 0)


def test_a_two_city_day_settles_to_the_fen(store: SqlStore, day_taps: list[WireTap]) -> None:
    assert store.add_epurse(_rows(day_taps)) == 6
    assert store.add_epurse(_rows(day_taps[:2])) == 0  # a resend: kept once
    report = run_day(store, DAY, TEST_ISSUERS, NOW, HOME)
    assert report.refused == []
    # By hand from the rides: issuer 0000's card rode OPA twice (2 x 200) and OPB once (300);
    # issuer 9901's card rode OPA once (200) and OPB twice (2 x 300).
    assert {(p["issuer_id"], p["operator_id"]): p["amount_fen"] for p in report.positions} == {
        ("0000", "OPA"): 400, ("0000", "OPB"): 300, ("9901", "OPA"): 200, ("9901", "OPB"): 600}
    assert {n["party"]: n["net_fen"] for n in report.nets} == {
        "issuer:0000": -700, "issuer:9901": -800, "operator:OPA": 600, "operator:OPB": 900}
    # Between the cities: A's card owes city B 300, B's card owes city A 200: A pays B 100.
    assert report.city_nets == [{"payer": "0000", "payee": "9901", "amount_fen": 100}]
    assert [(b["issuer_id"], b["cleared"], b["amount_fen"]) for b in report.batches] == [
        ("0000", 3, 700), ("9901", 3, 800)]
    positions = issuer_positions(store)
    assert (positions["0000"].cleared, positions["0000"].pending) == (700, 0)


def _forge(row: EpurseTapRow, tap_id: str, *, serial: int | None = None, psam_serial: int,
           minutes: int, tac: str | None = None) -> EpurseTapRow:
    """A record of ``row``'s card: a genuine TAC (computed with the issuer's TEST key, as a
    cloned card would) unless ``tac`` is given."""
    when = row.tac_time
    assert when is not None and row.issuer_id is not None and row.card_number is not None
    at = dt.datetime.strptime(when, "%Y%m%d%H%M%S") + dt.timedelta(minutes=minutes)
    when = at.strftime("%Y%m%d%H%M%S")
    algorithm: Algorithm = "sm4" if row.algorithm_id == 4 else "tdes"
    master = TEST_ISSUERS.tac_key(row.issuer_id, 1, row.algorithm_id or 0)
    assert master is not None
    genuine = keys.purchase_tac(master, row.card_number, algorithm, row.amount,
                                bytes.fromhex(row.psam_id), psam_serial, bytes.fromhex(when))
    return row._replace(tap_id=tap_id, card_serial=row.card_serial if serial is None else serial,
                        psam_serial=psam_serial, tac=tac or genuine.hex().upper(),
                        tac_time=when, time_us=row.time_us + minutes * 60_000_000)


def test_bad_records_are_refused_with_their_reason(store: SqlStore,
                                                   day_taps: list[WireTap]) -> None:
    rows = _rows(day_taps)
    a_last = rows[4]  # card A's third purchase (serial 2), at OPA
    b_first = rows[1]  # card B's first purchase (serial 0)
    bad = [
        # a made-up purchase with a TAC nobody's key gives
        _forge(a_last, "X:forged", serial=3, psam_serial=900, minutes=30, tac="DEADBEEF"),
        # card A's serial 2 spent again elsewhere (a restored card): valid TAC, same serial
        _forge(a_last, "X:replayed", psam_serial=901, minutes=40),
        # the very same purchase journaled twice under another tap id
        a_last._replace(tap_id="X:duplicated"),
        # card B with serial 9 *before* its serial 0 purchase: its counter went backwards
        _forge(b_first, "X:out-of-sequence", serial=9, psam_serial=902, minutes=-5),
    ]
    store.add_epurse(rows + bad)
    report = run_day(store, DAY, TEST_ISSUERS, NOW, HOME)
    assert {r["tap_id"]: r["reason"] for r in report.refused} == {
        "X:forged": "tac-invalid", "X:replayed": "replayed-serial",
        "X:duplicated": "duplicate", "X:out-of-sequence": "out-of-sequence"}
    # None of them moved money: the positions are the genuine day's.
    assert sum(n["net_fen"] for n in report.nets if n["party"].startswith("operator")) == 1500
    refused = issuer_positions(store)
    assert refused["0000"].refused == 3 * FARE_A and refused["9901"].refused == FARE_A
    assert refused["0000"].refused_by_reason == {
        "tac-invalid": FARE_A, "replayed-serial": FARE_A, "duplicate": FARE_A}


def test_the_three_formats_agree(store: SqlStore, day_taps: list[WireTap]) -> None:
    store.add_epurse(_rows(day_taps))
    report = run_day(store, DAY, TEST_ISSUERS, NOW, HOME)
    as_dict = json.loads(as_json(report))
    rows = list(csv.DictReader(io.StringIO(as_csv(report))))
    csv_positions = [{"issuer_id": r["issuer_id"], "operator_id": r["operator_id"],
                      "count": int(r["count"]), "amount_fen": int(r["amount_fen"])}
                     for r in rows if r["section"] == "position"]
    assert csv_positions == as_dict["positions"] == report.positions
    nets = {r["party"]: int(r["amount_fen"]) for r in rows if r["section"] == "net"}
    assert nets == {n["party"]: n["net_fen"] for n in as_dict["nets"]}
    table = as_table(report)
    for p in report.positions:  # the table shows each position in yuan
        amount = f"{p['amount_fen'] // 100}.{p['amount_fen'] % 100:02d} CNY"
        assert f"{p['issuer_id']} -> {p['operator_id']}: {p['count']} purchases, {amount}" \
            in table


def test_a_re_run_settles_nothing_twice(store: SqlStore, day_taps: list[WireTap]) -> None:
    store.add_epurse(_rows(day_taps[:4]))
    first = run_day(store, DAY, TEST_ISSUERS, NOW, HOME)
    again = run_day(store, DAY, TEST_ISSUERS, NOW, HOME)
    assert (first.new_decisions, again.new_decisions) == (4, 0)
    assert again.positions == first.positions and again.nets == first.nets
    assert store.count("clearing_items") == 4
    # Late records of the day (a validator back online) are cleared by the next run, alone.
    store.add_epurse(_rows(day_taps[4:]))
    assert issuer_positions(store)["0000"].pending == FARE_A
    late = run_day(store, DAY, TEST_ISSUERS, NOW, HOME)
    assert late.new_decisions == 2 and late.refused == []
    assert day_report(store, DAY, HOME).nets == late.nets
    assert issuer_positions(store)["0000"].pending == 0


def test_an_old_record_without_clearing_fields_is_refused_not_lost() -> None:
    old = PurseRecord("V:1", None, None, 3, 200, "00000000", "310000000001", 1, None, None,
                      None, 0, "OPA", DAY)
    [decision] = clear_day([old], [], TEST_ISSUERS)
    assert decision.reason is Reason.INCOMPLETE


@pytest.mark.parametrize("algorithm", ["tdes", "sm4"])
def test_the_fast_tac_equals_the_reference(algorithm: Algorithm) -> None:
    """Speed twin: clearing.tac against emv.epurse.keys.purchase_tac (the clear layout)."""
    verifier = TacVerifier(cards=2)
    for n, card in enumerate(["00006231900000000014", "09901000000000000030",
                              "12345678901234567890"] * 2):
        when = bytes.fromhex(f"202611230{n}3000")
        for issuer in (TEST_CITY_A, TEST_CITY_B):
            master = issuer.tac_keys[(1, keys.ALGORITHM_IDS[algorithm])]
            assert verifier.tac(master, issuer.issuer_id, 1, keys.ALGORITHM_IDS[algorithm],
                                card, 150 + n, bytes.fromhex("310000000001"), n, when) == \
                keys.purchase_tac(master, card, algorithm, 150 + n,
                                  bytes.fromhex("310000000001"), n, when)


def test_a_city_b_card_is_refused_by_a_psam_without_city_b_keys(tmp_path: Path) -> None:
    from emv.epurse.psam import TEST_PURCHASE_KEYS

    config = ValidatorConfig(validator_id="VA9", operator_id="OPA")
    only_a = Validator(config, TERMINAL_EPURSE, Journal(tmp_path / "j.db"), DenyList(),
                       clock=StepClock(), psam=Psam(bytes.fromhex("310000000009"),
                                                    {k: v for k, v in TEST_PURCHASE_KEYS.items()},
                                                    issuer_keys={"9901": {}}))
    event = only_a.tap(_reader("sscard3-city-b"))
    assert event.result is not None and event.result.epurse_fallback == "epurse-key-unsupported"


@pytest.mark.service
def test_the_consumer_keeps_epurse_taps_once_and_acknowledges_them(
        mosquitto: Broker, tmp_path: Path, day_taps: list[WireTap]) -> None:
    """Over the broker: e-purse taps are kept (not charged), a resend is kept once."""
    import asyncio

    import aiomqtt

    from backoffice.storage import open_store, sqlite_url
    from tests.fixtures.backoffice import consumer, running, until
    from tests.fixtures.terminal import TOKEN_KEY
    from wire import encode, topics

    db = sqlite_url(tmp_path / "bo.db")
    items = [(topics.tap_topic(t.validator_id), encode(t)) for t in day_taps]

    async def go() -> None:
        async with running(consumer(mosquitto.host, mosquitto.port, db, TOKEN_KEY)) as c:
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
                for topic, payload in [*items, items[0]]:  # the first one resent
                    await client.publish(topic, payload, qos=1)
            assert await until(lambda: c.stats.acked == len(items) + 1)
        assert c.stats.epurse_kept == len(items) and c.stats.duplicates == 1
        assert c.stats.ingested == 0  # paid on the chip: nothing charged

    asyncio.run(go())
    store = open_store(db)
    try:
        assert {r.tap_id for r in store.epurse_taps(DAY)} == {t.tap_id for t in day_taps}
        assert store.count("taps") == 0
    finally:
        store.close()


def test_the_psam_picks_purchase_keys_by_the_cards_issuer() -> None:
    from emv.epurse.psam import TEST_PURCHASE_KEYS

    psam = Psam.test()
    assert psam.supports(1, 0x00, "9901") and psam.supports(1, 0x04, "0000")
    assert psam.supports(1, 0x00)  # a card that names no issuer: the default keys
    a_only = Psam(bytes.fromhex("310000000009"), TEST_PURCHASE_KEYS, issuer_keys={"9901": {}})
    assert a_only.supports(1, 0x00, "0000") and not a_only.supports(1, 0x00, "9901")
    # A state saved before issuers existed (pending purchases without "issuer") still loads.
    state = {"terminal_id": "310000000009", "serial": 3, "seen": {}, "pending": [{
        "card_ref": "ab" * 16, "card_serial": 1, "random": "01020304", "key_version": 1,
        "algorithm_id": 0, "terminal_serial": 3, "amount": 200, "when": "20261123073000",
        "balance_before": 500, "mac1": "00000000"}]}
    restored = Psam.from_dict(state, TEST_PURCHASE_KEYS)
    assert restored.pending_count == 1 and restored.serial == 3


def test_a_card_of_an_issuer_clearing_does_not_know_is_refused(
        day_taps: list[WireTap]) -> None:
    from clearing.core import clear_day as decide
    from clearing.store import purse_record
    from emv.epurse.issuers import IssuerRegistry

    only_a = IssuerRegistry([TEST_CITY_A])
    decisions = decide([purse_record(r) for r in _rows(day_taps)], [], only_a)
    assert {d.record.issuer_id: d.reason for d in decisions if not d.cleared} == {
        "9901": Reason.UNKNOWN_ISSUER}


def test_a_later_day_is_checked_against_the_cards_cleared_history(
        store: SqlStore, day_taps: list[WireTap]) -> None:
    rows = _rows(day_taps)
    store.add_epurse(rows)
    run_day(store, DAY, TEST_ISSUERS, NOW, HOME)
    # The next day, card A's serial 0 (cleared yesterday) spent again: a restored card.
    again = _forge(rows[0], "X:next-day", psam_serial=950, minutes=24 * 60)
    assert again.tac_time is not None
    next_day = f"{again.tac_time[:4]}-{again.tac_time[4:6]}-{again.tac_time[6:8]}"
    store.add_epurse([again._replace(day=next_day)])
    report = run_day(store, next_day, TEST_ISSUERS, NOW, HOME)
    assert report.refused == [{"tap_id": "X:next-day", "issuer_id": "0000", "operator_id": "OPA",
                               "card_serial": 0, "amount_fen": FARE_A,
                               "reason": "replayed-serial"}]


def test_clearing_a_database_that_is_not_there_is_an_error_not_an_empty_day(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from backoffice.storage import sqlite_url
    from tapsim.cli import main

    missing = tmp_path / "typo.db"
    assert main(["clearing", "run", "--db", sqlite_url(missing), "--day", DAY]) == 2
    assert "no database at" in capsys.readouterr().err
    assert not missing.exists()  # nothing made on the way
