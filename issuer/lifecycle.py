"""The card lifecycle of DESIGN.md as a table of allowed transitions.

Pure functions over :class:`~issuer.models.Card`: an event either yields the next card or
raises :class:`~issuer.errors.IllegalTransitionError` naming the state and the event.
Dormancy and expiry are *also* derived from the clock (:func:`effective_state`), so an
authorization gives the same answer whether or not the bank's nightly sweep has run.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from issuer.errors import IllegalTransitionError
from issuer.models import Account, Card, CardState, Replacement, ReplaceReason, evolve
from issuer.policy import BankPolicy


class Event(StrEnum):
    ACTIVATE = "activate"  # at a branch: first activation, or re-activation after sealing
    REPORT_LOST = "report_lost"  # 挂失
    UNFREEZE = "unfreeze"  # 解挂: back to the state before the loss report
    SEAL = "seal"  # 封存: social security status sealed
    GO_DORMANT = "go_dormant"  # the bank's sweep: long without account movement
    RESTORE = "restore"  # at a branch, after dormancy
    EXPIRE = "expire"  # the bank's sweep: past the expiry date
    REPLACE = "replace"  # a new card was issued for this one
    CANCEL = "cancel"  # 注销


S = CardState
_NON_FINAL = (S.NOT_ACTIVATED, S.ACTIVE, S.LOST, S.SEALED, S.DORMANT, S.EXPIRED)

#: (state, event) -> next state; UNFREEZE goes back to ``state_before_lost`` instead.
TRANSITIONS: dict[tuple[CardState, Event], CardState] = {
    (S.NOT_ACTIVATED, Event.ACTIVATE): S.ACTIVE,
    (S.SEALED, Event.ACTIVATE): S.ACTIVE,
    **{(s, Event.REPORT_LOST): S.LOST for s in (S.NOT_ACTIVATED, S.ACTIVE, S.DORMANT, S.EXPIRED)},
    (S.LOST, Event.UNFREEZE): S.ACTIVE,
    **{(s, Event.SEAL): S.SEALED for s in (S.NOT_ACTIVATED, S.ACTIVE, S.LOST, S.DORMANT)},
    (S.ACTIVE, Event.GO_DORMANT): S.DORMANT,
    (S.DORMANT, Event.RESTORE): S.ACTIVE,
    **{(s, Event.EXPIRE): S.EXPIRED for s in (S.NOT_ACTIVATED, S.ACTIVE, S.DORMANT)},
    **{
        (s, Event.REPLACE): S.REPLACED
        for s in (S.NOT_ACTIVATED, S.ACTIVE, S.LOST, S.DORMANT, S.EXPIRED)
    },
    **{(s, Event.CANCEL): S.CANCELLED for s in _NON_FINAL},
}


def allowed(state: CardState, event: Event) -> bool:
    return (state, event) in TRANSITIONS


def transition(
    card: Card,
    event: Event,
    now: datetime,
    *,
    replacement: Replacement | None = None,
    policy: BankPolicy | None = None,
) -> Card:
    """The card after ``event``; REPLACE needs ``replacement`` and ``policy`` (renewal window)."""
    if now.tzinfo is None:
        raise ValueError("lifecycle time must be timezone-aware")
    target = TRANSITIONS.get((card.state, event))
    if target is None:
        raise IllegalTransitionError(card.masked_pan, card.state.value, event.value)
    changes: dict[str, object] = {"state": target, "state_changed_at": now}
    if event is Event.REPORT_LOST:
        changes["state_before_lost"] = card.state
    elif event is Event.UNFREEZE:
        changes["state"] = card.state_before_lost or S.ACTIVE
        changes["state_before_lost"] = None
    elif event is Event.EXPIRE and now < card.expires_at:
        raise IllegalTransitionError(
            card.masked_pan, card.state.value, event.value, "expiry date not reached"
        )
    elif event is Event.REPLACE:
        if replacement is None or policy is None:
            raise ValueError("REPLACE needs the replacement and the bank policy")
        if (
            replacement.reason is ReplaceReason.RENEWAL
            and now < card.expires_at - policy.renewal_window
        ):
            raise IllegalTransitionError(
                card.masked_pan,
                card.state.value,
                event.value,
                f"renewal opens {policy.renewal_window.days} days before expiry",
            )
        changes["replacement"] = replacement
    return evolve(card, **changes)


def is_dormant_due(account: Account, now: datetime, policy: BankPolicy) -> bool:
    """True when the account has had no movement for the bank's dormancy period."""
    return now - account.last_movement >= policy.dormancy_after


_ACTIVE, _EXPIRED, _DORMANT = S.ACTIVE, S.EXPIRED, S.DORMANT  # read once, not per call


def effective_state(card: Card, account: Account, now: datetime, policy: BankPolicy) -> CardState:
    """The state the card is in *now*, counting sweeps that are due but have not run."""
    state = card.state
    if state is _ACTIVE:
        if now >= card.expires_at:
            return _EXPIRED
        if now - account.last_movement >= policy.dormancy_after:  # is_dormant_due, inlined
            return _DORMANT
    return state


def sweep(card: Card, account: Account, now: datetime, policy: BankPolicy) -> Card:
    """Apply the clock-driven transitions (expiry first, then dormancy) that are due."""
    if card.state in (S.NOT_ACTIVATED, S.ACTIVE, S.DORMANT) and now >= card.expires_at:
        return transition(card, Event.EXPIRE, now)
    if card.state is S.ACTIVE and is_dormant_due(account, now, policy):
        return transition(card, Event.GO_DORMANT, now)
    return card
