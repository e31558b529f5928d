"""The issuer's records: accounts, cards, holds, authorizations, captures.

All are frozen: the decision functions take records and return new ones, so a caller that
does not persist a decision has changed nothing.  Money is integer minor units (fen).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar, cast

from issuer.codes import ResponseCode

T = TypeVar("T")


_Evolver = Callable[[Any, dict[str, object]], Any]
_EVOLVERS: dict[tuple[type, tuple[str, ...]], _Evolver] = {}


def evolve(record: T, **changes: object) -> T:
    """A copy of a frozen slotted record with some fields changed.

    ``dataclasses.replace`` without its per-call field introspection: the issuer makes
    several copies per request, so each (record type, changed fields) pair gets a copier of
    straight-line code, built once, as ``dataclasses`` builds ``__init__``.  Unknown field
    names raise TypeError.
    """
    cls = type(record)
    key = (cls, tuple(changes))
    copier = _EVOLVERS.get(key)
    if copier is None:
        copier = _EVOLVERS[key] = _copier(cls, key[1])
    return cast(T, copier(record, changes))


def _copier(cls: type, changed: tuple[str, ...]) -> _Evolver:
    slots: tuple[str, ...] = cls.__slots__  # type: ignore[attr-defined]
    unknown = set(changed) - set(slots)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    # Field names are the class's own identifiers (never data), one slot setter each.
    lines = ["def copy(record, changes):", "    new = new_record(cls)"]
    for i, name in enumerate(slots):
        value = f"changes[{name!r}]" if name in changed else f"record.{name}"
        lines.append(f"    set_{i}(new, {value})")
    lines.append("    return new")
    namespace: dict[str, Any] = {"new_record": object.__new__, "cls": cls}
    namespace.update({f"set_{i}": getattr(cls, name).__set__ for i, name in enumerate(slots)})
    exec("\n".join(lines), namespace)  # noqa: S102 - generated from the class's field names
    return cast(_Evolver, namespace["copy"])


def _slot_init(cls: type[T]) -> type[T]:
    """Give a frozen slotted dataclass an ``__init__`` that fills its slots directly.

    The one ``dataclass`` writes goes through ``object.__setattr__`` for every field (the
    class is frozen); the issuer builds several records per request, so this one calls
    each slot's own setter instead: the same signature, defaults and result, in about
    half the time.  Built once per class from its field names, as ``evolve``'s copiers.
    """
    params: list[str] = []
    lines: list[str] = []
    namespace: dict[str, Any] = {}
    for i, f in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]
        if f.default_factory is not dataclasses.MISSING or not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: only plain fields are supported")
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"default_{i}"] = f.default
            params.append(f"{f.name}=default_{i}")
        namespace[f"set_{i}"] = getattr(cls, f.name).__set__
        lines.append(f"    set_{i}(self, {f.name})")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(lines) + "\n"
    exec(source, namespace)  # noqa: S102 - generated from the class's field names
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


class CardState(StrEnum):
    """The lifecycle states of DESIGN.md (see issuer/README.md for the transitions)."""

    NOT_ACTIVATED = "not_activated"
    ACTIVE = "active"
    LOST = "lost"
    SEALED = "sealed"
    DORMANT = "dormant"
    EXPIRED = "expired"
    REPLACED = "replaced"
    CANCELLED = "cancelled"


class AccountStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class ReplaceReason(StrEnum):
    RENEWAL = "renewal"  # allowed from 60 days before expiry
    LOSS = "loss"
    DAMAGE = "damage"


class AuthKind(StrEnum):
    """What an authorization request is for (UnionPay ODA / Visa-Mastercard MTT usage)."""

    ACCOUNT_VERIFICATION = "account_verification"  # first use: nominal, amount 0 or a small hold
    PURCHASE = "purchase"  # a fresh cryptogram for a real amount (debt recovery by tap)
    DEFERRED = "deferred"  # the aggregate's charge, reusing the verified first-use cryptogram
    RESUBMISSION = "resubmission"  # debt recovery by schedule: no cryptogram, refers to original


class Flag(StrEnum):
    """Why a declined request deserves a second look (fraud desk)."""

    FORGED = "forged_cryptogram"
    REPLAYED = "replayed_atc"
    BAD_REFERENCE = "bad_reference"


class HoldStatus(StrEnum):
    ACTIVE = "active"
    CAPTURED = "captured"
    RELEASED = "released"


@_slot_init
@dataclass(frozen=True, slots=True)
class Account:
    """A financial account at one bank."""

    account_id: str
    bank_id: str
    currency: str
    balance: int
    held: int
    status: AccountStatus
    opened_at: datetime
    last_movement: datetime

    @property
    def available(self) -> int:
        return self.balance - self.held


@_slot_init
@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A card key wrapped (RFC 3394) under the key store's KEK: safe to keep in a database."""

    kek_id: str
    blob: bytes = field(repr=False)


