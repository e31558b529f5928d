"""The sample feeds shipped with tapsim (package data under fare/samples/<name>/)."""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parent / "samples"

SAMPLES: dict[str, str] = {
    "city": "Chinese city bus network (CNY): flat 2-yuan routes, a distance-fare route priced by "
            "tap-on/tap-off zones, 90-minute bus-to-bus transfer discount, monthly spend tiers, "
            "seniors free on the social security card (T-Union e-purse or UnionPay QuickPass)",
    "city2026": "The city sample after a fare change (for `tapsim fare compare`): adult T-Union "
                "flat fare 1.80 -> 2.00 yuan, route 801 adult fares +0.50 yuan a zone band, its "
                "maximum fare 5.00 -> 5.50",
    "harbour": "Small multi-network feed (EUR, Europe/Berlin): metro zones with peak/off-peak "
               "timeframes and rule priorities, bus, tram, ferry; all three transfer types; "
               "daily, weekly and rolling caps",
}


def sample_names() -> list[str]:
    return sorted(SAMPLES)


def sample_feed_path(name: str) -> Path:
    """Folder of a sample feed; ValueError naming the known samples for an unknown name."""
    if name not in SAMPLES:
        raise ValueError(f"no sample feed {name!r} (samples: {', '.join(sample_names())})")
    return _ROOT / name


def sample_taps_path(name: str) -> Path:
    """The sample taps CSV that goes with a sample feed."""
    return sample_feed_path(name) / "taps.csv"
