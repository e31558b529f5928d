"""The card lifecycle of DESIGN.md as a table of allowed transitions.

Pure functions over :class:`~issuer.models.Card`: an event either yields the next card or
raises :class:`~issuer.errors.IllegalTransitionError` naming the state and the event.
Dormancy and expiry are *also* derived from the clock (:func:`effective_state`), so an
authorization gives the same answer whether or not the bank's nightly sweep has run.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, tzinfo
from enum import StrEnum

from issuer.errors import IllegalTransitionError
from issuer.models import Account, Card, CardState, Replacement, ReplaceReason, evolve
from issuer.policy import BankPolicy, ExpiryPolicy


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
        if replacement.reason is ReplaceReason.RENEWAL:
            opens = renewal_opens(card, policy, now.tzinfo)  # days as the branch counts them
            if now.date() < opens:
                raise IllegalTransitionError(
                    card.masked_pan,
                    card.state.value,
                    event.value,
                    f"renewal opens {policy.renewal_window.days} days before expiry "
                    f"(on {opens.isoformat()}, the card's last day being "
                    f"{last_valid_day(card, now.tzinfo).isoformat()})",
                )
        changes["replacement"] = replacement
    return evolve(card, **changes)


def is_dormant_due(account: Account, now: datetime, policy: BankPolicy) -> bool:
    """True when the account has had no movement for the bank's dormancy period."""
    return now - account.last_movement >= policy.dormancy_after


_ACTIVE, _EXPIRED, _DORMANT = S.ACTIVE, S.EXPIRED, S.DORMANT  # read once, not per call
_STOP = ExpiryPolicy.STOP
#: States the clock expires (under an expiry policy ``stop``); a bank that keeps the
#: financial function after expiry (``keep``) expires no card by the clock.
_CLOCK_EXPIRES = (S.NOT_ACTIVATED, S.ACTIVE, S.DORMANT)


def effective_state(card: Card, account: Account, now: datetime, policy: BankPolicy) -> CardState:
    """The state the card is in *now*, counting sweeps that are due but have not run.

    Exactly what :func:`sweep` would make of the card: past the expiry date under a ``stop``
    policy -> expired (before anything else); an active card whose account has not moved for
    the dormancy period -> dormant.
    """
    state = card.state
    if state is _ACTIVE:
        if now >= card.expires_at and policy.expiry is _STOP:
            return _EXPIRED
        if now - account.last_movement >= policy.dormancy_after:  # is_dormant_due, inlined
            return _DORMANT
    elif state in _CLOCK_EXPIRES and now >= card.expires_at and policy.expiry is _STOP:
        return _EXPIRED
    return state


def sweep(card: Card, account: Account, now: datetime, policy: BankPolicy) -> Card:
    """Apply the clock-driven transitions (expiry first, then dormancy) that are due."""
    due = effective_state(card, account, now, policy)
    if due is card.state:
        return card
    if due is _EXPIRED:
        return transition(card, Event.EXPIRE, now)
    return transition(card, Event.GO_DORMANT, now)


def last_valid_day(card: Card, tz: tzinfo | None = None) -> date:
    """The last day the card is valid (``expires_at`` is the first moment after it), on the
    calendar of ``tz`` (the branch's clock; default the zone ``expires_at`` carries)."""
    last = card.expires_at - timedelta(microseconds=1)
    return (last.astimezone(tz) if tz is not None else last).date()


def renewal_opens(card: Card, policy: BankPolicy, tz: tzinfo | None = None) -> date:
    """The first day a renewal is allowed: ``renewal_window`` days before the last valid day,
    that day included (60 days before an expiry on 31 December is 1 November)."""
    return last_valid_day(card, tz) - timedelta(days=policy.renewal_window.days)


def explain(
    card: Card, account: Account, now: datetime, policy: BankPolicy
) -> tuple[CardState, str]:
    """The state the bank acts on now, and why, in words (``tapsim account show``)."""
    state = effective_state(card, account, now, policy)
    quiet = (now - account.last_movement).days
    last_day = last_valid_day(card, now.tzinfo).isoformat()
    if state is not card.state:
        if state is _EXPIRED:
            why = (f"past its expiry ({last_day} was its last day) and "
                   f"bank {policy.bank_id} stops the financial function after expiry "
                   f"(expiry policy {policy.expiry.value})")
        else:
            why = (f"no account movement since {account.last_movement.date().isoformat()} "
                   f"({quiet} days; bank {policy.bank_id} makes an account dormant after "
                   f"{policy.dormancy_after.days} days): taps are refused until it is restored "
                   "at a branch")
        return state, why + f"; stored state {card.state.value} (the nightly sweep has not run)"
    if state is _ACTIVE and now >= card.expires_at:
        return state, (f"past its expiry ({last_day}), but bank "
                       f"{policy.bank_id} keeps the financial function (expiry policy keep)")
    reasons = {
        S.NOT_ACTIVATED: "the financial function was never activated at a branch",
        S.ACTIVE: (f"last account movement {account.last_movement.date().isoformat()} "
                   f"({quiet} days ago; dormant after {policy.dormancy_after.days} days)"),
        S.LOST: "reported lost; unfreeze at a branch to undo",
        S.SEALED: "social security status sealed; re-activation at the bank lifts it",
        S.DORMANT: "marked dormant; restore at a branch",
        S.EXPIRED: (f"expired ({last_day} was its last day); bank {policy.bank_id} "
                    + ("keeps the financial function after expiry (expiry policy keep)"
                       if policy.expiry is ExpiryPolicy.KEEP else
                       "stops the financial function after expiry (expiry policy stop)")),
        S.CANCELLED: "cancelled, the account closed",
    }
    if state is S.REPLACED and card.replacement is not None:
        rep = card.replacement
        where = "this bank" if rep.same_bank else "another bank"
        closes = (rep.at + policy.replacement_grace).date().isoformat()
        if rep.balance_moved:
            moved = "its balance has moved and its account is closed"
        elif rep.same_bank:
            moved = "its balance moves when the holder confirms the transfer (confirm-transfer)"
        elif now >= rep.at + policy.replacement_grace:
            moved = (f"the grace period ended on {closes}: its balance moves to the new card's "
                     "account and its account closes (done by the next branch command or "
                     "`tapsim account sweep`)")
        else:
            moved = (f"its account closes on {closes} (grace {policy.replacement_grace.days} "
                     "days), the balance moving to the new card's account unless withdrawn or "
                     "transferred before")
        return state, (f"replaced on {rep.at.date().isoformat()} ({rep.reason.value}) by a new "
                       f"card at {where}; {moved}")
    return state, reasons.get(state, state.value)
