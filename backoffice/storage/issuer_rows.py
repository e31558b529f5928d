"""The issuer's records as table rows and back (column order = the ``iss_*`` tables)."""

from __future__ import annotations

import json
from typing import Any

from backoffice.records import from_us, to_us
from issuer.codes import ResponseCode
from issuer.journal import JournalEntry
from issuer.models import (
    Account,
    AccountStatus,
    AuthKind,
    AuthRecord,
    Capture,
    Card,
    CardState,
    Flag,
    Hold,
    HoldStatus,
    Replacement,
    ReplaceReason,
    WrappedKey,
)

ACCOUNT_COLS = (
    "account_id", "bank_id", "currency", "balance", "held", "status", "opened_us",
    "last_movement_us",
)  # fmt: skip
CARD_COLS = (
    "pan_token", "masked_pan", "psn", "account_id", "bank_id", "scheme", "kek_id", "wrapped_key",
    "expires_us", "state", "state_changed_us", "state_before_lost", "replacement", "atc_floor",
    "recent_atcs",
)  # fmt: skip
AUTH_COLS = (
    "request_id", "pan_token", "kind", "amount", "currency", "merchant_id", "code", "flags",
    "at_us", "atc", "arqc", "verified", "original_request_id", "hold_id", "completed_by",
)  # fmt: skip
HOLD_COLS = (
    "hold_id", "account_id", "pan_token", "merchant_id", "amount", "currency", "created_us",
    "status", "settled_us",
)  # fmt: skip
CAPTURE_COLS = (
    "capture_id", "hold_id", "account_id", "pan_token", "merchant_id", "amount", "currency",
    "at_us",
)  # fmt: skip

Row = tuple[Any, ...]


def account_row(a: Account) -> Row:
    return (
        a.account_id, a.bank_id, a.currency, a.balance, a.held, a.status.value,
        to_us(a.opened_at), to_us(a.last_movement),
    )  # fmt: skip


def account_from(r: Row) -> Account:
    return Account(r[0], r[1], r[2], r[3], r[4], AccountStatus(r[5]), from_us(r[6]), from_us(r[7]))


def _replacement_json(rep: Replacement | None) -> str | None:
    if rep is None:
        return None
    return json.dumps(
        {
            "new_token": rep.new_token,
            "same_bank": rep.same_bank,
            "reason": rep.reason.value,
            "at_us": to_us(rep.at),
            "balance_moved": rep.balance_moved,
        },
        sort_keys=True,
    )


def _replacement(text: str | None) -> Replacement | None:
    if text is None:
        return None
    d = json.loads(text)
    return Replacement(
        new_token=d["new_token"],
        same_bank=bool(d["same_bank"]),
        reason=ReplaceReason(d["reason"]),
        at=from_us(int(d["at_us"])),
        balance_moved=bool(d["balance_moved"]),
    )


def card_row(c: Card) -> Row:
    return (
        c.pan_token, c.masked_pan, c.psn, c.account_id, c.bank_id, c.scheme, c.key.kek_id,
        c.key.blob.hex(), to_us(c.expires_at), c.state.value, to_us(c.state_changed_at),
        c.state_before_lost.value if c.state_before_lost else None,
        _replacement_json(c.replacement), c.atc_floor,
        ",".join(str(a) for a in sorted(c.recent_atcs)),
    )  # fmt: skip


def card_from(r: Row) -> Card:
    return Card(
        pan_token=r[0],
        masked_pan=r[1],
        psn=r[2],
        account_id=r[3],
        bank_id=r[4],
        scheme=r[5],
        key=WrappedKey(r[6], bytes.fromhex(r[7])),
        expires_at=from_us(r[8]),
        state=CardState(r[9]),
        state_changed_at=from_us(r[10]),
        state_before_lost=CardState(r[11]) if r[11] else None,
        replacement=_replacement(r[12]),
        atc_floor=r[13],
        recent_atcs=frozenset(int(x) for x in r[14].split(",") if x),
    )


def auth_row(a: AuthRecord) -> Row:
    return (
        a.request_id, a.pan_token, a.kind.value, a.amount, a.currency, a.merchant_id,
        a.code.value, ",".join(sorted(f.value for f in a.flags)), to_us(a.at), a.atc,
        a.arqc.hex() if a.arqc is not None else None, int(a.cryptogram_verified),
        a.original_request_id, a.hold_id, a.completed_by,
    )  # fmt: skip


def auth_from(r: Row) -> AuthRecord:
    return AuthRecord(
        request_id=r[0],
        pan_token=r[1],
        kind=AuthKind(r[2]),
        amount=r[3],
        currency=r[4],
        merchant_id=r[5],
        code=ResponseCode(r[6]),
        flags=frozenset(Flag(f) for f in r[7].split(",") if f),
        at=from_us(r[8]),
        atc=r[9],
        arqc=bytes.fromhex(r[10]) if r[10] is not None else None,
        cryptogram_verified=bool(r[11]),
        original_request_id=r[12],
        hold_id=r[13],
        completed_by=r[14],
    )


def hold_row(h: Hold) -> Row:
    return (
        h.hold_id, h.account_id, h.pan_token, h.merchant_id, h.amount, h.currency,
        to_us(h.created_at), h.status.value,
        to_us(h.settled_at) if h.settled_at is not None else None,
    )  # fmt: skip


def hold_from(r: Row) -> Hold:
    return Hold(
        r[0], r[1], r[2], r[3], r[4], r[5], from_us(r[6]), HoldStatus(r[7]),
        from_us(r[8]) if r[8] is not None else None,
    )  # fmt: skip


def capture_row(c: Capture) -> Row:
    return (
        c.capture_id, c.hold_id, c.account_id, c.pan_token, c.merchant_id, c.amount,
        c.currency, to_us(c.at),
    )  # fmt: skip


def capture_from(r: Row) -> Capture:
    return Capture(r[0], r[1], r[2], r[3], r[4], r[5], r[6], from_us(r[7]))


def journal_row(e: JournalEntry) -> Row:
    return (e.entry_id, to_us(e.at), e.debit, e.credit, e.amount, e.currency, e.ref)


def journal_from(r: Row) -> JournalEntry:
    return JournalEntry(r[0], from_us(r[1]), r[2], r[3], int(r[4]), r[5], r[6])
