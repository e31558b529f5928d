"""Authorization, capture and release as pure functions of the issuer's records.

:func:`authorize` is the bank's whole decision: it checks the request, verifies the ARQC
with the card's scheme (a forged cryptogram or an ATC seen before is declined *and*
flagged), checks the card's effective lifecycle state and the funds, and places a hold.
It returns the records to keep; persisting them is the caller's business.
"""

from __future__ import annotations

import hmac
from datetime import datetime

from emv.crypto.cryptogram import scheme as cryptogram_scheme
from issuer.codes import ResponseCode
from issuer.errors import HoldError
from issuer.lifecycle import effective_state, is_dormant_due
from issuer.models import (
    Account,
    AccountStatus,
    AuthKind,
    AuthorizationRequest,
    AuthRecord,
    Capture,
    Card,
    CardState,
    Decision,
    Flag,
    Hold,
    HoldStatus,
    evolve,
)
from issuer.policy import BankPolicy, ExpiryPolicy

RC = ResponseCode

#: The answer each lifecycle state gives to a payment (the README table mirrors this).
STATE_CODES: dict[CardState, ResponseCode] = {
    CardState.NOT_ACTIVATED: RC.NOT_ACTIVATED,
    CardState.LOST: RC.LOST_CARD,
    CardState.SEALED: RC.RESTRICTED_CARD,
    CardState.DORMANT: RC.NOT_PERMITTED,
    CardState.EXPIRED: RC.EXPIRED_CARD,
    CardState.REPLACED: RC.PICK_UP_REPLACED,
    CardState.CANCELLED: RC.CLOSED_ACCOUNT,
}

# Enum members as module constants: on Python 3.11 reading ``AuthKind.PURCHASE`` goes through
# the enum's descriptor machinery (~70 ns), and a request's path reads a dozen of them.
_AV = AuthKind.ACCOUNT_VERIFICATION
_PURCHASE = AuthKind.PURCHASE
_DEFERRED = AuthKind.DEFERRED
_RESUBMISSION = AuthKind.RESUBMISSION
_APPROVED = RC.APPROVED
_ACTIVE = CardState.ACTIVE
_EXPIRED = CardState.EXPIRED
_CLOSED = AccountStatus.CLOSED
_KEEP = ExpiryPolicy.KEEP
_HOLD_ACTIVE = HoldStatus.ACTIVE

_NEEDS_CRYPTOGRAM = (_AV, _PURCHASE, _DEFERRED)
_VERIFIABLE_ORIGINALS = (_AV, _PURCHASE)
_REFERENCING = (_DEFERRED, _RESUBMISSION)


def atc_seen(card: Card, atc: int) -> bool:
    return atc <= card.atc_floor or atc in card.recent_atcs


def remember_atc(card: Card, atc: int, window: int) -> Card:
    """Add an ATC to the seen set; beyond ``window`` entries the floor rises."""
    if len(card.recent_atcs) < window:  # room left: the floor stays (the usual case)
        return evolve(card, recent_atcs=card.recent_atcs | {atc})
    recent = set(card.recent_atcs)
    recent.add(atc)
    floor = card.atc_floor
    while len(recent) > window:
        lowest = min(recent)
        recent.discard(lowest)
        floor = max(floor, lowest)
    return evolve(card, recent_atcs=frozenset(recent), atc_floor=floor)


def state_code(card: Card, account: Account, now: datetime, policy: BankPolicy) -> ResponseCode:
    """Approved, or the code of the state that stops a payment from this card now.

    The card's effective state answers first (a replaced card is 04 even once its account
    closed with the balance transfer; a cancelled one 46); a closed account under a card
    whose state would pay answers 46.
    """
    state = effective_state(card, account, now, policy)
    if state is _ACTIVE:
        return RC.CLOSED_ACCOUNT if account.status is _CLOSED else _APPROVED
    if state is _EXPIRED and policy.expiry is _KEEP:
        # Expired by hand at a bank that keeps the financial function: dormancy still applies.
        if account.status is _CLOSED:
            return RC.CLOSED_ACCOUNT
        return RC.NOT_PERMITTED if is_dormant_due(account, now, policy) else _APPROVED
    return STATE_CODES.get(state, RC.CLOSED_ACCOUNT if account.status is _CLOSED else _APPROVED)


