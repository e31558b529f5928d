"""Synthetic cities: a regular grid of bus routes, written out as GTFS text.

``synthetic:routes=8,stops=20,buses=48`` gives 8 two-way routes of 20 stops with 6 buses
each, running from ``start`` to ``end`` (hours) at the headway the fleet allows
(cycle time / buses per route).  The tables are ordinary GTFS (plus a flat GTFS-Fares v2
fare table), read back by the same loader as a real feed, so a synthetic city is exactly
what a feed with those files would be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from sim.city import DEFAULT_LAYOVER, City, city_from_texts
from sim.errors import CityError

_LIMITS = {"routes": (1, 10_000), "stops": (2, 200), "buses": (1, 1_000_000),
           "run": (10, 3600), "start": (0, 30), "end": (0, 30), "fare": (0, 100_000)}


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    routes: int = 8
    stops: int = 20  # per route and direction
    buses: int = 48  # fleet size; each route gets its share
    run: int = 90  # seconds between consecutive stops
    start: int = 5  # first departures, hour
    end: int = 23  # last departures, hour
    fare: int = 200  # flat fare, fen


def parse_synthetic(spec: str) -> SyntheticSpec:
    """``synthetic`` or ``synthetic:k=v,...`` with k in the fields of SyntheticSpec."""
    values: dict[str, int] = {}
    _, _, params = spec.partition(":")
    names = {f.name for f in fields(SyntheticSpec)}
    for part in filter(None, (p.strip() for p in params.split(","))):
        key, eq, raw = part.partition("=")
        if not eq or key not in names:
            known = ", ".join(sorted(names))
            raise CityError(spec, f"{part!r}: expected k=v with k one of {known}")
        try:
            value = int(raw)
        except ValueError:
            raise CityError(spec, f"{key}={raw!r}: not an integer") from None
        lo, hi = _LIMITS[key]
        if not lo <= value <= hi:
            raise CityError(spec, f"{key}={value}: must be {lo}..{hi}")
        values[key] = value
    out = SyntheticSpec(**values)
    if out.end <= out.start:
        raise CityError(spec, "end must be after start")
    if out.buses < out.routes:
        raise CityError(spec, f"buses={out.buses}: at least one per route ({out.routes})")
    return out


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def synthetic_texts(spec: SyntheticSpec) -> dict[str, str]:
    """The GTFS tables of a synthetic city, as CSV text by file name."""
    stops = ["stop_id,stop_name"]
    routes = ["route_id,agency_id,route_short_name,route_type,network_id"]
    trips = ["route_id,service_id,trip_id,direction_id"]
    times = ["trip_id,arrival_time,departure_time,stop_id,stop_sequence"]
    cycle = 2 * (spec.stops - 1) * spec.run + 2 * DEFAULT_LAYOVER
    for r in range(spec.routes):
        rid = f"R{r + 1:03d}"
        routes.append(f"{rid},syn,{rid},3,flat")
        sids = [f"{rid}S{s + 1:02d}" for s in range(spec.stops)]
        stops.extend(f"{sid},{rid} stop {s + 1}" for s, sid in enumerate(sids))
        share = spec.buses // spec.routes + (1 if r < spec.buses % spec.routes else 0)
        headway = cycle / share
        # Stagger routes so their departures do not all coincide.
        offset = (r * 37.0) % headway
        n = 0
        for direction, seq in ((0, sids), (1, sids[::-1])):
            t = spec.start * 3600.0 + offset + direction * (cycle / 2)
            # Buses start their day in both directions: the ones in the back direction
            # leave from the far terminal from the start too.
            if direction == 1:
                t -= math.floor((t - spec.start * 3600.0) / headway) * headway
            while t <= spec.end * 3600.0:
                n += 1
                tid = f"{rid}T{n:04d}"
                trips.append(f"{rid},all,{tid},{direction}")
                for i, sid in enumerate(seq):
                    at = _hms(t + i * spec.run)
                    times.append(f"{tid},{at},{at},{sid},{i + 1}")
                t += headway
    flat = f"{spec.fare // 100}.{spec.fare % 100:02d}"
    return {
        "agency.txt": "agency_id,agency_name,agency_url,agency_timezone\n"
                      "syn,Synthetic Bus,https://example.invalid,Asia/Shanghai\n",
        "stops.txt": "\n".join(stops) + "\n",
        "routes.txt": "\n".join(routes) + "\n",
        "trips.txt": "\n".join(trips) + "\n",
        "stop_times.txt": "\n".join(times) + "\n",
        "fare_media.txt": "fare_media_id,fare_media_name,fare_media_type\n"
                          "cash,Cash,0\ntunion,T-Union,2\ncemv,QuickPass,3\n",
        "rider_categories.txt": "rider_category_id,rider_category_name,is_default_fare_category\n"
                                "adult,Adult,1\nsenior,Senior,0\nstudent,Student,0\n",
        "fare_products.txt": "fare_product_id,fare_product_name,rider_category_id,fare_media_id,"
                             "amount,currency\n"
                             f"flat,Flat fare,adult,,{flat},CNY\n"
                             "flat,Flat fare,senior,,0.00,CNY\n",
        "fare_leg_rules.txt": "leg_group_id,network_id,fare_product_id\nbus,flat,flat\n",
    }


def synthetic_city(spec: SyntheticSpec) -> City:
    texts = synthetic_texts(spec)
    name = f"synthetic-{spec.routes}x{spec.stops}-{spec.buses}"
    return city_from_texts(texts, name=name, source=f"synthetic:{name}")
