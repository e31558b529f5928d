"""The back office's working records (in memory) and the rows storage keeps of them.

The core keeps what it needs to decide in memory (one writer per database) and, per batch,
hands storage a :class:`Changes` set of rows to write in one transaction.  After a crash
the core is rebuilt from a :class:`Snapshot` read back from storage.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Final, NamedTuple

from mypy_extensions import mypyc_attr

from backoffice.ledger import Entry, Line
from backoffice.taps import Action, TapRecord
from fare.clock import epoch_us

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(t: datetime) -> int:
    """Exact microseconds since the epoch of an aware time (no float rounding)."""
    return epoch_us(t)


_ZONES: dict[int, timezone] = {}  # one fixed-offset zone object per offset, not per time


def from_us(us: int, offset_s: int = 0) -> datetime:
    t = EPOCH + timedelta(microseconds=us)
    if offset_s == 0:
        return t
    zone = _ZONES.get(offset_s)
    if zone is None:
        zone = _ZONES[offset_s] = timezone(timedelta(seconds=offset_s))
    return t.astimezone(zone)


class AggStatus(StrEnum):
    OPEN = "open"
    CHARGED = "charged"  # captured at the issuer (or nothing to charge)
    DEBT = "debt"  # the charge was declined: a debt to recover


class DebtStatus(StrEnum):
    OPEN = "open"  # scheduled retries continue
    WRITTEN_OFF = "written_off"  # retries exhausted; still recoverable by the rider's next tap
    RECOVERED = "recovered"


# -- working records ------------------------------------------------------------------------


@mypyc_attr(acyclic=True)
class PricedTap:
    """An accepted tap with its price (kept in memory while its aggregate is open).

    A plain class rather than a dataclass: one is made for every tap, and compiled (mypyc) a
    plain class is built natively while a dataclass runs its generated ``__init__``.

    ``explain``, the sentence saying why the fare is what it is, may be left to the pricer
    (:meth:`explain_later`): made when first read, which for most taps is when their row is
    written, so a core that keeps no rows never makes it (the fare engine's own charges work
    the same way, fare.explain).
    """

    __slots__ = ("_explain", "_render", "_why", "aggregate_id", "amount", "posted",
                 "received_us", "service_day", "tap", "time_us")

    def __init__(
        self, tap: TapRecord, service_day: str, amount: int, explain: str, aggregate_id: str,
        posted: int = 0, received_us: int = 0, time_us: int | None = None,
    ) -> None:  # fmt: skip
        self.tap = tap
        self.service_day = service_day
        self.amount = amount
        self._explain = explain
        self._why: object = None
        self._render: Callable[[object], str] | None = None
        self.aggregate_id = aggregate_id
        self.posted = posted  # the amount of its ``fare:`` entry (later changes: ``adj:``)
        self.received_us = received_us
        self.time_us = to_us(tap.time) if time_us is None else time_us  # the tap's time

    @property
    def explain(self) -> str:
        render = self._render
        if render is not None:
            self._explain = render(self._why)
            self._why = self._render = None
        return self._explain

    @explain.setter
    def explain(self, text: str) -> None:
        self._explain = text
        self._why = self._render = None

    def explain_later(self, why: object, render: Callable[[object], str]) -> None:
        """The explanation is ``render(why)``, made when first read (at most once)."""
        self._why = why
        self._render = render

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return PricedTap, (
            self.tap, self.service_day, self.amount, self.explain, self.aggregate_id,
            self.posted, self.received_us, self.time_us,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"PricedTap(tap_id={self.tap.tap_id!r}, service_day={self.service_day!r}, "
            f"amount={self.amount}, aggregate_id={self.aggregate_id!r}, posted={self.posted})"
        )


@dataclass(slots=True)
class Aggregate:
    """Fares of one card gathered into one charge (ODA / MTT)."""

    aggregate_id: str
    pan_token: str
    service_day: str
    first_us: int  # time of its earliest tap (microseconds since the epoch)
    last_us: int  # (last_us, last_tap_id): its latest tap, which detects late arrivals
    last_tap_id: str
    fare_state_at_open: object | None
    total: int = 0
    tap_count: int = 0
    status: AggStatus = AggStatus.OPEN
    auth_ref: str | None = None  # the request that spent a cryptogram for this aggregate
    verified: bool = False  # ... and was approved: the charge may reuse its cryptogram
    atc: int | None = None
    arqc: bytes | None = None
    ac_data: bytes | None = None
    nominal_hold: str | None = None
    closed_at: datetime | None = None
    close_reason: str = ""
    charge_ref: str | None = None
    charge_code: str = ""
    taps: list[PricedTap] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)


@dataclass(slots=True)
class Debt:
    """A declined aggregate charge, owed by the card until recovered."""

    debt_id: str
    pan_token: str
    amount: int
    lines: list[Line]
    original_ref: str | None
    created_at: datetime
    next_at: datetime | None
    attempts: int = 0
    status: DebtStatus = DebtStatus.OPEN
    last_code: str = ""
    settled_at: datetime | None = None


ATC_SAVED: Final = 1 << 62  # TransitCard.atc_unsaved: the card's ATC window is saved as it is


@dataclass(slots=True)
class TransitCard:
    """What the back office knows of one card (by token): a few words, not its history.

    ATCs as issuers keep them: the highest seen (``atc_high``) and a bitmap of the window
    below it (bit ``i``: ``atc_high - i`` seen).  ``raw_state`` is the stored fare state
    (hex) of a card restored without open state, decoded at its next tap.
    """

    pan_token: str
    masked_pan: str
    fare_state: object | None = None
    open_agg: Aggregate | None = None
    atc_high: int = -1
    atc_bits: int = 0
    debts: dict[str, Debt] = field(default_factory=dict)  # unpaid only
    denied: bool = False
    dirty: bool = False  # changed since the core last handed out its rows (in _dirty_cards)
    atc_unsaved: int = ATC_SAVED  # UTC day of its oldest tap not covered by card_atcs
    raw_state: str | None = None
    last_day: int = -1  # UTC day of its newest tap (backoffice.idle: idle past the floor)


def atc_seen(card: TransitCard, atc: int, window: int) -> bool:
    """True when ``atc`` was seen for the card, or is below its window (refused either way)."""
    d = card.atc_high - atc
    return d >= 0 and (d >= window or bool((card.atc_bits >> d) & 1))


def remember_atc(card: TransitCard, atc: int, window: int) -> None:
    """Record ``atc`` in the card's high-water mark and window."""
    d = atc - card.atc_high
    if d > 0:
        card.atc_bits = ((card.atc_bits << d) | 1) & ((1 << window) - 1) if d < window else 1
        card.atc_high = atc
    elif -d < window:
        card.atc_bits |= 1 << -d