@_slot_init
@dataclass(frozen=True, slots=True)
class Replacement:
    """What replaced a card, and how far the move of its money has gone."""

    new_token: str
    same_bank: bool
    reason: ReplaceReason
    at: datetime
    balance_moved: bool = False


@_slot_init
@dataclass(frozen=True, slots=True)
class Card:
    """A card as its bank knows it: by PAN token, never by PAN."""

    pan_token: str
    masked_pan: str
    psn: str
    account_id: str
    bank_id: str
    scheme: str
    key: WrappedKey = field(repr=False)
    expires_at: datetime
    state: CardState
    state_changed_at: datetime
    state_before_lost: CardState | None = None
    replacement: Replacement | None = None
    atc_floor: int = -1  # every ATC at or below is treated as seen
    recent_atcs: frozenset[int] = frozenset()  # seen ATCs above the floor


@_slot_init
@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """An authorization from an acquirer (the transit back office).

    ``ac_data`` is exactly what the card computed the ARQC over (the CDOL/PDOL data);
    the session key comes from ``atc``.  ``request_id`` is the acquirer's idempotency key.
    """

    request_id: str
    pan_token: str
    kind: AuthKind
    amount: int
    currency: str
    merchant_id: str
    atc: int | None = None
    arqc: bytes | None = None
    ac_data: bytes | None = None
    original_request_id: str | None = None
    online: bool = False  # the card is waiting for an ARPC


@_slot_init
@dataclass(frozen=True, slots=True)
class AuthRecord:
    """What the issuer keeps of every authorization it answered."""

    request_id: str
    pan_token: str
    kind: AuthKind
    amount: int
    currency: str
    merchant_id: str
    code: ResponseCode
    flags: frozenset[Flag]
    at: datetime
    atc: int | None
    arqc: bytes | None
    cryptogram_verified: bool
    original_request_id: str | None
    hold_id: str | None
    completed_by: str | None = None  # the DEFERRED request that used this verification


@_slot_init
@dataclass(frozen=True, slots=True)
class Hold:
    """Money reserved on an account by an approved authorization, until capture or release."""

    hold_id: str
    account_id: str
    pan_token: str
    merchant_id: str
    amount: int
    currency: str
    created_at: datetime
    status: HoldStatus = HoldStatus.ACTIVE
    settled_at: datetime | None = None


@_slot_init
@dataclass(frozen=True, slots=True)
class Capture:
    """Money taken from an account for a merchant; ``capture_id`` is the idempotency key."""

    capture_id: str
    hold_id: str
    account_id: str
    pan_token: str
    merchant_id: str
    amount: int
    currency: str
    at: datetime


@_slot_init
@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :func:`issuer.authorization.authorize` with the records it changes."""

    code: ResponseCode
    record: AuthRecord
    account: Account
    card: Card
    hold: Hold | None = None
    arpc: bytes | None = None
    original: AuthRecord | None = None  # the referenced record, updated when a DEFERRED used it

    @property
    def approved(self) -> bool:
        return self.code is ResponseCode.APPROVED

    @property
    def flags(self) -> frozenset[Flag]:
        return self.record.flags


@_slot_init
@dataclass(frozen=True, slots=True)
class AuthResponse:
    """What goes back to the acquirer (no account data)."""

    request_id: str
    code: ResponseCode
    flags: frozenset[Flag]
    hold_id: str | None
    arpc: bytes | None = None

    @property
    def approved(self) -> bool:
        return self.code is ResponseCode.APPROVED
