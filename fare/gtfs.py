"""Load a GTFS-Fares v2 feed (a folder or a zip) into a checked ``fare.model.Feed``.

The only module of ``fare`` that touches files.  Loading collects every problem it finds (file,
line, field, what is wrong) and raises one ``FeedError`` holding all of them: a feed either loads
whole or not at all.  Files the fare engine does not use (trips, stop_times, shapes...) are not
read.  ``fare_caps.txt`` is the tapsim extension for caps, monthly tiers and maximum fares
(format in fare/README.md).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fare.currency import CurrencyError, exponent, is_currency, to_minor
from fare.errors import FeedError, FeedProblem
from fare.model import (
    Cap,
    CapKind,
    DurationType,
    FareLegJoinRule,
    FareLegRule,
    FareMedia,
    FareProduct,
    FareTransferRule,
    Feed,
    MaxFare,
    RiderCategory,
    Route,
    Service,
    SpendTier,
    Stop,
    Timeframe,
    TransferType,
)

CAPS_FILE = "fare_caps.txt"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_SECONDS = 24 * 3600


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    values: dict[str, str]

    def get(self, name: str) -> str:
        return self.values.get(name, "")


class _Loader:
    """Reads tables from the feed's files and records every problem on the way."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.files = files
        self.problems: list[FeedProblem] = []
        self.headers: dict[str, tuple[str, ...]] = {}
        self.broken: set[str] = set()  # files whose header is unusable: no cascade of "unknown"
        self._read: dict[str, list[_Row]] = {}
        self.declared: dict[str, set[str]] = {}  # ids named by a file, even on rejected rows

    def problem(self, file: str, line: int, fieldname: str, message: str) -> None:
        self.problems.append(FeedProblem(file, line, fieldname, message))

    def table(
        self, name: str, required: tuple[str, ...], *, must_exist: bool = False
    ) -> list[_Row]:
        """Rows of a file as dicts; [] when absent.  Checks the header and the row widths."""
        if name in self._read:
            return self._read[name]
        rows = self._table(name, required, must_exist=must_exist)
        self._read[name] = rows
        return rows

    def _table(
        self, name: str, required: tuple[str, ...], *, must_exist: bool = False
    ) -> list[_Row]:
        text = self.files.get(name)
        if text is None:
            if must_exist:
                self.problem(name, 0, "", "required file is missing")
                self.broken.add(name)  # its own problem says it all: no "unknown" elsewhere
            return []
        reader = csv.reader(io.StringIO(text))
        try:
            header = next(reader)
        except StopIteration:
            self.problem(name, 1, "", "file is empty (no header line)")
            return []
        except csv.Error as exc:
            self.problem(name, 1, "", f"unreadable header: {exc}")
            return []
        ok = True
        seen: set[str] = set()
        for col in header:
            if col != col.strip():
                self.problem(name, 1, col.strip(), f"header field {col!r} has stray spaces")
                ok = False
            if col.strip() in seen:
                self.problem(name, 1, col.strip(), "header field appears twice")
                ok = False
            seen.add(col.strip())
        for col in required:
            if col not in seen:
                self.problem(name, 1, col, "required column is missing")
                ok = False
        self.headers[name] = tuple(c.strip() for c in header)
        if not ok:
            self.broken.add(name)
            return []
        cols = [c.strip() for c in header]
        rows: list[_Row] = []
        try:
            for values in reader:
                line = reader.line_num
                if not values or values == [""]:
                    continue
                if len(values) != len(cols):
                    self.problem(name, line, "",
                                 f"expected {len(cols)} fields, found {len(values)}")
                    continue
                rows.append(_Row(line, dict(zip(cols, values, strict=True))))
        except csv.Error as exc:
            self.problem(name, reader.line_num, "", f"malformed CSV: {exc}")
        return rows

    def has_column(self, name: str, col: str) -> bool:
        return col in self.headers.get(name, ())

    # ---- field helpers: each records a problem and returns None on bad input ----

    def required(self, file: str, row: _Row, col: str) -> str | None:
        value = row.get(col)
        if value == "":
            self.problem(file, row.line, col, "required value is empty")
            return None
        return value

    def integer(
        self, file: str, row: _Row, col: str, *, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        text = row.get(col)
        if text == "":
            return None
        try:
            value = int(text)
        except ValueError:
            self.problem(file, row.line, col, f"{text!r} is not an integer")
            return None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            rng = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
            self.problem(file, row.line, col, f"{value} is out of range {rng}")
            return None
        return value

    def time_of_day(self, file: str, row: _Row, col: str) -> int | None:
        """HH:MM:SS (H:MM:SS accepted) as seconds, at most 24:00:00."""
        text = row.get(col)
        if text == "":
            return None
        parts = text.split(":")
        if len(parts) != 3 or not all(p.isdigit() for p in parts) or len(parts[1]) != 2 \
                or len(parts[2]) != 2 or not 1 <= len(parts[0]) <= 2:
            self.problem(file, row.line, col, f"{text!r} is not a time HH:MM:SS")
            return None
        h, m, s = (int(p) for p in parts)
        if m > 59 or s > 59:
            self.problem(file, row.line, col, f"{text!r} is not a valid time")
            return None
        seconds = h * 3600 + m * 60 + s
        if seconds > _DAY_SECONDS:
            self.problem(file, row.line, col, f"{text!r} is later than 24:00:00")
            return None
        return seconds

    def day(self, file: str, row: _Row, col: str) -> date | None:
        text = row.get(col)
        if text == "":
            return None
        try:
            if len(text) != 8 or not text.isdigit():
                raise ValueError
            return date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError:
            self.problem(file, row.line, col, f"{text!r} is not a date YYYYMMDD")
            return None

    def optional(self, row: _Row, col: str) -> str | None:
        value = row.get(col)
        return value if value != "" else None

    def unique(self, file: str, rows: list[_Row], col: str) -> dict[str, _Row]:
        # Every id a row names counts as declared, even when the row is rejected: the row's
        # own problem is reported once, not again as "unknown" wherever the id is used.
        self.declared.setdefault(file, set()).update(row.get(col) for row in rows)
        seen: dict[str, _Row] = {}
        for row in rows:
            key = row.get(col)
            if key == "":
                self.problem(file, row.line, col, "required value is empty")
            elif key in seen:
                self.problem(file, row.line, col,
                             f"{key!r} already defined on line {seen[key].line}")
            else:
                seen[key] = row
        return seen

    def reference(
        self, file: str, row: _Row, col: str,
        known: Mapping[str, object] | frozenset[str] | set[str], what: str,
        source: str | None = None,
    ) -> str | None:
        """The value of a foreign-key field, or None (and a problem) when it names nothing.

        When ``source`` (the file defining the ids) could not be read at all, the reference is
        not reported: that file's own problem already says what is wrong.
        """
        value = row.get(col)
        if value == "":
            return None
        if value not in known and source is not None and (
                source in self.broken or value in self.declared.get(source, ())):
            return None  # defined there, on a row that has its own problem
        if value not in known:
            self.problem(file, row.line, col, f"unknown {what} {value!r}")
            return None
        return value


def read_files(path: str | Path) -> dict[str, str]:
    """The ``*.txt`` files of a feed folder or zip, decoded as UTF-8 (a BOM is dropped)."""
    p = Path(path)
    raw: dict[str, bytes] = {}
    if p.is_dir():
        for child in p.iterdir():
            if child.is_file() and child.suffix == ".txt":
                raw[child.name] = child.read_bytes()
    elif p.is_file() and zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as zf:
            names = [n for n in zf.namelist() if n.endswith(".txt") and not n.endswith("/")]
            tops = {n: n for n in names if "/" not in n}
            if not tops and names:
                # "The files must reside at the root level directly, not in a subfolder."
                folder = names[0].split("/", 1)[0]
                raise FeedError([FeedProblem(
                    p.name, 0, "", f"the feed's files are in the subfolder {folder + '/'!r}: "
                    "GTFS wants them at the root of the zip")])
            for short, full in tops.items():
                raw[short] = zf.read(full)
    elif p.exists():
        raise FeedError([FeedProblem(str(p), 0, "", "not a folder or a zip file")])
    else:
        raise FeedError([FeedProblem(str(p), 0, "", "no such file or folder")])
    files: dict[str, str] = {}
    problems: list[FeedProblem] = []
    for name, data in raw.items():
        try:
            files[name] = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            problems.append(FeedProblem(name, 0, "",
                                        f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
    if problems:
        raise FeedError(problems)
    return files


def load_feed(path: str | Path) -> Feed:
    """Load and check a feed from a folder or a zip; raises FeedError listing every problem."""
    return parse_feed(read_files(path), name=Path(path).name)


def parse_feed(files: Mapping[str, str], name: str = "") -> Feed:
    """Build a Feed from file name -> text (what ``read_files`` returns)."""
    ld = _Loader(files)
    tz = _agency_timezone(ld)
    stops = _stops(ld)
    routes, networks = _routes(ld)
    areas, stop_areas = _areas(ld, stops)
    services = _services(ld)
    timeframes = _timeframes(ld, services)
    categories = _rider_categories(ld)
    media = _fare_media(ld)
    currencies, products = _fare_products(ld, categories, media)
    groups_tf = {t.timeframe_group_id for t in timeframes}
    leg_rules, has_priority = _leg_rules(ld, networks, areas, groups_tf, products)
    net_currency = _network_currencies(ld, routes, leg_rules, has_priority, products)
    join_rules = _join_rules(ld, networks, stops)
    _check_join_currencies(ld, join_rules, net_currency, leg_rules, products)
    transfer_rules = _transfer_rules(ld, leg_rules, products)
    caps, tiers, max_fares = _caps(ld, currencies, net_currency, categories, media, networks)
    _check_default_categories(ld, products, categories)
    if ld.problems:
        raise FeedError(ld.problems)
    assert tz is not None and currencies
    return Feed(
        timezone=tz,
        currency=currencies[0],
        currencies=tuple(currencies),
        network_currency=net_currency,
        stops=stops,
        routes=routes,
        networks=frozenset(networks),
        areas=frozenset(areas),
        stop_areas=stop_areas,
        services=services,
        timeframes=tuple(timeframes),
        rider_categories=categories,
        fare_media=media,
        fare_products=products,
        leg_rules=tuple(leg_rules),
        leg_rules_have_priority=has_priority,
        join_rules=tuple(join_rules),
        transfer_rules=tuple(transfer_rules),
        caps=tuple(caps),
        spend_tiers=tuple(tiers),
        max_fares=tuple(max_fares),
        name=name,
    )


# ---------------------------------------------------------------------------------------------
# the files, one function each


def _agency_timezone(ld: _Loader) -> ZoneInfo | None:
    f = "agency.txt"
    rows = ld.table(f, ("agency_timezone",), must_exist=True)
    tz: ZoneInfo | None = None
    for row in rows:
        text = ld.required(f, row, "agency_timezone")
        if text is None:
            continue
        try:
            zone = ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            ld.problem(f, row.line, "agency_timezone", f"unknown IANA time zone {text!r}")
            continue
        if tz is None:
            tz = zone
        elif zone.key != tz.key:
            ld.problem(f, row.line, "agency_timezone",
                       f"{text!r} differs from {tz.key!r}: all agencies must share one time zone")
    if tz is None and rows and not ld.problems:
        ld.problem(f, 0, "agency_timezone", "no agency time zone given")
    if not rows and f in ld.files and f not in {p.file for p in ld.problems}:
        ld.problem(f, 0, "", "no agency defined")
    return tz


def _stops(ld: _Loader) -> dict[str, Stop]:
    f = "stops.txt"
    rows = ld.table(f, ("stop_id",), must_exist=True)
    by_id = ld.unique(f, rows, "stop_id")
    stops: dict[str, Stop] = {}
    for sid, row in by_id.items():
        loc = ld.integer(f, row, "location_type", lo=0, hi=4)
        zone = ld.optional(row, "stop_timezone")
        if zone is not None:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                ld.problem(f, row.line, "stop_timezone", f"unknown IANA time zone {zone!r}")
                zone = None
        stops[sid] = Stop(sid, row.get("stop_name"), ld.optional(row, "parent_station"), loc or 0,
                          zone)
    for row in by_id.values():
        ld.reference(f, row, "parent_station", stops, "stop", "stops.txt")
    return stops


def _routes(ld: _Loader) -> tuple[dict[str, Route], set[str]]:
    f = "routes.txt"
    rows = ld.table(f, ("route_id",), must_exist=True)
    by_id = ld.unique(f, rows, "route_id")
    in_routes = ld.has_column(f, "network_id")
    networks: set[str] = set()
    route_net: dict[str, str] = {}
    if in_routes:
        for name in ("networks.txt", "route_networks.txt"):
            if name in ld.files:
                ld.problem(name, 0, "", "forbidden: routes.txt already has a network_id column")
        for route_id, row in by_id.items():
            value = ld.optional(row, "network_id")
            if value is not None:
                networks.add(value)
                route_net[route_id] = value
    else:
        nf = "networks.txt"
        networks = set(ld.unique(nf, ld.table(nf, ("network_id",)), "network_id"))
        rf = "route_networks.txt"
        for row in ld.table(rf, ("network_id", "route_id")):
            net: str | None = ld.required(rf, row, "network_id")
            rid: str | None = ld.required(rf, row, "route_id")
            if net is not None:
                net = ld.reference(rf, row, "network_id", networks, "network")
            if rid is not None:
                rid = ld.reference(rf, row, "route_id", by_id, "route", "routes.txt")
            if net is None or rid is None:
                continue
            if rid in route_net:
                ld.problem(rf, row.line, "route_id",
                           f"route {rid!r} is already in network {route_net[rid]!r}")
                continue
            route_net[rid] = net
    routes = {
        rid: Route(rid, row.get("route_short_name") or row.get("route_long_name"),
                   route_net.get(rid))
        for rid, row in by_id.items()
    }
    return routes, networks


def _areas(ld: _Loader, stops: dict[str, Stop]) -> tuple[set[str], dict[str, frozenset[str]]]:
    f = "areas.txt"
    areas = set(ld.unique(f, ld.table(f, ("area_id",)), "area_id"))
    sf = "stop_areas.txt"
    own: dict[str, set[str]] = defaultdict(set)
    for row in ld.table(sf, ("area_id", "stop_id")):
        area: str | None = ld.required(sf, row, "area_id")
        sid: str | None = ld.required(sf, row, "stop_id")
        if area is not None:
            area = ld.reference(sf, row, "area_id", areas, "area", "areas.txt")
        if sid is not None:
            sid = ld.reference(sf, row, "stop_id", stops, "stop", "stops.txt")
        if area is not None and sid is not None:
            own[sid].add(area)
    result: dict[str, frozenset[str]] = {}
    for stop_id, stop in stops.items():
        if stop_id in own:
            result[stop_id] = frozenset(own[stop_id])
        elif stop.parent_station is not None and stop.parent_station in own:
            # A platform is in its station's areas unless it has areas of its own.
            result[stop_id] = frozenset(own[stop.parent_station])
    return areas, result


def _services(ld: _Loader) -> dict[str, Service]:
    f = "calendar.txt"
    cols = ("service_id", *WEEKDAYS, "start_date", "end_date")
    services: dict[str, Service] = {}
    for sid, row in ld.unique(f, ld.table(f, cols), "service_id").items():
        for col in (*WEEKDAYS, "start_date", "end_date"):
            ld.required(f, row, col)
        flags = [ld.integer(f, row, d, lo=0, hi=1) for d in WEEKDAYS]
        start = ld.day(f, row, "start_date")
        end = ld.day(f, row, "end_date")
        if start is not None and end is not None and end < start:
            ld.problem(f, row.line, "end_date", "end_date is before start_date")
        weekdays = tuple(bool(v) for v in flags)
        services[sid] = Service(sid, weekdays, start, end)  # type: ignore[arg-type]
    df = "calendar_dates.txt"
    added: dict[str, set[date]] = defaultdict(set)
    removed: dict[str, set[date]] = defaultdict(set)
    for row in ld.table(df, ("service_id", "date", "exception_type")):
        service = ld.required(df, row, "service_id")
        day = ld.day(df, row, "date") if ld.required(df, row, "date") else None
        kind = ld.integer(df, row, "exception_type", lo=1, hi=2)
        if row.get("exception_type") == "":
            ld.problem(df, row.line, "exception_type", "required value is empty")
        if service is None or day is None or kind is None:
            continue
        (added if kind == 1 else removed)[service].add(day)
    for sid in set(added) | set(removed):
        base = services.get(sid, Service(sid))
        services[sid] = Service(sid, base.weekdays, base.start, base.end,
                                frozenset(added[sid]), frozenset(removed[sid]))
    return services


def _timeframes(ld: _Loader, services: dict[str, Service]) -> list[Timeframe]:
    f = "timeframes.txt"
    out: list[Timeframe] = []
    spans: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)
    rows = ld.table(f, ("timeframe_group_id", "service_id"))
    ld.declared[f] = {row.get("timeframe_group_id") for row in rows}
    for row in rows:
        group = ld.required(f, row, "timeframe_group_id")
        sid = ld.required(f, row, "service_id")
        if sid is not None:
            sid = ld.reference(f, row, "service_id", services, "service_id (calendar)",
                               "calendar.txt")
        start = ld.time_of_day(f, row, "start_time")
        end = ld.time_of_day(f, row, "end_time")
        has_start, has_end = row.get("start_time") != "", row.get("end_time") != ""
        if has_start != has_end:
            missing = "end_time" if has_start else "start_time"
            ld.problem(f, row.line, missing, "start_time and end_time must be given together")
            continue
        s = 0 if not has_start else start
        e = _DAY_SECONDS if not has_end else end
        if s is None or e is None or group is None or sid is None:
            continue
        if s >= e:
            ld.problem(f, row.line, "end_time", "end_time must be after start_time")
            continue
        for os_, oe, oline in spans[(group, sid)]:
            if s < oe and os_ < e:
                ld.problem(f, row.line, "start_time",
                           f"overlaps the timeframe on line {oline} "
                           f"(group {group!r}, service {sid!r})")
                break
        spans[(group, sid)].append((s, e, row.line))
        out.append(Timeframe(group, s, e, sid))
    return out


def _rider_categories(ld: _Loader) -> dict[str, RiderCategory]:
    f = "rider_categories.txt"
    cats: dict[str, RiderCategory] = {}
    for cid, row in ld.unique(f, ld.table(f, ("rider_category_id",)), "rider_category_id").items():
        default = ld.integer(f, row, "is_default_fare_category", lo=0, hi=1)
        cats[cid] = RiderCategory(cid, row.get("rider_category_name"), bool(default))
    return cats


def _fare_media(ld: _Loader) -> dict[str, FareMedia]:
    f = "fare_media.txt"
    media: dict[str, FareMedia] = {}
    for mid, row in ld.unique(f, ld.table(f, ("fare_media_id", "fare_media_type")),
                              "fare_media_id").items():
        kind = ld.integer(f, row, "fare_media_type", lo=0, hi=4)
        if row.get("fare_media_type") == "":
            ld.problem(f, row.line, "fare_media_type", "required value is empty")
        media[mid] = FareMedia(mid, row.get("fare_media_name"), kind if kind is not None else 0)
    return media


def _fare_products(
    ld: _Loader, cats: dict[str, RiderCategory], media: dict[str, FareMedia]
) -> tuple[list[str], dict[str, tuple[FareProduct, ...]]]:
    """The products, and their currencies in order of first use: the reference gives each
    row its own ("currency: The currency of the cost of the fare product")."""
    f = "fare_products.txt"
    rows = ld.table(f, ("fare_product_id", "amount", "currency"), must_exist=True)
    ld.declared[f] = {row.get("fare_product_id") for row in rows}
    currencies: list[str] = []
    products: dict[str, list[FareProduct]] = defaultdict(list)
    keys: dict[tuple[str, str | None, str | None], int] = {}
    for row in rows:
        pid = ld.required(f, row, "fare_product_id")
        cat = ld.reference(f, row, "rider_category_id", cats, "rider category",
                               "rider_categories.txt")
        med = ld.reference(f, row, "fare_media_id", media, "fare media",
                               "fare_media.txt")
        code = ld.required(f, row, "currency")
        text = ld.required(f, row, "amount")
        if code is not None and not is_currency(code):
            ld.problem(f, row.line, "currency", f"unknown ISO 4217 currency code {code!r}")
            code = None
        if code is not None and code not in currencies:
            currencies.append(code)
        amount: int | None = None
        if text is not None and code is not None:
            try:
                amount = to_minor(text, code)
            except CurrencyError as exc:
                ld.problem(f, row.line, "amount", str(exc))
        if pid is None or amount is None:
            continue
        key = (pid, row.get("rider_category_id") or None, row.get("fare_media_id") or None)
        if key in keys:
            ld.problem(f, row.line, "fare_product_id",
                       f"{pid!r} with this rider category and fare media is already on line "
                       f"{keys[key]}")
            continue
        keys[key] = row.line
        products[pid].append(FareProduct(pid, row.get("fare_product_name"), amount, cat, med,
                                         code or ""))
    if rows and not currencies and not any(p.file == f for p in ld.problems):
        ld.problem(f, 0, "currency", "no currency given")
    if not rows and f in ld.files and f not in ld.broken:
        ld.problem(f, 0, "", "no fare products defined")
    return currencies, {k: tuple(v) for k, v in products.items()}


def _leg_rules(
    ld: _Loader, networks: set[str], areas: set[str], tf_groups: set[str],
    products: dict[str, tuple[FareProduct, ...]],
) -> tuple[list[FareLegRule], bool]:
    f = "fare_leg_rules.txt"
    rows = ld.table(f, ("fare_product_id",), must_exist=True)
    has_priority = ld.has_column(f, "rule_priority")
    if not rows and f in ld.files and f not in {p.file for p in ld.problems}:
        ld.problem(f, 0, "", "no fare leg rules defined: nothing can be priced")
    out: list[FareLegRule] = []
    seen: dict[tuple[str | None, ...], tuple[int, str | None]] = {}
    for row in rows:
        pid: str | None = ld.required(f, row, "fare_product_id")
        if pid is not None:
            pid = ld.reference(f, row, "fare_product_id", products, "fare product",
                               "fare_products.txt")
            if pid is None and "fare_products.txt" in ld.broken:
                continue
        net = ld.reference(f, row, "network_id", networks, "network")
        fa = ld.reference(f, row, "from_area_id", areas, "area", "areas.txt")
        ta = ld.reference(f, row, "to_area_id", areas, "area", "areas.txt")
        ftf = ld.reference(f, row, "from_timeframe_group_id", tf_groups, "timeframe group",
                           "timeframes.txt")
        ttf = ld.reference(f, row, "to_timeframe_group_id", tf_groups, "timeframe group",
                           "timeframes.txt")
        prio = ld.integer(f, row, "rule_priority", lo=0)
        bad = any(row.get(c) != "" and v is None for c, v in (
            ("network_id", net), ("from_area_id", fa), ("to_area_id", ta),
            ("from_timeframe_group_id", ftf), ("to_timeframe_group_id", ttf),
            ("rule_priority", prio)))
        if pid is None or bad:
            continue
        group = ld.optional(row, "leg_group_id")
        key = (net, fa, ta, ftf, ttf, pid)
        if key in seen:
            oline, ogroup = seen[key]
            what = "the same rule" if ogroup == group else f"the same rule in leg group {ogroup!r}"
            ld.problem(f, row.line, "leg_group_id" if ogroup != group else "fare_product_id",
                       f"{what} is already on line {oline}")
            continue
        seen[key] = (row.line, group)
        out.append(FareLegRule(pid, group, net, fa, ta, ftf, ttf, prio or 0, row.line))
    return out, has_priority


def _join_rules(ld: _Loader, networks: set[str], stops: dict[str, Stop]) -> list[FareLegJoinRule]:
    f = "fare_leg_join_rules.txt"
    out: list[FareLegJoinRule] = []
    for row in ld.table(f, ("from_network_id", "to_network_id")):
        fn = ld.required(f, row, "from_network_id")
        tn = ld.required(f, row, "to_network_id")
        fn = ld.reference(f, row, "from_network_id", networks, "network") if fn else None
        tn = ld.reference(f, row, "to_network_id", networks, "network") if tn else None
        fs = ld.reference(f, row, "from_stop_id", stops, "stop", "stops.txt")
        ts = ld.reference(f, row, "to_stop_id", stops, "stop", "stops.txt")
        if (row.get("from_stop_id") == "") != (row.get("to_stop_id") == ""):
            ld.problem(f, row.line, "to_stop_id" if row.get("from_stop_id") else "from_stop_id",
                       "from_stop_id and to_stop_id must be given together")
            continue
        if fn and tn and (fs or not row.get("from_stop_id")) and (ts or not row.get("to_stop_id")):
            out.append(FareLegJoinRule(fn, tn, fs, ts, row.line))
    return out


def _transfer_rules(
    ld: _Loader, leg_rules: list[FareLegRule], products: dict[str, tuple[FareProduct, ...]]
) -> list[FareTransferRule]:
    f = "fare_transfer_rules.txt"
    groups = {r.leg_group_id for r in leg_rules if r.leg_group_id is not None}
    if "fare_leg_rules.txt" in ld.files:  # also the groups of rows rejected for other reasons
        groups |= {row.get("leg_group_id") for row in
                   ld.table("fare_leg_rules.txt", ()) if row.get("leg_group_id")}
    out: list[FareTransferRule] = []
    seen: dict[tuple[object, ...], int] = {}
    for row in ld.table(f, ("fare_transfer_type",)):
        fg = ld.reference(f, row, "from_leg_group_id", groups, "leg group",
                          "fare_leg_rules.txt")
        tg = ld.reference(f, row, "to_leg_group_id", groups, "leg group",
                          "fare_leg_rules.txt")
        pid = ld.reference(f, row, "fare_product_id", products, "fare product",
                           "fare_products.txt")
        kind = ld.integer(f, row, "fare_transfer_type", lo=0, hi=2)
        if row.get("fare_transfer_type") == "":
            ld.problem(f, row.line, "fare_transfer_type", "required value is empty")
        count = ld.integer(f, row, "transfer_count")
        ok = True
        if count is not None and (count == 0 or count < -1):
            ld.problem(f, row.line, "transfer_count",
                       f"{count} is not allowed: -1 (no limit) or 1 and more")
            ok = False
        same = row.get("from_leg_group_id") == row.get("to_leg_group_id")
        if same and row.get("transfer_count") == "":
            ld.problem(f, row.line, "transfer_count",
                       "required when from_leg_group_id equals to_leg_group_id")
            ok = False
        if not same and row.get("transfer_count") != "":
            ld.problem(f, row.line, "transfer_count",
                       "forbidden when from_leg_group_id differs from to_leg_group_id")
            ok = False
        limit = ld.integer(f, row, "duration_limit", lo=1)
        ltype = ld.integer(f, row, "duration_limit_type", lo=0, hi=3)
        if row.get("duration_limit") != "" and row.get("duration_limit_type") == "":
            ld.problem(f, row.line, "duration_limit_type", "required when duration_limit is given")
            ok = False
        if row.get("duration_limit") == "" and row.get("duration_limit_type") != "":
            ld.problem(f, row.line, "duration_limit_type", "forbidden without duration_limit")
            ok = False
        bad_ref = any(row.get(c) != "" and v is None for c, v in (
            ("from_leg_group_id", fg), ("to_leg_group_id", tg), ("fare_product_id", pid),
            ("transfer_count", count), ("duration_limit", limit),
            ("duration_limit_type", ltype)))
        if not ok or bad_ref or kind is None:
            continue
        key = (fg, tg, pid, count, limit)
        if key in seen:
            ld.problem(f, row.line, "", f"the same transfer rule is already on line {seen[key]}")
            continue
        seen[key] = row.line
        out.append(FareTransferRule(
            TransferType(kind), fg, tg, count, limit,
            DurationType(ltype) if ltype is not None else None, pid, row.line))
    return out


def _caps(
    ld: _Loader, currencies: list[str], net_currency: dict[str | None, str],
    cats: dict[str, RiderCategory], media: dict[str, FareMedia], networks: set[str],
) -> tuple[list[Cap], list[SpendTier], list[MaxFare]]:
    """fare_caps.txt.  Each row is in one of the products' currencies and acts only on charges
    in it (a cap never adds up amounts of two currencies); a max_fare row of a network is in
    that network's currency."""
    f = CAPS_FILE
    tier_currency: dict[str, tuple[str, int]] = {}
    caps: list[Cap] = []
    tiers: list[SpendTier] = []
    maxes: list[MaxFare] = []
    kinds: dict[str, tuple[str, int]] = {}
    thresholds: set[tuple[str, int, str | None, str | None]] = set()
    used_by = {
        "daily": {"amount", "currency", "start_time"},
        "weekly": {"amount", "currency", "start_time", "start_day"},
        "rolling": {"amount", "currency", "days"},
        "monthly_tier": {"threshold", "currency", "discount_percent"},
        "max_fare": {"amount", "currency", "network_id", "tap_off_window"},
    }
    optional_cols = {"amount", "currency", "start_time", "start_day", "days", "threshold",
                     "discount_percent", "network_id", "tap_off_window"}
    for row in ld.table(f, ("cap_id", "cap_type")):
        cid = ld.required(f, row, "cap_id")
        kind = ld.required(f, row, "cap_type")
        if kind is not None and kind not in used_by:
            ld.problem(f, row.line, "cap_type",
                       f"unknown cap_type {kind!r} "
                       "(daily, weekly, rolling, monthly_tier, max_fare)")
            kind = None
        if cid is None or kind is None:
            continue
        if cid in kinds and kinds[cid][0] != kind:
            ld.problem(f, row.line, "cap_type",
                       f"cap {cid!r} is already a {kinds[cid][0]} cap (line {kinds[cid][1]})")
            continue
        if cid in kinds and kind != "monthly_tier":
            ld.problem(f, row.line, "cap_id",
                       f"cap {cid!r} is already defined on line {kinds[cid][1]}")
            continue
        kinds.setdefault(cid, (kind, row.line))
        for col in sorted(optional_cols - used_by[kind]):
            if row.get(col) != "":
                ld.problem(f, row.line, col, f"not used by cap_type {kind}: leave it empty")
        cat = ld.reference(f, row, "rider_category_id", cats, "rider category",
                               "rider_categories.txt")
        med = ld.reference(f, row, "fare_media_id", media, "fare media",
                               "fare_media.txt")
        code = ld.required(f, row, "currency")
        if code is not None and currencies and code not in currencies:
            ld.problem(f, row.line, "currency",
                       f"{code} is not a currency of the feed's products "
                       f"({', '.join(currencies)})")
            code = None
        elif code is not None and kind == "monthly_tier":
            first = tier_currency.setdefault(cid, (code, row.line))
            if first[0] != code:
                ld.problem(f, row.line, "currency",
                           f"tier {cid!r} is in {first[0]} (line {first[1]}): one currency per "
                           "tier table")
                code = None
        elif code is not None and kind == "max_fare" and row.get("network_id"):
            net_cur = net_currency.get(row.get("network_id"))
            if net_cur is not None and net_cur != code:
                ld.problem(f, row.line, "currency",
                           f"network {row.get('network_id')!r} is priced in {net_cur}, "
                           f"not {code}")
                code = None

        def money(col: str, code: str | None = code, row: _Row = row) -> int | None:
            text = ld.required(f, row, col)
            if text is None or code is None:
                return None
            try:
                value = to_minor(text, code)
            except CurrencyError as exc:
                ld.problem(f, row.line, col, str(exc))
                return None
            if value < 0:
                ld.problem(f, row.line, col, "must not be negative")
                return None
            return value

        if kind in ("daily", "weekly", "rolling"):
            amount = money("amount")
            start = ld.time_of_day(f, row, "start_time") or 0
            if start >= _DAY_SECONDS:
                ld.problem(f, row.line, "start_time", "the cut-over must be before 24:00:00")
            day = 0
            if kind == "weekly":
                text = ld.required(f, row, "start_day")
                if text is not None and text.lower() not in WEEKDAYS:
                    ld.problem(f, row.line, "start_day",
                               f"{text!r} is not a day name (monday..sunday)")
                    text = None
                day = WEEKDAYS.index(text.lower()) if text else 0
            days = 1
            if kind == "rolling" and ld.required(f, row, "days") is not None:
                days = ld.integer(f, row, "days", lo=1, hi=366) or 0
            if amount is not None and days:
                caps.append(Cap(cid, CapKind(kind), amount, cat, med, start, day, days, row.line,
                                code or ""))
        elif kind == "monthly_tier":
            threshold = money("threshold")
            pct = ld.required(f, row, "discount_percent")
            bp: int | None = None
            if pct is not None:
                try:
                    value = Decimal(pct)
                    if not value.is_finite() or value < 0 or value > 100:
                        raise InvalidOperation
                    scaled = value * 100
                    if scaled != scaled.to_integral_value():
                        raise InvalidOperation
                    bp = int(scaled)
                except InvalidOperation:
                    ld.problem(f, row.line, "discount_percent",
                               f"{pct!r} is not a percentage 0..100 with at most 2 decimals")
            if threshold is not None and bp is not None:
                key = (cid, threshold, cat, med)
                if key in thresholds:
                    ld.problem(f, row.line, "threshold", f"tier {cid!r} already has this threshold")
                    continue
                thresholds.add(key)
                tiers.append(SpendTier(cid, threshold, bp, cat, med, row.line, code or ""))
        else:  # max_fare
            amount = money("amount")
            net = ld.reference(f, row, "network_id", networks, "network")
            window = ld.integer(f, row, "tap_off_window", lo=60)
            if amount is not None and (net is not None or row.get("network_id") == ""):
                maxes.append(MaxFare(cid, amount, net, cat, med,
                                     window if window is not None else 3 * 3600, row.line,
                                     code or ""))
    for code in currencies:
        exponent(code)  # already checked by the products; keeps the invariant explicit
    return caps, tiers, maxes


def _network_currencies(
    ld: _Loader, routes: dict[str, Route], rules: list[FareLegRule], has_priority: bool,
    products: dict[str, tuple[FareProduct, ...]],
) -> dict[str | None, str]:
    """The one currency of each network's leg products (None: routes with no network).

    The reference lets every product row have its own currency; tapsim asks one currency of
    the products the leg rules of one network can charge, because a leg on a zone network is
    charged its maximum fare at the tap on, before the product is known, and its tap off
    refunds the difference: both must be in one currency.  A network no rule prices has none.
    """
    named = {r.network_id for r in rules if r.network_id is not None}
    out: dict[str | None, str] = {}
    for net in sorted({r.network_id for r in routes.values()}, key=lambda n: n or ""):
        seen: dict[str, int] = {}  # currency -> the first leg rule line charging it
        for rule in rules:
            if rule.network_id is not None:
                if rule.network_id != net:
                    continue
            elif not has_priority and net in named:
                continue  # empty network_id: "all networks ... excluding the ones listed"
            for p in products.get(rule.fare_product_id, ()):
                if p.currency:
                    seen.setdefault(p.currency, rule.line)
        if len(seen) > 1:
            ld.problem("fare_leg_rules.txt", 0, "fare_product_id",
                       f"network {net or '(none)'!r} has products in "
                       + ", ".join(f"{c} (line {line})" for c, line in seen.items())
                       + ": a network's legs are priced in one currency")
        elif seen:
            out[net] = next(iter(seen))
    return out


def _check_join_currencies(ld: _Loader, joins: list[FareLegJoinRule],
                           net_currency: dict[str | None, str], rules: list[FareLegRule],
                           products: dict[str, tuple[FareProduct, ...]]) -> None:
    """Joined legs are priced as one effective leg: their networks share a currency, and so
    do the rules with an empty network_id, which price an effective leg across two networks
    (fare.index.FareIndex.effective_leg)."""
    empty = {p.currency for r in rules if r.network_id is None
             for p in products.get(r.fare_product_id, ())}
    for j in joins:
        a, b = net_currency.get(j.from_network_id), net_currency.get(j.to_network_id)
        if a is not None and b is not None and a != b:
            ld.problem("fare_leg_join_rules.txt", j.line, "to_network_id",
                       f"network {j.to_network_id!r} is priced in {b}, {j.from_network_id!r} in "
                       f"{a}: legs in two currencies cannot be one effective leg")
        elif a is not None and j.from_network_id != j.to_network_id and empty - {a}:
            ld.problem("fare_leg_join_rules.txt", j.line, "to_network_id",
                       f"legs joined across networks are priced by the rules with an empty "
                       f"network_id, whose products are in {', '.join(sorted(empty))}, not "
                       f"only {a}")


def _check_default_categories(
    ld: _Loader, products: dict[str, tuple[FareProduct, ...]], cats: dict[str, RiderCategory]
) -> None:
    """Spec: when several categories are eligible for a product, exactly one is the default."""
    for pid, rows in products.items():
        eligible = sorted({r.rider_category_id for r in rows if r.rider_category_id in cats})
        if len(eligible) < 2:
            continue
        defaults = [c for c in eligible if cats[c].is_default]
        if len(defaults) != 1:
            ld.problem("fare_products.txt", 0, "rider_category_id",
                       f"product {pid!r} is sold to categories {', '.join(eligible)}: exactly one "
                       f"of them must have is_default_fare_category=1 (found {len(defaults)})")