# -- rows -------------------------------------------------------------------------------------


class TapRow(NamedTuple):
    tap_id: str
    pan_token: str
    masked_pan: str
    validator_id: str
    operator_id: str
    time_us: int
    utc_offset_s: int
    service_day: str
    stop_id: str
    route_id: str
    action: str
    atc: int
    arqc: str
    ac_data: str
    scheme: str
    rider_category: str
    fare_media: str
    amount: int
    explain: str
    aggregate_id: str
    received_us: int


def tap_row(p: PricedTap) -> TapRow:
    t = p.tap
    offset = t.time.utcoffset()
    return TapRow(
        t.tap_id, t.pan_token, t.masked_pan, t.validator_id, t.operator_id, p.time_us,
        int(offset.total_seconds()) if offset else 0, p.service_day, t.stop_id, t.route_id,
        t.action.value, t.atc, t.arqc.hex(), t.ac_data.hex(), t.scheme, t.rider_category,
        t.fare_media, p.amount, p.explain, p.aggregate_id, p.received_us,
    )  # fmt: skip


def priced_tap(row: TapRow) -> PricedTap:
    """A stored tap of an open aggregate, back in memory; the few distinct labels (operator,
    validator, stop, route, scheme, category, medium, day, explanation) are shared, not one
    copy per tap read back (a restart holds every open aggregate's taps)."""
    i = sys.intern
    tap = TapRecord(
        tap_id=row.tap_id,
        validator_id=i(row.validator_id),
        operator_id=i(row.operator_id),
        pan_token=row.pan_token,
        masked_pan=row.masked_pan,
        time=from_us(row.time_us, row.utc_offset_s),
        stop_id=i(row.stop_id),
        route_id=i(row.route_id),
        action=Action(row.action),
        atc=row.atc,
        arqc=bytes.fromhex(row.arqc),
        ac_data=bytes.fromhex(row.ac_data),
        scheme=i(row.scheme),
        rider_category=i(row.rider_category),
        fare_media=i(row.fare_media),
    )
    return PricedTap(
        tap, i(row.service_day), row.amount, i(row.explain), row.aggregate_id, row.amount,
        row.received_us, row.time_us,
    )  # fmt: skip


