"""Writes trips.txt and stop_times.txt of the Lanshan sample city (run from this folder).

The stops, routes and fare tables are the fare engine's sample city (``fare/samples/city``,
see ``city.toml``); this adds a weekday timetable: each route both ways, at a fixed headway
from 05:30 to 22:30, with the run time between stops given below.
"""

from __future__ import annotations

from pathlib import Path

# route_id: (stops one way, seconds between stops, headway in seconds)
ROUTES = {
    "1": (["S01", "S02", "S03", "S04", "S05", "S06", "S07", "S08"], 120, 360),
    "2": (["S13", "S09", "S10", "S03", "S11", "S15", "S16", "S14"], 120, 480),
    "5": (["S12", "S02", "S05", "S15", "S16", "S17", "S18"], 120, 600),
    "11": (["S19", "S20", "S21", "S22", "S23", "S06", "S24"], 150, 720),
    "801": ([f"D{i:02d}" for i in range(1, 13)], 180, 900),
}
FIRST, LAST = 5 * 3600 + 1800, 22 * 3600 + 1800


def hms(t: int) -> str:
    return f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"


def main() -> None:
    trips = ["route_id,service_id,trip_id,direction_id"]
    times = ["trip_id,arrival_time,departure_time,stop_id,stop_sequence"]
    for rid, (stops, run, headway) in ROUTES.items():
        for direction, seq in ((0, stops), (1, stops[::-1])):
            t, n = FIRST + direction * (headway // 2), 0
            while t <= LAST:
                n += 1
                tid = f"{rid}-{'ab'[direction]}{n:03d}"
                trips.append(f"{rid},weekday,{tid},{direction}")
                for i, sid in enumerate(seq):
                    times.append(f"{tid},{hms(t + i * run)},{hms(t + i * run)},{sid},{i + 1}")
                t += headway
    here = Path(__file__).parent
    (here / "trips.txt").write_text("\n".join(trips) + "\n", encoding="utf-8")
    (here / "stop_times.txt").write_text("\n".join(times) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
