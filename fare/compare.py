"""The question an operator asks before a fare change: what would these taps pay under B?

``compare(feed_a, feed_b, taps)`` prices the same taps under both feeds and returns one
JSON-ready document (schema ``tapsim.fare.compare``, version 1):

* revenue under A and B, and the change, by rider category, fare media, route, hour of day and
  day (local time of feed A);
* riders (cards) paying more, less or the same, with the distribution of the change per rider
  (every distinct change and how many riders have it, and percentiles);
* the journeys whose price changes most.

Attribution: every charge belongs to the tap that made it (an incomplete journey's charge to
its tap on), so a tap's route, time, category and medium are the charge's.  A journey is one of
feed A's journeys (the fare in force); its price under B is what B charges for the same taps,
however B groups them.  A tap with no rider category counts as the feed's default category, a
tap with no medium as ``none``.

Pure: pricing is ``fare.engine.price`` twice; the rest is one pass over the taps.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from fare.clock import posix_seconds
from fare.engine import price
from fare.explain import Charge
from fare.model import Feed, Tap

SCHEMA: Final = "tapsim.fare.compare"
SCHEMA_VERSION: Final = 1
DIMENSIONS: Final = ("rider_category", "fare_media", "route", "hour", "day")
_BUCKET: Final = 900  # zone offsets are whole quarter hours: hour and day are constant in one


class CompareError(ValueError):
    """Two feeds that cannot be compared (different currencies)."""


def compare(feed_a: Feed, feed_b: Feed, taps: Sequence[Tap], top: int = 10) -> dict[str, object]:
    """Price ``taps`` under both feeds and compare (see module docstring)."""
    if feed_a.currency != feed_b.currency:
        raise CompareError(f"the feeds charge in different currencies ({feed_a.currency}, "
                           f"{feed_b.currency}): nothing to compare")
    charges_a = price(feed_a, taps)
    charges_b = price(feed_b, taps)
    return summarise(feed_a, feed_b, taps, charges_a, charges_b, top)


def summarise(feed_a: Feed, feed_b: Feed, taps: Sequence[Tap], charges_a: Sequence[Charge],
              charges_b: Sequence[Charge], top: int = 10) -> dict[str, object]:
    """The comparison document from both feeds' charges for ``taps``."""
    amount_a: dict[str, int] = {}
    journey_of: dict[str, int] = {}
    for c in charges_a:
        tid = c.tap_id
        amount_a[tid] = amount_a.get(tid, 0) + c.amount
        journey_of[tid] = c.journey
    amount_b: dict[str, int] = {}
    for c in charges_b:
        tid = c.tap_id
        amount_b[tid] = amount_b.get(tid, 0) + c.amount

    default = feed_a.default_rider_category or "none"
    tz = feed_a.timezone
    local: dict[int, tuple[str, int]] = {}
    cells: dict[tuple[str, str, str, str, int], list[int]] = {}
    riders: dict[str, list[int]] = {}
    journeys: dict[tuple[str, int], list[int]] = {}
    for t in taps:
        tid = t.tap_id
        a = amount_a.get(tid, 0)
        b = amount_b.get(tid, 0)
        bucket = int(posix_seconds(t.time) // _BUCKET)
        when = local.get(bucket)
        if when is None:
            dt = datetime.fromtimestamp(bucket * _BUCKET, tz)
            when = local[bucket] = (dt.date().isoformat(), dt.hour)
        key = (t.rider_category or default, t.fare_media or "none", t.route_id, when[0],
               when[1])
        cell = cells.get(key)
        if cell is None:
            cells[key] = [a, b]
        else:
            cell[0] += a
            cell[1] += b
        card = t.card
        rider = riders.get(card)
        if rider is None:
            riders[card] = [a, b]
        else:
            rider[0] += a
            rider[1] += b
        jkey = (card, journey_of.get(tid, 0))
        jour = journeys.get(jkey)
        if jour is None:
            journeys[jkey] = [a, b]
        else:
            jour[0] += a
            jour[1] += b

    by: dict[str, dict[object, list[int]]] = {d: {} for d in DIMENSIONS}
    total_a = total_b = 0
    for (cat, media, route, day, hour), (a, b) in cells.items():
        total_a += a
        total_b += b
        for dim, value in zip(DIMENSIONS, (cat, media, route, hour, day), strict=True):
            row = by[dim].get(value)
            if row is None:
                by[dim][value] = [a, b]
            else:
                row[0] += a
                row[1] += b
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "feeds": {"a": feed_a.name, "b": feed_b.name},
        "currency": feed_a.currency,
        "taps": len(taps),
        "total": _ab(total_a, total_b),
        "by": {dim: [{"key": k, **_ab(a, b)} for k, (a, b) in sorted(
            rows.items(), key=lambda kv: (str(type(kv[0])), kv[0]))]
               for dim, rows in by.items()},
        "riders": _riders(riders),
        "journeys": _journeys(journeys, top),
    }


def _ab(a: int, b: int) -> dict[str, int]:
    return {"a": a, "b": b, "change": b - a}


def _riders(riders: dict[str, list[int]]) -> dict[str, object]:
    changes = sorted(b - a for a, b in riders.values())
    counts: dict[int, int] = {}
    for ch in changes:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(changes)

    def pct(p: int) -> int | None:
        # nearest rank: the smallest change with at least p % of riders at or below it
        return changes[max(0, -(-p * n // 100) - 1)] if n else None

    return {
        "count": n,
        "more": sum(1 for ch in changes if ch > 0),
        "less": sum(1 for ch in changes if ch < 0),
        "same": sum(1 for ch in changes if ch == 0),
        "change_distribution": [{"change": ch, "riders": k} for ch, k in sorted(counts.items())],
        "percentiles": {f"p{p}": pct(p) for p in (0, 10, 25, 50, 75, 90, 100)},
    }


def _journeys(journeys: dict[tuple[str, int], list[int]], top: int) -> dict[str, object]:
    changed = [(b - a, card, no, a, b) for (card, no), (a, b) in journeys.items() if a != b]
    most = heapq.nsmallest(top, changed, key=lambda j: (-abs(j[0]), j[1], j[2]))
    return {
        "count": len(journeys),
        "changed": len(changed),
        "top": [{"journey": f"{card}#{no}", "card": card, **_ab(a, b)}
                for _, card, no, a, b in most],
    }
