"""A two-city T-Union day end to end, settled to the fen (issue 18's test).

City A's card (``sscard3``, issuer 0000) and city B's (``sscard3-city-b``, issuer 9901) are
loaded at a bank branch (one load torn: the card credited, the answer lost, settled by the
next load), ridden on validators of operator OPA (city A) and OPB (city B) with a torn
purchase among them (settled by the next tap), a cloned chip of card A spending a serial the
genuine card already spent, and a forged record.  The back office keeps every record, clearing
decides them, and per issuer: opening + loads - cleared - pending = the chips' balances, with
every figure below worked out by hand from the rides and loads, never read from clearing.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from backoffice.consumer.gate import EpurseTap, FareMediaLabels, epurse_row, to_core
from backoffice.records import EpurseTapRow
from backoffice.storage import SqlStore
from clearing.reconcile import operator_revenue, reconcile
from clearing.store import issuer_positions, run_day
from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.epurse.issuers import TEST_ISSUERS
from emv.epurse.psam import Psam
from emv.kernel import Outcome
from issuer.load_sql import SqlLoadStore
from terminal.decisions import TapPolicy
from terminal.denylist import DenyList
from terminal.journal import Journal
from terminal.readers import CardGoneError, VirtualReader
from terminal.validator import Validator, ValidatorConfig
from tests.core_fixtures import BACKENDS, make_store
from tests.fixtures.terminal import TERMINAL_EPURSE, StepClock
from tests.test_epurse_load import CREDIT, Torn, chip_balance, host_for, issue_card
from wire import TapOutcome
from wire import TapRecord as WireTap

DAY = "2026-11-23"
NOW = dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC)
FARE = {"OPA": 200, "OPB": 300}  # fen: each operator's flat e-purse fare
MEDIA = FareMediaLabels({"tunion": 2, "cemv": 3})
DEBIT = 0x54


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    for s, _ in make_store(request.param, tmp_path):
        yield s


class TornDebit(VirtualReader):
    """The card takes the DEBIT and leaves before its answer comes back (once)."""

    def __init__(self, card: VirtualCard) -> None:
        super().__init__(card)
        self.armed = True

    def transceive(self, apdu: bytes) -> bytes:
        if self.armed and apdu[:2] == bytes((0x80, DEBIT)):
            self.armed = False
            super().transceive(apdu)
            raise CardGoneError(self.name, "card went away")
        return super().transceive(apdu)


def test_a_two_city_day_reconciles_to_the_fen(store: SqlStore, tmp_path: Path) -> None:
    pa, pb = load_profile("sscard3"), load_profile("sscard3-city-b")
    chip_a, chip_b = VirtualCard(personalise(pa)), VirtualCard(personalise(pb))
    opening = {"0000": chip_balance(chip_a), "9901": chip_balance(chip_b)}
    assert opening == {"0000": 3000, "9901": 5000}  # the profiles' purse balances

    # At the branch: A 50.00, then 10.00 torn after the card credited (pending), settled by
    # the next run before it loads 5.00; B 20.00.
    token_a, token_b = issue_card(store, pa), issue_card(store, pb)
    for profile, chip, token, amount, load_id in ((pa, chip_a, token_a, 5000, "LA1"),
                                                  (pb, chip_b, token_b, 2000, "LB1")):
        chip.power_on()
        assert host_for(store, profile).load(chip.process, token=token, amount=amount,
                                             load_id=load_id).state.value == "captured"
    chip_a.power_on()
    torn = host_for(store, pa).load(Torn(chip_a, CREDIT, after_card=True), token=token_a,
                                    amount=1000, load_id="LA2")
    assert torn.state.value == "pending"
    chip_a.power_on()
    assert host_for(store, pa).load(chip_a.process, token=token_a, amount=500,
                                    load_id="LA3").state.value == "captured"
    assert SqlLoadStore(store).loaded_by_issuer() == {"0000": 6500, "9901": 2000}

    # The day's rides.
    # A second between readings: the rider presents a torn card again at once (a retry).
    clock = StepClock(dt.datetime(2026, 11, 23, 0, 30, tzinfo=dt.UTC), dt.timedelta(seconds=1))
    policy = TapPolicy(duplicate_window=dt.timedelta(0))  # one card, tapped again and again
    bus = {op: Validator(ValidatorConfig(validator_id=f"V{op}", operator_id=op,
                                         amount=FARE[op], policy=policy),
                         TERMINAL_EPURSE, Journal(tmp_path / f"{op}.db"), DenyList(),
                         clock=clock, psam=Psam.test(terminal_id=bytes.fromhex(psam)))
           for op, psam in (("OPA", "310000000001"), ("OPB", "990100000001"))}
    records: list[WireTap] = []  # every record the validators journal, in order
    for v in bus.values():
        v.on_journaled = records.append
    a, b = VirtualReader(chip_a), VirtualReader(chip_b)

    def ride(op: str, reader: VirtualReader) -> None:
        event = bus[op].tap(reader)
        assert event.record is not None and event.record.outcome is TapOutcome.ACCEPTED

    ride("OPA", a)
    ride("OPA", b)
    ride("OPB", a)
    ride("OPB", b)
    # A torn purchase: debited, no proof; the card presented again settles it, one fare.
    cut = bus["OPA"].tap(TornDebit(chip_a))
    assert cut.record is None and cut.result is not None
    assert cut.result.outcome is Outcome.TRY_AGAIN
    ride("OPA", a)
    # A chip copied from card A now, spending the serial card A spends next.
    clone = VirtualReader(VirtualCard(personalise(pa), copy.deepcopy(chip_a.state)))
    ride("OPB", a)
    ride("OPA", clone)
    ride("OPB", b)
    # Card B torn at OPB, and not presented again until its next trip ten minutes later:
    # that tap pays its own fare, and the torn one (proved by the card) is journaled apart.
    cut = bus["OPB"].tap(TornDebit(chip_b))
    assert cut.record is None and cut.result is not None
    clock.now += dt.timedelta(minutes=10)
    ride("OPB", b)
    # Card A's serials: the settled retry is the torn purchase (2), the clone spends 3 again.
    assert [r.epurse_serial for r in records if r.epurse_issuer == "0000"] == [0, 1, 2, 3, 3]
    assert [r.epurse_serial for r in records if r.epurse_issuer == "9901"] == [0, 1, 2, 4, 3]
    assert records[-1].reason == "torn purchase completed earlier"
    assert records[-1].time < records[-2].time  # when the card took it

    # The back office keeps them (a resend kept once), plus a forged record.
    rows: list[EpurseTapRow] = []
    for t in records:
        inbound = to_core(t, MEDIA, dt.UTC)
        assert isinstance(inbound, EpurseTap)
        rows.append(epurse_row(inbound.record, 0))
    forged = rows[0]._replace(tap_id="X:forged", card_serial=50, tac="DEADBEEF",
                              time_us=rows[-1].time_us + 60_000_000)
    assert store.add_epurse([*rows, forged]) == len(rows) + 1
    assert store.add_epurse(rows[:2]) == 0

    report = run_day(store, DAY, TEST_ISSUERS, NOW)
    assert {r["tap_id"]: r["reason"] for r in report.refused} == {
        records[6].tap_id: "replayed-serial", "X:forged": "tac-invalid"}
    # By hand: A paid OPA 200 (ride 1) + 200 (the torn one, settled), OPB 300 + 300;
    # B paid OPA 200, OPB 300 + 300 + 300 (torn, later proved) + 300 (its next trip).
    # The clone's 200 and the forged 200 are refused.
    assert operator_revenue(report.positions) == {"OPA": 600, "OPB": 1800}
    positions = issuer_positions(store)
    chips = {"0000": chip_balance(chip_a), "9901": chip_balance(chip_b)}
    assert chips == {"0000": 3000 + 6500 - 1000, "9901": 5000 + 2000 - 1400}
    for issuer_id in ("0000", "9901"):
        p = positions[issuer_id]
        books = reconcile(issuer_id, opening=opening[issuer_id],
                          loaded=SqlLoadStore(store).loaded_by_issuer()[issuer_id],
                          cleared=p.cleared, pending=p.pending, refused=p.refused,
                          chips=chips[issuer_id])
        assert books.difference == 0, books
    assert (positions["0000"].cleared, positions["0000"].refused) == (1000, 400)
    assert (positions["9901"].cleared, positions["9901"].pending) == (1400, 0)
