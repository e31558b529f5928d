"""Caps and monthly spend tiers (tapsim extension: fare_caps.txt).

Caps bound what a card is charged: daily (a service day with a cut-over time, e.g. 04:30 to
04:29 the next day), weekly (from a start day and cut-over), rolling N-day (any window of N x 24
hours).  A journey counts towards the period its first tap falls in, and all of its later
adjustments (tap-off refunds, transfer changes) go to that same period.

Monthly tiers (Beijing style) lower the price of whole journeys started once the card's spend in
the calendar month has reached a threshold: 20 % off from 100 CNY, 50 % off from 150 CNY, none
from 400 CNY.  The spend counted is what was charged.

A cap or tier applies to a card when its rider category and fare media match (empty = any).
Charges for incomplete journeys (the maximum fare) are neither counted nor capped.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import NamedTuple

from fare.clock import DAY, weekday
from fare.model import Cap, CapKind, SpendTier

Tally = tuple[tuple[int, float, int], ...]  # (period or journey key, anchor POSIX time, charged)


class TierTable(NamedTuple):
    cap_id: str
    rider_category_id: str | None
    fare_media_id: str | None
    thresholds: tuple[int, ...]  # ascending
    bps: tuple[int, ...]  # bps[i] applies from thresholds[i - 1]; bps[0] = 0 below the first
    currency: str = ""  # the journeys it counts and discounts (one per cap_id, checked at load)

    def discount_bp(self, spend: int) -> int:
        return self.bps[bisect_right(self.thresholds, spend)]


def tier_tables(tiers: Sequence[SpendTier]) -> tuple[TierTable, ...]:
    grouped: dict[tuple[str, str | None, str | None], list[tuple[int, int]]] = {}
    currency: dict[str, str] = {}
    for t in tiers:
        currency.setdefault(t.cap_id, t.currency)
        grouped.setdefault((t.cap_id, t.rider_category_id, t.fare_media_id), []).append(
            (t.threshold, t.discount_bp))
    tables: list[TierTable] = []
    for (cid, cat, med), steps in grouped.items():
        steps.sort()
        tables.append(TierTable(cid, cat, med, tuple(t for t, _ in steps),
                                (0, *(bp for _, bp in steps)), currency[cid]))
    return tuple(tables)


def applies(cat_rule: str | None, media_rule: str | None, cat: str | None,
            media: str | None) -> bool:
    return (cat_rule is None or cat_rule == cat) and (media_rule is None or media_rule == media)


def period_key(cap: Cap, local: float, journey_no: int) -> int:
    """Which period a journey starting at local time ``local`` (seconds) counts towards."""
    if cap.kind is CapKind.ROLLING:
        return journey_no
    service_day = int((local - cap.start_time) // DAY)
    if cap.kind is CapKind.DAILY:
        return service_day
    return service_day - (weekday(service_day) - cap.start_day) % 7


def headroom(cap: Cap, tally: Tally, key: int, anchor: float) -> int:
    """How much more may be charged to the period of ``key`` (never negative)."""
    if cap.kind is CapKind.ROLLING:
        since = anchor - cap.days * DAY
        used = sum(amount for _, at, amount in tally if since < at <= anchor)
    else:
        used = tally[0][2] if tally and tally[0][0] == key else 0
    return max(0, cap.amount - used)


def add(cap: Cap, tally: Tally, key: int, anchor: float, amount: int) -> Tally:
    """The tally with ``amount`` counted for ``key``.

    Only a card's open journey can still be charged, and it is the card's latest, so a period
    cap needs the latest period only; a rolling cap keeps the journeys inside its window.
    """
    if cap.kind is CapKind.ROLLING:
        since = anchor - cap.days * DAY
        old = 0
        kept: list[tuple[int, float, int]] = []
        for entry in tally:
            if entry[0] == key:
                old = entry[2]
            elif entry[1] > since:
                kept.append(entry)
        kept.append((key, anchor, old + amount))
        return tuple(kept)
    old = tally[0][2] if tally and tally[0][0] == key else 0
    return ((key, anchor, old + amount),)


def discounted(fare: int, bp: int) -> int:
    """``fare`` less ``bp`` basis points, the discount rounded half up to a minor unit."""
    if bp == 0:
        return fare
    return fare - (fare * bp + 5000) // 10000