def _check_shape(request: AuthorizationRequest, account: Account) -> ResponseCode | None:
    kind = request.kind
    if request.currency != account.currency:
        return RC.INVALID_TRANSACTION
    if request.amount < 0:
        return RC.INVALID_AMOUNT
    if request.amount == 0 and kind is not _AV:
        return RC.INVALID_AMOUNT
    if kind in _NEEDS_CRYPTOGRAM and (
        request.atc is None or request.arqc is None or request.ac_data is None
    ):
        return RC.INVALID_TRANSACTION
    if kind in _REFERENCING and not request.original_request_id:
        return RC.INVALID_TRANSACTION
    return None


def authorize(
    account: Account,
    card: Card,
    request: AuthorizationRequest,
    now: datetime,
    *,
    card_key: bytes | None,
    policy: BankPolicy,
    original: AuthRecord | None = None,
) -> Decision:
    """Decide one authorization; ``original`` is the record a DEFERRED/RESUBMISSION refers to."""
    if now.tzinfo is None:
        raise ValueError("authorization time must be timezone-aware")
    if request.pan_token != card.pan_token or card.account_id != account.account_id:
        raise ValueError("authorize: request, card and account do not belong together")
    flags: set[Flag] = set()
    verified = False
    arpc: bytes | None = None
    new_card = card
    new_original: AuthRecord | None = None
    kind = request.kind
    code = _check_shape(request, account)

    if code is None and kind in _REFERENCING:
        code, verified = _check_reference(request, original, flags)

    if code is None and kind in _VERIFIABLE_ORIGINALS:
        assert request.atc is not None and request.arqc is not None
        assert request.ac_data is not None
        if card_key is None:
            code = RC.SYSTEM_MALFUNCTION
        else:
            suite = cryptogram_scheme(card.scheme)
            session_key = suite.derive_session_key(card_key, request.atc)
            expected = suite.generate_ac(session_key, request.ac_data)
            if not hmac.compare_digest(expected, request.arqc):
                code = RC.SECURITY_VIOLATION
                flags.add(Flag.FORGED)
            elif atc_seen(card, request.atc):
                code = RC.SUSPECTED_FRAUD
                flags.add(Flag.REPLAYED)
            else:
                verified = True
                new_card = remember_atc(card, request.atc, policy.atc_window)
            if code is None:
                code = _funds_and_state(new_card, account, request, now, policy)
            if verified and request.online:
                arpc = suite.generate_arpc(session_key, request.arqc, code.arc)

    if code is None:
        code = _funds_and_state(card, account, request, now, policy)

    hold: Hold | None = None
    new_account = account
    if code is _APPROVED and request.amount > 0:
        # Records here are built positionally (field order of issuer.models): keyword calls
        # cost a dict each, and a request builds several.
        hold = Hold(request.request_id, account.account_id, card.pan_token, request.merchant_id,
                    request.amount, request.currency, now)
        new_account = evolve(account, held=account.held + request.amount)

    record = AuthRecord(
        request.request_id, request.pan_token, request.kind, request.amount, request.currency,
        request.merchant_id, code, frozenset(flags), now, request.atc, request.arqc, verified,
        request.original_request_id, hold.hold_id if hold else None,
    )  # fmt: skip
    if kind is _DEFERRED and code is _APPROVED and original is not None:
        new_original = evolve(original, completed_by=request.request_id)
    return Decision(code, record, new_account, new_card, hold, arpc, new_original)


