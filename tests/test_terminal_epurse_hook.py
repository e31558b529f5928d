"""The kernel's screen: a deny-listed or duplicate e-purse tap is refused before the DEBIT.

An e-purse pays on the card during the tap, so the validator's refusal has to come before
INITIALIZE FOR PURCHASE / DEBIT FOR PURCHASE, not after the kernel: these tests follow the
purse's balance and the APDUs that went to the card.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.epurse.psam import Psam
from emv.kernel import (
    EPURSE_FIRST,
    QUICKPASS_FIRST,
    T_UNION_EPURSE,
    Exchange,
    Kernel,
    Outcome,
    TapResult,
    TerminalConfig,
    TransactionInput,
    run,
)
from emv.oda import builtin_test_ca_keys
from emv.pan import pan_token
from terminal.decisions import Colour
from terminal.denylist import DenyList
from tests.fixtures.terminal import rig
from wire import Method, TapOutcome, TapRecord, decode

TOKEN_KEY = b"tapsim-test-token-key-0000000000"
# The card's T-Union e-purse has a number of its own (its application serial, as a real
# purse's application serial is), so it is screened and deny-listed by that number's token.
# (3100, the PAN less its BIN and check digit, a Luhn digit)
SSCARD3_TOKEN = pan_token("31000000000000013", TOKEN_KEY)
MORNING = dt.datetime(2026, 11, 23, 7, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
PREFER_EPURSE = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=TOKEN_KEY,
                               aid_priority=EPURSE_FIRST)
INITIALIZE, DEBIT = 0x50, 0x54


def new_card() -> VirtualCard:
    return VirtualCard(personalise(load_profile("sscard3")))


def balance(card: VirtualCard) -> int:
    return card.state.app(T_UNION_EPURSE).balance


def tap(card: VirtualCard, psam: Psam, screen: object,
        cfg: TerminalConfig = PREFER_EPURSE) -> tuple[TapResult, list[Exchange]]:
    card.power_on()
    trace: list[Exchange] = []
    txn = TransactionInput(amount=200, date=MORNING.date(),
                           unpredictable_number=b"\x01\x02\x03\x04", at=MORNING)
    return run(Kernel(cfg, txn, psam, screen=screen), card.process, trace), trace  # type: ignore[arg-type]


def test_a_refusing_screen_ends_the_tap_before_any_purchase_command() -> None:
    card, psam = new_card(), Psam.test()
    asked: list[str] = []

    def screen(token: str) -> str | None:
        asked.append(token)
        return "deny-listed"

    result, trace = tap(card, psam, screen)
    assert asked == [SSCARD3_TOKEN]  # once, with the card's token (never its number)
    assert result.outcome is Outcome.DECLINED and result.reason == "deny-listed"
    assert result.pan_token == SSCARD3_TOKEN and result.pan_masked == "310000*******0013"
    assert not [x for x in trace if x.command[1] in (INITIALIZE, DEBIT)]
    assert balance(card) == 3000 and result.epurse_balance_after is None
    assert psam.pending_count == 0


def test_a_screen_that_lets_the_card_through_changes_nothing() -> None:
    card, psam = new_card(), Psam.test()
    result, trace = tap(card, psam, lambda token: None)
    assert result.outcome is Outcome.APPROVED_OFFLINE
    assert [x.command[1] for x in trace if x.command[1] in (INITIALIZE, DEBIT)] == [INITIALIZE,
                                                                                    DEBIT]
    assert balance(card) == 2800 and result.epurse_balance_after == 2800


def test_quickpass_taps_are_not_screened() -> None:
    """QuickPass moves no money at the tap: the validator decides after the kernel."""
    card, psam = new_card(), Psam.test()
    asked: list[str] = []
    cfg = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=TOKEN_KEY,
                         aid_priority=QUICKPASS_FIRST)
    result, _ = tap(card, psam, lambda t: asked.append(t) or "no", cfg)
    assert result.outcome in (Outcome.APPROVED_OFFLINE, Outcome.ONLINE_REQUEST)
    assert result.aid == "A000000333010101" and asked == []


def test_validator_refuses_a_deny_listed_epurse_card_unpaid(tmp_path: Path) -> None:
    r = rig(tmp_path / "j.db", epurse=True, deny_list=DenyList(1, {SSCARD3_TOKEN}))
    event = r.validator.tap(r.reader)
    assert event.verdict is not None and event.verdict.outcome is TapOutcome.DENY_LISTED
    assert event.display.colour is Colour.RED and event.display.text.startswith("Card blocked")
    rec = event.record
    assert rec is not None and rec.method is Method.EPURSE and rec.tac is None
    assert decode(next(r.journal.entries()).payload, TapRecord) == rec  # journaled as refused
    assert balance(r.reader.card) == 3000  # type: ignore[arg-type]
    r.validator.deny_list.update(2, [], [SSCARD3_TOKEN])
    paid = r.validator.tap(r.reader).record
    assert paid is not None and paid.outcome is TapOutcome.ACCEPTED
    assert (paid.epurse_balance_before, paid.epurse_balance_after) == (3000, 2800)


def test_validator_refuses_a_second_epurse_tap_within_the_window_unpaid(tmp_path: Path) -> None:
    r = rig(tmp_path / "j.db", epurse=True, window=dt.timedelta(seconds=30))
    first = r.validator.tap(r.reader)
    second = r.validator.tap(r.reader)  # one second later (the rig's clock)
    assert first.record is not None and first.record.outcome is TapOutcome.ACCEPTED
    assert second.record is not None and second.record.outcome is TapOutcome.DUPLICATE
    assert second.record.reason == "duplicate-tap" and second.record.tac is None
    assert balance(r.reader.card) == 2800  # type: ignore[arg-type]  # one fare, not two
