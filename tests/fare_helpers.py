"""Small feeds written inline for the fare tests."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from fare.gtfs import parse_feed
from fare.model import Feed, Tap


def csv(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def feed(tz: str = "America/New_York", **files: str) -> Feed:
    """A feed of the given files (name without .txt), with a default agency, stops and routes."""
    base = {
        "agency": f"agency_id,agency_name,agency_url,agency_timezone\na,A,https://a.example,{tz}\n",
        "stops": csv("""
            stop_id,stop_name
            s1,One
            s2,Two
            s3,Three
            s4,Four
        """),
    }
    base.update(files)
    return parse_feed({f"{k}.txt": csv(v) if not v.endswith("\n") else v for k, v in base.items()})


class Taps:
    """Builds taps of one card at minutes after a start time."""

    def __init__(self, start: datetime, card: str = "c1", category: str | None = None,
                 media: str | None = None) -> None:
        self.start = start
        self.card = card
        self.category = category
        self.media = media
        self.n = 0

    def __call__(self, minutes: float, stop: str, route: str, action: str = "on") -> Tap:
        self.n += 1
        return Tap(f"{self.card}-{self.n}", self.card, self.start + timedelta(minutes=minutes),
                   stop, route, action, self.category, self.media)  # type: ignore[arg-type]


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, *,
       tz: str = "America/New_York") -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz))
