"""Read a taps CSV (the ``tapsim fare price --taps`` input), checking every row.

Header: ``tap_id,card,time,stop_id,route_id,action`` plus optional ``rider_category`` and
``fare_media``.  ``time`` is ISO 8601 with a UTC offset; ``action`` is ``on`` or ``off``.  Each bad
row is reported with its line and left out; the caller decides whether that rejects the file.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime

from fare.model import Feed, Tap

REQUIRED = ("tap_id", "card", "time", "stop_id", "route_id", "action")
OPTIONAL = ("rider_category", "fare_media")


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.line}: {self.field}: {self.message}" if self.field else \
            f"{self.line}: {self.message}"


class TapFileError(ValueError):
    """The file as a whole cannot be read (no header, missing columns).

    ``str()`` reads like a :class:`RowProblem` ("1: missing column(s) ...", no line number
    when the file as a whole is wrong), so ``f"{name}:{error}"`` gives the same
    ``file:line: field: message`` shape as the rows and the feed's problems.
    """

    def __init__(self, line: int, field: str, message: str) -> None:
        self.line = line
        self.field = field
        self.message = message
        where = f"{line}: " if line else " "
        super().__init__(f"{where}{field}: {message}" if field else f"{where}{message}")


def parse_taps(text: str, feed: Feed | None = None,
               *more: Feed) -> tuple[list[Tap], list[RowProblem]]:
    """Taps of the good rows, and a problem for each bad one (checked against ``feed``, and
    against each of ``more``: a row must be good under every feed, as ``tapsim fare compare``
    needs, which so reads its file once).  A row's first problem is reported: the checks of
    its own fields, then each feed's in turn."""
    feeds = ((feed,) if feed is not None else ()) + more
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        raise TapFileError(0, "", "empty file: expected a header line "
                           f"{','.join(REQUIRED)}") from None
    for col in header:
        if col != col.strip():
            raise TapFileError(1, col.strip(), f"header field {col!r} has stray spaces")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise TapFileError(1, "", f"missing column(s) {', '.join(missing)}")
    taps: list[Tap] = []
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}
    for values in reader:
        line = reader.line_num
        if not values or values == [""]:
            continue
        if len(values) != len(header):
            problems.append(RowProblem(line, "", f"expected {len(header)} fields, found "
                                                 f"{len(values)}"))
            continue
        row = dict(zip(header, values, strict=True))
        checked = _check(row, feeds, seen)
        if isinstance(checked, tuple):
            problems.append(RowProblem(line, *checked))
            continue
        seen[row["tap_id"]] = line
        taps.append(Tap(row["tap_id"], row["card"], checked, row["stop_id"], row["route_id"],
                        row["action"],  # type: ignore[arg-type]
                        row.get("rider_category") or None, row.get("fare_media") or None))
    return taps, problems


def _check(row: dict[str, str], feeds: tuple[Feed, ...],
           seen: dict[str, int]) -> tuple[str, str] | datetime:
    """The row's first problem (field, message), or its time when it has none (read once)."""
    for col in REQUIRED:
        if row[col] == "":
            return col, "required value is empty"
    if row["tap_id"] in seen:
        return "tap_id", f"{row['tap_id']!r} already used on line {seen[row['tap_id']]}"
    try:
        when = datetime.fromisoformat(row["time"])
    except ValueError:
        return "time", f"{row['time']!r} is not an ISO 8601 date and time"
    if when.tzinfo is None or when.utcoffset() is None:
        return "time", f"{row['time']!r} has no UTC offset (write e.g. 2025-03-03T08:00:00+08:00)"
    if row["action"] not in ("on", "off"):
        return "action", f"{row['action']!r} is not 'on' or 'off'"
    for feed in feeds:
        if row["stop_id"] not in feed.stops:
            return "stop_id", f"unknown stop {row['stop_id']!r}{_of(feed, feeds)}"
        if row["route_id"] not in feed.routes:
            return "route_id", f"unknown route {row['route_id']!r}{_of(feed, feeds)}"
        cat = row.get("rider_category") or None
        if cat is not None and cat not in feed.rider_categories:
            return "rider_category", f"unknown rider category {cat!r}{_of(feed, feeds)}"
        media = row.get("fare_media") or None
        if media is not None and media not in feed.fare_media:
            return "fare_media", f"unknown fare media {media!r}{_of(feed, feeds)}"
    return when


def _of(feed: Feed, feeds: tuple[Feed, ...]) -> str:
    """Which feed does not know a value, when the rows are checked against several."""
    return f" in feed {feed.name or '?'}" if len(feeds) > 1 else ""
