"""The card lifecycle table: every allowed move, every refused one, and the clock-driven ones."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from issuer.errors import AccountError, IllegalTransitionError
from issuer.lifecycle import TRANSITIONS, Event, allowed, effective_state, sweep, transition
from issuer.models import AccountStatus, CardState, Replacement, ReplaceReason
from tests.core_fixtures import CST, T0, TestCard, new_issuer, open_card, pan_for

S = CardState
ALL_PAIRS = [(s, e) for s in CardState for e in Event]


def _card(state: CardState):  # type: ignore[no-untyped-def]
    issuer = new_issuer()
    card = open_card(issuer, TestCard(pan_for(1)), activate=False)
    return dataclasses.replace(card, state=state), issuer


@pytest.mark.parametrize(("state", "event"), sorted(TRANSITIONS, key=str))
def test_every_listed_transition_is_allowed(state: CardState, event: Event) -> None:
    card, issuer = _card(state)
    now = card.expires_at + timedelta(days=1) if event is Event.EXPIRE else T0
    rep = Replacement("0" * 32, True, ReplaceReason.LOSS, now)
    new = transition(card, event, now, replacement=rep, policy=issuer.policy("ICBC"))
    expected = TRANSITIONS[state, event]
    assert new.state is expected
    assert new.state_changed_at == now


@pytest.mark.parametrize(("state", "event"), [p for p in ALL_PAIRS if p not in TRANSITIONS])
def test_every_other_transition_is_refused_with_a_named_error(
    state: CardState, event: Event
) -> None:
    card, _ = _card(state)
    assert not allowed(state, event)
    with pytest.raises(IllegalTransitionError) as info:
        transition(card, event, T0)
    message = str(info.value)
    assert state.value in message and event.value in message
    assert card.masked_pan in message and "6231900000" not in message.replace(card.masked_pan, "")


def test_final_states_have_no_way_out() -> None:
    for final in (S.REPLACED, S.CANCELLED):
        assert not any(allowed(final, e) for e in Event)


@pytest.mark.parametrize("before", [S.NOT_ACTIVATED, S.ACTIVE, S.DORMANT, S.EXPIRED])
def test_unfreeze_returns_to_the_state_before_the_loss(before: CardState) -> None:
    card, _ = _card(before)
    lost = transition(card, Event.REPORT_LOST, T0)
    assert lost.state is S.LOST and lost.state_before_lost is before
    back = transition(lost, Event.UNFREEZE, T0 + timedelta(hours=1))
    assert back.state is before and back.state_before_lost is None


@pytest.mark.parametrize(("days_before", "allowed_now"), [(61, False), (60, True), (59, True)])
def test_renewal_window_is_inclusive_of_its_sixtieth_day(days_before: int,
                                                         allowed_now: bool) -> None:
    """The card's last valid day is 30 December 2030 (expires_at: 31 December 00:00): renewal
    opens on its 60th day before, 31 October, any hour of it; 30 October is refused."""
    card, issuer = _card(S.ACTIVE)
    policy = issuer.policy("ICBC")
    last_day = datetime(2030, 12, 30, 17, 30, tzinfo=CST)
    for hour in (0, 23):  # first and last hour of the day, on the branch's calendar
        at = (last_day - timedelta(days=days_before)).replace(hour=hour)
        rep = Replacement("0" * 32, True, ReplaceReason.RENEWAL, at)
        if allowed_now:
            new = transition(card, Event.REPLACE, at, replacement=rep, policy=policy)
            assert new.state is S.REPLACED
        else:
            with pytest.raises(IllegalTransitionError, match="60 days before expiry"
                               r" \(on 2030-10-31, the card's last day being 2030-12-30\)"):
                transition(card, Event.REPLACE, at, replacement=rep, policy=policy)
    # A lost card may be replaced at any time.
    early = last_day - timedelta(days=400)
    lost = transition(card, Event.REPORT_LOST, early)
    rep_loss = Replacement("0" * 32, True, ReplaceReason.LOSS, early)
    assert transition(lost, Event.REPLACE, early, replacement=rep_loss, policy=policy).replacement


def test_expire_needs_the_date_and_naive_times_are_refused() -> None:
    card, _ = _card(S.ACTIVE)
    with pytest.raises(IllegalTransitionError, match="expiry date not reached"):
        transition(card, Event.EXPIRE, T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        transition(card, Event.ACTIVATE, datetime(2026, 1, 1))


def test_sweep_and_effective_state_agree_on_dormancy_and_expiry() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(2))
    card = open_card(issuer, tc)
    account = issuer.account(card.account_id)
    policy = issuer.policy("ICBC")
    quiet = account.last_movement + policy.dormancy_after
    assert effective_state(card, account, quiet - timedelta(seconds=1), policy) is S.ACTIVE
    assert effective_state(card, account, quiet, policy) is S.DORMANT
    assert sweep(card, account, quiet, policy).state is S.DORMANT
    late = card.expires_at + timedelta(days=1)
    assert effective_state(card, account, late, policy) is S.EXPIRED
    assert sweep(card, account, late, policy).state is S.EXPIRED
    changed = issuer.sweep(quiet)
    assert [c.state for c in changed] == [S.DORMANT]


def test_go_dormant_is_refused_while_the_account_moves() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(3))
    open_card(issuer, tc)
    with pytest.raises(IllegalTransitionError, match="moved recently"):
        issuer.apply(tc.token, Event.GO_DORMANT, T0)


def test_cancel_closes_the_account_unless_money_is_held() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(4))
    card = open_card(issuer, tc)
    issuer.apply(tc.token, Event.CANCEL, T0)
    account = issuer.account(card.account_id)
    assert account.status is AccountStatus.CLOSED and account.balance == 0
    with pytest.raises(IllegalTransitionError):
        issuer.apply(tc.token, Event.ACTIVATE, T0)


def test_same_bank_replacement_moves_the_balance_once_confirmed() -> None:
    issuer = new_issuer()
    old, new = TestCard(pan_for(5)), TestCard(pan_for(6))
    card = open_card(issuer, old, balance=1234)
    issuer.open_account("acct-new", "ICBC", "CNY", T0)
    issuer.replace(
        old.token, new.pan, "01", "acct-new",
        reason=ReplaceReason.DAMAGE, imk_id="imk1",
        expires_at=datetime(2036, 1, 1, tzinfo=CST), now=T0,
    )  # fmt: skip
    assert issuer.card(old.token).state is S.REPLACED
    assert issuer.card(new.token).state is S.NOT_ACTIVATED
    assert issuer.account("acct-new").balance == 0  # not before the holder confirms
    moved = issuer.confirm_balance_transfer(old.token, T0 + timedelta(days=1))
    assert moved.balance == 1234
    assert issuer.account(card.account_id).status is AccountStatus.CLOSED
    assert issuer.confirm_balance_transfer(old.token, T0 + timedelta(days=2)).balance == 1234


def test_other_bank_replacement_closes_the_old_account_after_grace() -> None:
    issuer = new_issuer()
    old, new = TestCard(pan_for(7)), TestCard(pan_for(8))
    card = open_card(issuer, old, balance=500, bank="BOC")
    issuer.open_account("acct-icbc", "ICBC", "CNY", T0)
    issuer.replace(
        old.token, new.pan, "01", "acct-icbc",
        reason=ReplaceReason.LOSS, imk_id="imk1",
        expires_at=datetime(2036, 1, 1, tzinfo=CST), now=T0,
    )  # fmt: skip
    with pytest.raises(AccountError, match="another bank"):
        issuer.confirm_balance_transfer(old.token, T0)
    grace = issuer.policy("BOC").replacement_grace
    assert issuer.close_after_grace(T0 + grace - timedelta(seconds=1)) == []
    closed = issuer.close_after_grace(T0 + grace)
    assert [a.account_id for a in closed] == [card.account_id]
    assert closed[0].balance == 500  # paid out at the counter when closing
    assert issuer.account(card.account_id).status is AccountStatus.CLOSED


@given(st.lists(st.sampled_from(list(Event)), max_size=12))
def test_any_event_sequence_stays_inside_the_table(events: list[Event]) -> None:
    issuer = new_issuer()
    card = open_card(issuer, TestCard(pan_for(9)), activate=False)
    now = T0
    for event in events:
        now += timedelta(days=1)
        before = card.state
        try:
            card = transition(
                card, event, card.expires_at if event is Event.EXPIRE else now,
                replacement=Replacement("0" * 32, True, ReplaceReason.LOSS, now),
                policy=issuer.policy("ICBC"),
            )  # fmt: skip
        except IllegalTransitionError:
            assert not allowed(before, event)
            continue
        assert allowed(before, event)
