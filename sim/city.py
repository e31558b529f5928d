"""A city's bus service: stops, route patterns, trips and the vehicle blocks that run them.

Read from a GTFS feed (a folder or a zip: ``agency``, ``stops``, ``routes``, ``trips``,
``stop_times``, optionally ``calendar``/``calendar_dates`` and ``city.toml``) with the
standard ``csv`` module, or made by :func:`synthetic_city`.  The simulation needs less than
GTFS says: one stop sequence and mean run times per pattern (route + stop sequence), each
trip's first departure, and which trips one bus runs in a day (a block: ``block_id`` when the
feed has it, else chained greedily per route).  Scheduled dwell in ``stop_times`` is dropped:
the model makes its own.

A folder may hold a ``city.toml`` naming a ``base`` feed whose files it extends (the sample
city takes its stops, routes and fare tables from ``fare/samples/city``, and adds the
timetable), so there is one copy of each table.
"""

from __future__ import annotations

import csv
import datetime as dt
import heapq
import io
import tomllib
import zipfile
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sim.errors import CityError

CITIES_DIR = Path(__file__).parent / "cities"
DEFAULT_LAYOVER = 240.0  # seconds a bus waits at a terminal before its next trip


@dataclass(frozen=True, slots=True)
class Pattern:
    """One way a route runs: its stops in order and the mean run time between them."""

    pattern_id: str
    route_id: str
    stops: tuple[str, ...]
    run_times: tuple[float, ...]  # seconds from stop i to stop i+1 (len = stops - 1)

    @property
    def duration(self) -> float:
        return float(sum(self.run_times))


@dataclass(frozen=True, slots=True)
class Trip:
    trip_id: str
    pattern: int  # index into City.patterns
    start: float  # scheduled departure from the first stop, seconds after midnight


@dataclass(frozen=True, slots=True)
class Block:
    """The trips one bus runs in a day, in time order."""

    block_id: str
    route_id: str
    trips: tuple[Trip, ...]


@dataclass(frozen=True, slots=True)
class City:
    name: str
    timezone: ZoneInfo
    stops: Mapping[str, str]  # stop_id -> name
    routes: Mapping[str, str]  # route_id -> short name
    patterns: tuple[Pattern, ...]
    blocks: tuple[Block, ...]
    source: str
    fare_dir: Path | None = None  # where the fare tables are (None: none shipped)
    gtfs_files: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def trips(self) -> int:
        return sum(len(b.trips) for b in self.blocks)

    def stop_events(self) -> int:
        """Scheduled stop visits in a day (a size for splitting work)."""
        return sum(len(self.patterns[t.pattern].stops) for b in self.blocks for t in b.trips)


@dataclass(frozen=True, slots=True)
class Bus:
    """One vehicle of the simulated fleet: a block of the city, in one replica of it."""

    bus_id: str
    replica: int
    block: int  # index into City.blocks
    offset: float = 0.0  # s this bus's timetable runs behind the city's (see ``fleet``)


REPLICA_SPREAD = 60.0
"""Seconds over which the replicas of a city are spread.  Exact copies would put thousands
of buses at the same stops at the same second and send their taps to the back office in
one burst each minute, which no real fleet does; replica r runs its timetable
``frac(r x golden ratio) x REPLICA_SPREAD`` seconds late (the city itself, replica 0, on
time), a low-discrepancy spread that keeps each replica's headways as they are."""
_GOLDEN = (5 ** 0.5 - 1) / 2


def fleet(city: City, buses: int | None = None) -> tuple[Bus, ...]:
    """The buses to simulate: the city's own blocks, or ``buses`` of them.

    Fewer than the city has: the first ``buses`` blocks (in block order).  More: the blocks
    again as replicas of the city (same routes and stops, so fares apply; each replica has its
    own waiting passengers and riders, and its timetable shifted by under a minute, see
    ``REPLICA_SPREAD``), which is how a small sample city stands in for a fleet of thousands.
    """
    n_blocks = len(city.blocks)
    if n_blocks == 0:
        raise CityError(city.source, "no trips to run (no blocks)")
    count = n_blocks if buses is None else buses
    if count < 1:
        raise CityError(city.source, f"--buses must be at least 1, got {count}")
    out = []
    for i in range(count):
        replica, block = divmod(i, n_blocks)
        bid = city.blocks[block].block_id
        out.append(Bus(bus_id=bid if replica == 0 else f"{bid}.{replica}",
                       replica=replica, block=block,
                       offset=(replica * _GOLDEN) % 1.0 * REPLICA_SPREAD))
    return tuple(out)


# --- reading GTFS ---------------------------------------------------------------------------


