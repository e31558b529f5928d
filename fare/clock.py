"""Local time of the feed's agency time zone, as cheap integer lookups.

Pricing needs, per tap, the local day and time of day (timeframes, service days, weeks, months).
``datetime.astimezone`` per tap is too slow for a million taps a second-ish budget, so the UTC
offset is cached per 15-minute bucket of POSIX time: every zone transition since 1970 falls on a
quarter hour, so an offset is constant inside a bucket.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from datetime import UTC, date, datetime, timezone
from typing import Final
from zoneinfo import ZoneInfo

from fare.model import Service, Timeframe

DAY: Final = 86_400
_BUCKET: Final = 900  # engine.py reads LocalClock.buckets with this bucket size too
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_FIXED_OFFSETS: dict[timezone, int] = {}  # a fixed-offset zone -> its UTC offset, microseconds


def epoch_us(t: datetime) -> int:
    """Microseconds since the epoch of an aware time: exactly what ``t - epoch`` gives.

    Times of a fixed-offset zone (``datetime.timezone``, as taps carry them) are computed from
    their fields, which costs a third of the subtraction (each aware datetime operation asks
    the zone for its offset through a method call); other zones subtract.
    """
    tz = t.tzinfo
    if type(tz) is timezone:
        off = _FIXED_OFFSETS.get(tz)
        if off is None:
            delta = tz.utcoffset(None)
            off = (delta.days * DAY + delta.seconds) * 1_000_000 + delta.microseconds
            _FIXED_OFFSETS[tz] = off
        seconds = (t.toordinal() - _EPOCH_ORDINAL) * DAY + t.hour * 3600 + t.minute * 60 + \
            t.second
        return seconds * 1_000_000 + t.microsecond - off
    d = t - _EPOCH
    return (d.days * DAY + d.seconds) * 1_000_000 + d.microseconds


def posix_seconds(t: datetime) -> float:
    """``t.timestamp()``, the same float (the exact microseconds over 10**6, correctly rounded,
    as CPython computes it), cheaper for fixed-offset zones."""
    if type(t.tzinfo) is timezone:
        return epoch_us(t) / 1_000_000
    return t.timestamp()


class LocalClock:
    """POSIX seconds -> local day number (days since 1970-01-01) and seconds into that day."""

    __slots__ = ("buckets", "tz")

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        # bucket -> (UTC offset, local day number, calendar month key) of its 15 minutes
        self.buckets: dict[int, tuple[int, int, int]] = {}

    def bucket(self, ts: float) -> tuple[int, int, int]:
        """(UTC offset, local day, month key) at POSIX time ``ts``."""
        bucket = int(ts // _BUCKET)
        found = self.buckets.get(bucket)
        if found is None:
            delta = datetime.fromtimestamp(bucket * _BUCKET, self.tz).utcoffset()
            off = int(delta.total_seconds()) if delta is not None else 0
            day = (bucket * _BUCKET + off) // DAY
            found = (off, day, month_key(day))
            self.buckets[bucket] = found
        return found

    def offset(self, ts: float) -> int:
        return self.bucket(ts)[0]

    def local(self, ts: float) -> float:
        """Seconds since 1970-01-01 00:00 local wall time."""
        return ts + self.offset(ts)

    def to_datetime(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, self.tz)


def day_date(day: int) -> date:
    """The calendar date of a local day number."""
    return date.fromordinal(_EPOCH_ORDINAL + day)


def weekday(day: int) -> int:
    """0 = Monday for a local day number (1970-01-01 was a Thursday)."""
    return (day + 3) % 7


def month_key(day: int) -> int:
    d = day_date(day)
    return d.year * 12 + d.month - 1


class TimeframeIndex:
    """Which timeframe groups hold at a local (day, second-of-day), as a small interned id.

    For each day the active timeframes (service on that date) cut the day into intervals; each
    interval maps to the frozenset of groups in effect, interned so a leg-price cache can key on
    an int.  Days are built on first use.
    """

    __slots__ = ("_days", "_ids", "services", "sets", "timeframes")

    def __init__(self, timeframes: Iterable[Timeframe], services: dict[str, Service]) -> None:
        self.timeframes = tuple(timeframes)
        self.services = services
        self.sets: list[frozenset[str]] = [frozenset()]
        self._ids: dict[frozenset[str], int] = {frozenset(): 0}
        self._days: dict[int, tuple[list[int], list[int]]] = {}

    def intern(self, groups: frozenset[str]) -> int:
        sig = self._ids.get(groups)
        if sig is None:
            sig = len(self.sets)
            self.sets.append(groups)
            self._ids[groups] = sig
        return sig

    def _build(self, day: int) -> tuple[list[int], list[int]]:
        d = day_date(day)
        active = [t for t in self.timeframes if self.services[t.service_id].active(d)]
        cuts = sorted({0, DAY, *(t.start for t in active), *(t.end for t in active)})
        bounds: list[int] = []
        sigs: list[int] = []
        for lo in cuts[:-1]:
            groups = frozenset(t.timeframe_group_id for t in active if t.start <= lo < t.end)
            bounds.append(lo)
            sigs.append(self.intern(groups))
        return bounds, sigs

    def signature(self, day: int, second: int) -> int:
        entry = self._days.get(day)
        if entry is None:
            entry = self._build(day)
            self._days[day] = entry
        bounds, sigs = entry
        return sigs[bisect_right(bounds, second) - 1]
