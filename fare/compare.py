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

Pure, and one pass: each tap is priced under A and B (``fare.engine.BatchPricer``, what
``fare.engine.price`` does) and counted at once, so no list of a million charges is kept.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from fare.clock import posix_seconds
from fare.engine import BatchPricer, cycles_not_collected, price_into
from fare.explain import Charge, ChargeKind
from fare.model import Feed, Tap

SCHEMA: Final = "tapsim.fare.compare"
SCHEMA_VERSION: Final = 1
DIMENSIONS: Final = ("rider_category", "fare_media", "route", "hour", "day")
_MAX_FARE: Final = ChargeKind.MAX_FARE
_BUCKET: Final = 900  # zone offsets are whole quarter hours: hour and day are constant in one


class CompareError(ValueError):
    """Two feeds that cannot be compared (different currencies)."""


def compare(feed_a: Feed, feed_b: Feed, taps: Sequence[Tap], top: int = 10) -> dict[str, object]:
    """Price ``taps`` under both feeds in one pass and compare (see module docstring)."""
    _one_currency(feed_a, feed_b)
    with cycles_not_collected():
        return _compare(feed_a, feed_b, sorted(taps, key=_tap_time), top)


def _one_currency(feed_a: Feed, feed_b: Feed) -> None:
    """The report sums revenue, riders' changes and journeys in one currency: two feeds that
    charge in different currencies, or a feed of several (fare_products.txt rows in CHF and
    EUR), are refused with what they charge in, never added up."""
    cur_a = feed_a.currencies or (feed_a.currency,)
    cur_b = feed_b.currencies or (feed_b.currency,)
    if len(cur_a) > 1 or len(cur_b) > 1:
        several = feed_a if len(cur_a) > 1 else feed_b
        raise CompareError(
            f"feed {several.name or '?'} charges in several currencies "
            f"({', '.join(several.currencies)}): fare compare sums amounts in one currency and "
            "never adds two; nothing compared")
    if cur_a != cur_b:
        raise CompareError(f"the feeds charge in different currencies ({cur_a[0]}, "
                           f"{cur_b[0]}): nothing to compare")


def _tap_time(tap: Tap) -> datetime:
    return tap.time


_Key = tuple[str | None, str | None, str, float]  # category, medium, route, time bucket