class _Tables:
    """Tables by file name from one or more layers (folder or zip); later layers win."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._files: dict[str, tuple[str, str]] = {}  # name -> (origin, text)

    def add_text(self, origin: str, name: str, text: str) -> None:
        self._files[name] = (origin, text)

    def add_path(self, path: Path) -> None:
        if path.is_dir():
            for f in sorted(path.glob("*.txt")):
                try:
                    self._files[f.name] = (str(f), f.read_text(encoding="utf-8-sig"))
                except (OSError, UnicodeDecodeError) as exc:
                    raise CityError(str(f), f"cannot read: {exc}") from None
        elif path.suffix == ".zip":
            try:
                with zipfile.ZipFile(path) as zf:
                    for name in sorted(zf.namelist()):
                        base = name.rsplit("/", 1)[-1]
                        if base.endswith(".txt"):
                            text = zf.read(name).decode("utf-8-sig")
                            self._files[base] = (f"{path}!{base}", text)
            except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
                raise CityError(str(path), f"cannot read the zip: {exc}") from None
        else:
            raise CityError(str(path), "not a GTFS folder or .zip")

    def has(self, name: str) -> bool:
        return name in self._files

    def texts(self) -> dict[str, str]:
        return {name: text for name, (_, text) in self._files.items()}

    def rows(self, name: str, required: tuple[str, ...]) -> Iterator[tuple[str, int,
                                                                           dict[str, str]]]:
        """(origin, line, row) for each data row; a missing file or column is a CityError."""
        if name not in self._files:
            raise CityError(self.source, f"the feed has no {name}")
        origin, text = self._files[name]
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise CityError(origin, f"missing column(s) {', '.join(missing)}", line=1)
        reader.fieldnames = header
        for row in reader:
            yield origin, reader.line_num, {k: (v or "").strip() for k, v in row.items()
                                            if k is not None}


def parse_gtfs_time(text: str, origin: str, line: int, column: str) -> float:
    """HH:MM:SS (hours may pass 24 for trips after midnight) as seconds."""
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CityError(origin, f"{text!r} is not HH:MM:SS", line=line, field=column)
    h, m, s = (int(p) for p in parts)
    if m > 59 or s > 59:
        raise CityError(origin, f"{text!r} has minutes or seconds above 59", line=line,
                        field=column)
    return float(h * 3600 + m * 60 + s)


def _services_on(tables: _Tables, day: dt.date) -> set[str] | None:
    """Service ids running on ``day``; None when the feed has no calendar (all trips run)."""
    if not tables.has("calendar.txt") and not tables.has("calendar_dates.txt"):
        return None
    running: set[str] = set()
    weekday = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
               "sunday")[day.weekday()]
    if tables.has("calendar.txt"):
        for origin, line, row in tables.rows("calendar.txt",
                                             ("service_id", weekday, "start_date", "end_date")):
            try:
                start = dt.datetime.strptime(row["start_date"], "%Y%m%d").date()
                end = dt.datetime.strptime(row["end_date"], "%Y%m%d").date()
            except ValueError:
                raise CityError(origin, "start_date/end_date must be YYYYMMDD", line=line,
                                field="start_date") from None
            if row[weekday] not in ("0", "1"):
                raise CityError(origin, "must be 0 or 1", line=line, field=weekday)
            if start <= day <= end and row[weekday] == "1":
                running.add(row["service_id"])
    if tables.has("calendar_dates.txt"):
        for origin, line, row in tables.rows("calendar_dates.txt",
                                             ("service_id", "date", "exception_type")):
            if row["date"] != day.strftime("%Y%m%d"):
                continue
            if row["exception_type"] == "1":
                running.add(row["service_id"])
            elif row["exception_type"] == "2":
                running.discard(row["service_id"])
            else:
                raise CityError(origin, "must be 1 or 2", line=line, field="exception_type")
    return running


def _open_source(spec: str) -> tuple[_Tables, str, Path | None]:
    """Tables of a city by name (shipped) or path, following ``city.toml`` bases."""
    path = Path(spec)
    if not path.exists():
        shipped = CITIES_DIR / spec
        if shipped.is_dir():
            path = shipped
        else:
            known = ", ".join(shipped_cities())
            raise CityError(spec, f"no such city (shipped: {known}, or 'synthetic[:k=v,...]') "
                                  "and no such folder or .zip")
    tables = _Tables(str(path))
    name = path.stem
    fare_dir: Path | None = path if path.is_dir() else None
    layers: list[Path] = []
    toml_path = path / "city.toml" if path.is_dir() else None
    if toml_path is not None and toml_path.exists():
        try:
            meta = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CityError(str(toml_path), f"not valid TOML: {exc}") from None
        name = str(meta.get("name", name))
        base = meta.get("base")
        if base is not None:
            if not isinstance(base, str):
                raise CityError(str(toml_path), "must be a path (text)", field="base")
            base_path = (path / base).resolve()
            if not base_path.exists():
                raise CityError(str(toml_path), f"base feed {base_path} does not exist",
                                field="base")
            layers.append(base_path)
            fare_dir = base_path
    layers.append(path)
    for layer in layers:
        tables.add_path(layer)
    if path.suffix == ".zip":
        fare_dir = None
    if not tables.has("fare_products.txt"):
        fare_dir = None
    return tables, name, fare_dir


def shipped_cities() -> list[str]:
    return sorted(p.name for p in CITIES_DIR.iterdir() if p.is_dir()) if CITIES_DIR.is_dir() \
        else []


def load_city(spec: str, day: dt.date | None = None,
              layover: float = DEFAULT_LAYOVER) -> City:
    """A shipped city by name, a GTFS folder or zip by path, or ``synthetic[:k=v,...]``."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from sim.synthetic import parse_synthetic, synthetic_city  # noqa: PLC0415

        return synthetic_city(parse_synthetic(spec))
    tables, name, fare_dir = _open_source(spec)
    return city_from_tables(tables, name, day, layover, fare_dir)


