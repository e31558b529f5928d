"""The validator's local decisions within the tap budget, as pure functions.

After the kernel has read the card, the validator decides alone, without the back
office: is the card on the deny list (by PAN token), is this the same card tapping
again within the duplicate window, which rider category applies (a concession from
the social security identity on the card), and what the rider sees and hears.
None of this touches a clock, a file or a network: the caller passes ``now`` and the
state, which makes every rule a one-line test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from emv.kernel import Outcome, TapResult
from fare.concessions import AgeRule, rider_category_for
from wire.messages import TapOutcome

# DF70 (tapsim's holder category object) value -> GTFS rider_category_id.
DEFAULT_CARD_CATEGORIES: Mapping[str, str] = MappingProxyType({
    "adult": "adult", "senior": "senior", "student": "student", "disabled": "disabled",
    "child": "child",
})


@dataclass(frozen=True)
class RiderRules:
    """How a card's holder data maps to a rider category.

    Age wins over the card's category byte: a card personalised before the holder
    turned 60 still says "adult" in DF70, but the birth date (DF71) is fixed, so the
    validator derives seniority at every tap (``fare.concessions`` age rules, first match).
    """

    age_rules: tuple[AgeRule, ...] = (AgeRule("senior", 60),)
    default_category: str = "adult"
    card_categories: Mapping[str, str] = field(default_factory=lambda: DEFAULT_CARD_CATEGORIES)


@dataclass(frozen=True)
class TapPolicy:
    duplicate_window: dt.timedelta = dt.timedelta(seconds=30)
    # Transit accepts an online request without waiting for the issuer (deferred
    # authorization, UnionPay ODA / Visa-Mastercard MTT) when the card authenticated.
    accept_online_request: bool = True
    require_oda: bool = True


@dataclass(frozen=True)
class Verdict:
    outcome: TapOutcome
    reason: str | None = None


class Colour(StrEnum):
    GREEN = "green"
    AMBER = "amber"
    RED = "red"


class Beep(StrEnum):
    """Beep codes: the driver hears a concession (two short) without looking."""

    ONE_SHORT = "1-short"
    TWO_SHORT = "2-short"
    TWO_LONG = "2-long"
    ONE_LONG = "1-long"


@dataclass(frozen=True)
class Display:
    text: str
    colour: Colour
    beep: Beep


def parse_birth_date(raw: str | None) -> dt.date | None:
    """DF71 as the kernel gives it (``YYYYMMDD`` digits); None when absent or not a date."""
    if raw is None or len(raw) != 8 or not raw.isdigit():
        return None
    try:
        return dt.date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
    except ValueError:
        return None


def rider_category(rules: RiderRules, holder_category: str | None, birth_date: str | None,
                   today: dt.date) -> str:
    """The rider category of this tap from the card's holder data (DF70, DF71)."""
    birth = parse_birth_date(birth_date)
    if birth is not None:
        by_age = rider_category_for(birth, today, rules.age_rules)
        if by_age is not None:
            return by_age
    if holder_category is not None and holder_category in rules.card_categories:
        return rules.card_categories[holder_category]
    return rules.default_category


def is_duplicate(last_accepted: dt.datetime | None, now: dt.datetime,
                 window: dt.timedelta) -> bool:
    """Same card accepted at this validator less than ``window`` ago (clock going back too)."""
    if last_accepted is None or window <= dt.timedelta(0):
        return False
    return now - last_accepted < window


def decide(result: TapResult, *, deny_listed: bool, duplicate: bool,
           policy: TapPolicy) -> Verdict:
    """The validator's verdict: the card's word first, then the deny list, then duplicates."""
    if result.outcome in (Outcome.DECLINED, Outcome.END_APPLICATION,
                          Outcome.TRY_ANOTHER_INTERFACE, Outcome.TRY_AGAIN):
        return Verdict(TapOutcome.DECLINED, result.reason or result.outcome.value)
    if deny_listed:
        return Verdict(TapOutcome.DENY_LISTED, "deny-listed")
    if duplicate:
        return Verdict(TapOutcome.DUPLICATE, "duplicate-tap")
    if result.outcome is Outcome.APPROVED_OFFLINE:
        return Verdict(TapOutcome.ACCEPTED)
    # ONLINE_REQUEST
    if not policy.accept_online_request:
        return Verdict(TapOutcome.DECLINED, "online-request-not-accepted")
    if policy.require_oda and result.oda_ok is not True:
        return Verdict(TapOutcome.DECLINED, "online-request-without-oda")
    return Verdict(TapOutcome.ACCEPTED)


_DECLINE_TEXT = {
    "card-expired": "Card expired",
    "card-not-yet-effective": "Card not yet valid",
    "card-declined": "Card declined",
}


def display_for(verdict: Verdict, category: str, rules: RiderRules) -> Display:
    """What the rider sees and hears."""
    if verdict.outcome is TapOutcome.ACCEPTED:
        if category != rules.default_category:
            return Display(f"OK - {category}", Colour.GREEN, Beep.TWO_SHORT)
        return Display("OK", Colour.GREEN, Beep.ONE_SHORT)
    if verdict.outcome is TapOutcome.DUPLICATE:
        return Display("Already tapped", Colour.AMBER, Beep.TWO_LONG)
    if verdict.outcome is TapOutcome.DENY_LISTED:
        return Display("Card blocked - see staff", Colour.RED, Beep.ONE_LONG)
    return Display(_DECLINE_TEXT.get(verdict.reason or "", "Card not accepted"), Colour.RED,
                   Beep.ONE_LONG)


def display_for_error() -> Display:
    """A tap the kernel could not complete (card pulled away, reader fault): tap again."""
    return Display("Tap again", Colour.AMBER, Beep.TWO_LONG)
