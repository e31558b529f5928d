"""terminal.validator: a tap from card to journal to outcome, with the virtual reader."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from emv.card.profile import load_profile
from emv.crypto.cryptogram import scheme
from emv.kernel import Outcome
from emv.pan import pan_token
from terminal.decisions import Colour, Display
from terminal.denylist import DenyList
from terminal.journal import Journal
from terminal.readers import CardGoneError, VirtualReader
from tests.fixtures.terminal import TOKEN_KEY, StepClock, card, rig
from wire import Method, TapOutcome, TapRecord, decode

SSCARD3_TOKEN = pan_token("6231900000000000014", TOKEN_KEY)
# Its T-Union e-purse has a number of its own (the profile's card_number), not the bank PAN:
# e-purse taps carry, and are deny-listed by, the purse's token.
# (3100, the PAN less its BIN and check digit, a Luhn digit)
SSCARD3_PURSE_TOKEN = pan_token("31000000000000013", TOKEN_KEY)


def test_accepted_tap_is_journaled_with_a_complete_record(tmp_path: Path) -> None:
    r = rig(tmp_path / "j.db", validator_id="BUS-7", stop_id="S12", route_id="300")
    event = r.validator.tap(r.reader)
    assert event.verdict is not None and event.verdict.outcome is TapOutcome.ACCEPTED
    assert event.display == Display("OK - senior", Colour.GREEN, event.display.beep)
    rec = event.record
    assert rec is not None
    [entry] = list(r.journal.entries())
    assert decode(entry.payload, TapRecord) == rec
    assert entry.tap_id == rec.tap_id == f"BUS-7:{r.journal.epoch}:1"
    assert (rec.seq, rec.stop_id, rec.route_id, rec.validator_id) == (1, "S12", "300", "BUS-7")
    assert rec.pan_token == SSCARD3_TOKEN and rec.pan_masked == "623190*********0014"
    assert rec.rider_category == "senior" and rec.fare_media == "unionpay-quickpass"
    assert rec.oda == "fdda-rsa" and rec.oda_ok is True and rec.scheme == "tdes"
    assert rec.time.utcoffset() == dt.timedelta(0)
    assert b"6231900000000000014" not in entry.payload
    assert bytes.fromhex("6231900000000000014F") not in entry.payload


def test_the_cryptogram_verifies_from_the_wire_record_alone(tmp_path: Path) -> None:
    """ac_data is exactly what the card MACed: the issuer needs nothing else."""
    r = rig(tmp_path / "j.db")
    rec = r.validator.tap(r.reader).record
    assert rec is not None
    profile = load_profile("sscard3")
    s = scheme(rec.scheme)
    card_key = s.derive_card_key(profile.crypto.issuer_master_key, profile.pan, profile.psn)
    assert s.generate_ac(s.derive_session_key(card_key, rec.atc), rec.ac_data) == rec.cryptogram
    assert rec.ac_data[29:31] == rec.aip and rec.ac_data[-4:] == rec.iad[3:7]


def test_journal_is_written_before_the_outcome_is_shown(tmp_path: Path) -> None:
    r = rig(tmp_path / "j.db")
    seen: list[int] = []
    r.validator.show = lambda display: seen.append(r.journal.count())
    for _ in range(3):
        r.validator.tap(r.reader)
    assert seen == [1, 2, 3]


def test_deny_listed_card_is_refused_and_journaled(tmp_path: Path) -> None:
    r = rig(tmp_path / "j.db", deny_list=DenyList(5, {SSCARD3_TOKEN}))
    event = r.validator.tap(r.reader)
    assert event.verdict is not None and event.verdict.outcome is TapOutcome.DENY_LISTED
    assert event.display.colour is Colour.RED
    assert event.record is not None and event.record.deny_list_version == 5
    assert [e.outcome for e in r.journal.entries()] == ["deny_listed"]


def test_duplicate_within_window_even_after_a_restart(tmp_path: Path) -> None:
    window = dt.timedelta(seconds=30)
    clock = StepClock(step=dt.timedelta(seconds=5))  # every reading moves it on
    r = rig(tmp_path / "j.db", window=window, clock=clock)
    outcomes = [r.validator.tap(r.reader).verdict for _ in range(2)]
    assert [v.outcome for v in outcomes if v] == [TapOutcome.ACCEPTED, TapOutcome.DUPLICATE]
    r.journal.close()
    again = rig(tmp_path / "j.db", window=window, clock=clock)  # a reboot
    assert again.validator.tap(again.reader).verdict.outcome is TapOutcome.DUPLICATE  # type: ignore[union-attr]
    clock.step = dt.timedelta(seconds=31)
    assert again.validator.tap(again.reader).verdict.outcome is TapOutcome.ACCEPTED  # type: ignore[union-attr]
    assert [e.seq for e in again.journal.entries()] == [1, 2, 3, 4]


def test_expired_card_is_declined_with_the_reason(tmp_path: Path) -> None:
    clock = StepClock(start=dt.datetime(2031, 1, 2, tzinfo=dt.UTC))
    r = rig(tmp_path / "j.db", clock=clock)
    event = r.validator.tap(r.reader)
    assert event.verdict is not None and event.verdict.reason == "card-expired"
    assert event.display.text == "Card expired"
    assert event.record is not None and event.record.outcome is TapOutcome.DECLINED


def test_local_date_decides_expiry(tmp_path: Path) -> None:
    """2030-12-31 16:30 UTC is already 2031-01-01 in Shanghai: the card has expired there."""
    clock = StepClock(start=dt.datetime(2030, 12, 31, 16, 30, tzinfo=dt.UTC))
    r = rig(tmp_path / "j.db", clock=clock)
    assert r.validator.tap(r.reader).verdict.reason == "card-expired"  # type: ignore[union-attr]


def test_no_card_shows_tap_again_and_journals_nothing(tmp_path: Path) -> None:
    r = rig(tmp_path / "j.db")
    r.reader.present(None)
    event = r.validator.tap(r.reader)
    assert event.record is None and event.result is None and event.display.text == "Tap again"
    assert r.journal.count() == 0


class FlakyReader(VirtualReader):
    """The card leaves the field after ``n`` APDUs."""

    def __init__(self, n: int, name: str = "sscard3") -> None:
        super().__init__(card(name))
        self.left = n

    def transceive(self, apdu: bytes) -> bytes:
        self.left -= 1
        if self.left < 0:
            raise CardGoneError(self.name, "card went away")
        return super().transceive(apdu)


def test_card_pulled_away_mid_tap_journals_nothing(tmp_path: Path) -> None:
    r = rig(tmp_path / "j.db")
    event = r.validator.tap(FlakyReader(3))
    assert event.result is not None and event.result.outcome is Outcome.TRY_AGAIN
    assert event.record is None and event.display.text == "Tap again"
    assert r.journal.count() == 0


def test_epurse_purchase_is_journaled_with_its_proof(tmp_path: Path) -> None:
    r = rig(tmp_path / "j.db", epurse=True)
    event = r.validator.tap(r.reader)
    rec = event.record
    assert rec is not None and rec.outcome is TapOutcome.ACCEPTED
    assert rec.method is Method.EPURSE and rec.fare_media == "tunion-epurse"
    assert (rec.epurse_balance_before, rec.epurse_balance_after) == (3000, 2800)
    assert rec.tac is not None and len(rec.tac) == 4 and rec.psam_id == "310000000001"
    assert rec.cryptogram is None and rec.pan_token == SSCARD3_PURSE_TOKEN
    assert decode(next(r.journal.entries()).payload, TapRecord) == rec


def test_a_deny_listed_epurse_card_is_refused_before_it_pays(tmp_path: Path) -> None:
    """The kernel asks the validator before the DEBIT (tests/test_terminal_epurse_hook.py)."""
    r = rig(tmp_path / "j.db", epurse=True, deny_list=DenyList(1, {SSCARD3_PURSE_TOKEN}))
    event = r.validator.tap(r.reader)
    assert event.verdict.outcome is TapOutcome.DENY_LISTED  # type: ignore[union-attr]
    assert event.record is not None and event.record.epurse_balance_after is None


def test_epurse_torn_purchase_is_settled_on_the_next_tap(tmp_path: Path) -> None:
    """The card leaves after DEBIT was sent: try again, and the next tap is not a 2nd fare."""
    r = rig(tmp_path / "j.db", epurse=True)
    torn = None
    for n in range(3, 12):  # cut the tap one APDU later each time until the DEBIT went out
        reader = FlakyReader(n)
        reader.card = r.reader.card
        event = r.validator.tap(reader)
        if event.result is not None and event.result.outcome is Outcome.TRY_AGAIN \
                and r.validator.psam is not None and r.validator.psam.pending_count:
            torn = event
            break
    assert torn is not None and torn.record is None
    again = r.validator.tap(r.reader)
    assert again.record is not None and again.record.outcome is TapOutcome.ACCEPTED
    assert again.record.epurse_balance_after == 2800  # one fare, not two
    assert r.journal.count() == 1


def test_second_validator_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    from terminal.journal import JournalError

    r = rig(tmp_path / "j.db")
    with pytest.raises(JournalError, match="another validator"):
        Journal(tmp_path / "j.db")
    r.journal.close()
    Journal(tmp_path / "j.db").close()


def test_default_stop_and_route_are_the_sample_feeds() -> None:
    """A validator on its defaults taps where the back office's default feed can price."""
    from fare.gtfs import load_feed
    from fare.samples import sample_feed_path
    from terminal.validator import ValidatorConfig

    feed = load_feed(sample_feed_path("city"))
    config = ValidatorConfig("V1")
    assert config.stop_id in feed.stops and config.route_id in feed.routes