def city_from_texts(texts: Mapping[str, str], name: str, source: str,
                    day: dt.date | None = None, layover: float = DEFAULT_LAYOVER,
                    fare_dir: Path | None = None) -> City:
    """A city from GTFS tables given as text by file name (synthetic cities, tests)."""
    tables = _Tables(source)
    for fname, text in texts.items():
        tables.add_text(f"{source}!{fname}", fname, text)
    return city_from_tables(tables, name, day, layover, fare_dir)


def city_from_tables(tables: _Tables, name: str, day: dt.date | None, layover: float,
                     fare_dir: Path | None) -> City:
    tz_name = "Asia/Shanghai"
    if tables.has("agency.txt"):
        for origin, line, row in tables.rows("agency.txt", ("agency_timezone",)):
            tz_name = row["agency_timezone"]
            try:
                ZoneInfo(tz_name)
            except (ZoneInfoNotFoundError, ValueError):
                raise CityError(origin, f"unknown time zone {tz_name!r}", line=line,
                                field="agency_timezone") from None
            break
    stops: dict[str, str] = {}
    for origin, line, row in tables.rows("stops.txt", ("stop_id",)):
        sid = row["stop_id"]
        if not sid:
            raise CityError(origin, "empty stop_id", line=line, field="stop_id")
        if sid in stops:
            raise CityError(origin, f"stop_id {sid!r} listed twice", line=line, field="stop_id")
        stops[sid] = row.get("stop_name", "") or sid
    routes: dict[str, str] = {}
    for origin, line, row in tables.rows("routes.txt", ("route_id",)):
        rid = row["route_id"]
        if not rid:
            raise CityError(origin, "empty route_id", line=line, field="route_id")
        if rid in routes:
            raise CityError(origin, f"route_id {rid!r} listed twice", line=line,
                            field="route_id")
        routes[rid] = row.get("route_short_name", "") or rid
    services = _services_on(tables, day) if day is not None else None
    trip_route: dict[str, str] = {}
    trip_block: dict[str, str] = {}
    for origin, line, row in tables.rows("trips.txt", ("route_id", "trip_id")):
        tid, rid = row["trip_id"], row["route_id"]
        if rid not in routes:
            raise CityError(origin, f"unknown route_id {rid!r}", line=line, field="route_id")
        if tid in trip_route:
            raise CityError(origin, f"trip_id {tid!r} listed twice", line=line, field="trip_id")
        if services is not None and row.get("service_id", "") not in services:
            continue
        trip_route[tid] = rid
        if row.get("block_id"):
            trip_block[tid] = row["block_id"]
    visits: dict[str, list[tuple[int, str, float, float]]] = defaultdict(list)
    st_required = ("trip_id", "stop_id", "stop_sequence", "arrival_time", "departure_time")
    for origin, line, row in tables.rows("stop_times.txt", st_required):
        tid = row["trip_id"]
        if tid not in trip_route:
            if services is None:
                raise CityError(origin, f"unknown trip_id {tid!r}", line=line, field="trip_id")
            continue
        if row["stop_id"] not in stops:
            raise CityError(origin, f"unknown stop_id {row['stop_id']!r}", line=line,
                            field="stop_id")
        if not row["stop_sequence"].isdigit():
            raise CityError(origin, "must be a non-negative integer", line=line,
                            field="stop_sequence")
        arr_text = row["arrival_time"] or row["departure_time"]
        dep_text = row["departure_time"] or row["arrival_time"]
        if not arr_text:
            raise CityError(origin, "a stop time needs arrival_time or departure_time",
                            line=line, field="arrival_time")
        arr = parse_gtfs_time(arr_text, origin, line, "arrival_time")
        dep = parse_gtfs_time(dep_text, origin, line, "departure_time")
        if dep < arr:
            raise CityError(origin, "departure_time before arrival_time", line=line,
                            field="departure_time")
        visits[tid].append((int(row["stop_sequence"]), row["stop_id"], arr, dep))

    # Patterns: one per (route, stop sequence); run times averaged over its trips.
    pattern_index: dict[tuple[str, tuple[str, ...]], int] = {}
    run_sums: list[list[float]] = []
    run_counts: list[int] = []
    keys: list[tuple[str, tuple[str, ...]]] = []
    trips_by_route: dict[str, list[tuple[Trip, float, str, str]]] = defaultdict(list)
    for tid in sorted(visits):
        vs = sorted(visits[tid])
        if len(vs) < 2:
            raise CityError(tables.source, f"trip {tid!r} visits fewer than 2 stops")
        seqs = [v[0] for v in vs]
        if len(set(seqs)) != len(seqs):
            raise CityError(tables.source, f"trip {tid!r} repeats a stop_sequence")
        times = [t for v in vs for t in (v[2], v[3])]
        if times != sorted(times):
            raise CityError(tables.source, f"trip {tid!r}: stop times go backwards")
        key = (trip_route[tid], tuple(v[1] for v in vs))
        idx = pattern_index.get(key)
        runs = [max(vs[i + 1][2] - vs[i][3], 0.0) for i in range(len(vs) - 1)]
        if idx is None:
            idx = len(keys)
            pattern_index[key] = idx
            keys.append(key)
            run_sums.append(runs)
            run_counts.append(1)
        else:
            run_sums[idx] = [a + b for a, b in zip(run_sums[idx], runs, strict=True)]
            run_counts[idx] += 1
        trip = Trip(trip_id=tid, pattern=idx, start=vs[0][3])
        trips_by_route[trip_route[tid]].append((trip, vs[-1][2], vs[0][1], vs[-1][1]))
    patterns = tuple(
        Pattern(pattern_id=f"{rid}:{i}", route_id=rid, stops=stop_ids,
                run_times=tuple(s / run_counts[i] for s in run_sums[i]))
        for i, (rid, stop_ids) in enumerate(keys)
    )
    if not patterns:
        raise CityError(tables.source, "no trips with stop times (nothing runs)")
    blocks = _blocks(trips_by_route, trip_block, layover)
    return City(name=name, timezone=ZoneInfo(tz_name), stops=stops, routes=routes,
                patterns=patterns, blocks=blocks, source=tables.source, fare_dir=fare_dir,
                gtfs_files=tables.texts())


