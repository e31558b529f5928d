"""Debt recovery and the deny list: what the core does about a charge the bank declined.

A declined charge is a :class:`~backoffice.records.Debt`, recovered by the card's next tap
(``rec:``, a fresh cryptogram for all it owes: :func:`recover_by_tap`) or by schedule
(``rs:``, :func:`run_recovery`), else written off as first-ride loss (still recoverable by
tap).  A declined verification or charge puts the card on the deny list
(:func:`deny_add`); the card leaves it in the batch that clears its debts
(:func:`maybe_lift`).

Module functions over the :class:`~backoffice.engine.BackOffice` (``office``), as
:mod:`backoffice.horizon` and :mod:`backoffice.restore`: they read and write its plain
attributes and post through its ``_authorize``, ``_post`` and ``_dirty``; compiled with
the core, so the per-tap path calls them directly.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from backoffice.decisions import may_lift_deny, next_retry
from backoffice.ledger import FIRST_RIDE_LOSS, ISSUER_SETTLEMENT, RECEIVABLE, transfer
from backoffice.outcomes import BatchResult, Outcome
from backoffice.records import (
    Debt,
    DebtStatus,
    DenyEventRow,
    DenyRow,
    TransitCard,
    to_us,
)
from backoffice.taps import TapRecord
from issuer.models import AuthKind, AuthorizationRequest, AuthResponse

if TYPE_CHECKING:
    from backoffice.engine import BackOffice


def run_recovery(office: BackOffice, now: datetime) -> BatchResult:
    """Scheduled debt recovery: resubmit every debt whose retry is due."""
    res = BatchResult()
    for token in sorted(office._debtors):
        card = office.cards[token]
        for debt in sorted(card.debts.values(), key=lambda d: (d.created_at, d.debt_id)):
            if debt.status is not DebtStatus.OPEN or debt.next_at is None:
                continue
            if debt.next_at > now:
                continue
            resubmit(office, card, debt, now, res)
        maybe_lift(office, card, now, res)
    return res


def recover_by_tap(
    office: BackOffice, card: TransitCard, tap: TapRecord, now: datetime, res: BatchResult
) -> tuple[str, AuthResponse]:
    """A card with debts taps: ask for all it owes with the tap's fresh cryptogram, and
    let an approval verify the card's open aggregate (its charge may reuse it)."""
    debts = sorted(card.debts.values(), key=lambda d: (d.created_at, d.debt_id))
    amount = sum(d.amount for d in debts)
    request = AuthorizationRequest(
        request_id="rec:" + tap.tap_id,
        pan_token=card.pan_token,
        kind=AuthKind.PURCHASE,
        amount=amount,
        currency=office.config.currency,
        merchant_id=office.config.merchant_id,
        atc=tap.atc,
        arqc=tap.arqc,
        ac_data=tap.ac_data,
    )
    resp = office._authorize(card, request, now, res)
    if resp.approved:
        assert resp.hold_id is not None
        office.issuer.capture(resp.hold_id, amount, "cap:" + request.request_id, now)
        for d in debts:
            settle_debt(office, card, d, now, res, code=resp.code.value, ref=request.request_id)
    else:
        for d in debts:
            d.last_code = resp.code.value
            office._dirty_debts[d.debt_id] = d
    agg = card.open_agg
    if agg is not None and resp.approved and not agg.verified:
        # The fresh cryptogram verified the account: the aggregate's charge may reuse it.
        agg.auth_ref, agg.verified = request.request_id, True
        agg.atc, agg.arqc, agg.ac_data = tap.atc, tap.arqc, tap.ac_data
        office._dirty_aggs[agg.aggregate_id] = agg
    maybe_lift(office, card, now, res)
    return request.request_id, resp


def resubmit(
    office: BackOffice, card: TransitCard, debt: Debt, now: datetime, res: BatchResult
) -> None:
    """One scheduled retry of a debt (no cryptogram: a resubmission of the original); after
    the last one the debt is written off as first-ride loss."""
    attempt = debt.attempts + 1
    request = AuthorizationRequest(
        request_id=f"rs:{debt.debt_id}:{attempt}",
        pan_token=card.pan_token,
        kind=AuthKind.RESUBMISSION,
        amount=debt.amount,
        currency=office.config.currency,
        merchant_id=office.config.merchant_id,
        original_request_id=debt.original_ref,
    )
    resp = office._authorize(card, request, now, res)
    debt.attempts = attempt
    office._dirty_debts[debt.debt_id] = debt
    if resp.approved:
        assert resp.hold_id is not None
        office.issuer.capture(resp.hold_id, debt.amount, "cap:" + request.request_id, now)
        settle_debt(office, card, debt, now, res, code=resp.code.value, ref=request.request_id)
        return
    debt.last_code = resp.code.value
    debt.next_at = next_retry(debt, office._rec)
    if debt.next_at is None:
        debt.status = DebtStatus.WRITTEN_OFF
        office._post(
            transfer("wo:" + debt.debt_id, FIRST_RIDE_LOSS, RECEIVABLE, debt.lines, to_us(now))
        )
        res.events.append(
            Outcome("written_off", card.masked_pan, debt.debt_id, debt.amount, debt.last_code)
        )


def settle_debt(
    office: BackOffice,
    card: TransitCard,
    debt: Debt,
    now: datetime,
    res: BatchResult,
    *,
    code: str,
    ref: str,
) -> None:
    """A debt paid: the bank's money clears the receivable (or the first-ride loss it was
    written off to), and the card owes it no more."""
    credit = FIRST_RIDE_LOSS if debt.status is DebtStatus.WRITTEN_OFF else RECEIVABLE
    office._post(
        transfer("rec:" + debt.debt_id, ISSUER_SETTLEMENT, credit, debt.lines, to_us(now))
    )
    debt.status = DebtStatus.RECOVERED
    debt.last_code = code
    debt.settled_at = now
    debt.next_at = None
    del card.debts[debt.debt_id]
    if not card.debts:
        office._debtors.discard(card.pan_token)
    office._dirty_debts[debt.debt_id] = debt
    res.events.append(
        Outcome("recovered", card.masked_pan, debt.debt_id, debt.amount, code, ref)
    )


def deny_add(
    office: BackOffice, card: TransitCard, reason: str, now: datetime, res: BatchResult
) -> None:
    """Put the card on the deny list (once), with the event the validators receive."""
    if card.denied:
        return
    card.denied = True
    at = to_us(now)
    row = DenyRow(card.pan_token, card.masked_pan, reason, at)
    office.deny[card.pan_token] = row
    office._deny_set.append(row)
    office._deny_events.append(DenyEventRow(card.pan_token, card.masked_pan, "add", reason, at))
    office._dirty(card)
    res.events.append(Outcome("deny_add", card.masked_pan, card.pan_token, 0, reason))


def maybe_lift(office: BackOffice, card: TransitCard, now: datetime, res: BatchResult) -> None:
    """Take the card off the deny list once it owes nothing and its open aggregate is
    verified (:func:`~backoffice.decisions.may_lift_deny`): in the batch that recovers it."""
    if not card.denied or not may_lift_deny(card):
        return
    card.denied = False
    office.deny.pop(card.pan_token, None)
    office._deny_clear.append(card.pan_token)
    office._deny_events.append(
        DenyEventRow(card.pan_token, card.masked_pan, "remove", "recovered", to_us(now))
    )
    office._dirty(card)
    res.events.append(Outcome("deny_remove", card.masked_pan, card.pan_token))


__all__ = ["deny_add", "maybe_lift", "recover_by_tap", "resubmit", "run_recovery", "settle_debt"]
