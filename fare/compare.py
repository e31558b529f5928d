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

Pure, and one pass: each tap is priced under A and B (``fare.engine.price_into``, the loop body
of ``fare.engine.price``, and ``close_card`` at the end, as ``price`` does) and counted at once,
so no list of a million charges is kept.  The pass is the work of pricing twice and little more:
one record per card holds both fare states and its figures (one dictionary lookup per tap for
both feeds' states), the tap's fields and time are read once for both feeds, and the module is
compiled with the engine (setup.py), so the loop calls the pricer natively.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from fare.clock import posix_seconds
from fare.engine import CardFareState, close_card, cycles_not_collected, feed_index, price_into
from fare.explain import Charge
from fare.model import Feed, Tap

SCHEMA: Final = "tapsim.fare.compare"
SCHEMA_VERSION: Final = 1
DIMENSIONS: Final = ("rider_category", "fare_media", "route", "hour", "day")
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


_Key = tuple[str | None, str | None, str]  # category, medium, route (within a time bucket)


class _Sums:
    """Revenue under A and B of one cell (category, medium, route, time bucket)."""

    __slots__ = ("a", "b")

    def __init__(self, a: int, b: int) -> None:
        self.a = a
        self.b = b


class _Rider:
    """One card in the pass: its fare state under each feed, its totals, its current journey
    (A's number, and what A and B charged for it so far) and the cell of its last tap, where a
    late charge lands (an incomplete journey is settled at the card's next tap, or at the end,
    and its leg was the card's last tap).  One record per card, so a tap costs one lookup."""

    __slots__ = ("a", "b", "cell", "journey", "journey_a", "journey_b", "state_a", "state_b")

    def __init__(self, state_a: CardFareState, state_b: CardFareState, a: int, b: int,
                 journey: int, cell: _Sums) -> None:
        self.state_a = state_a
        self.state_b = state_b
        self.a = a
        self.b = b
        self.journey = journey
        self.journey_a = a
        self.journey_b = b
        self.cell = cell


def _compare(feed_a: Feed, feed_b: Feed, taps: list[Tap], top: int) -> dict[str, object]:
    # The hot loop (compiled with the engine, setup.py): both feeds price the tap, one after
    # the other, from the card's one record, and the tap is counted in its cell.
    ix_a, ix_b = feed_index(feed_a), feed_index(feed_b)
    span = _span(feed_a, taps)
    # time bucket -> (category, medium, route) -> sums; the taps come in time order, so the
    # bucket's table changes only when a tap passes its end (no time in the per-tap key)
    cells: dict[float, dict[_Key, _Sums]] = {}
    now: dict[_Key, _Sums] = {}
    start = end = float("-inf")
    riders: dict[str, _Rider] = {}
    changed: list[tuple[int, str, int, int, int]] = []  # (change, card, journey, a, b)
    closed = 0
    out_a: list[Charge] = []
    out_b: list[Charge] = []
    for t in taps:
        time = t.time
        ts = posix_seconds(time)
        card = t.card
        on = t.action == "on"
        tid = t.tap_id
        stop = t.stop_id
        route = t.route_id
        cat = t.rider_category
        media = t.fare_media
        rec = riders.get(card)
        state_a = price_into(ix_a, rec.state_a if rec is not None else None, tid, card, time,
                             stop, route, on, cat, media, out_a, ts)
        state_b = price_into(ix_b, rec.state_b if rec is not None else None, tid, card, time,
                             stop, route, on, cat, media, out_b, ts)
        own_a = out_a[-1]
        a = own_a.amount
        b = out_b[-1].amount
        if rec is not None and (len(out_a) > 1 or len(out_b) > 1):
            _late(rec, out_a, len(out_a) - 1, out_b, len(out_b) - 1)  # the open leg settled
        out_a.clear()
        out_b.clear()
        if not start <= ts < end:
            bucket = ts // span
            start, end = bucket * span, (bucket + 1) * span
            now = cells.setdefault(bucket, {})
        key = (cat, media, route)
        cell = now.get(key)
        if cell is None:
            cell = now[key] = _Sums(a, b)
        else:
            cell.a += a
            cell.b += b
        jno = own_a.journey
        if rec is None:
            riders[card] = _Rider(state_a, state_b, a, b, jno, cell)
            continue
        rec.state_a = state_a
        rec.state_b = state_b
        if rec.journey != jno:
            closed += 1
            if rec.journey_a != rec.journey_b:
                changed.append((rec.journey_b - rec.journey_a, card, rec.journey, rec.journey_a,
                                rec.journey_b))
            rec.journey = jno
            rec.journey_a = a
            rec.journey_b = b
        else:
            rec.journey_a += a
            rec.journey_b += b
        rec.a += a
        rec.b += b
        rec.cell = cell
    totals: dict[str, list[int]] = {}
    for card, rec in riders.items():  # legs left open: incomplete, as fare.engine.price has it
        _late(rec, close_card(feed_a, rec.state_a)[1], -1, close_card(feed_b, rec.state_b)[1], -1)
        totals[card] = [rec.a, rec.b]
        if rec.journey_a != rec.journey_b:
            changed.append((rec.journey_b - rec.journey_a, card, rec.journey, rec.journey_a,
                            rec.journey_b))
    return _document(feed_a, feed_b, len(taps), cells, totals, (closed + len(riders), changed),
                     top, span)


def _late(rec: _Rider, charges_a: list[Charge], n_a: int, charges_b: list[Charge],
          n_b: int) -> None:
    """Charges for the card's earlier tap (an incomplete journey; the first ``n`` of each list,
    all of it when ``n`` is -1): to that tap's cell, the card and its current journey."""
    cell = rec.cell
    for c in (charges_a if n_a < 0 else charges_a[:n_a]):
        rec.a += c.amount
        rec.journey_a += c.amount
        cell.a += c.amount
    for c in (charges_b if n_b < 0 else charges_b[:n_b]):
        rec.b += c.amount
        rec.journey_b += c.amount
        cell.b += c.amount


def _span(feed: Feed, taps: list[Tap]) -> int:
    """Seconds of the time buckets counted by: an hour when the zone's UTC offset is whole
    hours at both ends of the taps (local hours are then whole UTC hours), else a quarter."""
    for t in (taps[:1] + taps[-1:]):
        off = t.time.astimezone(feed.timezone).utcoffset()
        if off is None or off.total_seconds() % 3600:
            return _BUCKET
    return 3600


def _document(feed_a: Feed, feed_b: Feed, n_taps: int, cells: dict[float, dict[_Key, _Sums]],
              riders: dict[str, list[int]],
              journeys: tuple[int, list[tuple[int, str, int, int, int]]],
              top: int, span: int) -> dict[str, object]:
    default = feed_a.default_rider_category or "none"
    tz = feed_a.timezone
    by: dict[str, dict[object, list[int]]] = {d: {} for d in DIMENSIONS}
    total_a = total_b = 0
    for bucket, table in cells.items():
        dt = datetime.fromtimestamp(int(bucket) * span, tz)
        day, hour = dt.date().isoformat(), dt.hour
        for (cat, media, route), sums in table.items():
            a, b = sums.a, sums.b
            total_a += a
            total_b += b
            values = (cat or default, media or "none", route, hour, day)
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