def _blocks(trips_by_route: Mapping[str, list[tuple[Trip, float, str, str]]],
            trip_block: Mapping[str, str], layover: float) -> tuple[Block, ...]:
    """Vehicle blocks: the feed's block_id where given, else greedy chaining per route.

    A trip goes to the bus that has waited longest at its first stop (free by its departure,
    layover included); failing that, to any bus free by then (it runs empty to the start);
    failing that, to a new bus.
    """
    out: list[Block] = []
    for rid in sorted(trips_by_route):
        trips = sorted(trips_by_route[rid], key=lambda te: (te[0].start, te[0].trip_id))
        named: dict[str, list[Trip]] = defaultdict(list)
        at_stop: dict[str, list[tuple[float, int]]] = defaultdict(list)  # (free from, chain)
        anywhere: list[tuple[float, int]] = []
        where: dict[int, tuple[float, str]] = {}
        chains: list[list[Trip]] = []
        for trip, end, first, last in trips:
            if trip.trip_id in trip_block:
                named[trip_block[trip.trip_id]].append(trip)
                continue
            ci = _take(at_stop[first], trip.start, where)
            if ci is None:
                ci = _take(anywhere, trip.start, where)
            if ci is None:
                ci = len(chains)
                chains.append([])
            chains[ci].append(trip)
            free = (end + layover, ci)
            where[ci] = (free[0], last)
            heapq.heappush(at_stop[last], free)
            heapq.heappush(anywhere, free)
        for i, chain in enumerate(chains):
            out.append(Block(f"{rid}-{i + 1:03d}", rid, tuple(chain)))
        for bid in sorted(named):
            out.append(Block(bid, rid, tuple(named[bid])))
    return tuple(out)


def _take(heap: list[tuple[float, int]], start: float,
          where: Mapping[int, tuple[float, str]]) -> int | None:
    """Pop the earliest bus free by ``start`` that is still where this heap says (lazy)."""
    while heap and heap[0][0] <= start:
        free, ci = heapq.heappop(heap)
        if where.get(ci, (None,))[0] == free:
            return ci
    return None