def _compare(feed_a: Feed, feed_b: Feed, taps: list[Tap], top: int) -> dict[str, object]:
    # The hot loop: a tap is counted in two dicts, by (category, medium, route, time bucket)
    # and by card.  A card's record keeps its totals and its current journey (under A), which
    # is where a late charge lands: an incomplete journey is settled at the card's next tap,
    # or at the end, and its leg was the card's last tap (whose cell key the record keeps).
    pa, pb = BatchPricer(feed_a), BatchPricer(feed_b)
    ix_a, ix_b = pa.ix, pb.ix
    states_a, states_b = pa.states, pb.states
    get_a, get_b = states_a.get, states_b.get
    span = _span(feed_a, taps)
    cells: dict[_Key, list[int]] = {}
    # card -> [total A, total B, journey no (A), journey A, journey B, last cell key]
    cards: dict[str, list[Any]] = {}
    changed: list[tuple[int, str, int, int, int]] = []  # (change, card, journey, a, b)
    closed = 0
    out_a: list[Charge] = []
    out_b: list[Charge] = []
    pinto = price_into
    posix = posix_seconds
    get_card = cards.get
    get_cell = cells.get
    for t in taps:
        time = t.time
        ts = posix(time)
        card = t.card
        on = t.action == "on"
        tid, stop, route, cat, media = t.tap_id, t.stop_id, t.route_id, t.rider_category, \
            t.fare_media
        states_a[card] = pinto(ix_a, get_a(card), tid, card, time, stop, route, on, cat, media,
                               out_a, ts)
        states_b[card] = pinto(ix_b, get_b(card), tid, card, time, stop, route, on, cat, media,
                               out_b, ts)
        own_a = out_a[-1]
        a = own_a.amount
        b = out_b[-1].amount
        rec = get_card(card)
        if len(out_a) > 1 or len(out_b) > 1:  # the card's open leg settled first
            _late(cells, cards, out_a[:-1], 0)
            _late(cells, cards, out_b[:-1], 1)
        out_a.clear()
        out_b.clear()
        key = (cat, media, route, ts // span)
        cell = get_cell(key)
        if cell is None:
            cells[key] = [a, b]
        else:
            cell[0] += a
            cell[1] += b
        jno = own_a.journey
        if rec is None:
            cards[card] = [a, b, jno, a, b, key]
            continue
        if rec[2] != jno:
            closed += 1
            if rec[3] != rec[4]:
                changed.append((rec[4] - rec[3], card, rec[2], rec[3], rec[4]))
            rec[2] = jno
            rec[3] = a
            rec[4] = b
        else:
            rec[3] += a
            rec[4] += b
        rec[0] += a
        rec[1] += b
        rec[5] = key
    pa.finish(out_a)
    pb.finish(out_b)
    _late(cells, cards, out_a, 0)
    _late(cells, cards, out_b, 1)
    riders: dict[str, list[int]] = {}
    for card, rec in cards.items():
        riders[card] = [rec[0], rec[1]]
        if rec[3] != rec[4]:
            changed.append((rec[4] - rec[3], card, rec[2], rec[3], rec[4]))
    return _document(feed_a, feed_b, len(taps), cells, riders, (closed + len(cards), changed),
                     top, span)


def _late(cells: dict[_Key, list[int]], cards: dict[str, list[Any]], charges: list[Charge],
          side: int) -> None:
    """Charges for a card's earlier tap (an incomplete journey): to that tap's cell, the card
    and its current journey."""
    for c in charges:
        rec = cards[c.card]
        rec[side] += c.amount
        rec[3 + side] += c.amount
        cells[rec[5]][side] += c.amount


def _span(feed: Feed, taps: list[Tap]) -> int:
    """Seconds of the time buckets counted by: an hour when the zone's UTC offset is whole
    hours at both ends of the taps (local hours are then whole UTC hours), else a quarter."""
    for t in (taps[:1] + taps[-1:]):
        off = t.time.astimezone(feed.timezone).utcoffset()
        if off is None or off.total_seconds() % 3600:
            return _BUCKET
    return 3600


def _document(feed_a: Feed, feed_b: Feed, n_taps: int, cells: dict[_Key, list[int]],
              riders: dict[str, list[int]],
              journeys: tuple[int, list[tuple[int, str, int, int, int]]],
              top: int, span: int) -> dict[str, object]:
    default = feed_a.default_rider_category or "none"
    tz = feed_a.timezone
    local: dict[float, tuple[str, int]] = {}
    by: dict[str, dict[object, list[int]]] = {d: {} for d in DIMENSIONS}
    total_a = total_b = 0
    for (cat, media, route, bucket), (a, b) in cells.items():
        total_a += a
        total_b += b
        when = local.get(bucket)
        if when is None:
            dt = datetime.fromtimestamp(int(bucket) * span, tz)
            when = local[bucket] = (dt.date().isoformat(), dt.hour)
        values = (cat or default, media or "none", route, when[1], when[0])
        for dim, value in zip(DIMENSIONS, values, strict=True):
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
        "taps": n_taps,
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


def _journeys(journeys: tuple[int, list[tuple[int, str, int, int, int]]],
              top: int) -> dict[str, object]:
    count, changed = journeys
    most = heapq.nsmallest(top, changed, key=lambda j: (-abs(j[0]), j[1], j[2]))
    return {
        "count": count,
        "changed": len(changed),
        "top": [{"journey": f"{card}#{no}", "card": card, **_ab(a, b)}
                for _, card, no, a, b in most],
    }