def lines_json(lines: list[Line]) -> str:
    if not lines:
        return "[]"
    return json.dumps([list(x) for x in lines], separators=(",", ":"))


def lines_from_json(text: str) -> list[Line]:
    return [Line(str(op), str(day), int(amt)) for op, day, amt in json.loads(text)]


def _us(t: datetime | None) -> int | None:
    return None if t is None else to_us(t)


def _dt(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


class AggregateRow(NamedTuple):
    aggregate_id: str
    pan_token: str
    service_day: str
    first_us: int
    last_us: int
    last_tap_id: str
    fare_state_at_open: str  # hex of the pricer's encoding
    total: int
    tap_count: int
    status: str
    auth_ref: str | None
    verified: int
    atc: int | None
    arqc: str | None
    ac_data: str | None
    nominal_hold: str | None
    closed_us: int | None
    close_reason: str
    charge_ref: str | None
    charge_code: str
    lines: str


def aggregate_row(a: Aggregate, encoded_state: bytes) -> AggregateRow:
    return AggregateRow(
        a.aggregate_id, a.pan_token, a.service_day, a.first_us, a.last_us, a.last_tap_id,
        encoded_state.hex(), a.total, a.tap_count, a.status.value, a.auth_ref,
        int(a.verified), a.atc, a.arqc.hex() if a.arqc is not None else None,
        a.ac_data.hex() if a.ac_data is not None else None, a.nominal_hold, _us(a.closed_at),
        a.close_reason, a.charge_ref, a.charge_code, lines_json(a.lines),
    )  # fmt: skip


def aggregate_from_row(r: AggregateRow, state: object | None) -> Aggregate:
    return Aggregate(
        aggregate_id=r.aggregate_id,
        pan_token=r.pan_token,
        service_day=r.service_day,
        first_us=r.first_us,
        last_us=r.last_us,
        last_tap_id=r.last_tap_id,
        fare_state_at_open=state,
        total=r.total,
        tap_count=r.tap_count,
        status=AggStatus(r.status),
        auth_ref=r.auth_ref,
        verified=bool(r.verified),
        atc=r.atc,
        arqc=bytes.fromhex(r.arqc) if r.arqc is not None else None,
        ac_data=bytes.fromhex(r.ac_data) if r.ac_data is not None else None,
        nominal_hold=r.nominal_hold,
        closed_at=_dt(r.closed_us),
        close_reason=r.close_reason,
        charge_ref=r.charge_ref,
        charge_code=r.charge_code,
        lines=lines_from_json(r.lines),
    )


class DebtRow(NamedTuple):
    debt_id: str
    pan_token: str
    amount: int
    lines: str
    original_ref: str | None
    created_us: int
    next_us: int | None
    attempts: int
    status: str
    last_code: str
    settled_us: int | None


def debt_row(d: Debt) -> DebtRow:
    return DebtRow(
        d.debt_id, d.pan_token, d.amount, lines_json(d.lines), d.original_ref,
        to_us(d.created_at), _us(d.next_at), d.attempts, d.status.value, d.last_code,
        _us(d.settled_at),
    )  # fmt: skip


def debt_from_row(r: DebtRow) -> Debt:
    return Debt(
        debt_id=r.debt_id,
        pan_token=r.pan_token,
        amount=r.amount,
        lines=lines_from_json(r.lines),
        original_ref=r.original_ref,
        created_at=from_us(r.created_us),
        next_at=_dt(r.next_us),
        attempts=r.attempts,
        status=DebtStatus(r.status),
        last_code=r.last_code,
        settled_at=_dt(r.settled_us),
    )


class CardRow(NamedTuple):
    pan_token: str
    masked_pan: str
    fare_state: str  # hex
    open_aggregate_id: str | None
    denied: int


class CardAtcRow(NamedTuple):
    """A card's ATC high-water mark and window (bitmap as hex), saved as its taps age out."""

    pan_token: str
    atc_high: int
    atc_bits: str


# What a restart needs of a tap inside the late-arrival horizon (dedupe, ATC window):
# (tap_id, pan_token, atc, time_us, received_us), a plain row (there are many).
RecentTap = tuple[str, str, int, int, int]


class DenyRow(NamedTuple):
    pan_token: str
    masked_pan: str
    reason: str
    since_us: int


class DenyEventRow(NamedTuple):
    """A deny-list delta, in order: what validators receive."""

    pan_token: str
    masked_pan: str
    op: str  # "add" | "remove"
    reason: str
    at_us: int


class EpurseTapRow(NamedTuple):
    """An accepted T-Union e-purse tap, kept for clearing (paid on the chip during the tap).

    ``card_number`` is the e-purse's application serial number (the T-Union card number,
    which diversifies the TAC key; T-Union clearing files carry it), never a bank PAN.
    The clearing fields are None on records from validators that predate them.
    """

    tap_id: str
    issuer_id: str | None
    card_number: str | None
    card_serial: int
    amount: int  # fen, what the chip was debited
    balance_before: int
    balance_after: int
    tac: str  # hex
    psam_id: str
    psam_serial: int
    key_version: int | None
    algorithm_id: int | None
    tac_time: str | None  # YYYYMMDDhhmmss, the wall-clock digits the TAC covers
    day: str  # YYYY-MM-DD, the clearing day (the purchase's local date)
    time_us: int
    operator_id: str
    validator_id: str
    received_us: int


class ClearingItemRow(NamedTuple):
    """What clearing decided for one e-purse record: cleared (money moves) or refused."""

    tap_id: str
    day: str
    issuer_id: str
    operator_id: str
    card_serial: int
    amount: int
    status: str  # "cleared" | "refused"
    reason: str  # "" when cleared
    run_id: str
    cleared_us: int


class RejectRow(NamedTuple):
    reject_id: str  # hash of the scrubbed record: the same record again is not kept twice
    tap_id: str | None
    field: str
    reason: str
    raw: str  # scrubbed JSON
    received_us: int


class AlertRow(NamedTuple):
    """Something for the fraud desk (forged or replayed cryptogram)."""

    alert_id: str
    kind: str
    pan_token: str
    ref: str
    detail: str
    at_us: int


@dataclass(slots=True)
class Changes:
    """Rows produced by one batch, written in one transaction."""

    taps: list[TapRow] = field(default_factory=list)
    tap_updates: list[tuple[int, str, str]] = field(default_factory=list)  # amount, explain, id
    rejects: list[RejectRow] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    aggregates: list[AggregateRow] = field(default_factory=list)
    debts: list[DebtRow] = field(default_factory=list)
    cards: list[CardRow] = field(default_factory=list)
    card_atcs: list[CardAtcRow] = field(default_factory=list)
    deny_set: list[DenyRow] = field(default_factory=list)
    deny_clear: list[str] = field(default_factory=list)
    deny_events: list[DenyEventRow] = field(default_factory=list)
    alerts: list[AlertRow] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)  # key -> value, upserted

    def __bool__(self) -> bool:
        return any(
            (self.taps, self.tap_updates, self.rejects, self.entries, self.aggregates,
             self.debts, self.cards, self.card_atcs, self.deny_set, self.deny_clear,
             self.deny_events, self.alerts, self.meta)
        )  # fmt: skip


@dataclass(slots=True)
class Snapshot:
    """What the core needs to resume after a restart: open state, never the whole history.

    ``floor_us`` is the oldest tap time the core still takes (None: a database written
    before the horizon existed, whose taps are all ``recent_taps``); ``recent_taps`` are
    the taps from it on, ``reject_ids`` the rejects received since.
    """

    floor_us: int | None = None
    recent_taps: list[RecentTap] = field(default_factory=list)
    reject_ids: set[str] = field(default_factory=set)
    cards: list[CardRow] = field(default_factory=list)
    card_atcs: list[CardAtcRow] = field(default_factory=list)
    open_aggregates: list[AggregateRow] = field(default_factory=list)
    open_taps: list[TapRow] = field(default_factory=list)
    unpaid_debts: list[DebtRow] = field(default_factory=list)
    deny: list[DenyRow] = field(default_factory=list)
    balances: dict[str, int] = field(default_factory=dict)  # ledger balance per account
    fares_total: int = 0
    # One stored fare state (hex) when ``cards`` leaves idle cards out: decoded at start, so
    # a database of another fare feed is still refused then.
    state_sample: str | None = None