def _check_reference(
    request: AuthorizationRequest, original: AuthRecord | None, flags: set[Flag]
) -> tuple[ResponseCode | None, bool]:
    """DEFERRED must reuse its own approved verification once; RESUBMISSION needs a verified one."""
    if original is None or original.pan_token != request.pan_token:
        flags.add(Flag.BAD_REFERENCE)
        return RC.INVALID_TRANSACTION, False
    if request.kind is _RESUBMISSION:
        if not original.cryptogram_verified:
            flags.add(Flag.BAD_REFERENCE)
            return RC.INVALID_TRANSACTION, False
        return None, False
    if original.kind not in _VERIFIABLE_ORIGINALS or original.code is not _APPROVED:
        flags.add(Flag.BAD_REFERENCE)
        return RC.INVALID_TRANSACTION, False
    if original.atc != request.atc or not hmac.compare_digest(
        original.arqc or b"", request.arqc or b""
    ):
        flags.add(Flag.FORGED)
        return RC.SECURITY_VIOLATION, False
    if original.completed_by is not None and original.completed_by != request.request_id:
        flags.add(Flag.REPLAYED)
        return RC.SUSPECTED_FRAUD, False
    return None, True


def _funds_and_state(
    card: Card,
    account: Account,
    request: AuthorizationRequest,
    now: datetime,
    policy: BankPolicy,
) -> ResponseCode:
    code = state_code(card, account, now, policy)
    if code is _APPROVED and request.amount > account.balance - account.held:
        return RC.INSUFFICIENT_FUNDS
    return code


def capture(
    account: Account, hold: Hold, amount: int, capture_id: str, now: datetime
) -> tuple[Account, Hold, Capture]:
    """Take ``amount`` (at most the hold) from the account; the rest of the hold is released."""
    if hold.status is not _HOLD_ACTIVE:
        raise HoldError(f"hold {hold.hold_id} is {hold.status.value}, cannot capture")
    if hold.account_id != account.account_id:
        raise HoldError(f"hold {hold.hold_id} is not on account {account.account_id}")
    if not 0 < amount <= hold.amount:
        raise HoldError(f"capture of {amount} outside 1..{hold.amount} for hold {hold.hold_id}")
    new_account = evolve(
        account,
        balance=account.balance - amount,
        held=account.held - hold.amount,
        last_movement=now,
    )
    new_hold = evolve(hold, status=HoldStatus.CAPTURED, settled_at=now)
    cap = Capture(capture_id, hold.hold_id, account.account_id, hold.pan_token, hold.merchant_id,
                  amount, hold.currency, now)
    return new_account, new_hold, cap


def release(account: Account, hold: Hold, now: datetime) -> tuple[Account, Hold]:
    """Give a hold's money back to the available balance."""
    if hold.status is not _HOLD_ACTIVE:
        raise HoldError(f"hold {hold.hold_id} is {hold.status.value}, cannot release")
    new_account = evolve(account, held=account.held - hold.amount)
    return new_account, evolve(hold, status=HoldStatus.RELEASED, settled_at=now)


def reserve(
    account: Account,
    card: Card,
    amount: int,
    currency: str,
    hold_id: str,
    merchant_id: str,
    now: datetime,
    policy: BankPolicy,
) -> tuple[ResponseCode, Account, Hold | None]:
    """Hold ``amount`` for a transfer the bank itself starts (an e-purse load at a branch).

    No cryptogram: the card proves itself to the host in the transfer's own protocol (the
    e-purse's MAC1).  Checks, in order: currency (12), amount (13), the card's state (the
    codes of :data:`STATE_CODES`, 46 for a closed account), funds (51).
    """
    if currency != account.currency:
        return RC.INVALID_TRANSACTION, account, None
    if amount <= 0:
        return RC.INVALID_AMOUNT, account, None
    code = state_code(card, account, now, policy)
    if code is _APPROVED and amount > account.balance - account.held:
        code = RC.INSUFFICIENT_FUNDS
    if code is not _APPROVED:
        return code, account, None
    hold = Hold(hold_id, account.account_id, card.pan_token, merchant_id, amount, currency, now)
    return code, evolve(account, held=account.held + amount), hold
