"""`tapsim fare check`: every error and warning of a fare feed at once.

Errors are what stops a feed loading (``fare.gtfs`` collects them all, as ``FeedProblem``).
Warnings are read from a feed that loads: things the reference allows but that are almost
always a mistake in a fare table, each said as ``file:line: field: message``:

* a network with routes that no fare leg rule can match (its legs will be unpriced);
* without rule_priority, an empty ``network_id`` / ``from_area_id`` / ``to_area_id`` that
  matches nothing, because every value of that column is named elsewhere in the file;
* a fare product no leg or transfer rule uses;
* a rider category with no row of any fare product (it is eligible for nothing);
* an area with no stop, a timeframe group no leg rule uses.

Pure: ``check_files(files)`` takes file name -> text, like ``fare.gtfs.parse_feed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from fare.errors import FeedError, FeedProblem
from fare.gtfs import parse_feed
from fare.model import Feed


class CheckReport(NamedTuple):
    errors: list[FeedProblem]
    warnings: list[FeedProblem]

    @property
    def exit_code(self) -> int:
        """0: clean; 1: warnings only; 2: errors (the feed does not load)."""
        return 2 if self.errors else 1 if self.warnings else 0


def check_files(files: Mapping[str, str], name: str = "") -> CheckReport:
    try:
        feed = parse_feed(files, name=name)
    except FeedError as exc:
        return CheckReport(list(exc.problems), [])
    return CheckReport([], warnings(feed))


def warnings(feed: Feed) -> list[FeedProblem]:
    """The warnings of a loaded feed (see module docstring), in file then line order."""
    out: list[FeedProblem] = []
    rules = feed.leg_rules
    lr = "fare_leg_rules.txt"
    priority = feed.leg_rules_have_priority
    named_nets = {r.network_id for r in rules if r.network_id is not None}
    route_nets = {r.network_id for r in feed.routes.values()}
    stops_in = {a for areas in feed.stop_areas.values() for a in areas}
    # Empty fields that match nothing (no rule_priority: "excluding the ones listed").
    if not priority:
        named_from = {r.from_area_id for r in rules if r.from_area_id is not None}
        named_to = {r.to_area_id for r in rules if r.to_area_id is not None}
        dead = {
            "network_id": None not in route_nets and route_nets <= named_nets,
            "from_area_id": all(feed.stop_areas.get(s, frozenset()) & named_from
                                for s in feed.stops),
            "to_area_id": all(feed.stop_areas.get(s, frozenset()) & named_to
                              for s in feed.stops),
        }
        for r in rules:
            for col, value in (("network_id", r.network_id), ("from_area_id", r.from_area_id),
                               ("to_area_id", r.to_area_id)):
                if value is None and dead[col]:
                    out.append(FeedProblem(
                        lr, r.line, col,
                        f"empty {col} matches nothing: without rule_priority it means every "
                        "value not named in this column, and every one is named"))
    # Networks whose legs no rule can match.
    for net in sorted(n for n in route_nets if n is not None):
        if priority:
            can = any(r.network_id in (None, net) for r in rules)
        else:
            can = any(r.network_id == net for r in rules) if net in named_nets else \
                any(r.network_id is None for r in rules)
        if not can:
            routes = sorted(rid for rid, r in feed.routes.items() if r.network_id == net)
            out.append(FeedProblem(
                "routes.txt", 0, "network_id",
                f"network {net!r} (routes {', '.join(routes[:5])}"
                f"{', ...' if len(routes) > 5 else ''}) has no fare leg rule that can match "
                "it: its legs will be unpriced"))
    used = {r.fare_product_id for r in rules} | {
        t.fare_product_id for t in feed.transfer_rules if t.fare_product_id is not None}
    for pid in sorted(set(feed.fare_products) - used):
        out.append(FeedProblem("fare_products.txt", 0, "fare_product_id",
                               f"fare product {pid!r} is used by no leg or transfer rule"))
    with_rows = {p.rider_category_id for rows in feed.fare_products.values() for p in rows}
    if None not in with_rows:
        for cid in sorted(set(feed.rider_categories) - with_rows):
            out.append(FeedProblem(
                "rider_categories.txt", 0, "rider_category_id",
                f"rider category {cid!r} has no fare product row: it is eligible for nothing"))
    for area in sorted(feed.areas - stops_in):
        out.append(FeedProblem("areas.txt", 0, "area_id", f"area {area!r} has no stop"))
    tf_used = {r.from_timeframe_group_id for r in rules} | {r.to_timeframe_group_id
                                                           for r in rules}
    for group in sorted({t.timeframe_group_id for t in feed.timeframes} - tf_used):
        out.append(FeedProblem("timeframes.txt", 0, "timeframe_group_id",
                               f"timeframe group {group!r} is used by no leg rule"))
    return sorted(out, key=lambda p: (p.file, p.line, p.field, p.message))


def as_json(report: CheckReport, feed_name: str) -> dict[str, object]:
    """The JSON document of ``tapsim fare check --json``."""
    def one(p: FeedProblem) -> dict[str, object]:
        return {"file": p.file, "line": p.line, "field": p.field, "message": p.message}

    return {"schema": "tapsim.fare.check", "schema_version": 1, "feed": feed_name,
            "exit_code": report.exit_code, "errors": [one(p) for p in report.errors],
            "warnings": [one(p) for p in report.warnings]}
