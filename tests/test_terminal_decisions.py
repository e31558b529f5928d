"""terminal.decisions: the local rules, as pure functions."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from emv.kernel import Outcome, TapResult
from fare.concessions import AgeRule
from terminal.decisions import (
    Beep,
    Colour,
    RiderRules,
    TapPolicy,
    Verdict,
    decide,
    display_for,
    is_duplicate,
    parse_birth_date,
    rider_category,
)
from wire import TapOutcome

RULES = RiderRules(age_rules=(AgeRule("senior", 60),))
POLICY = TapPolicy()
NOW = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)


def result(outcome: Outcome = Outcome.APPROVED_OFFLINE, oda_ok: bool | None = True,
           reason: str | None = None) -> TapResult:
    return TapResult(outcome=outcome, oda_ok=oda_ok, reason=reason, pan_token="ab" * 16)


def test_senior_from_the_60th_birthday() -> None:
    assert rider_category(RULES, "adult", "19661123", dt.date(2026, 11, 22)) == "adult"
    assert rider_category(RULES, "adult", "19661123", dt.date(2026, 11, 23)) == "senior"


def test_leap_day_birthday_counts_from_first_of_march() -> None:
    rules = RiderRules(age_rules=(AgeRule("senior", 61),))
    assert rider_category(rules, None, "19640229", dt.date(2025, 2, 28)) == "adult"
    assert rider_category(rules, None, "19640229", dt.date(2025, 3, 1)) == "senior"


def test_age_rules_first_match_wins() -> None:
    rules = RiderRules(age_rules=(AgeRule("child", 0, 5), AgeRule("senior", 65)))
    today = dt.date(2026, 11, 23)
    assert rider_category(rules, "adult", "20230101", today) == "child"
    assert rider_category(rules, "adult", "19610101", today) == "senior"
    assert rider_category(rules, "adult", "19700101", today) == "adult"


@given(birth=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2020, 1, 1)),
       days=st.integers(0, 40000))
def test_once_senior_always_senior(birth: dt.date, days: int) -> None:
    today = birth + dt.timedelta(days=days)
    raw = birth.strftime("%Y%m%d")
    if rider_category(RULES, None, raw, today) == "senior":
        assert rider_category(RULES, None, raw, today + dt.timedelta(days=1)) == "senior"


def test_birth_date_parsing() -> None:
    assert parse_birth_date("19550601") == dt.date(1955, 6, 1)
    for bad in (None, "1955060", "1955-6-1", "19551301", "abcdefgh"):
        assert parse_birth_date(bad) is None


def test_senior_by_age_even_when_the_card_says_adult() -> None:
    today = dt.date(2026, 11, 23)
    assert rider_category(RULES, "adult", "19660101", today) == "senior"
    assert rider_category(RULES, "adult", "19700101", today) == "adult"


def test_card_category_when_age_does_not_decide() -> None:
    today = dt.date(2026, 11, 23)
    assert rider_category(RULES, "student", "20080101", today) == "student"
    assert rider_category(RULES, "senior", None, today) == "senior"  # DF70 alone
    assert rider_category(RULES, "vip", None, today) == "adult"  # unknown: default
    assert rider_category(RiderRules(age_rules=()), "adult", "19300101", today) == "adult"
    assert rider_category(RULES, None, None, today) == "adult"


def test_duplicate_window() -> None:
    w = dt.timedelta(seconds=30)
    assert not is_duplicate(None, NOW, w)
    assert is_duplicate(NOW - dt.timedelta(seconds=29), NOW, w)
    assert not is_duplicate(NOW - dt.timedelta(seconds=30), NOW, w)
    assert is_duplicate(NOW + dt.timedelta(seconds=5), NOW, w)  # clock stepped back
    assert not is_duplicate(NOW, NOW, dt.timedelta(0))  # window off


def test_card_removed_is_never_accepted() -> None:
    v = decide(result(Outcome.TRY_AGAIN, reason="card-removed"), deny_listed=False,
               duplicate=False, policy=POLICY)
    assert v == Verdict(TapOutcome.DECLINED, "card-removed")


def test_card_decline_comes_first() -> None:
    v = decide(result(Outcome.DECLINED, reason="card-expired"), deny_listed=True,
               duplicate=True, policy=POLICY)
    assert v == Verdict(TapOutcome.DECLINED, "card-expired")


def test_deny_list_before_duplicate() -> None:
    assert decide(result(), deny_listed=True, duplicate=True, policy=POLICY).outcome \
        is TapOutcome.DENY_LISTED
    assert decide(result(), deny_listed=False, duplicate=True, policy=POLICY).outcome \
        is TapOutcome.DUPLICATE
    assert decide(result(), deny_listed=False, duplicate=False, policy=POLICY).outcome \
        is TapOutcome.ACCEPTED


def test_online_request_accepted_only_with_oda_by_default() -> None:
    online = result(Outcome.ONLINE_REQUEST, oda_ok=True)
    assert decide(online, deny_listed=False, duplicate=False, policy=POLICY).outcome \
        is TapOutcome.ACCEPTED
    no_oda = result(Outcome.ONLINE_REQUEST, oda_ok=None)
    assert decide(no_oda, deny_listed=False, duplicate=False, policy=POLICY) \
        == Verdict(TapOutcome.DECLINED, "online-request-without-oda")
    lax = TapPolicy(require_oda=False)
    assert decide(no_oda, deny_listed=False, duplicate=False, policy=lax).outcome \
        is TapOutcome.ACCEPTED
    strict = TapPolicy(accept_online_request=False)
    assert decide(online, deny_listed=False, duplicate=False, policy=strict).reason \
        == "online-request-not-accepted"


def test_displays() -> None:
    ok = display_for(Verdict(TapOutcome.ACCEPTED), "adult", RULES)
    assert (ok.colour, ok.beep) == (Colour.GREEN, Beep.ONE_SHORT)
    senior = display_for(Verdict(TapOutcome.ACCEPTED), "senior", RULES)
    assert (senior.text, senior.beep) == ("OK - senior", Beep.TWO_SHORT)
    assert display_for(Verdict(TapOutcome.DUPLICATE, "duplicate-tap"), "adult",
                       RULES).colour is Colour.AMBER
    blocked = display_for(Verdict(TapOutcome.DENY_LISTED, "deny-listed"), "adult", RULES)
    assert (blocked.colour, blocked.beep) == (Colour.RED, Beep.ONE_LONG)
    assert display_for(Verdict(TapOutcome.DECLINED, "card-expired"), "adult",
                       RULES).text == "Card expired"
